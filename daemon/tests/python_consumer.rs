//! The Python package (`ringbuf/python`, ctypes over the ring's C library): its echo example,
//! run with `python3` against a real daemon process, echoes clients' bytes, and a client that
//! does not read is held back by its windows and gets everything once it reads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \"app\"\n[[ring]]\nname = \"app\"\n";

const TEST: &str = "the_python_echo_example_echoes_and_holds_back_a_client_that_does_not_read";

/// `libedgegw_ring.so`, built as a Python user builds it (`cargo build -p edgegw-ring-ffi`),
/// in this test's target directory and profile.
fn shared_library() -> PathBuf {
    // This test is <target dir>/<profile dir>/deps/python_consumer-<hash>.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("<profile>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "-p",
            "edgegw-ring-ffi",
            "--lib",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(profile_dir.parent().expect("a target directory"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build -p edgegw-ring-ffi failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = profile_dir.join("libedgegw_ring.so");
    assert!(lib.is_file(), "cargo built no {}", lib.display());
    lib
}

#[test]
fn the_python_echo_example_echoes_and_holds_back_a_client_that_does_not_read() {
    if let Some(emulator) = emulator() {
        // python3 is the host's; the library would be the emulated target's.
        report(
            TEST,
            &format!("NOT RUN under {emulator}: python3 cannot load the target's library"),
        );
        return;
    }
    if cfg!(target_env = "musl") {
        report(
            TEST,
            "NOT RUN: musl targets build no shared library for ctypes",
        );
        return;
    }
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is needed (.ci/run installs it)"
    );
    let lib = shared_library();
    let (dir, daemon) = spawn_daemon(CONFIG, "accepting on");
    let addr = accepting_on(&daemon);
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ringbuf/python");
    let mut command = Command::new("python3");
    command
        .arg(python_dir.join("examples/echo.py"))
        .arg(dir.path().join("run/edgegw/rings/app.sock"))
        .env("PYTHONPATH", &python_dir)
        .env("EDGEGW_RING_LIB", &lib)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let echo = Process::spawn(command, dir.path(), "python-echo");
    echo.wait_for_log("echoing");
    let roots = [process_cert(dir.path())];
    let upload: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    block_on(async {
        let config = client_config(&roots, &[]);
        // A client that echoes as usual.
        let mut good = connect(addr, config.clone(), "localhost").await.unwrap();
        good.write_all(b"hello from python").await.unwrap();
        let mut back = [0u8; 17];
        tokio::time::timeout(Duration::from_secs(60), good.read_exact(&mut back))
            .await
            .expect("an echo within 60 s")
            .unwrap();
        assert_eq!(&back, b"hello from python");

        // One that writes 2 MiB before it reads anything: held back by its windows (and its
        // TCP), not closed; once it reads, every byte comes back.
        let stalled = connect(addr, config, "localhost").await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(stalled);
        let sent = upload.clone();
        let flood = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.flush().await.unwrap();
            writer
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Meanwhile the other client is served.
        good.write_all(b"still here, python").await.unwrap();
        let mut back = [0u8; 18];
        tokio::time::timeout(Duration::from_secs(60), good.read_exact(&mut back))
            .await
            .expect("the good client is served while the other stalls")
            .unwrap();
        let mut got = vec![0u8; upload.len()];
        tokio::time::timeout(Duration::from_secs(300), reader.read_exact(&mut got))
            .await
            .expect("2 MiB echoed within 300 s once the client reads")
            .expect("the stalled client was not closed");
        assert_same_bytes(&got, &upload, "the stalled client's echo through Python");
        let mut stalled = reader.unsplit(flood.await.unwrap());
        stalled.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut rest))
            .await
            .expect("the connection ends after close_notify")
            .unwrap();
    });
    // The client's close_notify (reason 0), the consumer's CLOSE, then the last CLOSE (4).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !echo.log().contains("(reason 4)") {
        assert!(
            std::time::Instant::now() < deadline,
            "no last CLOSE after the consumer's:\n{}",
            echo.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!echo.log().contains("Traceback"), "{}", echo.log());
}
