//! Helpers shared by the integration tests.
#![allow(dead_code)]

use edgegw_ring::{AllowList, Consumer, Producer, RingConfig, RingServer, ServedRing, ServerEvent};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A producer and a consumer of one new ring, in this process.
pub fn pair(config: RingConfig) -> (Producer, Consumer) {
    let producer = Producer::create(config).expect("create ring");
    let consumer =
        Consumer::from_fds(producer.served_ring().expect("served").into_fds()).expect("consumer");
    (producer, consumer)
}

/// A fresh private directory for sockets, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgegw-ring-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// The peers a test's server lets in: this process's user.
pub fn me() -> AllowList {
    AllowList::current_user()
}

/// A `RingServer` on its own thread, recording its events; stopped (its socket removed) by
/// [`stop`](Running::stop) or on drop.
pub struct Running {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<ServerEvent>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Running {
    /// Serves `ring` at `path` to the peers `allow` lets in.
    pub fn start(path: &Path, ring: ServedRing, allow: AllowList) -> Running {
        let mut server = RingServer::bind(path, ring, allow).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let ev = server
                    .serve_for(Some(Duration::from_millis(10)))
                    .expect("serve");
                e.lock().unwrap().extend(ev);
            }
        });
        Running {
            stop,
            events,
            thread: Some(thread),
            path: path.to_owned(),
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<ServerEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until an event matching `f` was recorded.
    pub fn wait_for(&self, what: &str, f: impl Fn(&ServerEvent) -> bool) {
        for _ in 0..1000 {
            if self.events().iter().any(&f) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no {what} event; events: {:?}", self.events());
    }

    /// Stops the server, and checks that it removed its socket file.
    pub fn stop(mut self) {
        self.join();
        assert!(!self.path.exists(), "the server removes its socket file");
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.join();
    }
}

/// A hello of protocol `version` asking for the consumer role.
pub fn consumer_hello(version: u16) -> [u8; 32] {
    let mut hello = [0u8; 32];
    hello[..4].copy_from_slice(b"EGRH");
    hello[4..6].copy_from_slice(&version.to_ne_bytes());
    hello[6] = 1;
    hello
}

/// Scale a stress count by `EDGEGW_RING_TEST_SCALE` (percent; default 100). Never below 1.
pub fn scaled(n: u64) -> u64 {
    let pct: u64 = std::env::var("EDGEGW_RING_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    (n * pct / 100).max(1)
}

/// The deterministic payload of packet `seq` with length `len`.
pub fn payload_byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64 * 7) >> 3) as u8
}

pub fn fill_payload(seq: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = payload_byte(seq, i);
    }
}

/// The environment variable that tells a re-executed test binary which child role to play.
pub const CHILD_ENV: &str = "EDGEGW_RING_CHILD";

/// The child role this process was started for, if any.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A command that re-runs this test binary for one test, in child role `role`. Under qemu-user
/// (cross tests), `EDGEGW_RING_CHILD_RUNNER` names the emulator to start it with.
pub fn child_command(test_name: &str, role: &str) -> Command {
    child_command_of(
        &std::env::current_exe().expect("current exe"),
        test_name,
        role,
    )
}

/// Like [`child_command`], running the test binary copy at `exe`.
pub fn child_command_of(exe: &std::path::Path, test_name: &str, role: &str) -> Command {
    let mut cmd = match std::env::var("EDGEGW_RING_CHILD_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().expect("runner"));
            c.args(parts);
            c.arg(exe);
            c
        }
        _ => Command::new(exe),
    };
    cmd.args([
        test_name,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(CHILD_ENV, role)
    .stdin(Stdio::null());
    cmd
}

/// A program to run as a child that was built for the target (the C example under qemu).
pub fn target_command(program: &std::path::Path) -> Command {
    match std::env::var("EDGEGW_RING_CHILD_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().expect("runner"));
            c.args(parts);
            c.arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// Says what CI must show even when the test passes: a part skipped and why. A passing test's
/// stderr is shown to nobody, so the line also goes to `edgegw-test-report.txt` in cargo's
/// target tmp dir, which `.ci/run` and `cross/test` print.
pub fn report(test: &str, line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("edgegw-test-report.txt");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            let _ = writeln!(f, "{test}: {line}");
        }
        Err(e) => eprintln!("cannot append to {}: {e}", path.display()),
    }
}
