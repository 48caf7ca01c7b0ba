//! The OS glue: netlink sockets, epoll, file-descriptor flags, and registering fds with tokio.
//!
//! System calls go through `nix`'s safe wrappers. The one `unsafe` operation of the crate is
//! here: tokio's `AsyncFd::register_with_interest` is `unsafe` because tokio cannot check that
//! the object keeps owning the same open fd for as long as it is registered. `register`
//! accepts only types for which that holds by construction ([`StableFd`]).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    bind, getsockopt, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Types that own one open file descriptor and never close or replace it while alive, so tokio
/// may register that fd for as long as it owns the value.
pub trait StableFd: AsRawFd + private::Sealed {}

mod private {
    pub trait Sealed {}
    impl Sealed for std::os::fd::OwnedFd {}
    impl Sealed for std::fs::File {}
    impl Sealed for inotify::Inotify {}
    impl Sealed for super::PriorityPoll {}
}

impl StableFd for OwnedFd {}
impl StableFd for std::fs::File {}
impl StableFd for inotify::Inotify {}
impl StableFd for PriorityPoll {}

/// Registers `inner`'s fd with the current tokio runtime.
pub(crate) fn register<T: StableFd>(
    inner: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `T: StableFd` owns its fd (OwnedFd, File, Inotify and PriorityPoll each close it
    // only on drop and never swap it), and the AsyncFd takes ownership of `inner`, so the fd
    // stays open and refers to the same description for the whole registration.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Whether `fd` has O_NONBLOCK set (the tests assert it for every reader's fds).
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    Ok(OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
}

/// Sets O_NONBLOCK on `fd` (for fds whose constructor cannot ask for it, like epoll's).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// How a receive buffer request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReceiveBuffer {
    /// Bytes asked for.
    pub requested: usize,
    /// What the kernel reports now (it doubles the request for bookkeeping overhead).
    pub granted: usize,
    /// Whether SO_RCVBUFFORCE worked (needs CAP_NET_ADMIN); otherwise SO_RCVBUF, capped by
    /// net.core.rmem_max, was used.
    pub forced: bool,
}

/// Opens a non-blocking NETLINK_ROUTE socket bound to `groups` (0 for a dump socket).
///
/// NETLINK_NO_ENOBUFS is deliberately never set: ENOBUFS is how the kernel tells us it dropped
/// notifications, and the resync depends on hearing it.
pub fn netlink_route_socket(groups: u32) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// Sets the receive buffer: SO_RCVBUFFORCE first (ignores rmem_max), SO_RCVBUF as fallback.
pub fn set_receive_buffer(fd: &OwnedFd, bytes: usize) -> io::Result<ReceiveBuffer> {
    let forced = setsockopt(fd, sockopt::RcvBufForce, &bytes).is_ok();
    if !forced {
        setsockopt(fd, sockopt::RcvBuf, &bytes)?;
    }
    let granted = getsockopt(fd, sockopt::RcvBuf)?;
    Ok(ReceiveBuffer {
        requested: bytes,
        granted,
        forced,
    })
}

/// What one receive on a netlink socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A whole datagram of this many bytes is in the buffer.
    Datagram(usize),
    /// The datagram was this long, longer than the buffer: the tail was lost.
    Truncated(usize),
    /// The kernel dropped messages for this socket (ENOBUFS).
    Overrun,
    /// Nothing to read (EAGAIN).
    Empty,
}

/// Receives one datagram without blocking. MSG_TRUNC makes the kernel return the real length,
/// so a datagram larger than `buf` is detected instead of silently cut.
pub fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    loop {
        return match recv(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) if n > buf.len() => Ok(Received::Truncated(n)),
            Ok(n) => Ok(Received::Datagram(n)),
            Err(Errno::ENOBUFS) => Ok(Received::Overrun),
            Err(Errno::EAGAIN) => Ok(Received::Empty),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// Sends one request to the kernel on a netlink socket.
pub fn send_request(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    loop {
        return match send(fd.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short send on netlink socket",
            )),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// An epoll instance that multiplexes the cgroup and PSI files (which signal with EPOLLPRI) so
/// the runtime needs to watch a single fd for all of them.
pub struct PriorityPoll {
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
    pub fn new() -> io::Result<Self> {
        let epoll = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Only ever waited on with a zero timeout, but non-blocking like every other fd here.
        set_nonblocking(epoll.0.as_fd())?;
        Ok(PriorityPoll { epoll })
    }

    /// Watches `fd` for EPOLLPRI (level-triggered: kernfs and PSI keep reporting until read).
    pub fn add_priority(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLPRI, token))
            .map_err(io::Error::from)
    }

    /// Watches `fd` for EPOLLIN (the cgroup reader's inotify fd).
    pub fn add_readable(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .map_err(io::Error::from)
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd).map_err(io::Error::from)
    }

    /// Appends the tokens of the fds ready now, without waiting; returns how many. Level
    /// triggering means an fd that is not read stays ready, so this is called once per pass.
    pub fn ready_now(&self, tokens: &mut Vec<u64>) -> io::Result<usize> {
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
