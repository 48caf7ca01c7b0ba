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
//! cgroups-rs is not used: it has no cgroup v2 event API (its notification support is the v1
//! `memory.oom_control` eventfd), and creating a cgroup is a `mkdir` the tests do directly.

mod reading;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::ops::Bound;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::model::{Batch, EventKind, ResyncReason};
use crate::sys::PriorityPoll;

pub use crate::cgroupfs::cgroup2_mount;
use crate::cgroupfs::{self, resolve};
pub use crate::model::{CgroupEvent, CgroupState};

/// Which file of a watched cgroup an epoll token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Events,
    Memory,
}

struct Watched {
    events: Option<File>,
    memory: Option<File>,
    state: CgroupState,
}

/// A parent watched for children.
struct Parent {
    /// Its children's paths now (what `KernelEvents::cgroup_children` shows).
    names: BTreeSet<PathBuf>,
    /// Its children now, with their inode numbers (a name listed again with another inode is a
    /// child removed and created again).
    children: BTreeMap<PathBuf, u64>,
    /// Whether the parent exists and is watched; a removed one waits in `waiting`.
    present: bool,
}

/// An inotify watch on a directory, which may serve several roles (the parent of a watched
/// cgroup, a parent watched for children, the ancestor a removed cgroup is waited for through).
struct DirWatch {
    wd: WatchDescriptor,
    /// The directory's inode when watched: after a queue overflow, a directory found under the
    /// same name with another inode was removed and created again, and our watch is dead.
    ino: u64,
}

/// Inotify token in the epoll set.
const INOTIFY_TOKEN: u64 = 0;

pub(crate) struct CgroupReader {
    poll: AsyncFd<PriorityPoll>,
    inotify: Inotify,
    inotify_buf: Vec<u8>,
    watched: BTreeMap<PathBuf, Watched>,
    tokens: HashMap<u64, (PathBuf, Which)>,
    next_token: u64,
    /// Cgroups given to `cgroup()`: watched again when they are created again.
    explicit: BTreeSet<PathBuf>,
    /// Parents watched for children.
    parents: BTreeMap<PathBuf, Parent>,
    /// Configured cgroups (explicit or parents) that are gone, with the ancestor watched for
    /// their return (`None`: to be planned).
    waiting: BTreeMap<PathBuf, Option<PathBuf>>,
    by_wd: HashMap<i32, PathBuf>,
    watches: HashMap<PathBuf, DirWatch>,
    /// Reading buffer shared by every cgroup file (grows only if a reading fills it).
    read_buf: Vec<u8>,
    /// Malformed lines and missing keys seen since the last `handle` (counted as skipped).
    anomalies: u64,
}

/// Watch mask for a parent: child directories created or removed.
const PARENT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// Watch mask for the parent directory of a watched cgroup: the cgroup's removal (or rename).
const REMOVAL_MASK: WatchMask = WatchMask::DELETE
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::ONLYDIR);

/// Watch mask for the nearest existing ancestor of a configured cgroup that is gone: the next
/// directory on the way to it being created.
const ANCESTOR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// Bound on re-planning a wait while directories on the way keep appearing and vanishing; the
/// next inotify event plans again.
const MAX_WAIT_ROUNDS: usize = 64;

