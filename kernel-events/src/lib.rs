//! Kernel event readers (inotify, rtnetlink, cgroup v2, PSI) merged into one ordered stream that
//! never loses state.
//!
//! # How the pieces fit
//!
//! [`KernelEvents::builder`] configures the sources; [`KernelEventsBuilder::build`] opens them
//! and reads each one's initial state into a model. [`KernelEvents::next`] then waits on all of
//! them at once and returns [`Event`]s numbered by a gap-free `seq`, in the order they were
//! produced. Everything runs on the caller's tokio task: every fd is non-blocking, registered
//! with tokio's `AsyncFd` and read until EAGAIN; no thread is started and none blocks in a read.
//!
//! Each source keeps a model of the kernel's state and treats every notification as a hint:
//!
//! - [`files`]: watched files and trees, through inotify watches on directories (so atomic
//!   saves and symlink swaps are seen), debounced, identity (device, inode, size, mtime, optional
//!   hash) read fresh from `stat`.
//! - [`net`]: links, addresses and routes from rtnetlink on our own non-blocking socket, with a
//!   separate dump socket for the initial state and for recovery.
//! - [`cgroup`]: `cgroup.events` and `memory.events` through EPOLLPRI, child cgroups through
//!   inotify; counters reported as deltas of fresh readings.
//! - [`pressure`]: a PSI trigger where the kernel accepts one, a poll of the averages otherwise.
//!
//! When a source learns that it lost notifications (IN_Q_OVERFLOW, ENOBUFS, a truncated
//! datagram, an unknown watch, a lost root), it emits [`EventKind::Resync`], re-reads the
//! kernel's state, emits the difference from its model as ordinary added/changed/removed events,
//! then [`EventKind::ResyncDone`]. A consumer that applies every event to its own model therefore
//! ends with the kernel's true state; one that does not want a model can read the source's
//! ([`KernelEvents::network`], [`KernelEvents::files`], [`KernelEvents::cgroups`]).
//!
//! An [`Event`] displays as one human line, like `ip monitor` plus `inotifywait`
//! ([`Event::display`] names interfaces), and with the `serde` feature serializes as one JSON
//! object: `edgegw events` prints those.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod cgroup;
mod cgroupfs;
mod error;
pub mod files;
mod model;
pub mod net;
pub mod pressure;
mod stream;
mod sys;

pub use error::{Error, Result};
pub use model::{
    Change, Counters, Event, EventKind, EventLine, ResyncReason, Source, SourceCounters,
};
pub use stream::{KernelEvents, KernelEventsBuilder};
