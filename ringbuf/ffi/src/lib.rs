//! The C ABI of the edgegw shared-memory packet ring: `libedgegw_ring.a` and `libedgegw_ring.so`,
//! declared by `include/edgegw_ring.h` (in the `edgegw-ring` crate's directory).
//!
//! A C program gets the Rust implementation itself, so it gets the same checks as a Rust
//! consumer (seals, sizes, magic, version, every position and record header the peer writes).
//! Handles are boxed Rust endpoints (`edgegw_ring::Consumer`, `edgegw_ring::Producer`);
//! errors are negative codes, and the attach functions, which can fail for many reasons, also
//! write a message into a buffer the caller supplies.
//!
//! The pieces:
//! - `codes`: the error codes and wait outcomes, and how Rust errors map onto them (safe code).
//! - `abi`: the exported functions, the crate's only unsafe code: each one trusts the pointers C
//!   passes it as far as the header's contract allows, and no further.
//!
//! The header is generated from these sources by cbindgen (the doc comments become its
//! comments) and checked in; `tests/header.rs` fails when it is stale and regenerates it with
//! `EDGEGW_BLESS=1 cargo test -p edgegw-ring-ffi --test header`.
//!
//! This crate is a separate package so that the C libraries are built only when asked for
//! (`cargo build -p edgegw-ring-ffi`), not with every build of the daemon.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod abi;
mod codes;
