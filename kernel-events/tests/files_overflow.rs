//! Overflow and watch-limit tests of the file reader, in their own test binary. The overflow
//! test lowers the global fs.inotify.max_queued_events for the moment its reader is created,
//! under a machine-wide lock, and restores it even on panic; the watch-limit test runs itself
//! again in a user namespace of its own, whose watch limit it lowers without touching anybody
//! else's. Root only (CI runs as root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use edgegw_kernel_events::files::{FileEvent, FileOptions};
use edgegw_kernel_events::{EventKind, KernelEvents, ResyncReason, Source};

/// Held while a global inotify limit is lowered, by this process or by any other running this
/// test on the machine (several checkouts tested at once): two of them interleaved would
/// restore each other's lowered value.
fn sysctl_lock() -> nix::fcntl::Flock<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("edgegw-kernel-events-inotify-sysctl.lock"))
        .expect("open the sysctl lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the sysctl lock file")
}

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
    let _lock = sysctl_lock();
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

/// Set in the copy of the watch-limit test that runs in its own user namespace.
const IN_USER_NAMESPACE: &str = "EDGEGW_KE_TEST_IN_USER_NAMESPACE";

#[test]
#[ignore = "needs root: lowers an inotify watch limit, in a user namespace of its own"]
fn watch_limit_degrades_to_polling_then_restores_without_losing_state() {
    const NAME: &str = "watch_limit_degrades_to_polling_then_restores_without_losing_state";
    if std::env::var_os(IN_USER_NAMESPACE).is_none() {
        // The limit is per user: lowered for root on the machine, it would fail every other
        // process's watches, and root's count moves with them. A new user namespace has a limit
        // of its own (user.max_inotify_watches), and no watch but this test's.
        require_root("creates a user namespace");
        let output = Command::new("unshare")
            .args(["--user", "--map-root-user"])
            .arg(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--include-ignored", "--nocapture"])
            .env(IN_USER_NAMESPACE, "1")
            .output()
            .expect("run unshare (util-linux)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && text.contains("test result: ok. 1 passed"),
            "the test in its own user namespace failed:\n{text}"
        );
        return;
    }
    let dir = TempDir::new("enospc");
    let root = dir.path().join("tree");
    for d in 0..6 {
        fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
    }
    block_on(async {
        // Room for two watches (the root and one directory), in this user namespace only.
        let limit_guard = SysctlGuard::set("/proc/sys/user/max_inotify_watches", 2);
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
