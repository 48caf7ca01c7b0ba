//! The exported functions, and the crate's only unsafe code.
//!
//! The safety argument, once. C calls these functions under the contract the header states at
//! its top and in each function's "Safety" paragraph:
//! - a handle is NULL, or was stored by the matching attach function and not yet freed, and no
//!   two threads use one handle at the same time; so a non-NULL handle is a live `Box` that
//!   the call may borrow exclusively until it returns;
//! - every other pointer is NULL or valid for what the function does with it: `path` a
//!   NUL-terminated string, `err` `err_len` writable bytes, `out` and `rec` one writable value.
//!
//! NULL is checked wherever the header allows it. The rest cannot be checked from here, so the
//! helpers that rely on it are `unsafe fn`s whose "Safety" section names the part they rely on,
//! and every unsafe block says why its part holds. No function lets a panic unwind into C:
//! [`guard`] turns it into `EDGEGW_RING_E_PANIC`, or into the documented neutral result of a
//! function that has no error code.
#![allow(unsafe_code)]
// The types keep the names C sees, so that the header and this file read the same.
#![allow(non_camel_case_types)]

use crate::codes::{
    code, describe, readiness, EDGEGW_RING_E_INVALID, EDGEGW_RING_E_PANIC, EDGEGW_RING_FINISHED,
    EDGEGW_RING_NEW_RING, EDGEGW_RING_OK, EDGEGW_RING_PEER_GONE, EDGEGW_RING_REPLACED_RING,
    EDGEGW_RING_SAME_RING,
};
use edgegw_ring::{Consumer, Error, Producer, Result, RingFds};
use std::ffi::{c_char, c_int, CStr};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// A consumer attached to a ring (opaque).
#[derive(Debug)]
pub struct edgegw_ring_consumer(Consumer);

/// A producer attached to a ring (opaque).
#[derive(Debug)]
pub struct edgegw_ring_producer(Producer);

/// A record read in place. `data` points into the shared mapping and stays valid until
/// `edgegw_ring_consumer_release()`. The peer may still write those bytes (a hostile producer):
/// copy what you parse before you trust it.
#[repr(C)]
#[derive(Debug)]
pub struct edgegw_ring_record {
    /// The first payload byte.
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: u32,
    /// The record type (application types are 0..0xfeff).
    pub r#type: u16,
    /// The record's flags, as its producer set them.
    pub flags: u16,
}

