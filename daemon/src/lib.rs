//! edgegw, the edge gateway daemon, as a library: the `edgegw` binary is a thin CLI over it.
//!
//! How the pieces fit:
//! - [`proto`] is the gateway's records inside a ring (OPEN, DATA, CLOSE): the ground floor,
//!   importing nothing of the daemon.
//! - [`config`] parses and validates the TOML config whole, with errors that name file, line
//!   and key.
//! - [`tls`] turns a listener's config into a rustls `ServerConfig` (certificates by SNI,
//!   client verification, tickets), and generates the default self-signed certificate.
//! - [`gateway`] is the data path: the TLS thread, its listeners and connections, and the
//!   routes (shared-memory rings from `edgegw-ring`, or plain sockets) that take the plaintext.
//! - [`control`] is the control plane on the main thread: it builds a plan from a config,
//!   starts the TLS thread with it, serves the ring attach sockets, and swaps plans on reload.
//! - [`cli`] is the command line: `run`, `check-config`, `ring stat|tail|echo`, `events`.
//!
//! Unsafe code lives only in `sys` (adopting the sockets systemd passes).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod gateway;
pub mod log;
pub mod paths;
pub mod proto;
mod sys;
pub mod tls;
