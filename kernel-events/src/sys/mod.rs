//! The OS glue: netlink sockets ([`netlink`]), the epoll set of priority files ([`epoll`]),
//! registering fds with tokio, errno, and the Linux constants the crate speaks ([`linux`]).
//!
//! System calls go through `nix`'s safe wrappers, which turn -1 into an error; nothing here
//! checks errno by hand. The one `unsafe` operation of the crate is here: tokio's
//! `AsyncFd::register_with_interest` is `unsafe` because tokio cannot check that the object
//! keeps owning the same open fd for as long as it is registered. `register` accepts only types
//! for which that holds by construction ([`StableFd`]).
#![allow(unsafe_code)]

mod epoll;
pub(crate) mod linux;
mod netlink;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub(crate) use nix::errno::Errno;

pub(crate) use epoll::PriorityPoll;
pub use netlink::ReceiveBuffer;
pub(crate) use netlink::{
    netlink_route_socket, receive, send_request, set_receive_buffer, Received,
};

/// Types that own one open file descriptor and never close or replace it while alive, so tokio
/// may register that fd for as long as it owns the value.
pub(crate) trait StableFd: AsRawFd + private::Sealed {}

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

/// The errno behind an error a system call returned (through std, nix or inotify), so errno is
/// compared by name, one way, everywhere.
pub(crate) fn errno(error: &io::Error) -> Option<Errno> {
    error.raw_os_error().map(Errno::from_raw)
}

/// Whether adding an inotify watch failed for lack of room: ENOSPC, the user's
/// fs.inotify.max_user_watches reached.
pub(crate) fn is_inotify_watch_limit(error: &io::Error) -> bool {
    errno(error) == Some(Errno::ENOSPC)
}
