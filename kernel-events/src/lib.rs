//! Kernel event readers (inotify, rtnetlink, cgroup v2, PSI) merged into one ordered stream that
//! never loses state.
//!
//! # Use
//!
//! [`KernelEvents::builder`] configures the sources; [`KernelEventsBuilder::build`] opens them
//! and reads each one's initial state into a model. [`KernelEvents::next`] then waits on all of
//! them at once and returns [`Event`]s numbered by a gap-free `seq`, in the order they were
//! produced. Everything runs on the caller's tokio task: every fd is non-blocking, registered
//! with tokio's `AsyncFd` and read until EAGAIN; no thread is started and none blocks in a read.
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
//!
//! # How the pieces fit
//!
//! Three floors, each importing only from the floors below it.
//!
//! The ground floor is the event vocabulary (`model`): [`Event`], [`EventKind`], [`Source`],
//! the payloads of each source (a file's [`files::Identity`], a [`net::Route`], a
//! [`cgroup::CgroupEvent`], ...) with their `Display` and `Serialize`, and the batch a source
//! fills in one step. It imports nothing of the crate, so anything may use it. Beside it stand
//! the crate's [`Error`] and the OS glue (`sys`: netlink sockets, the epoll set, tokio
//! registration, the Linux constants; the only module with unsafe code), and `cgroupfs`, the
//! cgroup2 file system that the cgroup and pressure sources share.
//!
//! The middle floor is the sources. Each keeps a model of the kernel's state, treats every
//! notification as a hint, and is split the same way: IO (its fds, and fresh reads of the
//! kernel's state), model (what it knows), diff (the model against a fresh read, as events).
//! A source writes what a step produced into a batch and knows nothing of the stream.
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
//! The top floor is the stream ([`KernelEvents`]): the builder opens the sources, `next` waits
//! on all of them, and the emitter numbers each batch's events into the one ordered stream and
//! counts them per source ([`KernelEvents::counters`]).
//!
//! The public modules are by topic: each source's module holds its options and re-exports its
//! part of the vocabulary, so a route is [`net::Route`] and a file event [`files::FileEvent`].
//! The crate logs through the `log` facade, at debug level, what the events and counters cannot
//! say (why a netlink message was skipped, why a recovery started over); the application
//! installs the logger.
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
