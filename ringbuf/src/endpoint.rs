//! What the producer and consumer endpoints share: how an endpoint knows whether its peer is
//! there, the eventfd wakers, and the outcome of a wait.

use crate::core::Wake;
use crate::sys::os;
use crate::Result;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Readiness {
    /// The condition holds: records to read (consumer) or enough space (producer).
    Ready,
    /// The timeout passed first.
    TimedOut,
    /// The producer finished the ring and everything was read (consumer only).
    Finished,
    /// The peer hung up its attach socket (exited or was killed) and nothing more is readable.
    /// The ring stays mapped: a consumer can still drain it, then re-attach.
    PeerGone,
}

/// Attach state shared between a ring's owner endpoint and the [`RingServer`](crate::RingServer)
/// that serves it (typically on another thread): one atomic word, no lock.
#[derive(Debug, Default)]
pub(crate) struct PeerState {
    /// Bit 0: a peer is attached. Bits 1..: number of attaches so far.
    word: AtomicU64,
    /// On a ring the owner produces: the highest `consumer_pos` checked to be a release on a
    /// record boundary, by the producer or by the server (at a detach, before an attach). Only
    /// grows. The producer stores it before it writes over the space it frees, so a server that
    /// walks the record headers from it and finds it unchanged afterwards read intact headers.
    checked_release: AtomicU64,
}

impl PeerState {
    /// See `checked_release`.
    pub(crate) fn checked_release(&self) -> u64 {
        self.checked_release.load(Ordering::Acquire)
    }

    /// Raise `checked_release` to `pos`; a release fence orders it before the data writes that
    /// follow (the writer half of a sequence lock).
    pub(crate) fn set_checked_release(&self, pos: u64) {
        self.checked_release.fetch_max(pos, Ordering::Release);
        std::sync::atomic::fence(Ordering::Release);
    }

    pub(crate) fn attached(&self) {
        let w = self.word.load(Ordering::Relaxed);
        self.word.store(((w >> 1) + 1) << 1 | 1, Ordering::Release);
    }

    pub(crate) fn detached(&self) {
        self.word.fetch_and(!1, Ordering::Release);
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let w = self.word.load(Ordering::Acquire);
        PeerStatus {
            attached: w & 1 == 1,
            attaches: w >> 1,
        }
    }
}

/// Whether the peer of an owner's ring is attached, as its server last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerStatus {
    /// A peer is attached now.
    pub attached: bool,
    /// How many peers have attached since the ring was served.
    pub attaches: u64,
}

/// How an endpoint came to be, and so how it learns its peer's presence.
#[derive(Debug)]
pub(crate) enum Link {
    /// We created the ring; the server tells us about peers.
    Owner {
        state: Arc<PeerState>,
        fds: RingFdsHandle,
    },
    /// We attached through a socket; its hang-up means the owner is gone.
    Attached { socket: OwnedFd, path: PathBuf },
    /// We got the fds by inheritance; no liveness channel.
    Inherited,
}

/// The owner's fds, kept so it can serve the ring (and hand it to the fd store).
pub(crate) type RingFdsHandle = crate::RingFds;

impl Link {
    /// The attach socket, if any (polled for hang-up while waiting).
    pub(crate) fn socket(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Link::Attached { socket, .. } => Some(socket.as_fd()),
            _ => None,
        }
    }

    /// Has the peer gone? Owners ask the server's state; attached endpoints their socket.
    pub(crate) fn peer_gone(&self) -> bool {
        match self {
            Link::Owner { state, .. } => !state.status().attached,
            Link::Attached { socket, .. } => os::socket_hung_up(socket.as_fd()),
            Link::Inherited => false,
        }
    }
}

/// Signals an eventfd.
pub(crate) struct EventWaker<'a>(pub BorrowedFd<'a>);

impl Wake for EventWaker<'_> {
    #[inline]
    fn wake(&self) {
        os::signal_eventfd(self.0)
    }
}

/// How long a blocking wait ([`Consumer::wait`](crate::Consumer::wait),
/// [`Producer::wait_for_space`](crate::Producer::wait_for_space)) spins before it sleeps, unless
/// `set_spin` says otherwise: about what a sleep and a wake-up cost, so that a waiter never
/// spends much more than twice the best choice made in hindsight (the README's "Spinning before
/// sleeping" has the measurement).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// Spin iterations between two readings of the clock (an iteration is one check and a CPU pause
/// hint, about 30 ns on the development machine).
const SPIN_BETWEEN_CLOCK_READS: u32 = 16;

/// Spin until `ready` says yes (`Ok(true)`), for at most `spin` and never past `deadline`.
/// `Ok(false)` when the time is up.
pub(crate) fn spin_until(
    spin: Duration,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    if spin.is_zero() {
        return Ok(false);
    }
    let start = Instant::now();
    let end = deadline.map_or(start + spin, |d| d.min(start + spin));
    loop {
        for _ in 0..SPIN_BETWEEN_CLOCK_READS {
            if ready()? {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            return Ok(false);
        }
    }
}
