//! The file reader's IO: one inotify instance, its watches on directories, and reading its
//! events.
//!
//! A watch removed by us may still have events queued, and the kernel confirms the removal with
//! IN_IGNORED: until then its descriptor is `retired`, so those late events are stale rather
//! than unknown (an unknown descriptor means we lost track, and costs a resync).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Every change that can alter what a path in the directory resolves to, or the directory's own
/// removal. EXCL_UNLINK: events of files unlinked but still open are not ours.
const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::EXCL_UNLINK);

/// inotify read buffer: room for ~250 events with short names per read(2).
const READ_BUFFER: usize = 16 * 1024;

/// read(2)s of the inotify fd per wake-up (up to 1 MiB of events).
const READS_PER_WAKE: usize = 64;

/// One inotify event, copied out of the read buffer.
#[derive(Debug)]
pub(super) struct RawEvent {
    pub(super) wd: i32,
    pub(super) mask: EventMask,
    pub(super) name: Option<OsString>,
}

/// What an event's watch descriptor stands for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A directory we watch.
    Dir(PathBuf),
    /// A watch we removed; its late events mean nothing.
    Retired,
    /// A descriptor we never had: we lost track of the kernel's watches.
    Unknown,
}

pub(super) struct Watches {
    inotify: AsyncFd<Inotify>,
    buf: Vec<u8>,
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    by_dir: HashMap<PathBuf, i32>,
    /// Watches we removed whose IN_IGNORED has not arrived yet.
    retired: HashSet<i32>,
}

impl Watches {
    /// A new inotify instance, registered with the runtime.
    pub(super) fn new() -> Result<Self> {
        let inotify = Inotify::init().map_err(|e| Error::inotify_init("file", e))?;
        let inotify = crate::sys::register(inotify, tokio::io::Interest::READABLE)
            .map_err(|e| Error::io("register inotify fd", e))?;
        Ok(Watches {
            inotify,
            buf: vec![0; READ_BUFFER],
            by_wd: HashMap::new(),
            by_dir: HashMap::new(),
            retired: HashSet::new(),
        })
    }

    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inotify.get_ref().as_raw_fd()
    }

    /// Number of directories watched (one inotify watch each).
    pub(super) fn count(&self) -> usize {
        self.by_wd.len()
    }

    pub(super) fn is_watched(&self, dir: &Path) -> bool {
        self.by_dir.contains_key(dir)
    }

    /// Waits for inotify events or `deadline`; returns the events read. Cancel-safe: nothing
    /// changes before the wait completes.
    pub(super) async fn read(&mut self, deadline: Option<Instant>) -> Result<Vec<RawEvent>> {
        let mut raw = Vec::new();
        tokio::select! {
            guard = self.inotify.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("wait for inotify", e))?;
                let buf = &mut self.buf;
                // Bounded, so a storm cannot hold the runtime's thread; readiness is cleared
                // only by EAGAIN, so a wait after an early stop returns at once.
                for _ in 0..READS_PER_WAKE {
                    match guard.try_io(|fd| {
                        let events = fd.get_mut().read_events(buf)?;
                        raw.extend(events.map(|e| RawEvent {
                            wd: e.wd.get_watch_descriptor_id(),
                            mask: e.mask,
                            name: e.name.map(|n| n.to_os_string()),
                        }));
                        Ok(())
                    }) {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => return Err(Error::io("read inotify events", e)),
                        Err(_would_block) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {}
        }
        Ok(raw)
    }

    /// Which directory `event` is about. IN_IGNORED ends a watch: the kernel dropped it (the
    /// directory is gone), or it confirms one we removed.
    pub(super) fn origin(&mut self, event: &RawEvent) -> Origin {
        let ignored = event.mask.contains(EventMask::IGNORED);
        let Some((_, dir)) = self.by_wd.get(&event.wd) else {
            if ignored {
                self.retired.remove(&event.wd);
                return Origin::Retired;
            }
            return match self.retired.contains(&event.wd) {
                true => Origin::Retired,
                false => Origin::Unknown,
            };
        };
        let dir = dir.clone();
        if ignored {
            self.by_wd.remove(&event.wd);
            self.by_dir.remove(&dir);
        }
        Origin::Dir(dir)
    }

    /// Watches `dir`. Without `follow`, a symlink is refused (ENOTDIR) rather than followed:
    /// a link inside a tree must not bring its target into the tree.
    pub(super) fn add(&mut self, dir: &Path, follow: bool) -> io::Result<()> {
        let mask = match follow {
            true => DIR_MASK,
            false => DIR_MASK | WatchMask::DONT_FOLLOW,
        };
        let wd = self.inotify.get_ref().watches().add(dir, mask)?;
        let id = wd.get_watch_descriptor_id();
        self.retired.remove(&id);
        if let Some(old) = self.by_dir.insert(dir.to_path_buf(), id) {
            if old != id {
                // The path leads to another directory now (a symlinked root re-pointed, a
                // directory renamed over): the old one's watch goes, its late events with it.
                self.retire(old);
            }
        }
        self.by_wd.insert(id, (wd, dir.to_path_buf()));
        Ok(())
    }

    /// Drops the watches of every directory not in `needed`.
    pub(super) fn retain(&mut self, needed: &HashSet<&PathBuf>) {
        let unused: Vec<PathBuf> = self
            .by_dir
            .keys()
            .filter(|d| !needed.contains(d))
            .cloned()
            .collect();
        for dir in unused {
            if let Some(id) = self.by_dir.remove(&dir) {
                self.retire(id);
            }
        }
    }

    /// Removes watch `id`; the kernel still sends IN_IGNORED (and maybe queued events) for it.
    fn retire(&mut self, id: i32) {
        if let Some((wd, _)) = self.by_wd.remove(&id) {
            self.retired.insert(id);
            let _ = self.inotify.get_ref().watches().remove(wd);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
