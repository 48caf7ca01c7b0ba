//! The C ABI: `include/edgegw_ring.h` declares these functions. Handles are boxed Rust
//! endpoints; every function checks its pointers for NULL, never unwinds into C (a panic becomes
//! `EDGEGW_RING_E_PANIC`) and reports errors as negative codes plus, where a call can fail for
//! many reasons (attach), a message in a caller-supplied buffer.

use crate::{Consumer, Error, Producer, Readiness, RingFds};
use std::ffi::{c_char, c_int, CStr};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

const OK: c_int = 0;
const E_INVALID: c_int = -1;
const E_ATTACH: c_int = -2;
const E_CORRUPT: c_int = -3;
const E_FULL: c_int = -4;
const E_TOO_LARGE: c_int = -5;
const E_IO: c_int = -6;
const E_RESERVED_TYPE: c_int = -7;
const E_PANIC: c_int = -8;

const WAIT_READY: c_int = 0;
const WAIT_TIMED_OUT: c_int = 1;
const WAIT_FINISHED: c_int = 2;
const WAIT_PEER_GONE: c_int = 3;

/// Opaque consumer handle for C.
#[derive(Debug)]
pub struct CConsumer(Consumer);

/// Opaque producer handle for C.
#[derive(Debug)]
pub struct CProducer(Producer);

/// A record as C sees it: the payload pointer is into the shared mapping, valid until release.
#[repr(C)]
#[derive(Debug)]
pub struct CRecord {
    data: *const u8,
    len: u32,
    record_type: u16,
    flags: u16,
}

fn code(e: &Error) -> c_int {
    match e {
        Error::Full { .. } => E_FULL,
        Error::TooLarge { .. } => E_TOO_LARGE,
        Error::ReservedType(_) => E_RESERVED_TYPE,
        Error::Corrupt(_) => E_CORRUPT,
        Error::Refused { .. } | Error::Attach { .. } | Error::InvalidRing(_) | Error::Config(_) => {
            E_ATTACH
        }
        _ => E_IO,
    }
}

/// Run `f`, turning a panic into `E_PANIC`.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(E_PANIC)
}

/// Write `msg` NUL-terminated (truncated) into `buf`.
fn write_message(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: the caller promises `buf` points to `len` writable bytes; we write n + 1 <= len.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    out[..n].copy_from_slice(&msg.as_bytes()[..n]);
    out[n] = 0;
}

fn path_arg<'a>(path: *const c_char) -> Option<&'a str> {
    if path.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string that outlives the call.
    unsafe { CStr::from_ptr(path) }.to_str().ok()
}

fn timeout_arg(ms: c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

fn readiness(r: Readiness) -> c_int {
    match r {
        Readiness::Ready => WAIT_READY,
        Readiness::TimedOut => WAIT_TIMED_OUT,
        Readiness::Finished => WAIT_FINISHED,
        Readiness::PeerGone => WAIT_PEER_GONE,
    }
}

/// Store a new handle in `*out`.
fn give<T>(out: *mut *mut T, value: T) {
    // SAFETY: the caller checked `out` is non-NULL; it points to a writable pointer slot.
    unsafe { *out = Box::into_raw(Box::new(value)) };
}

fn attach_with<T>(
    out: *mut *mut T,
    err: *mut c_char,
    err_len: usize,
    make: impl FnOnce() -> crate::Result<T>,
) -> c_int {
    if out.is_null() {
        write_message(err, err_len, "out pointer is NULL");
        return E_INVALID;
    }
    match make() {
        Ok(v) => {
            give(out, v);
            OK
        }
        Err(e) => {
            write_message(err, err_len, &e.to_string());
            code(&e)
        }
    }
}

/// See `edgegw_ring_consumer_attach` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_attach(
    path: *const c_char,
    out: *mut *mut CConsumer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(|| {
        let Some(path) = path_arg(path) else {
            write_message(err, err_len, "path is NULL or not UTF-8");
            return E_INVALID;
        };
        attach_with(out, err, err_len, || Consumer::attach(path).map(CConsumer))
    })
}

/// See `edgegw_ring_consumer_from_env` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_from_env(
    out: *mut *mut CConsumer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(|| {
        attach_with(out, err, err_len, || {
            Consumer::from_fds(RingFds::from_env()?).map(CConsumer)
        })
    })
}

/// Borrow a handle mutably.
fn handle<'a, T>(h: *mut T) -> Option<&'a mut T> {
    // SAFETY: the caller passes a pointer it got from our attach function and has not freed,
    // and does not use it from two threads at once (the header says so), so it is a valid,
    // exclusive Box allocation; NULL is rejected by as_mut.
    unsafe { h.as_mut() }
}

