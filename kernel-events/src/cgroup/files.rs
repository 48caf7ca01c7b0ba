//! The cgroup reader's control files (IO): `cgroup.events` and `memory.events` of every watched
//! cgroup, held open and registered, level-triggered, for EPOLLPRI in one epoll set of ours,
//! together with the directory watches' inotify fd. The runtime watches that one fd.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

use crate::cgroupfs;
use crate::error::{Error, Result};
use crate::sys::PriorityPoll;

/// Which file of a watched cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Events,
    Memory,
}

/// What is ready in the epoll set.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ready {
    /// The inotify fd of the directory watches.
    Directories,
    /// A control file of a watched cgroup.
    File(PathBuf, Which),
}

/// The token of the directory watches' inotify fd in the epoll set.
const INOTIFY_TOKEN: u64 = 0;

/// A watched cgroup's open files (`memory.events` is absent where the memory controller is
/// not enabled; `cgroup.events` in the root cgroup).
struct Open {
    events: Option<File>,
    memory: Option<File>,
}

pub(super) struct ControlFiles {
    poll: AsyncFd<PriorityPoll>,
    open: HashMap<PathBuf, Open>,
    tokens: HashMap<u64, (PathBuf, Which)>,
    next_token: u64,
    /// Reading buffer shared by every file (grows only if a reading fills it).
    buf: Vec<u8>,
}

impl ControlFiles {
    /// The epoll set, with `inotify` in it.
    pub(super) fn new(inotify: BorrowedFd<'_>) -> Result<Self> {
        let poll = PriorityPoll::new().map_err(|e| Error::io("epoll_create1", e))?;
        poll.add_readable(inotify, INOTIFY_TOKEN)
            .map_err(|e| Error::io("add inotify fd to epoll", e))?;
        Ok(ControlFiles {
            poll: crate::sys::register(poll, tokio::io::Interest::READABLE)
                .map_err(|e| Error::io("register epoll fd", e))?,
            open: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            buf: Vec::new(),
        })
    }

    /// Opens `path`'s control files and registers them; returns whether `memory.events` exists.
    pub(super) fn open(&mut self, path: &Path) -> Result<bool> {
        let open = |name: &str| -> Result<Option<File>> {
            match cgroupfs::open_control_file(&path.join(name), false) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("open {}/{name}", path.display()), e)),
            }
        };
        let events = open("cgroup.events")?;
        // Only the root cgroup has no cgroup.events; elsewhere it means the cgroup is gone.
        if events.is_none() && !path.is_dir() {
            return Err(Error::io(
                format!("open {}/cgroup.events", path.display()),
                io::ErrorKind::NotFound.into(),
            ));
        }
        let files = Open {
            events,
            memory: open("memory.events")?,
        };
        let mut tokens = Vec::new();
        for (file, which) in [
            (&files.events, Which::Events),
            (&files.memory, Which::Memory),
        ] {
            if let Some(f) = file {
                let token = self.next_token;
                self.next_token += 1;
                if let Err(e) = self.poll.get_ref().add_priority(f.as_fd(), token) {
                    self.unregister(&files);
                    return Err(Error::io(format!("add {} to epoll", path.display()), e));
                }
                tokens.push((token, which));
            }
        }
        for (token, which) in tokens {
            self.tokens.insert(token, (path.to_path_buf(), which));
        }
        let memory_events = files.memory.is_some();
        self.open.insert(path.to_path_buf(), files);
        Ok(memory_events)
    }

    /// Unregisters and closes `path`'s files.
    pub(super) fn close(&mut self, path: &Path) {
        if let Some(files) = self.open.remove(path) {
            self.unregister(&files);
            self.tokens.retain(|_, (p, _)| p != path);
        }
    }

    fn unregister(&self, files: &Open) {
        for f in files.events.iter().chain(files.memory.iter()) {
            let _ = self.poll.get_ref().remove(f.as_fd());
        }
    }

    /// Reads one file of `path` whole, in one snapshot; `None` if the cgroup has no such file.
    pub(super) fn read(&mut self, path: &Path, which: Which) -> Option<io::Result<&[u8]>> {
        let files = self.open.get(path)?;
        let file = match which {
            Which::Events => files.events.as_ref(),
            Which::Memory => files.memory.as_ref(),
        }?;
        Some(cgroupfs::read_snapshot(file, &mut self.buf).map(|n| &self.buf[..n]))
    }

    /// Waits until something in the set is ready. Cancel-safe.
    pub(super) async fn wait(&mut self) -> Result<()> {
        let mut guard = self
            .poll
            .readable()
            .await
            .map_err(|e| Error::io("wait for cgroup files", e))?;
        // Cleared before draining: a notification after the drain sets it again.
        guard.clear_ready();
        Ok(())
    }

    /// What is ready now, without waiting (level-triggered: what is not read stays ready).
    pub(super) fn ready(&self) -> Result<Vec<Ready>> {
        let mut tokens = Vec::new();
        self.poll
            .get_ref()
            .ready_now(&mut tokens)
            .map_err(|e| Error::io("epoll_wait", e))?;
        Ok(tokens
            .into_iter()
            .filter_map(|token| match token {
                INOTIFY_TOKEN => Some(Ready::Directories),
                _ => {
                    (self.tokens.get(&token).cloned()).map(|(path, which)| Ready::File(path, which))
                }
            })
            .collect())
    }

    /// The epoll fd and every open control file.
    pub(super) fn raw_fds(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = vec![self.poll.get_ref().as_raw_fd()];
        for files in self.open.values() {
            let open = files.events.iter().chain(files.memory.iter());
            fds.extend(open.map(|f| f.as_raw_fd()));
        }
        fds
    }
}
