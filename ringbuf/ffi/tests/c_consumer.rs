//! The C ABI from C: the example consumer in `examples/c/ring_consumer.c` (in the ring crate's
//! directory) is compiled with the target's C compiler against `include/edgegw_ring.h` and
//! `libedgegw_ring.a` (built by `cargo build -p edgegw-ring-ffi`), attaches to a ring served by a
//! Rust producer, checks every byte, and answers on a reply ring.

// The ring crate's test helpers (temporary directories, stress scaling, running a target
// binary under qemu), shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{scaled, target_command, temp_dir};
use edgegw_ring::{AllowList, Consumer, Error, Producer, Readiness, RingConfig, RingServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The ring crate's directory: the header and the C example live there.
fn ring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// This test's target, as cargo names it (`x86_64-unknown-linux-gnu`, ...).
fn target_triple() -> String {
    // 32-bit ARM: cross/ builds armv7-unknown-linux-gnueabihf only.
    let arch = match std::env::consts::ARCH {
        "arm" => "armv7",
        arch => arch,
    };
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else if cfg!(target_abi = "eabihf") {
        "gnueabihf"
    } else {
        "gnu"
    };
    format!("{arch}-unknown-linux-{env}")
}

/// The directory that holds `libedgegw_ring.a` and `libedgegw_ring.so`, built as a C user builds
/// them, by `cargo build -p edgegw-ring-ffi`, for the target, profile and target directory of
/// this test. Cargo builds a staticlib or cdylib only when its crate is built for its own sake,
/// never for a test, so the test asks for them; the first test to get here builds them and the
/// others wait.
fn c_libraries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_c_libraries)
}

fn build_c_libraries() -> PathBuf {
    // This test is <target dir>/[<triple>/]<profile dir>/deps/c_consumer-<hash>.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <profile dir>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile directory above {}", exe.display()),
    };
    let triple = target_triple();
    let above = profile_dir.parent().expect("a target directory");
    let cross = above.file_name().is_some_and(|n| n == triple.as_str());
    let target_dir = if cross {
        above.parent().expect("a target directory")
    } else {
        above
    };
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
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
        .arg(target_dir);
    if cross {
        cargo.args(["--target", &triple]);
        // The cdylib is linked by the target's C compiler, as cross/aarch64.toml sets it.
        let var = triple.replace('-', "_");
        if let Ok(cc) = std::env::var(format!("CC_{var}")) {
            cargo.env(format!("CARGO_TARGET_{}_LINKER", var.to_uppercase()), cc);
        }
    }
    let out = cargo.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build -p edgegw-ring-ffi failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut libs = vec!["libedgegw_ring.a"];
    if shared_library_built() {
        libs.push("libedgegw_ring.so");
    }
    for lib in libs {
        let lib = profile_dir.join(lib);
        assert!(lib.is_file(), "cargo built no {}", lib.display());
    }
    profile_dir.to_path_buf()
}

/// Whether cargo builds `libedgegw_ring.so` for this target: not for musl, whose Rust targets
/// link statically (crt-static) and drop the cdylib crate type.
fn shared_library_built() -> bool {
    !cfg!(target_env = "musl")
}

/// The C compiler for the target this test was built for: `CC_<triple>` (set by
/// cross/aarch64.toml), then `CC`, then `cc`.
fn c_compiler() -> String {
    std::env::var(format!("CC_{}", target_triple().replace('-', "_")))
        .or_else(|_| std::env::var("CC"))
        .unwrap_or_else(|_| "cc".to_string())
}

/// Which of the two libraries the C example is linked with.
#[derive(Debug, Clone, Copy)]
enum Linkage {
    /// `libedgegw_ring.a` and the system libraries it needs, as the header says.
    Static,
    /// `libedgegw_ring.so`, found at run time through the rpath.
    Shared,
}

