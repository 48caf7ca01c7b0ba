//! cgroup v2: `cgroup.events`, `memory.events`, and child cgroups coming and going.
//!
//! The kernel signals a change of `cgroup.events` or `memory.events` by waking pollers of an
//! open fd with EPOLLPRI (it is rate-limited, never dropped). All those fds are registered,
//! level-triggered, in one epoll instance of ours, which the runtime watches as a single fd.
//! A wake-up is only a hint: the whole file is re-read and compared with the last reading, and
//! what changed is reported as a new state (`populated`, `frozen`) or as counter deltas
//! (`memory.events`), so several notifications folded into one wake-up are never miscounted.
//!
//! Removal is seen through inotify (IN_DELETE_SELF on the cgroup's directory) and through ENODEV
//! when re-reading; either way it is reported once. A parent watched for children is watched
//! with inotify for directories created and removed; the children are re-listed on each event.
//!
//! cgroups-rs is not used: it has no cgroup v2 event API (its notification support is the v1
//! `memory.oom_control` eventfd), and creating a cgroup is a `mkdir` the tests do directly.

mod mount;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::unix::AsyncFd;

use crate::event::{Emitter, EventKind, ResyncReason, Source};
use crate::sys::PriorityPoll;
use crate::{Error, Result};

pub use mount::cgroup2_mount;
pub(crate) use mount::resolve;

/// A change of a watched cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CgroupEvent {
    /// `populated` in cgroup.events changed: whether any process lives in the cgroup or below.
    Populated {
        /// The cgroup directory.
        path: PathBuf,
        /// The new value.
        populated: bool,
    },
    /// `frozen` in cgroup.events changed.
    Frozen {
        /// The cgroup directory.
        path: PathBuf,
        /// The new value.
        frozen: bool,
    },
    /// Counters in memory.events went up.
    Memory {
        /// The cgroup directory.
        path: PathBuf,
        /// How much each counter that moved went up since the last reading.
        deltas: BTreeMap<String, u64>,
        /// Every counter's value now.
        totals: BTreeMap<String, u64>,
    },
    /// The cgroup was removed (reported once).
    Removed {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// A child cgroup appeared under a parent watched for children.
    ChildAdded {
        /// The parent.
        parent: PathBuf,
        /// The new child.
        child: PathBuf,
    },
    /// A child cgroup went away.
    ChildRemoved {
        /// The parent.
        parent: PathBuf,
        /// The removed child.
        child: PathBuf,
    },
}

/// The last state read for a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CgroupState {
    /// `populated` from cgroup.events.
    pub populated: bool,
    /// `frozen` from cgroup.events.
    pub frozen: bool,
    /// memory.events counters (empty where the memory controller is not enabled).
    pub memory: BTreeMap<String, u64>,
    /// Whether memory.events exists for this cgroup (memory controller enabled in the parent).
    pub memory_events: bool,
}

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
    /// inotify watch on the directory itself, for IN_DELETE_SELF.
    dir_wd: Option<i32>,
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
    /// Parents watched for children: their children now, and their inotify wd.
    parents: BTreeMap<PathBuf, (BTreeSet<PathBuf>, i32)>,
    by_wd: HashMap<i32, PathBuf>,
    removed: BTreeSet<PathBuf>,
}

/// Watch mask for a parent: child directories created or removed.
const PARENT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

