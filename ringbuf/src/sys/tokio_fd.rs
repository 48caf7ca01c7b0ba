//! Registering our fds with tokio (feature `tokio`).

use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Types whose raw fd is fixed for their whole life (the safety condition of
/// `AsyncFd::register_with_interest`).
pub(crate) trait StableFd: AsRawFd {}
impl StableFd for OwnedFd {}
// The server's fd is its epoll instance, created in `bind` and closed only on drop.
impl StableFd for crate::RingServer {}

/// Register `inner` for read readiness with the current tokio runtime.
pub(crate) fn readable<T: StableFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: StableFd types own their descriptor, keep it open until they are dropped (which
    // the AsyncFd does first, as their owner) and always return the same one from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