fn build_c_consumer(out_dir: &Path, linkage: Linkage) -> PathBuf {
    let exe = out_dir.join("ring_consumer");
    let cc = c_compiler();
    let libs = c_libraries();
    let mut command = Command::new(&cc);
    command
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(ring_dir().join("include"))
        .arg(ring_dir().join("examples/c/ring_consumer.c"));
    match linkage {
        Linkage::Static => {
            command
                .arg(libs.join("libedgegw_ring.a"))
                .args(["-lpthread", "-ldl", "-lm"])
        }
        Linkage::Shared => command
            .arg("-L")
            .arg(libs)
            .arg("-l:libedgegw_ring.so")
            .arg(format!("-Wl,-rpath,{}", libs.display())),
    };
    let status = command
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(
        status.success(),
        "{cc} failed to build the C consumer ({linkage:?})"
    );
    exe
}

fn serve_in_background(
    mut server: RingServer,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            server.serve_for(Some(Duration::from_millis(20))).unwrap();
        }
    })
}

fn byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131) as usize + i * 7 + (i >> 8)) as u8
}

#[test]
fn a_c_consumer_attaches_checks_every_byte_and_answers_through_the_c_abi() {
    c_consumer_round_trip(Linkage::Static, scaled(20_000));
}

#[test]
fn the_shared_library_serves_the_c_consumer_as_the_static_one_does() {
    if !shared_library_built() {
        common::report(
            "the_shared_library_serves_the_c_consumer_as_the_static_one_does",
            &format!(
                "NOT APPLICABLE on {}: Rust's musl targets build no shared library \
                 (crt-static); C users there link libedgegw_ring.a, tested above",
                target_triple()
            ),
        );
        return;
    }
    c_consumer_round_trip(Linkage::Shared, scaled(2_000));
}

/// Serve an ingress ring with `total` patterned packets to the C example, and a reply ring for
/// its answer: the packet count and a hash of every byte it read.
fn c_consumer_round_trip(linkage: Linkage, total: u64) {
    let dir = temp_dir("c");
    let exe = build_c_consumer(&dir, linkage);
    let mut ingress = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let mut reply = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        serve_in_background(
            RingServer::bind(
                dir.join("in.sock"),
                ingress.served_ring().unwrap(),
                AllowList::current_user(),
            )
            .unwrap(),
            stop.clone(),
        ),
        serve_in_background(
            RingServer::bind(
                dir.join("reply.sock"),
                reply.served_ring().unwrap(),
                AllowList::current_user(),
            )
            .unwrap(),
            stop.clone(),
        ),
    ];
    let child = target_command(&exe)
        .arg(dir.join("in.sock"))
        .arg(total.to_string())
        .arg(dir.join("reply.sock"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut hash = 1469598103934665603u64;
    for seq in 0..total {
        let len = (seq % 1500) as usize;
        loop {
            match ingress.reserve(len, 1, seq as u16) {
                Ok(buf) => {
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = byte(seq, i);
                        hash = (hash ^ *b as u64).wrapping_mul(1099511628211);
                    }
                    break;
                }
                Err(Error::Full { .. }) => {
                    ingress.publish();
                    assert_eq!(
                        ingress
                            .wait_for_space(len, Some(Duration::from_secs(60)))
                            .unwrap(),
                        Readiness::Ready
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        if seq % 16 == 15 {
            ingress.publish();
        }
    }
    ingress.finish();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "C consumer failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reply.wait(Some(Duration::from_secs(60))).unwrap(),
        Readiness::Ready
    );
    let rec = reply.read().unwrap().expect("the C consumer's answer");
    assert_eq!(rec.record_type(), 2);
    assert_eq!(
        rec.payload().read_u64_le(0),
        Some(total),
        "packet count from C"
    );
    assert_eq!(
        rec.payload().read_u64_le(8),
        Some(hash),
        "hash of every byte C read"
    );
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

#[test]
fn the_c_consumer_reports_a_clear_error_for_a_missing_ring() {
    let dir = temp_dir("c");
    let exe = build_c_consumer(&dir, Linkage::Static);
    let out = target_command(&exe)
        .arg(dir.join("nothing.sock"))
        .arg("1")
        .arg(dir.join("reply.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("attach ingress") && stderr.contains("no ring socket at this path"),
        "{stderr}"
    );
}
