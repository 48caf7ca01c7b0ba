//! Overflow and watch-limit tests of the file reader. They lower global inotify sysctls, so they
//! live in their own test binary, hold a process-wide lock, and restore the sysctl even on panic.
//! Root only (CI runs as root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use edgegw_kernel_events::files::{FileEvent, FileOptions};
use edgegw_kernel_events::{EventKind, KernelEvents, ResyncReason, Source};

/// Serializes the tests of this binary: each lowers a global inotify limit.
static SYSCTL_LOCK: Mutex<()> = Mutex::new(());

/// Sets a sysctl under /proc/sys and puts the old value back when dropped (also on panic).
struct SysctlGuard {
    path: PathBuf,
    old: String,
}

impl SysctlGuard {
    fn set(path: &str, value: u64) -> SysctlGuard {
        let path = PathBuf::from(path);
        let old = fs::read_to_string(&path).expect("read sysctl");
        fs::write(&path, value.to_string()).expect("write sysctl");
        SysctlGuard { path, old }
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        fs::write(&self.path, self.old.trim()).expect("restore sysctl");
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs root: lowers fs.inotify.max_queued_events"]
fn queue_overflow_then_resync_matches_a_fresh_walk_of_the_tree() {
    require_root("lowers fs.inotify.max_queued_events");
    let _lock = SYSCTL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("overflow");
    let root = dir.path().join("tree");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("existing"), "x").unwrap();
    block_on(async {
        // The limit is copied into an inotify instance when it is created: lower it for the
        // build only, so other inotify users on the machine are affected for milliseconds.
        let mut events = {
            let _small_queue = SysctlGuard::set("/proc/sys/fs/inotify/max_queued_events", 32);
            KernelEvents::builder()
                .watch_tree(&root)
                .file_options(FileOptions {
                    debounce: Duration::from_millis(100),
                    ..FileOptions::default()
                })
                .build()
                .await
                .unwrap()
        };
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        // Reading is paused (nobody calls next) while hundreds of changes happen.
        for i in 0..300 {
            fs::write(root.join(format!("file-{i:03}")), "x").unwrap();
        }
        for d in 0..20 {
            let sub = root.join(format!("dir-{d:02}"));
            fs::create_dir(&sub).unwrap();
            fs::create_dir(sub.join("nested")).unwrap();
            fs::write(sub.join("nested/inner"), "y").unwrap();
        }
        fs::remove_file(root.join("existing")).unwrap();
        let got = collect_until_quiet(&mut events, Duration::from_millis(800)).await;
        got.iter().for_each(|e| model.apply(e));
        assert_well_formed(&got);
        assert!(
            got.iter().any(|e| matches!(
                e.kind,
                EventKind::Resync {
                    reason: ResyncReason::QueueOverflow,
                    ..
                }
            )),
            "the overflow must be reported"
        );
        assert!(events.counters().get(Source::Files).overflows >= 1);
        assert_eq!(
            model.entries.keys().cloned().collect::<Vec<_>>(),
            walk(&root)
        );
        assert_eq!(&model.entries, events.files().unwrap());
        // The new subdirectories are watched after the resync: a change deep inside is seen.
        fs::write(root.join("dir-07/nested/after"), "z").unwrap();
        let got = collect_until_quiet(&mut events, Duration::from_millis(800)).await;
        assert!(
            got.iter().any(|e| matches!(&e.kind,
                EventKind::File(FileEvent::Entry { path, .. }) if path.ends_with("dir-07/nested/after"))),
            "{got:#?}"
        );
        assert_eq!(events.file_watch_count(), 1 + 20 * 2);
    });
}

/// inotify watches held by root's processes right now (from /proc/*/fdinfo): the limit is
/// per user.
fn watches_in_use() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for proc_dir in fs::read_dir("/proc").unwrap().flatten() {
        if proc_dir.metadata().map_or(true, |m| m.uid() != 0) {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(text) = fs::read_to_string(fd.path()) {
                n += text
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    n
}

#[test]
#[ignore = "needs root: lowers fs.inotify.max_user_watches"]
fn watch_limit_degrades_to_polling_then_restores_without_losing_state() {
    require_root("lowers fs.inotify.max_user_watches");
    let _lock = SYSCTL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("enospc");
    let root = dir.path().join("tree");
    for d in 0..6 {
        fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
    }
    block_on(async {
        let limit_guard = SysctlGuard::set(
            "/proc/sys/fs/inotify/max_user_watches",
            watches_in_use() + 2,
        );
        let mut events = KernelEvents::builder()
            .watch_tree(&root)
            .file_options(FileOptions {
                debounce: Duration::from_millis(50),
                degraded_poll: Duration::from_millis(300),
                ..FileOptions::default()
            })
            .build()
            .await
            .unwrap();
        let first = next_within(&mut events, Duration::from_secs(5), "the degraded report").await;
        assert!(
            matches!(&first.kind, EventKind::File(FileEvent::Degraded { reason, .. }) if reason.contains("No space")),
            "{first:?}"
        );
        assert_eq!(events.degraded_paths(), vec![root.clone()]);
        // While degraded, the tree is still followed by polling: nothing is lost.
        let mut model = FileModel {
            entries: events.files().unwrap().clone(),
        };
        for d in 0..6 {
            fs::write(root.join(format!("d{d}/new")), "n").unwrap();
        }
        let got = collect_until_quiet(&mut events, Duration::from_millis(1200)).await;
        got.iter().for_each(|e| model.apply(e));
        assert_eq!(
            model.entries.keys().cloned().collect::<Vec<_>>(),
            walk(&root)
        );
        drop(limit_guard);
        let got = collect_until_quiet(&mut events, Duration::from_millis(1200)).await;
        assert!(
            got.iter()
                .any(|e| matches!(&e.kind, EventKind::File(FileEvent::Restored { .. }))),
            "{got:#?}"
        );
        assert!(events.degraded_paths().is_empty());
        assert_eq!(events.file_watch_count(), 7);
    });
}