/// Run `f`, turning a panic into `on_panic`: a panic must not unwind into C.
fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Write `msg` into the caller's message buffer, NUL-terminated, truncated to fit; nothing if
/// `buf` is NULL or `len` is 0.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
unsafe fn write_message(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: `buf` points to `len` writable bytes (the caller's promise) and n < len; `msg` is
    // a different allocation, so the ranges do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n) };
    // SAFETY: n < len, so the terminator is inside the buffer too.
    unsafe { buf.wrapping_add(n).write(0) };
}

/// `EDGEGW_RING_E_INVALID`, with `msg` written into the caller's message buffer.
///
/// # Safety
/// As for [`write_message`].
unsafe fn invalid(buf: *mut c_char, len: usize, msg: &str) -> c_int {
    // SAFETY: `buf` as the caller promised.
    unsafe { write_message(buf, len, msg) };
    EDGEGW_RING_E_INVALID
}

/// The code of error `e`, with what it says written into the caller's message buffer.
///
/// # Safety
/// As for [`write_message`].
unsafe fn failed(buf: *mut c_char, len: usize, e: &Error) -> c_int {
    // SAFETY: `buf` as the caller promised.
    unsafe { write_message(buf, len, &e.to_string()) };
    code(e)
}

/// The path argument as a string; `None` if it is NULL or not UTF-8. Copied, so nothing
/// borrowed from C outlives the call.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn path_arg(path: *const c_char) -> Option<String> {
    if path.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and NUL-terminated (the caller's promise); the borrow ends here.
    let path = unsafe { CStr::from_ptr(path) };
    path.to_str().ok().map(str::to_owned)
}

/// Store a new handle holding `value` in `*out`; the matching free function takes it back.
///
/// # Safety
/// `out` is non-NULL and points to a writable pointer.
unsafe fn give<T>(out: *mut *mut T, value: T) {
    // SAFETY: `out` is non-NULL and writable (the caller's promise).
    unsafe { out.write(Box::into_raw(Box::new(value))) };
}

/// Run `f` on the handle `h` points to; `None` if `h` is NULL. The borrow lives only as long as
/// `f`, so it cannot outlive the call that received `h`.
///
/// # Safety
/// `h` is NULL or a live handle (stored by [`give`], not yet freed) that no other thread uses
/// until this returns.
unsafe fn handle<T, R>(h: *mut T, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    // SAFETY: a non-NULL `h` is a live Box allocation that only this thread uses now (the
    // caller's promise); `as_mut` turns NULL into None.
    unsafe { h.as_mut() }.map(f)
}

/// Drop the handle `h` points to; nothing if `h` is NULL.
///
/// # Safety
/// `h` is NULL or a live handle (stored by [`give`], not yet freed) that nothing uses any more.
unsafe fn free<T>(h: *mut T) {
    if !h.is_null() {
        // SAFETY: the Box that `give` leaked, not freed before and not used after (the
        // caller's promise).
        drop(unsafe { Box::from_raw(h) });
    }
}

/// Attach with `make` and store the new handle in `*out`, or report why not.
///
/// # Safety
/// `out` is NULL or points to a writable pointer; `err` is NULL or points to `err_len`
/// writable bytes.
unsafe fn attach_with<T>(
    out: *mut *mut T,
    err: *mut c_char,
    err_len: usize,
    make: impl FnOnce() -> Result<T>,
) -> c_int {
    if out.is_null() {
        // SAFETY: `err` as the caller promised.
        return unsafe { invalid(err, err_len, "out pointer is NULL") };
    }
    match make() {
        Ok(value) => {
            // SAFETY: `out` is non-NULL (checked above) and writable (the caller's promise).
            unsafe { give(out, value) };
            EDGEGW_RING_OK
        }
        // SAFETY: `err` as the caller promised.
        Err(e) => unsafe { failed(err, err_len, &e) },
    }
}

/// Attach by path, for both attach functions.
///
/// # Safety
/// As for [`path_arg`] and [`attach_with`].
unsafe fn attach_at<T>(
    path: *const c_char,
    out: *mut *mut T,
    err: *mut c_char,
    err_len: usize,
    make: impl FnOnce(&str) -> Result<T>,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (the caller's promise).
    let Some(path) = (unsafe { path_arg(path) }) else {
        // SAFETY: `err` as the caller promised.
        return unsafe { invalid(err, err_len, "path is NULL or not UTF-8") };
    };
    // SAFETY: `out` and `err` as the caller promised.
    unsafe { attach_with(out, err, err_len, || make(&path)) }
}

/// A timeout in milliseconds; negative: none.
fn timeout_arg(ms: c_int) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Attach as the consumer of the ring served on the unix socket at `path`.
///
/// Returns `EDGEGW_RING_OK` and stores the new handle in `*out`, or returns a negative code and,
/// if `err` is not NULL, writes why into it (NUL-terminated, truncated to `err_len` bytes).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a writable pointer;
/// `err` is NULL or points to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_attach(
    path: *const c_char,
    out: *mut *mut edgegw_ring_consumer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: the pointers as this function's contract says.
        unsafe {
            attach_at(path, out, err, err_len, |path| {
                Consumer::attach(path).map(edgegw_ring_consumer)
            })
        }
    })
}

/// Consume a ring whose fds a parent process passed in the environment variable
/// `EDGEGW_RING_FDS` (fork and exec, no socket). Returns like `edgegw_ring_consumer_attach`.
///
/// # Safety
/// `out` is NULL or points to a writable pointer; `err` is NULL or points to `err_len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_from_env(
    out: *mut *mut edgegw_ring_consumer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: the pointers as this function's contract says.
        unsafe {
            attach_with(out, err, err_len, || {
                Consumer::from_fds(RingFds::from_env()?).map(edgegw_ring_consumer)
            })
        }
    })
}

