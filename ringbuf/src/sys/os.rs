//! OS glue: memfds and seals, eventfds, `SOCK_SEQPACKET` unix sockets with `SCM_RIGHTS` and
//! `SO_PEERCRED`, `poll`, CPU affinity. Calls go through nix; the two it cannot make (`poll`
//! with `POLLRDHUP`, `fcntl` on a raw fd) go through [`syscall`]. `nix_err` turns nix errors
//! into ours.

use crate::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

fn nix_err(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::io(what, io::Error::from(e))
}

/// The result of a libc call that nix does not wrap, as mio's `syscall!` makes it: `-1` becomes
/// the errno it left. Every raw call goes through here, so no call site checks errno by hand; the
/// caller writes the `unsafe` block around the call, with its safety argument.
fn syscall(ret: libc::c_int) -> nix::Result<libc::c_int> {
    nix::errno::Errno::result(ret)
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(v)) if v > 0 => v as usize,
        _ => 4096,
    }
}

/// A new sealable memfd of `len` bytes, close-on-exec.
pub(crate) fn create_memfd(name: &str, len: usize) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).expect("memfd names have no NUL");
    let fd = memfd_create(
        cname.as_c_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(nix_err("memfd_create"))?;
    nix::unistd::ftruncate(&fd, len as libc::off_t).map_err(nix_err("ftruncate memfd"))?;
    Ok(fd)
}

/// Seals of a ring memfd, as the protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seals {
    pub shrink: bool,
    pub grow: bool,
    pub future_write: bool,
    pub seal: bool,
    pub write: bool,
}

/// Add the ring seals to `fd`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, future_write: bool) -> Result<()> {
    let mut flags = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    if future_write {
        flags |= SealFlag::F_SEAL_FUTURE_WRITE;
    }
    fcntl(fd, FcntlArg::F_ADD_SEALS(flags)).map_err(nix_err("seal memfd"))?;
    fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SEAL)).map_err(nix_err("seal memfd"))?;
    Ok(())
}

/// Read the seals of `fd`; fails with a clear error if it is not a memfd.
pub(crate) fn get_seals(fd: BorrowedFd<'_>, what: &str) -> Result<Seals> {
    match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(bits) => {
            let f = SealFlag::from_bits_truncate(bits);
            Ok(Seals {
                shrink: f.contains(SealFlag::F_SEAL_SHRINK),
                grow: f.contains(SealFlag::F_SEAL_GROW),
                future_write: f.contains(SealFlag::F_SEAL_FUTURE_WRITE),
                seal: f.contains(SealFlag::F_SEAL_SEAL),
                write: f.contains(SealFlag::F_SEAL_WRITE),
            })
        }
        Err(nix::Error::EINVAL) => Err(Error::InvalidRing(format!(
            "the {what} fd is not a memfd (it does not support seals)"
        ))),
        Err(e) => Err(Error::io("F_GET_SEALS", io::Error::from(e))),
    }
}

/// Only the owner (the creating uid) may open the memfd again, through `/proc/<pid>/fd/N`
/// (memfds are created 0777): a peer of another uid that holds a read-only description cannot
/// reopen it for writing (FORMAT.md section 6, "fd" protection).
pub(crate) fn restrict_to_owner(fd: BorrowedFd<'_>) -> Result<()> {
    nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(nix_err("fchmod memfd"))
}

/// A new open file description of the file behind `fd`, read-only and close-on-exec
/// (`open("/proc/self/fd/N", O_RDONLY)`): what the owner hands its peer for the part the peer
/// only reads. `mmap(PROT_WRITE, MAP_SHARED)`, `write` and `F_ADD_SEALS` all need a description
/// open for writing.
pub(crate) fn reopen_read_only(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(nix_err("reopen memfd read-only through /proc/self/fd"))
}

/// Whether `fd`'s open file description is read-only (`F_GETFL & O_ACCMODE == O_RDONLY`).
pub(crate) fn is_read_only(fd: BorrowedFd<'_>) -> Result<bool> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(nix_err("F_GETFL"))?;
    Ok(flags & libc::O_ACCMODE == libc::O_RDONLY)
}

/// Size in bytes of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> Result<u64> {
    let st = nix::sys::stat::fstat(fd).map_err(nix_err("fstat"))?;
    Ok(st.st_size as u64)
}

/// `(device, inode)` of the file behind `fd`: tells whether two fds name the same memfd.
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(nix_err("fstat"))?;
    // ino_t is 32 bits on 32-bit glibc targets (armv7).
    Ok((st.st_dev, st.st_ino as u64))
}

