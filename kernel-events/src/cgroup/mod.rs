//! cgroup v2: `cgroup.events`, `memory.events`, and child cgroups coming and going.
//!
//! The kernel signals a change of `cgroup.events` or `memory.events` by waking pollers of an
//! open fd with EPOLLPRI (it is rate-limited, never dropped). All those fds are registered,
//! level-triggered, in one epoll instance of ours, which the runtime watches as a single fd.
//! A wake-up is only a hint: the whole file is re-read and compared with the last reading, and
//! what changed is reported as a new state (`populated`, `frozen`) or as counter deltas
//! (`memory.events`), so several notifications folded into one wake-up are never miscounted.
//!
//! Removal is seen through inotify on the cgroup's parent directory (IN_DELETE of its name:
//! IN_DELETE_SELF on the cgroup's own directory is not usable, since the kernel sends it only
//! once the last open file inside is closed, and we hold `cgroup.events` open) and through ENODEV
//! when re-reading; either way it is reported once. A parent watched for children is watched
//! with inotify for directories created and removed; the children are re-listed on each event,
//! and a child whose name is listed again with another inode was removed and created again.
//!
//! A configured cgroup (given to `cgroup` or `cgroup_children`) that is removed is waited for
//! through a watch on its nearest existing ancestor, as the file reader does for missing paths:
//! when it is created again it is watched again, and an explicitly watched one reports
//! `Reappeared`, then its state as read from a fresh cgroup's. One inotify watch may serve
//! several of these roles for the same directory, so masks are always added to (IN_MASK_ADD) and
//! a watch is removed only when no role needs it any more.
//!
//! The parts: `files` (IO: the control files and the epoll set), `dirs` (IO: the inotify
//! watches on directories), `model` (states, roles, waits) and `diff` (readings and listings
//! against the last ones, as events). This file drives them.
//!
//! cgroups-rs is not used: it has no cgroup v2 event API (its notification support is the v1
//! `memory.oom_control` eventfd), and creating a cgroup is a `mkdir` the tests do directly.

mod diff;
mod dirs;
mod files;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{Batch, EventKind, ResyncReason};
use crate::sys;
use dirs::{DirWatches, ANCESTOR_MASK, PARENT_MASK, REMOVAL_MASK};
use files::{ControlFiles, Ready, Which};
use model::{CgroupModel, Parent};

pub use crate::cgroupfs::cgroup2_mount;
use crate::cgroupfs::resolve;
pub use crate::model::{CgroupEvent, CgroupState};

/// Bound on re-planning a wait while directories on the way keep appearing and vanishing; the
/// next inotify event plans again.
const MAX_WAIT_ROUNDS: usize = 64;

/// Passes over the ready files per wake-up. Level-triggered: a file stays ready until re-read,
/// so a few passes drain everything.
const PASSES_PER_WAKE: usize = 16;

pub(crate) struct CgroupReader {
    files: ControlFiles,
    dirs: DirWatches,
    model: CgroupModel,
    /// Malformed lines and missing keys seen since the last `handle` (counted as skipped).
    anomalies: u64,
}

impl CgroupReader {
    /// `cgroups` are watched themselves; `parents` are watched for children, and every child
    /// is watched as it appears.
    pub(crate) fn new(cgroups: Vec<PathBuf>, parents: Vec<PathBuf>) -> Result<Self> {
        let mount = cgroup2_mount()?;
        let dirs = DirWatches::new()?;
        let mut reader = CgroupReader {
            files: ControlFiles::new(dirs.as_fd())?,
            dirs,
            model: CgroupModel::default(),
            anomalies: 0,
        };
        let mut scratch = Vec::new();
        for cg in cgroups {
            let path = resolve(&mount, &cg)?;
            reader.watch(&path, false, &mut scratch)?;
            reader.model.explicit.insert(path);
        }
        for parent in parents {
            let path = resolve(&mount, &parent)?;
            reader.dirs.add(&path, PARENT_MASK).map_err(|e| {
                Error::io(format!("watch cgroup {} for children", path.display()), e)
            })?;
            reader.watch_for_removal(&path)?;
            let children = dirs::list_children(&path);
            for child in children.keys() {
                // A child may vanish between listing and opening: that is not an error.
                let _ = reader.watch(child, false, &mut scratch);
            }
            reader.model.parents.insert(
                path,
                Parent {
                    names: children.keys().cloned().collect(),
                    children,
                    present: true,
                },
            );
        }
        Ok(reader)
    }