/// Read the next published record: returns 1 and fills `*rec`, 0 if there is none, or a
/// negative code.
///
/// # Safety
/// `c` is NULL or a live consumer handle; `rec` is NULL or points to a writable
/// `edgegw_ring_record`.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_read(
    c: *mut edgegw_ring_consumer,
    rec: *mut edgegw_ring_record,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        if rec.is_null() {
            return EDGEGW_RING_E_INVALID;
        }
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let next = unsafe {
            handle(c, |c| match c.0.read() {
                Ok(Some(r)) => Ok(Some(edgegw_ring_record {
                    data: r.payload().as_ptr(),
                    len: r.len() as u32,
                    r#type: r.record_type(),
                    flags: r.flags(),
                })),
                Ok(None) => Ok(None),
                Err(e) => Err(code(&e)),
            })
        };
        match next {
            None => EDGEGW_RING_E_INVALID,
            Some(Ok(Some(record))) => {
                // SAFETY: `rec` is non-NULL (checked above) and writable (this function's
                // contract).
                unsafe { rec.write(record) };
                1
            }
            Some(Ok(None)) => 0,
            Some(Err(code)) => code,
        }
    })
}

/// Release every record read so far (one store); wakes a producer waiting for space. The
/// `data` pointers of those records are no longer valid.
///
/// # Safety
/// `c` is NULL (ignored) or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_release(c: *mut edgegw_ring_consumer) {
    guard((), || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.release()) };
    })
}

/// Block until there is data, the ring is finished, its owner is gone, or `timeout_ms`
/// milliseconds pass (negative: no timeout). Spins briefly first. Returns `EDGEGW_RING_READY`,
/// `EDGEGW_RING_TIMED_OUT`, `EDGEGW_RING_FINISHED`, `EDGEGW_RING_PEER_GONE` or a negative code.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_wait(
    c: *mut edgegw_ring_consumer,
    timeout_ms: c_int,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let waited = unsafe { handle(c, |c| c.0.wait(timeout_arg(timeout_ms))) };
        match waited {
            None => EDGEGW_RING_E_INVALID,
            Some(Ok(r)) => readiness(r),
            Some(Err(e)) => code(&e),
        }
    })
}

/// The data eventfd, for epoll or poll. To sleep on it: call
/// `edgegw_ring_consumer_prepare_wait()`; if it returns 1, wait until the fd is readable, then
/// call `edgegw_ring_consumer_finish_wait()`; if it returns 0, data is there: do not sleep.
/// The fd belongs to the handle: do not close it.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_data_fd(c: *mut edgegw_ring_consumer) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.data_fd().as_raw_fd()) }.unwrap_or(EDGEGW_RING_E_INVALID)
    })
}

/// Arm the wait on the data eventfd, then look again: 1 if the caller should sleep, 0 if data
/// is there (the wait is disarmed), `EDGEGW_RING_FINISHED` if the producer finished the ring and
/// everything was read, `EDGEGW_RING_PEER_GONE` if the owner hung up and nothing is left to
/// read (in both cases the wait is disarmed: sleeping would never end), or a negative code.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_prepare_wait(c: *mut edgegw_ring_consumer) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let prepared = unsafe { handle(c, |c| c.0.prepare_wait()) };
        match prepared {
            None => EDGEGW_RING_E_INVALID,
            Some(Ok(sleep)) => c_int::from(sleep),
            Some(Err(edgegw_ring::Error::Finished)) => EDGEGW_RING_FINISHED,
            Some(Err(edgegw_ring::Error::PeerGone)) => EDGEGW_RING_PEER_GONE,
            Some(Err(e)) => code(&e),
        }
    })
}

/// End a wait armed by `edgegw_ring_consumer_prepare_wait()` (after the fd became readable or
/// the caller gave up waiting).
///
/// # Safety
/// `c` is NULL (ignored) or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_finish_wait(c: *mut edgegw_ring_consumer) {
    guard((), || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.finish_wait()) };
    })
}

