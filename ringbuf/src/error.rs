//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// What went wrong with a ring, its fds or its attach socket.
///
/// Every variant names its cause; none of them is a panic in disguise. Errors about a peer's
/// shared memory ([`Error::Corrupt`]) are final for that ring: the endpoint that reported one
/// refuses further use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ring has no room for the record now. The producer decides: drop it (and count it with
    /// [`Producer::record_drops`](crate::Producer::record_drops)) or wait for space.
    #[error("ring full: the record needs {needed} bytes, {free} are free")]
    Full {
        /// Bytes of ring space the record needs (header, alignment and any wrap padding).
        needed: usize,
        /// Bytes free at the moment of the check.
        free: usize,
    },
    /// The record can never fit: its payload is larger than the ring allows.
    #[error("record too large: {len} byte payload, this ring allows at most {max} (capacity {capacity})")]
    TooLarge {
        /// Requested payload length.
        len: usize,
        /// Largest payload this ring accepts (`capacity / 2 - 8`).
        max: usize,
        /// The ring's data capacity.
        capacity: usize,
    },
    /// The record type is reserved by the format (`0xff00..=0xffff`).
    #[error(
        "record type {0:#06x} is reserved by the ring format (application types are 0..=0xfeff)"
    )]
    ReservedType(u16),
    /// The peer wrote something that breaks the format: the ring is no longer used.
    #[error("ring corrupt: {0}")]
    Corrupt(String),
    /// A ring configuration that cannot be built.
    #[error("invalid ring configuration: {0}")]
    Config(String),
    /// Fds or shared memory handed to us do not form a valid ring (seals, sizes, magic,
    /// version, fd kinds).
    #[error("invalid ring: {0}")]
    InvalidRing(String),
    /// The ring server refused the attach.
    #[error("{path}: ring server refused the attach: {reason}")]
    Refused {
        /// Socket path.
        path: PathBuf,
        /// Why, as the server said.
        reason: Refusal,
    },
    /// The attach conversation failed (connect, malformed answer, missing fds, ...).
    #[error("{path}: attach failed: {reason}")]
    Attach {
        /// Socket path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// An operation that needs the peer found it gone.
    #[error("the peer has gone away")]
    PeerGone,
    /// The producer marked the ring finished and the consumer read everything.
    #[error("the ring is finished: its producer stopped and every record was read")]
    Finished,
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a ring server refused an attach (the hello answer's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The server speaks another protocol version.
    #[error("protocol version mismatch (server speaks {server}, we speak {client})")]
    VersionMismatch {
        /// Server's version.
        server: u16,
        /// Ours.
        client: u16,
    },
    /// The peer said hello in protocol version 1 to a ring with fd protection, which a version 1
    /// peer would refuse (it requires `F_SEAL_FUTURE_WRITE` on the part it only reads). Only
    /// the owner sees this reason; on the wire it is a version mismatch (status 1) answered in
    /// the owner's version.
    #[error("it speaks attach protocol version {client}, which cannot read a ring with fd protection (version 2); a ring with seal protection serves it")]
    NeedsSealProtection {
        /// The peer's version.
        client: u16,
    },
    /// Our uid/gid is not on the ring's allow list.
    #[error("credentials not allowed (uid {uid}, gid {gid})")]
    NotAllowed {
        /// Our uid as the server saw it.
        uid: u32,
        /// Our gid as the server saw it.
        gid: u32,
    },
    /// We asked for a role the ring does not offer.
    #[error("wrong role: this ring's peer is a {offered}, we asked to be a {requested}")]
    WrongRole {
        /// The role the ring offers.
        offered: crate::Role,
        /// The role we asked for.
        requested: crate::Role,
    },
    /// Another peer is attached.
    #[error("busy: another peer is attached to this ring")]
    Busy,
    /// The server did not understand the hello.
    #[error("malformed hello (not an edgegw ring hello of a known form)")]
    Malformed,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io {
            what,
            source: source.into(),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call", io::Error::from(e))
    }
}