/// Read exactly `buf.len()` bytes at `offset`.
pub(crate) fn pread_exact(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<()> {
    let n = nix::sys::uio::pread(fd, buf, offset as libc::off_t).map_err(nix_err("pread"))?;
    if n != buf.len() {
        return Err(Error::InvalidRing(format!(
            "short read of {n} bytes at offset {offset} (wanted {})",
            buf.len()
        )));
    }
    Ok(())
}

/// Write all of `buf` at `offset`.
pub(crate) fn pwrite_all(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<()> {
    let n = nix::sys::uio::pwrite(fd, buf, offset as libc::off_t).map_err(nix_err("pwrite"))?;
    if n != buf.len() {
        return Err(Error::io(
            "pwrite",
            io::Error::from(io::ErrorKind::WriteZero),
        ));
    }
    Ok(())
}

/// A non-blocking, close-on-exec eventfd in counter mode.
pub(crate) fn create_eventfd() -> Result<OwnedFd> {
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(OwnedFd::from)
        .map_err(nix_err("eventfd"))
}

/// Check that `fd` is an eventfd, and make it non-blocking (a peer may pass a blocking one).
pub(crate) fn check_eventfd(fd: BorrowedFd<'_>, what: &str) -> Result<()> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Error::io("readlink /proc/self/fd", e))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(Error::InvalidRing(format!(
            "the {what} fd is not an eventfd (it is {})",
            link.display()
        )));
    }
    let fl = fcntl(fd, FcntlArg::F_GETFL).map_err(nix_err("fcntl F_GETFL"))?;
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(fl)).map_err(nix_err("fcntl F_SETFL"))?;
    Ok(())
}

/// Add 1 to an eventfd. A full counter (EAGAIN) already wakes the reader, so it is ignored.
#[inline]
pub(crate) fn signal_eventfd(fd: BorrowedFd<'_>) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Reset an eventfd's counter; returns its value (0 if it was not signalled).
pub(crate) fn drain_eventfd(fd: BorrowedFd<'_>) -> u64 {
    let mut b = [0u8; 8];
    match nix::unistd::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

/// What `poll` reported for one fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    pub readable: bool,
    pub hangup: bool,
}

/// Wait until one of `fds` is readable or hung up, or the timeout passes (`None`: forever).
/// Returns one `Ready` per fd; all false on timeout. EINTR counts as a timeout-free wakeup.
///
/// A raw call, not nix's `poll`: a peer that shuts down its end of the attach socket without
/// closing it shows only as `POLLRDHUP`, which nix's `PollFlags` does not have (and its
/// `PollFd::revents` returns `None` when the kernel reports it), so through nix a waiting
/// endpoint would see the socket readable forever and spin instead of reporting the peer gone.
pub(crate) fn poll_fds<const N: usize>(
    fds: [Option<BorrowedFd<'_>>; N],
    timeout: Option<Duration>,
) -> Result<[Ready; N]> {
    // Absent fds are passed as -1, which poll ignores.
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd: fd.map_or(-1, |f| f.as_raw_fd()),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    });
    let t = match timeout {
        None => -1,
        // Round up so a short timeout does not become a busy loop of zero-timeout polls.
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    let mut out = [Ready::default(); N];
    // SAFETY: pfds is a valid, exclusively borrowed array of N pollfd structs for the call's
    // duration; the fds are borrowed, so they stay open.
    match syscall(unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, t) }) {
        Ok(_) => {}
        Err(nix::Error::EINTR) => return Ok(out),
        Err(e) => return Err(Error::io("poll", e)),
    }
    for (o, p) in out.iter_mut().zip(pfds.iter()) {
        o.readable = p.revents & libc::POLLIN != 0;
        o.hangup =
            p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0;
    }
    Ok(out)
}

/// Is the connected socket hung up (peer closed or died)? Never blocks.
pub(crate) fn socket_hung_up(fd: BorrowedFd<'_>) -> bool {
    match poll_fds([Some(fd)], Some(Duration::ZERO)) {
        Ok([r]) => r.hangup,
        Err(_) => true,
    }
}

/// A `SOCK_SEQPACKET` listener bound at `path`, non-blocking, close-on-exec.
pub(crate) fn seqpacket_listen(path: &Path) -> Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(nix_err("socket"))?;
    let addr = UnixAddr::new(path).map_err(nix_err("socket path"))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(nix_err("bind ring socket"))?;
    socket::listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN)).map_err(nix_err("listen"))?;
    Ok(fd)
}

/// Accept one connection, non-blocking and close-on-exec; `None` if none is pending.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> Result<Option<OwnedFd>> {
    match socket::accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    ) {
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::Error::EAGAIN) | Err(nix::Error::ECONNABORTED) | Err(nix::Error::EINTR) => {
            Ok(None)
        }
        Err(e) => Err(Error::io("accept", io::Error::from(e))),
    }
}

/// Connect a blocking `SOCK_SEQPACKET` socket to `path`.
pub(crate) fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

/// Set the receive timeout of a blocking socket.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> Result<()> {
    // From a Duration, so the time_t/suseconds_t widths (which differ between libcs) are
    // nix's business.
    let tv = nix::sys::time::TimeVal::from(libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX as _),
        // Under 10^6: fits suseconds_t, 32 bits on 32-bit targets (armv7).
        tv_usec: timeout.subsec_micros() as _,
    });
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv)
        .map_err(nix_err("setsockopt SO_RCVTIMEO"))
}

/// `(pid, uid, gid)` of the process at the other end of a unix socket.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> Result<(i32, u32, u32)> {
    let c = socket::getsockopt(&fd, socket::sockopt::PeerCredentials)
        .map_err(nix_err("getsockopt SO_PEERCRED"))?;
    Ok((c.pid(), c.uid(), c.gid()))
}