/// Attach again to the socket this consumer attached to, after a wait said
/// `EDGEGW_RING_FINISHED` or `EDGEGW_RING_PEER_GONE` (the daemon stopped or restarted; FORMAT.md
/// section 7). Returns `EDGEGW_RING_SAME_RING` (the same ring, continued: reading goes on from
/// this consumer's own read position, nothing lost or repeated), `EDGEGW_RING_NEW_RING`,
/// `EDGEGW_RING_REPLACED_RING`, or a negative code (`EDGEGW_RING_E_ATTACH` while the socket is
/// missing or busy: try again later; the handle is unchanged) and, if `err` is not NULL, why.
///
/// # Safety
/// `c` is NULL or a live consumer handle; `err` is NULL or points to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_reattach(
    c: *mut edgegw_ring_consumer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let Some(result) = (unsafe { handle(c, |c| c.0.reattach()) }) else {
            // SAFETY: `err` as the caller promised.
            return unsafe { invalid(err, err_len, "consumer handle is NULL") };
        };
        match result {
            Ok(edgegw_ring::Reattached::SameRing) => EDGEGW_RING_SAME_RING,
            Ok(edgegw_ring::Reattached::Replaced { .. }) => EDGEGW_RING_REPLACED_RING,
            Ok(_) => EDGEGW_RING_NEW_RING,
            // SAFETY: `err` as the caller promised.
            Err(e) => unsafe { failed(err, err_len, &e) },
        }
    })
}

/// The ring's generation: it changes when the ring's owner restarts with a new ring. 0 if `c`
/// is NULL.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_generation(c: *mut edgegw_ring_consumer) -> u64 {
    guard(0, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.generation()) }.unwrap_or(0)
    })
}

/// Fault in every page of the ring now, so that the first packets take no page faults (the
/// README measures the difference). Returns `EDGEGW_RING_OK`, or `EDGEGW_RING_E_INVALID` if
/// `c` is NULL.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_prefault(c: *mut edgegw_ring_consumer) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.prefault()) }.map_or(EDGEGW_RING_E_INVALID, |()| EDGEGW_RING_OK)
    })
}

/// The largest payload a record of this ring can have, in bytes. 0 if `c` is NULL.
///
/// # Safety
/// `c` is NULL or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_max_payload(c: *mut edgegw_ring_consumer) -> usize {
    guard(0, || {
        // SAFETY: `c` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(c, |c| c.0.max_payload()) }.unwrap_or(0)
    })
}

/// Detach (the ring's owner notices) and free the handle. NULL is ignored.
///
/// # Safety
/// `c` is NULL or a live consumer handle, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_consumer_free(c: *mut edgegw_ring_consumer) {
    // SAFETY: `c` is NULL or a live handle, never used again (this function's contract).
    guard((), || unsafe { free(c) })
}

/// Attach as the producer of the ring served on the unix socket at `path` (a reply ring).
/// Returns like `edgegw_ring_consumer_attach`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a writable pointer;
/// `err` is NULL or points to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_attach(
    path: *const c_char,
    out: *mut *mut edgegw_ring_producer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: the pointers as this function's contract says.
        unsafe {
            attach_at(path, out, err, err_len, |path| {
                Producer::attach(path).map(edgegw_ring_producer)
            })
        }
    })
}

/// Fault in every page of the ring now, so that the first packets take no page faults (the
/// README measures the difference). Returns `EDGEGW_RING_OK`, or `EDGEGW_RING_E_INVALID` if
/// `p` is NULL.
///
/// # Safety
/// `p` is NULL or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_prefault(p: *mut edgegw_ring_producer) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `p` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(p, |p| p.0.prefault()) }.map_or(EDGEGW_RING_E_INVALID, |()| EDGEGW_RING_OK)
    })
}

/// Reserve a record of `len` payload bytes: returns `EDGEGW_RING_OK` and stores in `*out`
/// where to write the payload, or a negative code (`EDGEGW_RING_E_FULL`: no room now). The
/// record becomes visible with `edgegw_ring_producer_publish()`; several reservations form one
/// batch.
///
/// # Safety
/// `p` is NULL or a live producer handle; `out` is NULL or points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_reserve(
    p: *mut edgegw_ring_producer,
    len: usize,
    r#type: u16,
    flags: u16,
    out: *mut *mut u8,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        if out.is_null() {
            return EDGEGW_RING_E_INVALID;
        }
        // SAFETY: `p` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let reserved = unsafe {
            handle(p, |p| {
                p.0.reserve(len, r#type, flags)
                    .map(|buf| buf.as_mut_ptr())
                    .map_err(|e| code(&e))
            })
        };
        match reserved {
            None => EDGEGW_RING_E_INVALID,
            Some(Ok(buf)) => {
                // SAFETY: `out` is non-NULL (checked above) and writable (this function's
                // contract).
                unsafe { out.write(buf) };
                EDGEGW_RING_OK
            }
            Some(Err(code)) => code,
        }
    })
}

