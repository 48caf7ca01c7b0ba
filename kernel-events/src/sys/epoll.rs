//! One epoll instance for the files that signal with EPOLLPRI (cgroup control files, PSI).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// An epoll instance that multiplexes the cgroup and PSI files (which signal with EPOLLPRI) so
/// the runtime needs to watch a single fd for all of them.
pub(crate) struct PriorityPoll {
    epoll: nix::sys::epoll::Epoll,
}

impl std::fmt::Debug for PriorityPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityPoll")
            .field("fd", &self.epoll.0.as_raw_fd())
            .finish()
    }
}

impl PriorityPoll {
    /// Creates the epoll instance (close-on-exec).
    pub(crate) fn new() -> io::Result<Self> {
        let epoll = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Only ever waited on with a zero timeout, but non-blocking like every other fd here.
        set_nonblocking(epoll.0.as_fd())?;
        Ok(PriorityPoll { epoll })
    }

    /// Watches `fd` for EPOLLPRI (level-triggered: kernfs and PSI keep reporting until read).
    pub(crate) fn add_priority(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLPRI, token))
            .map_err(io::Error::from)
    }

    /// Watches `fd` for EPOLLIN (the cgroup reader's inotify fd).
    pub(crate) fn add_readable(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .map_err(io::Error::from)
    }

    /// Stops watching `fd`.
    pub(crate) fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd).map_err(io::Error::from)
    }

    /// Appends the tokens of the fds ready now, without waiting; returns how many. Level
    /// triggering means an fd that is not read stays ready, so this is called once per pass.
    pub(crate) fn ready_now(&self, tokens: &mut Vec<u64>) -> io::Result<usize> {
        use nix::sys::epoll::EpollEvent;
        let mut events = [EpollEvent::empty(); 64];
        loop {
            return match self
                .epoll
                .wait(&mut events, nix::sys::epoll::EpollTimeout::ZERO)
            {
                Ok(n) => {
                    tokens.extend(events[..n].iter().map(|e| e.data()));
                    Ok(n)
                }
                Err(Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

impl AsFd for PriorityPoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl AsRawFd for PriorityPoll {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.0.as_raw_fd()
    }
}

/// Sets O_NONBLOCK on `fd` (for fds whose constructor cannot ask for it, like epoll's).
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