/// The supplementary groups of the process at the other end of a unix socket, as they were when
/// it connected (`SO_PEERGROUPS`, Linux 4.13+; qemu-user passes it on). `ENOPROTOOPT` where
/// the kernel does not know the option.
pub(crate) fn peer_groups(fd: BorrowedFd<'_>) -> nix::Result<Vec<u32>> {
    // The kernel caps a process's groups at NGROUPS_MAX (65536); most have a handful.
    const MAX_GROUPS: usize = 65536;
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is `len` writable bytes that outlive the call, and `len` is a valid
        // socklen_t the kernel updates; the option writes at most `len` bytes of gid_t values.
        let r = syscall(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        });
        let wanted = len as usize / std::mem::size_of::<libc::gid_t>();
        match r {
            Ok(_) => {
                groups.truncate(wanted.min(groups.len()));
                return Ok(groups);
            }
            // Too small: the kernel said how much it needs.
            Err(nix::Error::ERANGE) if wanted > groups.len() && wanted <= MAX_GROUPS => {
                groups.resize(wanted, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Send one message, with fds attached if any. Never blocks for long: the socket buffers of a
/// fresh connection always hold our small messages.
pub(crate) fn send_message(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let n = socket::sendmsg::<()>(
        fd.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// A received message.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes received (the message was longer than the buffer if `truncated`).
    pub len: usize,
    pub truncated: bool,
    /// Fds that came with it, owned (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// Control data was truncated (more fds than we allow): treat as an error.
    pub fds_truncated: bool,
}

/// Receive one message into `buf`, accepting up to 4 fds. `nonblocking`: EAGAIN is `Ok(None)`.
pub(crate) fn recv_message(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<Option<Received>> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let msg = match socket::recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
        Ok(m) => m,
        Err(nix::Error::EAGAIN) if nonblocking => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: the kernel installed these descriptors in our table for this
                    // message; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
    }
    Ok(Some(Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        fds_truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
        fds,
    }))
}

/// An epoll instance (the ring server's single readiness fd).
#[derive(Debug)]
pub(crate) struct Epoll(nix::sys::epoll::Epoll);

impl Epoll {
    pub(crate) fn new() -> Result<Epoll> {
        nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)
            .map(Epoll)
            .map_err(nix_err("epoll_create"))
    }

    /// Watch `fd` for input and hang-up, level-triggered.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        self.0
            .add(
                fd,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token),
            )
            .map_err(nix_err("epoll_ctl add"))
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) {
        let _ = self.0.delete(fd);
    }

    /// Wait up to `timeout` (None: forever) for any watched fd.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        use nix::sys::epoll::{EpollEvent, EpollTimeout};
        let mut ev = [EpollEvent::empty(); 8];
        let t = match timeout {
            None => EpollTimeout::NONE,
            Some(d) => EpollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(EpollTimeout::MAX),
        };
        match self.0.wait(&mut ev, t) {
            Ok(_) | Err(nix::Error::EINTR) => Ok(()),
            Err(e) => Err(Error::io("epoll_wait", io::Error::from(e))),
        }
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0 .0.as_fd()
    }
}

/// Clear close-on-exec on `fd` so a child started with exec inherits it.
pub(crate) fn set_inheritable(fd: BorrowedFd<'_>) -> Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).map_err(nix_err("fcntl F_SETFD"))?;
    Ok(())
}

/// Take ownership of descriptor `fd`, inherited from our parent as announced in the
/// environment (the systemd `LISTEN_FDS` convention): it must be open; close-on-exec is set
/// again so it does not leak further.
pub(crate) fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd> {
    // nix's fcntl takes a borrowed fd, and borrowing one that may be closed is what this check
    // is for: so this is a raw call.
    // SAFETY: F_GETFD only inspects the descriptor table; any int is a valid argument.
    syscall(unsafe { libc::fcntl(fd, libc::F_GETFD) })
        .map_err(|_| Error::Config(format!("inherited fd {fd} is not open")))?;
    // SAFETY: the fd is open (checked above), and by the environment hand-over contract it was
    // passed for us to own: RingFds::from_env removes the variable first, so this runs once per
    // fd, and the caller checked the numbers are distinct and not stdio.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(
        owned.as_fd(),
        FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(nix_err("fcntl F_SETFD"))?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `poll_fds` is a raw call: a peer that only shuts down its side of the socket
    /// (no close) is reported as hung up, through `POLLRDHUP`.
    #[test]
    fn poll_reports_a_peer_that_shut_down_its_side_as_hung_up() {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let [before] = poll_fds([Some(ours.as_fd())], Some(Duration::ZERO)).unwrap();
        assert_eq!(before, Ready::default());
        socket::shutdown(theirs.as_raw_fd(), socket::Shutdown::Write).unwrap();
        let [after] = poll_fds([Some(ours.as_fd())], Some(Duration::ZERO)).unwrap();
        assert!(after.hangup, "{after:?}");
        assert!(socket_hung_up(ours.as_fd()));
    }
}
