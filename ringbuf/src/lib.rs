//! The shared-memory, zero-copy packet ring between the edgegw daemon and local consumer
//! processes.
//!
//! A ring carries packets one way, from one [`Producer`] to one [`Consumer`], through two memfds
//! both sides map: the *region* (a header page and a power-of-two data area, written only by the
//! producer) and the *consumer page* (the consumer's position, written only by the consumer).
//! The producer reserves a record, writes its payload in place and publishes a whole batch with
//! one release store; the consumer reads records in place through bounds-checked [`Payload`]
//! views and releases a whole batch with one store. Neither side makes a system call while the
//! other is awake: a side about to sleep says so in shared memory, and only then does the other
//! write its eventfd. `FORMAT.md` is the contract, precise enough for a consumer in another
//! language; `include/edgegw_ring.h` is the C ABI, which the `edgegw-ring-ffi` crate (`ffi/`)
//! builds on this one.
//!
//! The pieces:
//! - `format`: the layout and the record header (no memory access).
//! - `core`: the protocol itself (reserve, publish, read, release, sleep/wake), generic over how
//!   the shared words are reached, so the loom models run the production code.
//! - [`Producer`], [`Consumer`]: the endpoints over a real mapping. Each is `Send`.
//! - [`RingServer`] and [`ServedRing`]: the owner's side of the attach protocol: a unix socket
//!   per ring, credentials checked against an [`AllowList`], fds passed after a versioned hello.
//!   The server only needs the fds and a shared attach state, so it runs on one thread (the
//!   daemon's main loop) while the owner's endpoint runs on another (the TLS thread).
//! - [`tools`]: queries for operators' tools and tests (`stat`, the bare attach handshake);
//!   the commands are the daemon's. `Serialize` for what they print comes with the `serde`
//!   feature, off by default.
//! - With the `tokio` feature: `AsyncRingServer`, `DataReadiness`, `SpaceReadiness`, the same
//!   fds in tokio's `AsyncFd`. The core crate never depends on tokio.
//! - `sys`: the only module with `unsafe`: mappings, atomics over shared memory, fds.
//!
//! Everything the peer writes is untrusted: positions and record headers are checked before use,
//! and a violation is [`Error::Corrupt`], never a panic or an out-of-bounds access.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod attach;
mod consumer;
mod core;
mod endpoint;
mod error;
mod format;
mod producer;
mod ring;
mod server;
mod sys;
mod takeback;
#[cfg(feature = "tokio")]
mod tokio_support;
pub mod tools;

#[cfg(test)]
mod tests;

pub use attach::PROTOCOL_VERSION;
pub use consumer::{Consumer, Reattached, Record};
pub use endpoint::{PeerStatus, Readiness, DEFAULT_SPIN};
pub use error::{Error, Refusal, Result};
pub use format::{
    max_payload, Protection, RingConfig, Role, WrapMode, FIRST_RESERVED_TYPE, FORMAT_VERSION,
    MAX_CAPACITY, MIN_CAPACITY, RECORD_ALIGN, RECORD_HEADER_LEN,
};
pub use producer::{Moved, Producer};
pub use ring::RingFds;
pub use server::{AllowList, OwnerCounters, RingServer, ServedRing, ServerEvent};
pub use sys::shm::Payload;
pub use takeback::{SalvagedRecord, TakenBack};
#[cfg(feature = "tokio")]
pub use tokio_support::{AsyncRingServer, DataReadiness, SpaceReadiness};

/// This crate's version (`MAJOR.MINOR.PATCH`, as in its `Cargo.toml`). The C ABI has it too:
/// `EDGEGW_RING_VERSION_MAJOR`, `_MINOR`, `_PATCH` in the header, and `edgegw_ring_version()`
/// from the library actually linked.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The system page size (rings are built and checked with it).
pub fn page_size() -> usize {
    sys::os::page_size()
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
