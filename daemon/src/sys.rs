//! The daemon's only unsafe code: taking ownership of the listening sockets systemd passed
//! (socket activation, `sd_listen_fds(3)`), registering owned fds with tokio, advising the
//! kernel about the executable's own mappings, setting the POSIX ACL of a ring socket, and
//! asking glibc's allocator to give free memory back.
//!
//! Safety argument for the sockets: systemd starts us with fds 3..3+$LISTEN_FDS open and owned
//! by no one else in this process, and says so by setting $LISTEN_PID to our pid. We read the
//! variables once, at start-up, before any other code could have adopted those fds, then remove
//! them from the environment so that nothing (not a second call, not a child) adopts them again.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use tokio::io::unix::AsyncFd;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{self, sockopt};

const SD_LISTEN_FDS_START: RawFd = 3;

/// Listening sockets passed by systemd, by `FileDescriptorName=`, and the rings' fds it kept in
/// its fd store (by `FDNAME=`, see `control::fdstore`).
#[derive(Debug, Default)]
pub struct SystemdSockets {
    entries: Vec<Entry>,
    /// The fd store's ring fds not taken yet, by name.
    stored: std::sync::Mutex<std::collections::HashMap<String, OwnedFd>>,
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
    /// Takes the sockets systemd passed to this process, if any (`sd_listen_fds_with_names`
    /// through the `sd-notify` crate, which also sets them close-on-exec).
    pub fn from_env() -> Result<SystemdSockets> {
        let passed: Vec<(RawFd, String)> = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds.collect(),
            // LISTEN_FDNAMES with another count than LISTEN_FDS: the fds, named "unknown".
            Err(_) => sd_notify::listen_fds()
                .context("LISTEN_PID or LISTEN_FDS is malformed")?
                .map(|fd| (fd, "unknown".to_string()))
                .collect(),
        };
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        let mut entries = Vec::new();
        let mut stored = std::collections::HashMap::new();
        for (raw, name) in passed {
            debug_assert!(raw >= SD_LISTEN_FDS_START);
            // SAFETY: see the module comment: systemd passed fd `raw` to this process (LISTEN_PID
            // is our pid), nothing else owns it, and we adopt each fd exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if name.starts_with(crate::control::fdstore::PREFIX)
                || name.starts_with(crate::control::fdstore::LISTENER_PREFIX)
            {
                stored.insert(name, fd);
                continue;
            }
            let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
            let stream =
                socket::getsockopt(&fd, sockopt::SockType).ok() == Some(socket::SockType::Stream);
            if !listening || !stream {
                log::warn!("systemd fd {raw} (`{name}`) is not a listening stream socket; ignored");
                continue;
            }
            let listener = std::net::TcpListener::from(fd);
            let addr = match listener.local_addr() {
                Ok(addr) => addr,
                Err(e) => {
                    log::warn!("systemd fd {raw} (`{name}`) is not a TCP socket ({e}); ignored");
                    continue;
                }
            };
            entries.push(Entry {
                name,
                addr,
                socket: listener,
            });
        }
        Ok(SystemdSockets {
            entries,
            stored: std::sync::Mutex::new(stored),
        })
    }

    /// Takes the stored fds with these names, all or none (a direction of a ring is four fds;
    /// with one missing the others are released).
    pub fn take_stored(&self, names: &[String; 4]) -> Option<[OwnedFd; 4]> {
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let taken: Vec<OwnedFd> = names.iter().filter_map(|n| stored.remove(n)).collect();
        taken.try_into().ok()
    }

    /// The listening socket stored as `name` if it is one, listening on `addr` (a socket the
    /// daemon bound before a restart); anything else stored under the name is closed.
    pub fn take_stored_listener(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Option<std::net::TcpListener> {
        let fd = self
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)?;
        let listening = socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
        let stream =
            socket::getsockopt(&fd, sockopt::SockType).ok() == Some(socket::SockType::Stream);
        if !listening || !stream {
            log::warn!("systemd kept `{name}`, which is not a listening stream socket; ignored");
            return None;
        }
        let listener = std::net::TcpListener::from(fd);
        match listener.local_addr() {
            Ok(local) if local == addr => Some(listener),
            other => {
                log::warn!("systemd kept `{name}` listening on {other:?}, not {addr}; ignored");
                None
            }
        }
    }

    /// The stored fds no one took (their ring is no longer configured): their names, and the
    /// fds are closed.
    pub fn take_unclaimed(&self) -> Vec<String> {
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = stored.drain().map(|(name, _fd)| name).collect();
        names.sort();
        names
    }

    /// Warns about each socket systemd passed that no listener of `config` takes: a
    /// `FileDescriptorName=` that does not match `systemd_socket` is otherwise silent (systemd
    /// keeps the port open and connections to it wait forever).
    pub fn warn_unused(&self, config: &crate::config::Config) {
        for entry in &self.entries {
            let used = config.listeners.iter().any(
                |l| matches!(&l.bind, crate::config::Bind::Systemd(name) if *name == entry.name),
            );
            if !used {
                log::warn!(
                    "systemd passed a socket on {} named `{}` that no listener takes \
                     (systemd_socket = \"{}\"): connections to it are never accepted",
                    entry.addr,
                    entry.name,
                    entry.name
                );
            }
        }
    }

    /// The sockets named `name`, with their addresses. The daemon keeps them for its life; the
    /// TLS thread gets duplicates, so a failed reload or a listener removed and added back
    /// never loses the socket systemd gave us.
    pub fn named(&self, name: &str) -> Result<Vec<(SocketAddr, &std::net::TcpListener)>> {
        let named: Vec<_> = self
            .entries
            .iter()
            .filter(|e| e.name == name)
            .map(|e| (e.addr, &e.socket))
            .collect();
        if named.is_empty() {
            let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            bail!("systemd passed no listening socket named `{name}` (it passed: {known:?}); check FileDescriptorName= in the .socket unit");
        }
        Ok(named)
    }
}

