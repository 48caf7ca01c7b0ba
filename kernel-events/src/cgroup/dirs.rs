//! The cgroup reader's directory watches (IO): one inotify instance. A watch on a directory may
//! serve several roles at once (the parent of a watched cgroup, a parent watched for children,
//! the ancestor a removed cgroup is waited for through), so masks are always added to
//! (IN_MASK_ADD); which roles still need a watch is the model's to say.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::error::{Error, Result};

/// Watch mask for a parent: child directories created or removed.
pub(super) const PARENT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// Watch mask for the parent directory of a watched cgroup: the cgroup's removal (or rename).
pub(super) const REMOVAL_MASK: WatchMask = WatchMask::DELETE
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::ONLYDIR);

/// Watch mask for the nearest existing ancestor of a configured cgroup that is gone: the next
/// directory on the way to it being created.
pub(super) const ANCESTOR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// An inotify watch on a directory.
struct DirWatch {
    wd: WatchDescriptor,
    /// The directory's inode when watched: after a queue overflow, a directory found under the
    /// same name with another inode was removed and created again, and our watch is dead.
    ino: u64,
}

/// What one read of the inotify queue (until EAGAIN) found.
#[derive(Debug, Default)]
pub(super) struct DirEvents {
    /// IN_Q_OVERFLOW: events were dropped.
    pub(super) overflow: bool,
    /// Directories that had an event.
    pub(super) touched: BTreeSet<PathBuf>,
    /// Paths gone: entries deleted or moved away, and directories whose watch the kernel
    /// dropped (IN_IGNORED).
    pub(super) removed: BTreeSet<PathBuf>,
    /// Directories whose watch the kernel dropped: the watch is forgotten already.
    pub(super) dropped: BTreeSet<PathBuf>,
}

pub(super) struct DirWatches {
    inotify: Inotify,
    buf: Vec<u8>,
    by_wd: HashMap<i32, PathBuf>,
    watches: HashMap<PathBuf, DirWatch>,
}

impl DirWatches {
    pub(super) fn new() -> Result<Self> {
        Ok(DirWatches {
            inotify: Inotify::init().map_err(|e| Error::inotify_init("cgroup", e))?,
            buf: vec![0; 4096],
            by_wd: HashMap::new(),
            watches: HashMap::new(),
        })
    }

    pub(super) fn is_watched(&self, dir: &Path) -> bool {
        self.watches.contains_key(dir)
    }

    /// Adds `mask` to the watch on `dir` (creating it if needed).
    pub(super) fn add(&mut self, dir: &Path, mask: WatchMask) -> io::Result<()> {
        let wd = self
            .inotify
            .watches()
            .add(dir, mask | WatchMask::MASK_ADD)?;
        let ino = std::fs::metadata(dir)?.ino();
        let id = wd.get_watch_descriptor_id();
        if let Some(old) = self.watches.insert(dir.to_path_buf(), DirWatch { wd, ino }) {
            if old.wd.get_watch_descriptor_id() != id {
                // The directory was created again: the old watch died with the old inode.
                self.by_wd.remove(&old.wd.get_watch_descriptor_id());
            }
        }
        self.by_wd.insert(id, dir.to_path_buf());
        Ok(())
    }

    /// Removes the watch on `dir`.
    pub(super) fn remove(&mut self, dir: &Path) {
        if let Some(w) = self.watches.remove(dir) {
            self.by_wd.remove(&w.wd.get_watch_descriptor_id());
            // Fails harmlessly if the kernel dropped it already (the directory is gone).
            let _ = self.inotify.watches().remove(w.wd);
        }
    }

    /// Forgets the watch on `dir`, which the kernel dropped or which is dead.
    pub(super) fn forget(&mut self, dir: &Path) {
        if let Some(w) = self.watches.remove(dir) {
            self.by_wd.remove(&w.wd.get_watch_descriptor_id());
        }
    }

    /// Watched directories that are gone, or that were created again (another inode): after a
    /// queue overflow their removal may be among the lost events, and their watch is dead.
    pub(super) fn dead(&self) -> Vec<PathBuf> {
        self.watches
            .iter()
            .filter(|(dir, w)| std::fs::metadata(dir).map_or(true, |m| m.ino() != w.ino))
            .map(|(dir, _)| dir.clone())
            .collect()
    }

    /// Reads the queue until EAGAIN; the watches the kernel dropped are forgotten.
    pub(super) fn read(&mut self) -> Result<DirEvents> {
        let mut found = DirEvents::default();
        loop {
            let events = match self.inotify.read_events(&mut self.buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::io("read cgroup inotify", e)),
            };
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    found.overflow = true;
                    continue;
                }
                let wd = ev.wd.get_watch_descriptor_id();
                let Some(dir) = self.by_wd.get(&wd).cloned() else {
                    continue; // a watch we already dropped
                };
                found.touched.insert(dir.clone());
                if ev
                    .mask
                    .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
                {
                    if let Some(name) = ev.name {
                        found.removed.insert(dir.join(name));
                    }
                }
                if ev.mask.contains(EventMask::IGNORED) {
                    // The kernel dropped the watch: the directory is gone.
                    found.removed.insert(dir.clone());
                    found.dropped.insert(dir);
                }
            }
        }
        for dir in &found.dropped {
            self.forget(dir);
        }
        Ok(found)
    }
}

impl AsFd for DirWatches {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

/// Sub-directories of a cgroup (its child cgroups), with their inode numbers.
pub(super) fn list_children(parent: &Path) -> BTreeMap<PathBuf, u64> {
    std::fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| (e.path(), e.ino()))
                .collect()
        })
        .unwrap_or_default()
}

/// The closest ancestor of `path` that exists as a directory.
pub(super) fn nearest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|d| d.is_dir())
        .map(Path::to_path_buf)
}