impl CgroupReader {
    /// `cgroups` are watched themselves; `parents` are watched for children, and every child
    /// is watched as it appears.
    pub(crate) fn new(cgroups: Vec<PathBuf>, parents: Vec<PathBuf>) -> Result<Self> {
        let mount = cgroup2_mount()?;
        let poll = PriorityPoll::new().map_err(|e| Error::io("epoll_create1", e))?;
        let inotify = Inotify::init().map_err(|e| Error::inotify_init("cgroup", e))?;
        poll.add_readable(inotify.as_fd(), INOTIFY_TOKEN)
            .map_err(|e| Error::io("add inotify fd to epoll", e))?;
        let mut reader = CgroupReader {
            poll: crate::sys::register(poll, tokio::io::Interest::READABLE)
                .map_err(|e| Error::io("register epoll fd", e))?,
            inotify,
            inotify_buf: vec![0; 4096],
            watched: BTreeMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            explicit: BTreeSet::new(),
            parents: BTreeMap::new(),
            waiting: BTreeMap::new(),
            by_wd: HashMap::new(),
            watches: HashMap::new(),
            read_buf: Vec::new(),
            anomalies: 0,
        };
        let mut scratch = Vec::new();
        for cg in cgroups {
            let path = resolve(&mount, &cg)?;
            reader.watch(&path, false, &mut scratch)?;
            reader.explicit.insert(path);
        }
        for parent in parents {
            let path = resolve(&mount, &parent)?;
            reader.add_watch(&path, PARENT_MASK).map_err(|e| {
                Error::io(format!("watch cgroup {} for children", path.display()), e)
            })?;
            reader.watch_for_removal(&path)?;
            let children = list_children(&path);
            for child in children.keys() {
                // A child may vanish between listing and opening: that is not an error.
                let _ = reader.watch(child, false, &mut scratch);
            }
            reader.parents.insert(
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
        self.watched
            .iter()
            .map(|(p, w)| (p.clone(), w.state.clone()))
            .collect()
    }

    /// Children of a parent watched for children.
    pub(crate) fn children(&self, parent: &Path) -> Option<&BTreeSet<PathBuf>> {
        self.parents.get(parent).map(|p| &p.names)
    }

    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = vec![self.poll.get_ref().as_raw_fd(), self.inotify.as_raw_fd()];
        for w in self.watched.values() {
            fds.extend(
                w.events
                    .iter()
                    .chain(w.memory.iter())
                    .map(|f| f.as_raw_fd()),
            );
        }
        fds
    }

    /// Adds `mask` to the inotify watch on `dir` (creating it if needed).
    fn add_watch(&mut self, dir: &Path, mask: WatchMask) -> std::io::Result<()> {
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

    /// Removes the inotify watch on `dir` if no role needs it any more.
    fn release(&mut self, dir: &Path) {
        // Children sort right after their parent: the first one decides.
        let has_watched_child = || {
            self.watched
                .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(dir))
                .any(|(k, _)| k.parent() == Some(dir))
        };
        let needed = self.parents.get(dir).is_some_and(|p| p.present)
            || has_watched_child()
            || self
                .parents
                .iter()
                .any(|(p, state)| state.present && p.parent() == Some(dir))
            || self.waiting.values().any(|a| a.as_deref() == Some(dir));
        if needed {
            return;
        }
        if let Some(w) = self.watches.remove(dir) {
            self.by_wd.remove(&w.wd.get_watch_descriptor_id());
            // Fails harmlessly if the kernel dropped it already (the directory is gone).
            let _ = self.inotify.watches().remove(w.wd);
        }
    }

    /// Watches the parent directory of `path` for its removal.
    fn watch_for_removal(&mut self, path: &Path) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(()); // "/": never removed
        };
        self.add_watch(parent, REMOVAL_MASK).map_err(|e| {
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

    fn release_parent_of(&mut self, path: &Path) {
        if let Some(parent) = path.parent() {
            self.release(parent);
        }
    }

    /// The kernel dropped our watch on `dir` (IN_IGNORED), or it is dead (found to be on an old
    /// inode after an overflow): forget it.
    fn watch_gone(&mut self, dir: &Path) {
        if let Some(w) = self.watches.remove(dir) {
            self.by_wd.remove(&w.wd.get_watch_descriptor_id());
        }
    }

    /// Opens a cgroup's event files and registers them. With `from_zero`, the first reading is
    /// compared with a fresh cgroup's state (a child that appears already populated reports
    /// it); otherwise it is the silent baseline.
    fn watch(&mut self, path: &Path, from_zero: bool, out: &mut Vec<CgroupEvent>) -> Result<()> {
        if self.watched.contains_key(path) {
            return Ok(());
        }
        let open = |name: &str| -> Result<Option<File>> {
            match cgroupfs::open_control_file(&path.join(name), false) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("open {}/{name}", path.display()), e)),
            }
        };
        // The removal watch goes in first: a removal after it is an event, one before it makes
        // the opens (or the check below) fail.
        self.watch_for_removal(path)?;
        let opened = open("cgroup.events").and_then(|events| {
            // Only the root cgroup has no cgroup.events; elsewhere it means the cgroup is gone.
            if events.is_none() && !path.is_dir() {
                return Err(Error::io(
                    format!("open {}/cgroup.events", path.display()),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            Ok((events, open("memory.events")?))
        });
        let (events, memory) = match opened {
            Ok(files) => files,
            Err(e) => {
                self.release_parent_of(path);
                return Err(e);
            }
        };
        let mut tokens = Vec::new();
        for (file, which) in [(&events, Which::Events), (&memory, Which::Memory)] {
            if let Some(f) = file {
                let token = self.next_token;
                self.next_token += 1;
                if let Err(e) = self.poll.get_ref().add_priority(f.as_fd(), token) {
                    for f in events.iter().chain(memory.iter()) {
                        let _ = self.poll.get_ref().remove(f.as_fd());
                    }
                    self.release_parent_of(path);
                    return Err(Error::io(format!("add {} to epoll", path.display()), e));
                }
                tokens.push((token, which));
            }
        }
        for (token, which) in tokens {
            self.tokens.insert(token, (path.to_path_buf(), which));
        }
        let state = CgroupState {
            memory_events: memory.is_some(),
            ..CgroupState::default()
        };
        self.watched.insert(
            path.to_path_buf(),
            Watched {
                events,
                memory,
                state,
            },
        );
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
        let Some(w) = self.watched.get_mut(path) else {
            return;
        };
        let file = match which {
            Which::Events => w.events.as_ref(),
            Which::Memory => w.memory.as_ref(),
        };
        let Some(file) = file else {
            return;
        };
        let n = match cgroupfs::read_snapshot(file, &mut self.read_buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.anomalies += 1; // too large to be a file we understand: skipped
                return;
            }
            Err(_) => {
                // ENODEV after rmdir; any other error also means we cannot follow it.
                self.forget(path, out);
                return;
            }
        };
        let parsed = reading::parse_flat_keyed(&self.read_buf[..n]);
        let state = &mut w.state;
        match which {
            Which::Events => {
                let now = reading::events_reading((state.populated, state.frozen), &parsed);
                self.anomalies += now.anomalies;
                let (populated, frozen) = (now.populated, now.frozen);
                if populated != state.populated {
                    state.populated = populated;
                    out.push(CgroupEvent::Populated {
                        path: path.to_path_buf(),
                        populated,
                    });
                }
                if frozen != state.frozen {
                    state.frozen = frozen;
                    out.push(CgroupEvent::Frozen {
                        path: path.to_path_buf(),
                        frozen,
                    });
                }
            }
            Which::Memory => {
                let change = reading::counter_change(&state.memory, &parsed.values);
                self.anomalies += parsed.malformed + change.missing;
                let is_change = change.is_change();
                state.memory = change.totals;
                if !is_change {
                    return;
                }
                out.push(CgroupEvent::Memory {
                    path: path.to_path_buf(),
                    deltas: change.deltas,
                    totals: state.memory.clone(),
                    resets: change.resets,
                });
            }
        }
    }

    /// Stops following a cgroup that is gone; reports `Removed` once. An explicitly watched
    /// cgroup is then waited for.
    fn forget(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) {
        let Some(w) = self.watched.remove(path) else {
            return;
        };
        for f in w.events.iter().chain(w.memory.iter()) {
            let _ = self.poll.get_ref().remove(f.as_fd());
        }
        self.tokens.retain(|_, (p, _)| p != path);
        self.release_parent_of(path);
        // Once: a cgroup no longer in `watched` never gets here again. (No set of removed
        // paths is kept: with short-lived children, e.g. systemd's run-*.scope, it would grow
        // for ever.)
        out.push(CgroupEvent::Removed {
            path: path.to_path_buf(),
        });
        if self.explicit.contains(path) {
            self.waiting.entry(path.to_path_buf()).or_insert(None);
        }
    }

    /// Waits for any watched file or the inotify fd. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Result<()> {
        let mut guard = self
            .poll
            .readable()
            .await
            .map_err(|e| Error::io("wait for cgroup files", e))?;
        // Cleared before draining: a notification after the drain sets it again.
        guard.clear_ready();
        Ok(())
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
        let mut tokens = Vec::new();
        // Level-triggered: an fd stays ready until re-read, so a few passes drain everything.
        for _ in 0..16 {
            tokens.clear();
            let n = self
                .poll
                .get_ref()
                .ready_now(&mut tokens)
                .map_err(|e| Error::io("epoll_wait", e))?;
            if n == 0 {
                break;
            }
            for token in &tokens {
                if *token == INOTIFY_TOKEN {
                    if self.read_inotify(events)? {
                        for e in events.drain(..) {
                            out.push(EventKind::Cgroup(e));
                        }
                        self.resync(out)?;
                    }
                } else if let Some((path, which)) = self.tokens.get(token).cloned() {
                    self.reread(&path, which, events);
                }
            }
        }
        self.settle_waiting(events)
    }

