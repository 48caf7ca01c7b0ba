//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgegw_kernel_events::files::{FileEvent, Identity};
use edgegw_kernel_events::{Change, Event, EventKind, KernelEvents, Source};

/// Fails loudly when a root-only test is run without root (it must not pass by doing nothing).
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root ({why}); run it as root or leave it ignored"
    );
}

/// Where [`report`] appends; `.ci/run` prints it after the tests.
pub const REPORT_FILE: &str = "edgegw-test-report.txt";

/// Says what CI must show even when the test passes: a part skipped and why, or the path a
/// fallback took. The test harness keeps a passing test's stderr to itself, so the line also
/// goes to `REPORT_FILE` in cargo's target tmp dir, which `.ci/run` prints at the end.
pub fn report(test: &str, line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(REPORT_FILE);
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

/// A current_thread runtime like the daemon's.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Next event, or a panic naming what we waited for.
pub async fn next_within(events: &mut KernelEvents, limit: Duration, waiting_for: &str) -> Event {
    match tokio::time::timeout(limit, events.next()).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => panic!("reader failed while waiting for {waiting_for}: {e}"),
        Err(_) => panic!("no event within {limit:?} while waiting for {waiting_for}"),
    }
}

/// Collects events until `quiet` passes without one.
pub async fn collect_until_quiet(events: &mut KernelEvents, quiet: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(r) = tokio::time::timeout(quiet, events.next()).await {
        out.push(r.expect("reader failed"));
    }
    out
}

/// Collects events until `quiet` passes without one *and* no resync is in progress (a recovery
/// in backoff can be quiet for longer than `quiet`). Gives up after 60 s.
pub async fn collect_until_settled(events: &mut KernelEvents, quiet: Duration) -> Vec<Event> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(quiet, events.next()).await {
            Ok(r) => out.push(r.expect("reader failed")),
            Err(_) if !events.is_resyncing() => return out,
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "resync never finished: {:?}",
            events.network_stats()
        );
    }
}

/// A consumer-side model of files, built only from events.
#[derive(Debug, Default)]
pub struct FileModel {
    pub entries: BTreeMap<PathBuf, Identity>,
}

impl FileModel {
    pub fn apply(&mut self, event: &Event) {
        if let EventKind::File(FileEvent::Entry {
            change,
            path,
            identity,
        }) = &event.kind
        {
            match change {
                Change::Removed => {
                    self.entries.remove(path);
                }
                _ => {
                    self.entries
                        .insert(path.clone(), identity.clone().expect("identity"));
                }
            }
        }
    }
}

/// Asserts seq numbers are gap-free and every Resync is closed by a ResyncDone of its source.
pub fn assert_well_formed(events: &[Event]) {
    let mut open: Vec<Source> = Vec::new();
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "seq must be gap-free");
    }
    for e in events {
        match &e.kind {
            EventKind::Resync { source, .. } => {
                assert_eq!(*source, e.source);
                assert!(!open.contains(source), "nested resync of {source}");
                open.push(*source);
            }
            EventKind::ResyncDone { source } => {
                assert!(open.contains(source), "ResyncDone without Resync");
                open.retain(|s| s != source);
            }
            _ => {}
        }
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("edgegw-ke-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(std::fs::canonicalize(&dir).expect("canonicalize"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks every fd of the readers is O_NONBLOCK.
pub fn assert_all_nonblocking(events: &KernelEvents) {
    let fds = events.raw_fds();
    assert!(!fds.is_empty());
    for fd in fds {
        // BorrowedFd::borrow_raw would need unsafe code; /proc reports the same flags.
        let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
        let octal = flags
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("flags line")
            .trim();
        let bits = u32::from_str_radix(octal, 8).expect("octal flags");
        assert!(
            bits & libc::O_NONBLOCK as u32 != 0,
            "fd {fd} is blocking (flags {octal})"
        );
    }
}