    /// The last state read of every watched (and not removed) cgroup.
    pub(crate) fn states(&self) -> BTreeMap<PathBuf, CgroupState> {
        self.model.watched.clone()
    }

    /// Children of a parent watched for children.
    pub(crate) fn children(&self, parent: &Path) -> Option<&BTreeSet<PathBuf>> {
        self.model.parents.get(parent).map(|p| &p.names)
    }

    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = self.files.raw_fds();
        fds.push(self.dirs.as_fd().as_raw_fd());
        fds
    }

    /// Removes the watch on `dir` if no role needs it any more.
    fn release(&mut self, dir: &Path) {
        if !self.model.needs_watch(dir) {
            self.dirs.remove(dir);
        }
    }

    fn release_parent_of(&mut self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.release(parent);
        }
    }

    /// Watches the parent directory of `path` for its removal.
    fn watch_for_removal(&mut self, path: &Path) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(()); // "/": never removed
        };
        self.dirs.add(parent, REMOVAL_MASK).map_err(|e| {
            Error::io(
                format!(
                    "watch {} for the removal of {}",
                    parent.display(),
                    path.display()
                ),
                e,
            )
        })
    }

    /// Opens a cgroup's event files and registers them. With `from_zero`, the first reading is
    /// compared with a fresh cgroup's state (a child that appears already populated reports
    /// it); otherwise it is the silent baseline.
    fn watch(&mut self, path: &Path, from_zero: bool, out: &mut Vec<CgroupEvent>) -> Result<()> {
        if self.model.watched.contains_key(path) {
            return Ok(());
        }
        // The removal watch goes in first: a removal after it is an event, one before it makes
        // the opens fail.
        self.watch_for_removal(path)?;
        let memory_events = match self.files.open(path) {
            Ok(memory_events) => memory_events,
            Err(e) => {
                self.release_parent_of(path);
                return Err(e);
            }
        };
        let state = CgroupState {
            memory_events,
            ..CgroupState::default()
        };
        self.model.watched.insert(path.to_path_buf(), state);
        let mut first = Vec::new();
        self.reread(path, Which::Events, &mut first);
        self.reread(path, Which::Memory, &mut first);
        if from_zero {
            out.extend(first);
        }
        Ok(())
    }

    /// Re-reads one file and records what changed. ENODEV means the cgroup is gone.
    fn reread(&mut self, path: &Path, which: Which, out: &mut Vec<CgroupEvent>) {
        let Some(state) = self.model.watched.get_mut(path) else {
            return;
        };
        let bytes = match self.files.read(path, which) {
            None => return,
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.anomalies += 1; // too large to be a file we understand: skipped
                return;
            }
            Some(Err(_)) => {
                // ENODEV after rmdir; any other error also means we cannot follow it.
                self.forget(path, out);
                return;
            }
        };
        self.anomalies += match which {
            Which::Events => diff::apply_events_reading(path, state, bytes, out),
            Which::Memory => diff::apply_memory_reading(path, state, bytes, out),
        };
    }

    /// Stops following a cgroup that is gone; reports `Removed` once. An explicitly watched
    /// cgroup is then waited for.
    fn forget(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) {
        if self.model.watched.remove(path).is_none() {
            return;
        }
        self.files.close(path);
        self.release_parent_of(path);
        // Once: a cgroup no longer in `watched` never gets here again. (No set of removed
        // paths is kept: with short-lived children, e.g. systemd's run-*.scope, it would grow
        // for ever.)
        out.push(CgroupEvent::Removed {
            path: path.to_path_buf(),
        });
        if self.model.explicit.contains(path) {
            self.model.waiting.entry(path.to_path_buf()).or_insert(None);
        }
    }

    /// Waits for any watched file or the inotify fd. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Result<()> {
        self.files.wait().await
    }

    /// Handles everything ready. What was found before an error is still emitted.
    pub(crate) fn handle(&mut self, out: &mut Batch) -> Result<()> {
        let mut events = Vec::new();
        let result = self.handle_ready(&mut events, out);
        for e in events {
            out.push(EventKind::Cgroup(e));
        }
        out.skipped(std::mem::take(&mut self.anomalies));
        result
    }

    fn handle_ready(&mut self, events: &mut Vec<CgroupEvent>, out: &mut Batch) -> Result<()> {
        for _ in 0..PASSES_PER_WAKE {
            let ready = self.files.ready()?;
            if ready.is_empty() {
                break;
            }
            for what in ready {
                match what {
                    Ready::Directories => {
                        if self.read_inotify(events)? {
                            for e in events.drain(..) {
                                out.push(EventKind::Cgroup(e));
                            }
                            self.resync(out)?;
                        }
                    }
                    Ready::File(path, which) => self.reread(&path, which, events),
                }
            }
        }
        self.settle_waiting(events)
    }

    /// Reads inotify until EAGAIN; returns whether the queue overflowed.
    fn read_inotify(&mut self, out: &mut Vec<CgroupEvent>) -> Result<bool> {
        let found = self.dirs.read()?;
        let dirty_parents: Vec<PathBuf> = (found.touched.iter())
            .filter(|dir| self.model.is_present_parent(dir))
            .cloned()
            .collect();
        for dir in found.removed {
            self.dir_removed(&dir, out);
        }
        // The waits come first, so a cgroup that is back reports `Reappeared` before its parent
        // reports it as a child.
        self.settle_waiting(out)?;
        for parent in dirty_parents {
            self.relist(&parent, out);
        }
        Ok(found.overflow)
    }

    /// A directory is gone: every role it had ends, and configured ones wait for it.
    fn dir_removed(&mut self, dir: &Path, out: &mut Vec<CgroupEvent>) {
        self.forget(dir, out);
        if self.model.is_present_parent(dir) {
            // Its children went before it (rmdir needs an empty cgroup); report any we missed.
            self.relist(dir, out);
            if let Some(p) = self.model.parents.get_mut(dir) {
                p.present = false;
            }
            self.model.waiting.entry(dir.to_path_buf()).or_insert(None);
            self.release_parent_of(dir);
        }
        // Waits through this directory move up to the next existing ancestor.
        for ancestor in self.model.waiting.values_mut() {
            if ancestor.as_deref() == Some(dir) {
                *ancestor = None;
            }
        }
        self.release(dir);
    }

    /// Re-lists a parent's children and reports the difference.
    fn relist(&mut self, parent: &Path, out: &mut Vec<CgroupEvent>) {
        let fresh = dirs::list_children(parent);
        let Some(p) = self.model.parents.get_mut(parent) else {
            return;
        };
        let (removed, added) = diff::children_change(&p.children, &fresh);
        p.names = fresh.keys().cloned().collect();
        p.children = fresh;
        for child in removed {
            self.forget(&child, out);
            out.push(CgroupEvent::ChildRemoved {
                parent: parent.to_path_buf(),
                child,
            });
        }
        for child in added {
            out.push(CgroupEvent::ChildAdded {
                parent: parent.to_path_buf(),
                child: child.clone(),
            });
            // Gone again already: its removal is the next relist's.
            let _ = self.watch(&child, true, out);
        }
    }

    /// Re-plans every wait for a configured cgroup that is gone.
    fn settle_waiting(&mut self, out: &mut Vec<CgroupEvent>) -> Result<()> {
        let paths: Vec<PathBuf> = self.model.waiting.keys().cloned().collect();
        for path in paths {
            self.settle(&path, out)?;
        }
        Ok(())
    }

    /// Watches a configured cgroup again if it exists, or waits for it on its nearest existing
    /// ancestor. The watch goes in first and the check follows, so a directory created in
    /// between is never missed: if the check finds things changed, the plan is made again.
    fn settle(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) -> Result<()> {
        for _ in 0..MAX_WAIT_ROUNDS {
            if path.is_dir() && self.reestablish(path, out) {
                if let Some(Some(ancestor)) = self.model.waiting.remove(path) {
                    self.release(&ancestor);
                }
                return Ok(());
            }
            let Some(ancestor) = dirs::nearest_existing_ancestor(path) else {
                return Ok(()); // nothing exists above it: not inside a mount any more
            };
            let previous = self.model.waiting.get(path).cloned().flatten();
            if previous.as_ref() != Some(&ancestor) || !self.dirs.is_watched(&ancestor) {
                match self.dirs.add(&ancestor, ANCESTOR_MASK) {
                    Ok(()) => {}
                    Err(e) if sys::is_inotify_watch_limit(&e) => {
                        return Err(Error::io(
                            format!(
                                "watch {} for removed cgroup {} to come back",
                                ancestor.display(),
                                path.display()
                            ),
                            e,
                        ));
                    }
                    Err(_) => continue, // gone meanwhile: plan again
                }
                self.model
                    .waiting
                    .insert(path.to_path_buf(), Some(ancestor.clone()));
                if let Some(previous) = previous {
                    self.release(&previous);
                }
            }
            if !path.is_dir() && dirs::nearest_existing_ancestor(path).as_ref() == Some(&ancestor) {
                return Ok(());
            }
        }
        Ok(()) // still changing: the next event on the ancestor plans again
    }

    /// Takes up every role of a configured cgroup that exists again; false if it vanished
    /// again meanwhile (its wait goes on).
    fn reestablish(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) -> bool {
        if self.model.explicit.contains(path) && !self.model.watched.contains_key(path) {
            let mut first = Vec::new();
            if self.watch(path, true, &mut first).is_ok() {
                out.push(CgroupEvent::Reappeared {
                    path: path.to_path_buf(),
                });
                out.extend(first);
            }
        }
        if self.model.parents.get(path).is_some_and(|p| !p.present)
            && self.dirs.add(path, PARENT_MASK).is_ok()
            && self.watch_for_removal(path).is_ok()
        {
            if let Some(p) = self.model.parents.get_mut(path) {
                p.present = true;
            }
            self.relist(path, out);
        }
        // Every role must be in place (a read may have found it gone again already).
        self.model.is_established(path)
    }

    /// The inotify queue overflowed: re-read everything and report the difference.
    fn resync(&mut self, out: &mut Batch) -> Result<()> {
        out.overflowed();
        out.resync(ResyncReason::QueueOverflow);
        let mut events = Vec::new();
        // Removals (IN_IGNORED) may be among the lost events: a watch on a directory that is
        // gone, or that was created again under the same name, is dead.
        let dead = self.dirs.dead();
        for dir in &dead {
            self.dirs.forget(dir);
        }
        for dir in &dead {
            self.dir_removed(dir, &mut events);
        }
        let paths: Vec<PathBuf> = self.model.watched.keys().cloned().collect();
        for path in paths {
            self.reread(&path, Which::Events, &mut events);
            self.reread(&path, Which::Memory, &mut events);
        }
        self.settle_waiting(&mut events)?;
        for parent in self.model.present_parents() {
            self.relist(&parent, &mut events);
        }
        for e in events {
            out.push(EventKind::Cgroup(e));
        }
        out.resync_done();
        Ok(())
    }
}
