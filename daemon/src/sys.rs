//! The daemon's only unsafe code: taking ownership of the listening sockets systemd passed
//! (socket activation, `sd_listen_fds(3)`), registering owned fds with tokio, and advising the
//! kernel about the executable's own mappings.
//!
//! Safety argument for the sockets: systemd starts us with fds 3..3+$LISTEN_FDS open and owned
//! by no one else in this process, and says so by setting $LISTEN_PID to our pid. We read the
//! variables once, at start-up, before any other code could have adopted those fds, then remove
//! them from the environment so that nothing (not a second call, not a child) adopts them again.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{self, sockopt};

const SD_LISTEN_FDS_START: RawFd = 3;

/// Listening sockets passed by systemd, by `FileDescriptorName=`.
#[derive(Debug, Default)]
pub struct SystemdSockets {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    addr: SocketAddr,
    /// Kept for the daemon's life; the TLS thread gets duplicates, so a failed reload or a
    /// listener removed and added back never loses the socket systemd gave us.
    socket: std::net::TcpListener,
}

impl SystemdSockets {
    /// Takes the sockets systemd passed to this process, if any.
    pub fn from_env() -> Result<SystemdSockets> {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        let (Some(pid), Some(count)) = (pid, count) else {
            return Ok(SystemdSockets::default());
        };
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return Ok(SystemdSockets::default());
        }
        let count: RawFd = count.parse().context("LISTEN_FDS is not a number")?;
        let names: Vec<String> = names
            .map(|n| n.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut entries = Vec::new();
        for i in 0..count {
            let raw = SD_LISTEN_FDS_START + i;
            // SAFETY: see the module comment: systemd passed fd `raw` to this process (LISTEN_PID
            // is our pid), nothing else owns it, and we adopt each fd exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .with_context(|| format!("systemd fd {raw}: set close-on-exec"))?;
            let name = names
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| "unknown".to_string());
            *by_name.entry(name.clone()).or_default() += 1;
            let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
            let stream =
                socket::getsockopt(&fd, sockopt::SockType).ok() == Some(socket::SockType::Stream);
            if !listening || !stream {
                crate::warn!(
                    "systemd fd {raw} (`{name}`) is not a listening stream socket; ignored"
                );
                continue;
            }
            let listener = std::net::TcpListener::from(fd);
            let addr = match listener.local_addr() {
                Ok(addr) => addr,
                Err(e) => {
                    crate::warn!("systemd fd {raw} (`{name}`) is not a TCP socket ({e}); ignored");
                    continue;
                }
            };
            entries.push(Entry {
                name,
                addr,
                socket: listener,
            });
        }
        Ok(SystemdSockets { entries })
    }

    /// The sockets named `name`: a duplicate of each, except for those the TLS thread already
    /// has (listed in `bound`).
    pub fn take(
        &self,
        name: &str,
        bound: &[SocketAddr],
    ) -> Result<Vec<(SocketAddr, Option<std::net::TcpListener>)>> {
        let mut out = Vec::new();
        for entry in self.entries.iter().filter(|e| e.name == name) {
            if bound.contains(&entry.addr) {
                out.push((entry.addr, None));
            } else {
                let socket = entry.socket.try_clone().with_context(|| {
                    format!("duplicate systemd socket `{name}` ({})", entry.addr)
                })?;
                out.push((entry.addr, Some(socket)));
            }
        }
        if out.is_empty() {
            let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            bail!("systemd passed no listening socket named `{name}` (it passed: {known:?}); check FileDescriptorName= in the .socket unit");
        }
        Ok(out)
    }
}

/// Registers an owned fd (an eventfd, an epoll fd) with the current tokio runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` owns a valid open fd; the `AsyncFd` owns the `OwnedFd`, which is never
    // replaced or closed while registered, so `as_raw_fd` always returns that same fd.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Asks the kernel to reclaim the pages of this process's own executable that are mapped now:
/// after start-up, most of them were touched once (config parsing, certificate generation,
/// rustls config building) and are not needed while the daemon runs; the ones it does need
/// come back from the file on first use. Returns the bytes of mappings advised.
pub fn page_out_executable() -> io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).map(std::path::Path::new);
        if path != Some(exe.as_path()) || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is one whole read-only mapping of this process (from
        // /proc/self/maps). MADV_PAGEOUT never changes what the process reads there: clean file
        // pages are dropped and read back from the (unchanged, executing) file on next access;
        // copied-on-write pages are only reclaimed by swapping. No Rust value is invalidated.
        unsafe {
            nix::sys::mman::madvise(addr, end - start, nix::sys::mman::MmapAdvise::MADV_PAGEOUT)
        }
        .map_err(io::Error::from)?;
        advised += end - start;
    }
    Ok(advised)
}
