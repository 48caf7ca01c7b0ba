//! Error codes and wait outcomes, as C sees them, and how the Rust library's results map onto
//! them.

use edgegw_ring::{Error, Readiness};
use std::ffi::{c_int, CStr};

/// Success.
pub const EDGEGW_RING_OK: c_int = 0;
/// A NULL handle or argument, or a path that is not a UTF-8 string.
pub const EDGEGW_RING_E_INVALID: c_int = -1;
/// Attaching failed: no ring socket, refused by the server, or an invalid ring (seals, sizes,
/// magic, version). The attach functions write the reason into their message buffer.
pub const EDGEGW_RING_E_ATTACH: c_int = -2;
/// The peer broke the format; the ring is unusable from now on.
pub const EDGEGW_RING_E_CORRUPT: c_int = -3;
/// No room now: drop the record, or wait for space.
pub const EDGEGW_RING_E_FULL: c_int = -4;
/// The payload is larger than the ring allows (capacity / 2 - 8 bytes).
pub const EDGEGW_RING_E_TOO_LARGE: c_int = -5;
/// A system call failed.
pub const EDGEGW_RING_E_IO: c_int = -6;
/// Record types 0xff00..0xffff are reserved by the format.
pub const EDGEGW_RING_E_RESERVED_TYPE: c_int = -7;
/// An internal error (a Rust panic), caught at the boundary.
pub const EDGEGW_RING_E_PANIC: c_int = -8;

/// A wait ended because its condition holds: records to read, or room for the record.
pub const EDGEGW_RING_READY: c_int = 0;
/// A wait ended because the timeout passed first.
pub const EDGEGW_RING_TIMED_OUT: c_int = 1;
/// The producer finished the ring and everything was read: attach again for its next
/// generation.
pub const EDGEGW_RING_FINISHED: c_int = 2;
/// The ring's owner hung up; what was published stays readable.
pub const EDGEGW_RING_PEER_GONE: c_int = 3;

/// `edgegw_ring_consumer_reattach`: the owner serves the same ring (a restarted daemon took it
/// back); reading continues from this consumer's own read position.
pub const EDGEGW_RING_SAME_RING: c_int = 0;
/// `edgegw_ring_consumer_reattach`: a new ring (the old one was read to its end); reading
/// starts at its released position.
pub const EDGEGW_RING_NEW_RING: c_int = 1;
/// `edgegw_ring_consumer_reattach`: the old ring was marked replaced; its records not released
/// are in the new one.
pub const EDGEGW_RING_REPLACED_RING: c_int = 2;

/// The version of the library this header was generated from: major, minor, patch (the
/// `edgegw-ring` crate's version). `edgegw_ring_version()` gives the version of the library
/// actually linked, as a string; a program can compare the two.
#[allow(dead_code, reason = "for C, through the header; a test checks it")]
pub const EDGEGW_RING_VERSION_MAJOR: c_int = 0;
/// See `EDGEGW_RING_VERSION_MAJOR`.
#[allow(dead_code, reason = "for C, through the header; a test checks it")]
pub const EDGEGW_RING_VERSION_MINOR: c_int = 1;
/// See `EDGEGW_RING_VERSION_MAJOR`.
#[allow(dead_code, reason = "for C, through the header; a test checks it")]
pub const EDGEGW_RING_VERSION_PATCH: c_int = 0;

/// The code C sees for a Rust error.
pub(crate) fn code(e: &Error) -> c_int {
    match e {
        Error::Full { .. } => EDGEGW_RING_E_FULL,
        Error::TooLarge { .. } => EDGEGW_RING_E_TOO_LARGE,
        Error::ReservedType(_) => EDGEGW_RING_E_RESERVED_TYPE,
        Error::Corrupt(_) => EDGEGW_RING_E_CORRUPT,
        Error::Refused { .. } | Error::Attach { .. } | Error::InvalidRing(_) | Error::Config(_) => {
            EDGEGW_RING_E_ATTACH
        }
        _ => EDGEGW_RING_E_IO,
    }
}

/// The outcome C sees for how a wait ended.
pub(crate) fn readiness(r: Readiness) -> c_int {
    match r {
        Readiness::Ready => EDGEGW_RING_READY,
        Readiness::TimedOut => EDGEGW_RING_TIMED_OUT,
        Readiness::Finished => EDGEGW_RING_FINISHED,
        Readiness::PeerGone => EDGEGW_RING_PEER_GONE,
    }
}

/// What `edgegw_ring_strerror` says about `code`.
pub(crate) fn describe(code: c_int) -> &'static CStr {
    match code {
        EDGEGW_RING_OK => c"ok",
        EDGEGW_RING_E_INVALID => c"invalid argument",
        EDGEGW_RING_E_ATTACH => c"attach failed (see the message buffer)",
        EDGEGW_RING_E_CORRUPT => c"ring corrupt: the peer broke the format",
        EDGEGW_RING_E_FULL => c"ring full",
        EDGEGW_RING_E_TOO_LARGE => c"record too large for this ring",
        EDGEGW_RING_E_IO => c"system call failed",
        EDGEGW_RING_E_RESERVED_TYPE => c"record type reserved by the format",
        EDGEGW_RING_E_PANIC => c"internal error (panic caught)",
        _ => c"unknown error code",
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    /// cbindgen cannot evaluate `env!`, so the header's version is spelled out above: a version
    /// bump must update it (and regenerate the header).
    #[test]
    fn the_headers_version_is_the_crates() {
        assert_eq!(
            format!("{EDGEGW_RING_VERSION_MAJOR}.{EDGEGW_RING_VERSION_MINOR}.{EDGEGW_RING_VERSION_PATCH}"),
            edgegw_ring::VERSION
        );
    }
}