/// Publish every record reserved since the last publish (one store); wakes a waiting consumer.
///
/// # Safety
/// `p` is NULL (ignored) or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_publish(p: *mut edgegw_ring_producer) {
    guard((), || {
        // SAFETY: `p` is NULL or a live handle this thread alone uses (this function's
        // contract).
        unsafe { handle(p, |p| p.0.publish()) };
    })
}

/// Block until a record of `len` payload bytes fits, or `timeout_ms` milliseconds pass
/// (negative: no timeout). Returns like `edgegw_ring_consumer_wait`.
///
/// # Safety
/// `p` is NULL or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_wait_for_space(
    p: *mut edgegw_ring_producer,
    len: usize,
    timeout_ms: c_int,
) -> c_int {
    guard(EDGEGW_RING_E_PANIC, || {
        // SAFETY: `p` is NULL or a live handle this thread alone uses (this function's
        // contract).
        let waited = unsafe { handle(p, |p| p.0.wait_for_space(len, timeout_arg(timeout_ms))) };
        match waited {
            None => EDGEGW_RING_E_INVALID,
            Some(Ok(r)) => readiness(r),
            Some(Err(e)) => code(&e),
        }
    })
}

/// Detach (the ring's owner notices) and free the handle. Unpublished reservations are
/// dropped. NULL is ignored.
///
/// # Safety
/// `p` is NULL or a live producer handle, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn edgegw_ring_producer_free(p: *mut edgegw_ring_producer) {
    // SAFETY: `p` is NULL or a live handle, never used again (this function's contract).
    guard((), || unsafe { free(p) })
}

/// The version of the library linked, as a static, NUL-terminated `"MAJOR.MINOR.PATCH"`.
#[no_mangle]
pub extern "C" fn edgegw_ring_version() -> *const c_char {
    VERSION.as_ptr()
}

/// [`edgegw_ring::VERSION`] as a C string (this crate and `edgegw-ring` share the workspace's
/// version; a test checks it).
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the version has no NUL byte"),
    };