impl CgroupReader {
    /// `cgroups` are watched themselves; `parents` are watched for children, and every child
    /// is watched as it appears.
    pub(crate) fn new(cgroups: Vec<PathBuf>, parents: Vec<PathBuf>) -> Result<Self> {
        let mount = cgroup2_mount()?;
        let poll = PriorityPoll::new().map_err(|e| Error::io("epoll_create1", e))?;
        let inotify = Inotify::init().map_err(|e| Error::io("inotify_init1", e))?;
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
            parents: BTreeMap::new(),
            by_wd: HashMap::new(),
            removed: BTreeSet::new(),
        };
        let mut scratch = Vec::new();
        for cg in cgroups {
            let path = resolve(&mount, &cg)?;
            reader.watch(&path, false, &mut scratch)?;
        }
        for parent in parents {
            let path = resolve(&mount, &parent)?;
            let wd = reader
                .inotify
                .watches()
                .add(&path, PARENT_MASK)
                .map_err(|e| Error::io(format!("watch {}", path.display()), e))?
                .get_watch_descriptor_id();
            reader.by_wd.insert(wd, path.clone());
            let children = list_children(&path);
            for child in &children {
                // A child may vanish between listing and opening: that is not an error.
                let _ = reader.watch(child, false, &mut scratch);
            }
            reader.parents.insert(path, (children, wd));
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
        self.parents.get(parent).map(|(c, _)| c)
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

    /// Opens a cgroup's event files and registers them. With `from_zero`, the first reading is
    /// compared with a fresh cgroup's state (a child that appears already populated reports
    /// it); otherwise it is the silent baseline.
    fn watch(&mut self, path: &Path, from_zero: bool, out: &mut Vec<CgroupEvent>) -> Result<()> {
        if self.watched.contains_key(path) {
            return Ok(());
        }
        let open = |name: &str| -> Result<Option<File>> {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path.join(name));
            match opened {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("open {}/{name}", path.display()), e)),
            }
        };
        let events = open("cgroup.events")?;
        let memory = open("memory.events")?;
        let dir_wd = self
            .inotify
            .watches()
            .add(path, WatchMask::DELETE_SELF | WatchMask::ONLYDIR)
            .map_err(|e| Error::io(format!("watch {}", path.display()), e))?
            .get_watch_descriptor_id();
        self.by_wd.insert(dir_wd, path.to_path_buf());
        for (file, which) in [(&events, Which::Events), (&memory, Which::Memory)] {
            if let Some(f) = file {
                let token = self.next_token;
                self.next_token += 1;
                self.poll
                    .get_ref()
                    .add_priority(f.as_fd(), token)
                    .map_err(|e| Error::io("add cgroup file to epoll", e))?;
                self.tokens.insert(token, (path.to_path_buf(), which));
            }
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
                dir_wd: Some(dir_wd),
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
        let mut buf = [0u8; 1024];
        let n = match file.read_at(&mut buf, 0) {
            Ok(n) => n,
            Err(_) => {
                // ENODEV after rmdir; any other error also means we cannot follow it.
                self.forget(path, out);
                return;
            }
        };
        let values = parse_flat_keyed(&buf[..n]);
        let state = &mut w.state;
        match which {
            Which::Events => {
                let populated = values.get("populated").copied().unwrap_or(0) != 0;
                let frozen = values.get("frozen").copied().unwrap_or(0) != 0;
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
                let mut deltas = BTreeMap::new();
                for (k, v) in &values {
                    let old = state.memory.get(k).copied().unwrap_or(0);
                    if *v > old {
                        deltas.insert(k.clone(), v - old);
                    }
                }
                let changed = values != state.memory;
                state.memory = values;
                if changed && !deltas.is_empty() {
                    out.push(CgroupEvent::Memory {
                        path: path.to_path_buf(),
                        deltas,
                        totals: state.memory.clone(),
                    });
                }
            }
        }
    }

    /// Stops following a cgroup that is gone; reports `Removed` once.
    fn forget(&mut self, path: &Path, out: &mut Vec<CgroupEvent>) {
        let Some(w) = self.watched.remove(path) else {
            return;
        };
        for f in w.events.iter().chain(w.memory.iter()) {
            let _ = self.poll.get_ref().remove(f.as_fd());
        }
        self.tokens.retain(|_, (p, _)| p != path);
        if let Some(wd) = w.dir_wd {
            self.by_wd.remove(&wd);
        }
        if self.removed.insert(path.to_path_buf()) {
            out.push(CgroupEvent::Removed {
                path: path.to_path_buf(),
            });
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

    /// Handles everything ready.
    pub(crate) fn handle(&mut self, out: &mut Emitter<'_>) -> Result<()> {
        let mut tokens = Vec::new();
        let mut events = Vec::new();
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
                    if self.read_inotify(&mut events)? {
                        self.resync(out);
                    }
                } else if let Some((path, which)) = self.tokens.get(token).cloned() {
                    self.reread(&path, which, &mut events);
                }
            }
        }
        for e in events {
            out.emit(Source::Cgroup, EventKind::Cgroup(e));
        }
        Ok(())
    }

    /// Reads inotify until EAGAIN; returns whether the queue overflowed.
    fn read_inotify(&mut self, out: &mut Vec<CgroupEvent>) -> Result<bool> {
        let mut overflow = false;
        let mut dirty_parents = BTreeSet::new();
        let mut gone = Vec::new();
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
                let Some(dir) = self.by_wd.get(&ev.wd.get_watch_descriptor_id()) else {
                    continue; // a watch we already dropped
                };
                if self.parents.contains_key(dir) {
                    dirty_parents.insert(dir.clone());
                }
                if ev
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
                    && self.watched.contains_key(dir)
                {
                    gone.push(dir.clone());
                }
            }
        }
        for path in gone {
            self.forget(&path, out);
        }
        for parent in dirty_parents {
            self.relist(&parent, out);
        }
        Ok(overflow)
    }

    /// Re-lists a parent's children and reports the difference.
    fn relist(&mut self, parent: &Path, out: &mut Vec<CgroupEvent>) {
        let fresh = list_children(parent);
        let Some((old, _)) = self.parents.get(parent) else {
            return;
        };
        let added: Vec<PathBuf> = fresh.difference(old).cloned().collect();
        let removed: Vec<PathBuf> = old.difference(&fresh).cloned().collect();
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
            self.removed.remove(&child);
            let _ = self.watch(&child, true, out);
        }
        if let Some((children, _)) = self.parents.get_mut(parent) {
            *children = fresh;
        }
    }

    /// The inotify queue overflowed: re-read everything and report the difference.
    fn resync(&mut self, out: &mut Emitter<'_>) {
        out.overflowed(Source::Cgroup);
        out.resync(Source::Cgroup, ResyncReason::QueueOverflow);
        let mut events = Vec::new();
        let parents: Vec<PathBuf> = self.parents.keys().cloned().collect();
        for parent in parents {
            self.relist(&parent, &mut events);
        }
        let paths: Vec<PathBuf> = self.watched.keys().cloned().collect();
        for path in paths {
            if !path.is_dir() {
                self.forget(&path, &mut events);
                continue;
            }
            self.reread(&path, Which::Events, &mut events);
            self.reread(&path, Which::Memory, &mut events);
        }
        for e in events {
            out.emit(Source::Cgroup, EventKind::Cgroup(e));
        }
        out.resync_done(Source::Cgroup);
    }
}

/// Sub-directories of a cgroup (its child cgroups).
fn list_children(parent: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a "flat keyed" cgroup file ("key value" lines). Unparseable lines are skipped.
fn parse_flat_keyed(bytes: &[u8]) -> BTreeMap<String, u64> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse_and_skip_garbage() {
        let m = parse_flat_keyed(b"low 0\nhigh 3\nbroken\nmax x\noom_kill 1\n");
        assert_eq!(m.get("high"), Some(&3));
        assert_eq!(m.get("oom_kill"), Some(&1));
        assert_eq!(m.get("max"), None);
        assert_eq!(m.len(), 3);
    }
}