/// The size of a memory page.
pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
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

/// Gives the allocator's free memory back to the kernel. glibc keeps what was freed in its
/// arenas: after a burst of connections, megabytes of free chunks stay resident in the TLS
/// thread's arena, spread through it, where `M_TRIM_THRESHOLD` (which only trims the top of a
/// heap) never reaches. `malloc_trim(0)` walks every arena and releases the free pages inside
/// them too (`MADV_DONTNEED`); measured after 1024 connections, 6.1 of 6.6 MiB of that arena
/// went back. Returns whether anything was released.
///
/// musl has no `malloc_trim`: its allocator (mallocng, since musl 1.2.1) returns freed groups of
/// slots to the kernel itself (`munmap`, or `madvise(MADV_FREE)` for groups inside a larger
/// mapping), so there this does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory, under the
    // allocator's locks; it never touches memory in use and has no preconditions.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// See the glibc version: nothing to do here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() -> bool {
    false
}

/// `system.posix_acl_access` (acl(5)): the access ACL of a file, as the kernel stores it.
const ACL_XATTR: &std::ffi::CStr = c"system.posix_acl_access";

/// Lets the file's owner and group, and the listed users and groups, read and write `path` (for
/// a unix socket: connect to it), and nobody else: mode 0660 plus, if there is anyone to list, a
/// POSIX access ACL with a `user:UID:rw` / `group:GID:rw` entry for each. Without anyone to list
/// the file is plain 0660 (and any ACL from an earlier call is removed). `Ok(false)` if the
/// filesystem has no ACLs and someone had to be listed: the mode is then 0660, which keeps them
/// out, and the caller decides.
pub fn restrict_to(path: &Path, uids: &[u32], gids: &[u32]) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let meta = std::fs::metadata(path)?;
    let mut uids: Vec<u32> = uids.iter().copied().filter(|&u| u != meta.uid()).collect();
    let mut gids: Vec<u32> = gids.iter().copied().filter(|&g| g != meta.gid()).collect();
    uids.sort_unstable();
    uids.dedup();
    gids.sort_unstable();
    gids.dedup();
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    if uids.is_empty() && gids.is_empty() {
        // SAFETY: both arguments are NUL-terminated C strings that live across the call.
        let r = unsafe { libc::removexattr(c_path.as_ptr(), ACL_XATTR.as_ptr()) };
        let e = io::Error::last_os_error();
        return match r {
            0 => Ok(true),
            _ if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => Ok(true),
            _ => Err(e),
        };
    }
    let acl = acl_xattr(&uids, &gids);
    // SAFETY: `c_path` and the name are NUL-terminated C strings, and `acl` is `acl.len()`
    // readable bytes; all live across the call, which only reads them.
    let r = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            ACL_XATTR.as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

/// The kernel's ACL xattr format (`posix_acl_xattr_header` then entries of tag, permissions
/// and id, little-endian, sorted by tag then id): owner rw, the listed users rw, owning group
/// rw, the listed groups rw, mask rw, others nothing.
fn acl_xattr(uids: &[u32], gids: &[u32]) -> Vec<u8> {
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const RW: u16 = 6;
    const UNDEFINED: u32 = u32::MAX;
    let mut entries = vec![(USER_OBJ, RW, UNDEFINED)];
    entries.extend(uids.iter().map(|&u| (USER, RW, u)));
    entries.push((GROUP_OBJ, RW, UNDEFINED));
    entries.extend(gids.iter().map(|&g| (GROUP, RW, g)));
    entries.extend([(MASK, RW, UNDEFINED), (OTHER, 0, UNDEFINED)]);
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_lists_owner_users_group_groups_mask_and_others_in_the_kernels_order() {
        let acl = acl_xattr(&[1000, 1001], &[50]);
        let entry = |i: usize| {
            let e = &acl[4 + i * 8..4 + i * 8 + 8];
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        };
        assert_eq!(&acl[..4], &2u32.to_le_bytes());
        assert_eq!(acl.len(), 4 + 7 * 8);
        assert_eq!(entry(0), (0x01, 6, u32::MAX));
        assert_eq!(entry(1), (0x02, 6, 1000));
        assert_eq!(entry(2), (0x02, 6, 1001));
        assert_eq!(entry(3), (0x04, 6, u32::MAX));
        assert_eq!(entry(4), (0x08, 6, 50));
        assert_eq!(entry(5), (0x10, 6, u32::MAX));
        assert_eq!(entry(6), (0x20, 0, u32::MAX));
    }

    #[test]
    fn a_file_gets_mode_0660_and_an_acl_only_when_someone_else_is_listed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sock");
        std::fs::write(&file, b"").unwrap();
        assert!(restrict_to(&file, &[], &[]).unwrap());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let listed = restrict_to(&file, &[65534], &[]).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        // With an ACL the group bits show its mask (rw); without ACL support nothing opens up.
        assert_eq!(mode & 0o777, 0o660, "listed: {listed}");
        if listed {
            assert!(
                restrict_to(&file, &[], &[]).unwrap(),
                "the ACL is removed again"
            );
        }
    }
}
