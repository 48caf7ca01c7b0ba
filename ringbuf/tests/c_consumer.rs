//! The C ABI from C: the example consumer in `examples/c/ring_consumer.c` is compiled with the
//! target's C compiler against `include/edgegw_ring.h` and the crate's staticlib, attaches to a
//! ring served by this Rust producer, checks every byte, and answers on a reply ring.

mod common;

use common::{scaled, target_command, temp_dir};
use edgegw_ring::{AllowList, Consumer, Error, Producer, Readiness, RingConfig, RingServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The staticlib cargo built alongside this test binary: the newest `libedgegw_ring*.a` in the
/// profile directory or its `deps/` (test builds leave it there, under a hashed name).
fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let profile = deps.parent().unwrap();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = [profile, deps]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libedgegw_ring") && n.ends_with(".a")
        })
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no libedgegw_ring*.a near {}", deps.display()))
        .1
}

/// The C compiler for the target this test was built for: `CC_<triple>` (set by
/// cross/aarch64.toml), then `CC`, then `cc`.
fn c_compiler() -> String {
    let arch = std::env::consts::ARCH;
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    };
    let triple = format!("{arch}_unknown_linux_{env}");
    std::env::var(format!("CC_{triple}"))
        .or_else(|_| std::env::var("CC"))
        .unwrap_or_else(|_| "cc".to_string())
}

fn build_c_consumer(out_dir: &Path) -> PathBuf {
    let exe = out_dir.join("ring_consumer");
    let cc = c_compiler();
    let status = Command::new(&cc)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("examples/c/ring_consumer.c"))
        .arg(staticlib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "{cc} failed to build the C consumer");
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
    let dir = temp_dir("c");
    let exe = build_c_consumer(&dir);
    let total = scaled(20_000);
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
    let exe = build_c_consumer(&dir);
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