    /// Reads inotify until EAGAIN; returns whether the queue overflowed.
    fn read_inotify(&mut self, out: &mut Vec<CgroupEvent>) -> Result<bool> {
        let mut overflow = false;
        let mut dirty_parents = BTreeSet::new();
        let mut removed = BTreeSet::new();
        let mut dropped = BTreeSet::new();
        loop {
            let events = match self.inotify.read_events(&mut self.inotify_buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::io("read cgroup inotify", e)),
            };
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    overflow = true;
                    continue;
                }
                let wd = ev.wd.get_watch_descriptor_id();
                let Some(dir) = self.by_wd.get(&wd).cloned() else {
                    continue; // a watch we already dropped
                };
                if self.parents.get(&dir).is_some_and(|p| p.present) {
                    dirty_parents.insert(dir.clone());
                }
                if ev
                    .mask
                    .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
                {
                    if let Some(name) = ev.name {
                        removed.insert(dir.join(name));
                    }
                }
                if ev.mask.contains(EventMask::IGNORED) {
                    // The kernel dropped the watch: the directory is gone.
                    removed.insert(dir.clone());
                    dropped.insert(dir);
                }
            }
        }
        for dir in &dropped {
            self.watch_gone(dir);
        }
        for dir in removed {
            self.dir_removed(&dir, out);
        }
        // The waits come first, so a cgroup that is back reports `Reappeared` before its parent
        // reports it as a child.
        self.settle_waiting(out)?;
        for parent in dirty_parents {
            self.relist(&parent, out);
        }
        Ok(overflow)
    }

    /// A directory is gone: every role it had ends, and configured ones wait for it.
    fn dir_removed(&mut self, dir: &Path, out: &mut Vec<CgroupEvent>) {
        self.forget(dir, out);
        let was_parent = self.parents.get(dir).is_some_and(|p| p.present);
        if was_parent {
            // Its children went before it (rmdir needs an empty cgroup); report any we missed.
            self.relist(dir, out);
            if let Some(p) = self.parents.get_mut(dir) {
                p.present = false;
            }
            self.waiting.entry(dir.to_path_buf()).or_insert(None);
            self.release_parent_of(dir);
        }
        // Waits through this directory move up to the next existing ancestor.
        for ancestor in self.waiting.values_mut() {
            if ancestor.as_deref() == Some(dir) {
                *ancestor = None;
            }
        }
        self.release(dir);
    }

    /// Re-lists a parent's children and reports the difference.
    fn relist(&mut self, parent: &Path, out: &mut Vec<CgroupEvent>) {
        let fresh = list_children(parent);
        let Some(p) = self.parents.get(parent) else {
            return;
        };
        // A name listed again with another inode was removed and created again.
        let removed: Vec<PathBuf> = p
            .children
            .iter()
            .filter(|(child, ino)| fresh.get(*child) != Some(*ino))
            .map(|(child, _)| child.clone())
            .collect();
        let added: Vec<PathBuf> = fresh
            .iter()
            .filter(|(child, ino)| p.children.get(*child) != Some(*ino))
            .map(|(child, _)| child.clone())
            .collect();
        for child in removed {
            self.forget(&child, out);
            out.push(CgroupEvent::ChildRemoved {
                parent: parent.to_path_buf(),
                child,
            });
        }
        if let Some(p) = self.parents.get_mut(parent) {
            p.names = fresh.keys().cloned().collect();
            p.children = fresh;
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
        let paths: Vec<PathBuf> = self.waiting.keys().cloned().collect();
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
                if let Some(Some(ancestor)) = self.waiting.remove(path) {
                    self.release(&ancestor);
                }
                return Ok(());
            }
            let Some(ancestor) = nearest_existing_ancestor(path) else {
                return Ok(()); // nothing exists above it: not inside a mount any more
            };
            let previous = self.waiting.get(path).cloned().flatten();
            if previous.as_ref() != Some(&ancestor) || !self.watches.contains_key(&ancestor) {
                match self.add_watch(&ancestor, ANCESTOR_MASK) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
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
                self.waiting
                    .insert(path.to_path_buf(), Some(ancestor.clone()));
                if let Some(previous) = previous {
                    self.release(&previous);
                }
            }
            if !path.is_dir() && nearest_existing_ancestor(path).as_ref() == Some(&ancestor) {
                return Ok(());
            }
        }
        Ok(()) // still changing: the next event on the ancestor plans again
    }

    /// Takes up every role of a configured cgroup that exists again; false if it vanished
    /// again meanwhile (its wait goes on).
    fn reestablish(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) -> bool {
        if self.explicit.contains(path) && !self.watched.contains_key(path) {
            let mut first = Vec::new();
            if self.watch(path, true, &mut first).is_ok() {
                out.push(CgroupEvent::Reappeared {
                    path: path.to_path_buf(),
                });
                out.extend(first);
            }
        }
        if self.parents.get(path).is_some_and(|p| !p.present)
            && self.add_watch(path, PARENT_MASK).is_ok()
            && self.watch_for_removal(path).is_ok()
        {
            if let Some(p) = self.parents.get_mut(path) {
                p.present = true;
            }
            self.relist(path, out);
        }
        // Every role must be in place (a read may have found it gone again already).
        (!self.explicit.contains(path) || self.watched.contains_key(path))
            && self.parents.get(path).is_none_or(|p| p.present)
    }

    /// The inotify queue overflowed: re-read everything and report the difference.
    fn resync(&mut self, out: &mut Batch) -> Result<()> {
        out.overflowed();
        out.resync(ResyncReason::QueueOverflow);
        let mut events = Vec::new();
        // Removals (IN_IGNORED) may be among the lost events: a watch on a directory that is
        // gone, or that was created again under the same name, is dead.
        let dead: Vec<PathBuf> = self
            .watches
            .iter()
            .filter(|(dir, w)| std::fs::metadata(dir).map_or(true, |m| m.ino() != w.ino))
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in &dead {
            self.watch_gone(dir);
        }
        for dir in &dead {
            self.dir_removed(dir, &mut events);
        }
        let paths: Vec<PathBuf> = self.watched.keys().cloned().collect();
        for path in paths {
            self.reread(&path, Which::Events, &mut events);
            self.reread(&path, Which::Memory, &mut events);
        }
        self.settle_waiting(&mut events)?;
        let parents: Vec<PathBuf> = self
            .parents
            .iter()
            .filter(|(_, p)| p.present)
            .map(|(path, _)| path.clone())
            .collect();
        for parent in parents {
            self.relist(&parent, &mut events);
        }
        for e in events {
            out.push(EventKind::Cgroup(e));
        }
        out.resync_done();
        Ok(())
    }
}

/// Sub-directories of a cgroup (its child cgroups), with their inode numbers.
fn list_children(parent: &Path) -> BTreeMap<PathBuf, u64> {
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
fn nearest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|d| d.is_dir())
        .map(Path::to_path_buf)
}
