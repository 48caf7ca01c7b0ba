//! edgegw, the edge gateway daemon, as a library: the `edgegw` binary is a thin command line
//! over it.
//!
//! The daemon is two threads, and the modules follow them. The main thread runs the control
//! plane ([`control`]): [`control::main`] reads the config, starts a current_thread runtime,
//! installs the signal handlers and hands everything to [`control::Daemon::run`], the one loop
//! that serves the rings' attach sockets, acts on what the TLS thread reports, runs reloads
//! one at a time and stops when asked. It turns a config ([`config`]: TOML, validated whole,
//! every error at its file, line and key) into what the data path runs: rustls configs
//! ([`tls`]), listening sockets (one table, which the control plane owns), rings from
//! `edgegw-ring` with their attach servers, and a [`gateway::Plan`] that carries the validated
//! config itself to the other thread.
//!
//! The TLS thread is the data path ([`gateway`]). It accepts on the sockets the plan names,
//! admits connections under each listener's limits, runs their handshakes, and hands each
//! established connection to the relay: one loop between the client's TLS session and the
//! route's backend, which is a ring pair (the client's plaintext as records, the consumer's
//! replies back) or a local TCP or unix socket. It talks to the main thread only through
//! commands, events and counters.
//!
//! Below both sits the `edgegw-proto` crate, the gateway's records inside a ring (OPEN, DATA,
//! CLOSE), which depends on nothing and is what Rust consumers use too; beside them [`paths`] (the state and runtime directories)
//! and [`log`] (the `log` facade's backend, rate-limited). [`cli`] is the command line: it
//! parses, and each command either runs the daemon or uses the same modules as a tool
//! (`check-config`, `ring stat|tail|echo`, `events`).
//!
//! Unsafe code lives only in `sys` (adopting the sockets systemd passes, registering fds with
//! the runtime, advising the kernel about memory, setting ACLs).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod gateway;
pub mod log;
pub mod paths;
mod sys;
pub mod tls;