/// See `edgegw_ring_consumer_read` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_read(c: *mut CConsumer, rec: *mut CRecord) -> c_int {
    guard(|| {
        let (Some(c), false) = (handle(c), rec.is_null()) else {
            return E_INVALID;
        };
        match c.0.read() {
            Ok(Some(r)) => {
                let out = CRecord {
                    data: r.payload().as_ptr(),
                    len: r.len() as u32,
                    record_type: r.record_type(),
                    flags: r.flags(),
                };
                // SAFETY: rec is non-NULL and points to a writable CRecord (header contract).
                unsafe { rec.write(out) };
                1
            }
            Ok(None) => 0,
            Err(e) => code(&e),
        }
    })
}

/// See `edgegw_ring_consumer_release` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_release(c: *mut CConsumer) {
    let _ = guard(|| {
        if let Some(c) = handle(c) {
            c.0.release();
        }
        OK
    });
}

/// See `edgegw_ring_consumer_wait` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_wait(c: *mut CConsumer, timeout_ms: c_int) -> c_int {
    guard(|| match handle(c) {
        None => E_INVALID,
        Some(c) => match c.0.wait(timeout_arg(timeout_ms)) {
            Ok(r) => readiness(r),
            Err(e) => code(&e),
        },
    })
}

/// See `edgegw_ring_consumer_data_fd` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_data_fd(c: *mut CConsumer) -> c_int {
    guard(|| handle(c).map_or(E_INVALID, |c| c.0.data_fd().as_raw_fd()))
}

/// See `edgegw_ring_consumer_prepare_wait` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_prepare_wait(c: *mut CConsumer) -> c_int {
    guard(|| match handle(c) {
        None => E_INVALID,
        Some(c) => match c.0.prepare_wait() {
            Ok(sleep) => sleep as c_int,
            Err(e) => code(&e),
        },
    })
}

/// See `edgegw_ring_consumer_finish_wait` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_finish_wait(c: *mut CConsumer) {
    let _ = guard(|| {
        if let Some(c) = handle(c) {
            c.0.finish_wait();
        }
        OK
    });
}

/// See `edgegw_ring_consumer_generation` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_generation(c: *mut CConsumer) -> u64 {
    handle(c).map_or(0, |c| c.0.generation())
}

/// See `edgegw_ring_consumer_max_payload` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_max_payload(c: *mut CConsumer) -> usize {
    handle(c).map_or(0, |c| c.0.max_payload())
}

/// See `edgegw_ring_consumer_free` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_consumer_free(c: *mut CConsumer) {
    if !c.is_null() {
        // SAFETY: a non-NULL pointer from our attach function, freed once (header contract).
        drop(unsafe { Box::from_raw(c) });
    }
}

/// See `edgegw_ring_producer_attach` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_producer_attach(
    path: *const c_char,
    out: *mut *mut CProducer,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    guard(|| {
        let Some(path) = path_arg(path) else {
            write_message(err, err_len, "path is NULL or not UTF-8");
            return E_INVALID;
        };
        attach_with(out, err, err_len, || Producer::attach(path).map(CProducer))
    })
}

/// See `edgegw_ring_producer_reserve` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_producer_reserve(
    p: *mut CProducer,
    len: usize,
    record_type: u16,
    flags: u16,
    out: *mut *mut u8,
) -> c_int {
    guard(|| {
        let (Some(p), false) = (handle(p), out.is_null()) else {
            return E_INVALID;
        };
        match p.0.reserve(len, record_type, flags) {
            Ok(buf) => {
                // SAFETY: out is non-NULL and points to a writable pointer slot (header contract).
                unsafe { out.write(buf.as_mut_ptr()) };
                OK
            }
            Err(e) => code(&e),
        }
    })
}

/// See `edgegw_ring_producer_publish` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_producer_publish(p: *mut CProducer) {
    let _ = guard(|| {
        if let Some(p) = handle(p) {
            p.0.publish();
        }
        OK
    });
}

/// See `edgegw_ring_producer_wait_for_space` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_producer_wait_for_space(
    p: *mut CProducer,
    len: usize,
    timeout_ms: c_int,
) -> c_int {
    guard(|| match handle(p) {
        None => E_INVALID,
        Some(p) => match p.0.wait_for_space(len, timeout_arg(timeout_ms)) {
            Ok(r) => readiness(r),
            Err(e) => code(&e),
        },
    })
}

/// See `edgegw_ring_producer_free` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_producer_free(p: *mut CProducer) {
    if !p.is_null() {
        // SAFETY: a non-NULL pointer from our attach function, freed once (header contract).
        drop(unsafe { Box::from_raw(p) });
    }
}

/// See `edgegw_ring_strerror` in the header.
#[no_mangle]
pub extern "C" fn edgegw_ring_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        OK => c"ok",
        E_INVALID => c"invalid argument",
        E_ATTACH => c"attach failed (see the message buffer)",
        E_CORRUPT => c"ring corrupt: the peer broke the format",
        E_FULL => c"ring full",
        E_TOO_LARGE => c"record too large for this ring",
        E_IO => c"system call failed",
        E_RESERVED_TYPE => c"record type reserved by the format",
        E_PANIC => c"internal error (panic caught)",
        _ => c"unknown error code",
    };
    s.as_ptr()
}
