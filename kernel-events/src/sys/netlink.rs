//! rtnetlink sockets: opening, sizing the receive buffer, receiving and sending datagrams.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockopt, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType,
};

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
pub(crate) fn netlink_route_socket(groups: u32) -> io::Result<OwnedFd> {
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
pub(crate) fn set_receive_buffer(fd: &OwnedFd, bytes: usize) -> io::Result<ReceiveBuffer> {
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
pub(crate) enum Received {
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
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
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
pub(crate) fn send_request(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
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