/// A static, NUL-terminated description of an error code.
#[no_mangle]
pub extern "C" fn edgegw_ring_strerror(code: c_int) -> *const c_char {
    describe(code).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{EDGEGW_RING_E_ATTACH, EDGEGW_RING_E_RESERVED_TYPE};
    use std::ptr::{null, null_mut};

    #[test]
    #[allow(
        clippy::multiple_unsafe_ops_per_block,
        reason = "one safety argument for every call: NULL is allowed everywhere"
    )]
    fn null_handles_and_pointers_are_refused_without_being_read() {
        let mut record = edgegw_ring_record {
            data: null(),
            len: 0,
            r#type: 0,
            flags: 0,
        };
        let mut out: *mut u8 = null_mut();
        let mut consumer: *mut edgegw_ring_consumer = null_mut();
        // SAFETY: NULL is allowed for every handle and pointer here (the header's contract).
        unsafe {
            let c = null_mut();
            assert_eq!(
                edgegw_ring_consumer_read(c, &mut record),
                EDGEGW_RING_E_INVALID
            );
            assert_eq!(edgegw_ring_consumer_wait(c, 0), EDGEGW_RING_E_INVALID);
            assert_eq!(edgegw_ring_consumer_data_fd(c), EDGEGW_RING_E_INVALID);
            assert_eq!(edgegw_ring_consumer_prepare_wait(c), EDGEGW_RING_E_INVALID);
            assert_eq!(edgegw_ring_consumer_generation(c), 0);
            assert_eq!(edgegw_ring_consumer_max_payload(c), 0);
            assert_eq!(edgegw_ring_consumer_prefault(c), EDGEGW_RING_E_INVALID);
            edgegw_ring_consumer_release(c);
            edgegw_ring_consumer_finish_wait(c);
            edgegw_ring_consumer_free(c);
            let p = null_mut();
            assert_eq!(
                edgegw_ring_producer_reserve(p, 8, 1, 0, &mut out),
                EDGEGW_RING_E_INVALID
            );
            assert_eq!(
                edgegw_ring_producer_wait_for_space(p, 8, 0),
                EDGEGW_RING_E_INVALID
            );
            edgegw_ring_producer_publish(p);
            assert_eq!(edgegw_ring_producer_prefault(p), EDGEGW_RING_E_INVALID);
            edgegw_ring_producer_free(p);
            assert_eq!(
                edgegw_ring_consumer_attach(null(), &mut consumer, null_mut(), 0),
                EDGEGW_RING_E_INVALID
            );
            assert_eq!(
                edgegw_ring_consumer_attach(c"/nonexistent".as_ptr(), null_mut(), null_mut(), 0),
                EDGEGW_RING_E_INVALID
            );
        }
        assert!(consumer.is_null() && out.is_null());
    }

    /// Serves `ring` at `path` on a thread until `stop`; the server (and its socket) goes then.
    fn serve(
        path: &std::path::Path,
        ring: edgegw_ring::ServedRing,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let mut server =
            edgegw_ring::RingServer::bind(path, ring, edgegw_ring::AllowList::current_user())
                .unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.serve_for(Some(Duration::from_millis(5))).unwrap();
            }
        })
    }

    #[test]
    #[allow(
        clippy::multiple_unsafe_ops_per_block,
        reason = "one safety argument for every call: the same live handle throughout"
    )]
    fn a_c_consumer_reattaches_to_a_ring_its_restarted_owner_took_back_and_reads_on() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("edgegw-ffi-reattach-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ring.sock");
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let mut producer =
            Producer::create(edgegw_ring::RingConfig::with_capacity(64 * 1024)).unwrap();
        let stored = producer.fds().unwrap().try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let first = serve(&path, producer.served_ring().unwrap(), stop.clone());
        let mut c: *mut edgegw_ring_consumer = null_mut();
        let mut err = [0 as c_char; 256];
        let mut record = edgegw_ring_record {
            data: null(),
            len: 0,
            r#type: 0,
            flags: 0,
        };
        // SAFETY: every pointer is a live local; `c` is a live handle once attached, used by
        // this thread only, freed at the end.
        unsafe {
            assert_eq!(
                edgegw_ring_consumer_attach(cpath.as_ptr(), &mut c, err.as_mut_ptr(), err.len()),
                EDGEGW_RING_OK
            );
            producer.send(1, 0, b"before").unwrap();
            assert_eq!(edgegw_ring_consumer_read(c, &mut record), 1);
            assert_eq!(record.len, 6);
            // Read, not released: the same ring must not give it again.
            // The owner stops (FINISHED) and comes back with its ring.
            producer.finish();
            stop.store(true, Ordering::Relaxed);
            first.join().unwrap();
            drop(producer);
            assert_eq!(edgegw_ring_consumer_wait(c, 100), EDGEGW_RING_FINISHED);
            assert_eq!(
                edgegw_ring_consumer_reattach(c, err.as_mut_ptr(), err.len()),
                EDGEGW_RING_E_ATTACH,
                "no owner yet"
            );
            let edgegw_ring::TakenBack::Continued(mut producer) =
                Producer::take_back(stored).unwrap()
            else {
                panic!("the ring continues");
            };
            let again = Arc::new(AtomicBool::new(false));
            let second = serve(&path, producer.served_ring().unwrap(), again.clone());
            producer.send(1, 0, b"after").unwrap();
            assert_eq!(
                edgegw_ring_consumer_reattach(c, err.as_mut_ptr(), err.len()),
                EDGEGW_RING_SAME_RING
            );
            assert_eq!(edgegw_ring_consumer_read(c, &mut record), 1);
            assert_eq!(
                std::slice::from_raw_parts(record.data, record.len as usize),
                b"after"
            );
            assert_eq!(edgegw_ring_consumer_read(c, &mut record), 0);
            edgegw_ring_consumer_free(c);
            again.store(true, Ordering::Relaxed);
            second.join().unwrap();
            assert_eq!(
                edgegw_ring_consumer_reattach(null_mut(), null_mut(), 0),
                EDGEGW_RING_E_INVALID
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_attach_error_is_written_nul_terminated_and_truncated_to_the_buffer() {
        let path = c"/nonexistent/edgegw-ring-ffi-test.sock";
        let mut consumer: *mut edgegw_ring_consumer = null_mut();
        let mut full = [0x55 as c_char; 256];
        // SAFETY: a NUL-terminated path, a writable out pointer, a buffer of its length.
        let code = unsafe {
            edgegw_ring_consumer_attach(path.as_ptr(), &mut consumer, full.as_mut_ptr(), 256)
        };
        assert_eq!(code, EDGEGW_RING_E_ATTACH);
        assert!(consumer.is_null());
        // SAFETY: the function NUL-terminated the message inside the buffer.
        let message = unsafe { CStr::from_ptr(full.as_ptr()) }.to_str().unwrap();
        assert!(message.contains("no ring socket at this path"), "{message}");

        let mut short = [0x55 as c_char; 9];
        // SAFETY: as above, with a buffer of 8 bytes (one more is left untouched).
        unsafe { edgegw_ring_consumer_attach(path.as_ptr(), &mut consumer, short.as_mut_ptr(), 8) };
        let bytes: Vec<u8> = short.iter().map(|&b| b as u8).collect();
        assert_eq!(&bytes[..7], &message.as_bytes()[..7]);
        assert_eq!(bytes[7], 0, "terminated inside the buffer");
        assert_eq!(bytes[8], 0x55, "nothing written past err_len");
    }

    #[test]
    fn the_version_is_the_crates_as_a_c_string() {
        // SAFETY: a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(edgegw_ring_version()) };
        assert_eq!(v.to_str().unwrap(), edgegw_ring::VERSION);
    }

    #[test]
    fn a_path_that_is_not_utf8_is_an_invalid_argument() {
        let mut producer: *mut edgegw_ring_producer = null_mut();
        let mut err = [0 as c_char; 64];
        // SAFETY: a NUL-terminated path, a writable out pointer, a buffer of its length.
        let code = unsafe {
            edgegw_ring_producer_attach(
                c"/tmp/\xff.sock".as_ptr(),
                &mut producer,
                err.as_mut_ptr(),
                64,
            )
        };
        assert_eq!(code, EDGEGW_RING_E_INVALID);
        // SAFETY: NUL-terminated by the function.
        let message = unsafe { CStr::from_ptr(err.as_ptr()) };
        assert_eq!(message, c"path is NULL or not UTF-8");
    }

    #[test]
    #[allow(
        clippy::multiple_unsafe_ops_per_block,
        reason = "one safety argument for every call: the same live handle throughout"
    )]
    fn prepare_wait_on_a_finished_and_drained_ring_says_finished_instead_of_sleep() {
        let mut producer =
            Producer::create(edgegw_ring::RingConfig::with_capacity(64 * 1024)).unwrap();
        let fds = producer.served_ring().unwrap().into_fds();
        let mut handle = edgegw_ring_consumer(Consumer::from_fds(fds).unwrap());
        let c: *mut edgegw_ring_consumer = &mut handle;
        producer.send(1, 0, b"last").unwrap();
        producer.finish();
        let mut record = edgegw_ring_record {
            data: null(),
            len: 0,
            r#type: 0,
            flags: 0,
        };
        // SAFETY: `c` points to a live handle used by this thread only; `record` is writable.
        unsafe {
            assert_eq!(edgegw_ring_consumer_prepare_wait(c), 0, "a record waits");
            assert_eq!(edgegw_ring_consumer_read(c, &mut record), 1);
            assert_eq!(record.len, 4);
            edgegw_ring_consumer_release(c);
            assert_eq!(edgegw_ring_consumer_read(c, &mut record), 0);
            // Sleeping now would never end: the C caller must be told, not told to sleep.
            assert_eq!(edgegw_ring_consumer_prepare_wait(c), EDGEGW_RING_FINISHED);
        }
    }

    #[test]
    fn every_error_code_has_its_own_description() {
        let described: Vec<&CStr> = (EDGEGW_RING_E_PANIC..=EDGEGW_RING_OK)
            // SAFETY: strerror returns a static NUL-terminated string.
            .map(|code| unsafe { CStr::from_ptr(edgegw_ring_strerror(code)) })
            .collect();
        for (i, d) in described.iter().enumerate() {
            assert_ne!(*d, c"unknown error code");
            assert!(!described[..i].contains(d), "{d:?} twice");
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(edgegw_ring_strerror(-100)) };
        assert_eq!(unknown, c"unknown error code");
        assert_eq!(
            describe(EDGEGW_RING_E_RESERVED_TYPE),
            c"record type reserved by the format"
        );
    }
}
