//! The daemon's one table of listening sockets.
//!
//! The control plane opens every listening socket (binds it, or takes it from systemd) and
//! names it in this table; the TLS thread only accepts on it. A new config becomes socket
//! operations against the table ([`SocketTable::plan`]): a socket whose address stays is kept
//! (and moves to a renamed listener), a new address gets a new socket, and the rest close. The
//! same operations suit a listener whose addresses come and go while the config stays.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::watch::NetSnapshot;
use crate::config::{Bind, Config};
use crate::gateway::{SocketId, SocketOp};
use crate::sys::SystemdSockets;

/// Where a socket came from, as the config says it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// Bound to this address as configured (port 0: any free port).
    Bound(SocketAddr),
    /// Passed by systemd under this `FileDescriptorName=`.
    Systemd(String),
    /// An address an `iface:` or `when-present:` bind resolves to now.
    Dynamic(SocketAddr),
}

/// One listening socket in the table.
#[derive(Debug, Clone)]
struct Entry {
    id: SocketId,
    listener: String,
    origin: Origin,
    /// The address it is bound to (differs from a configured port 0).
    local: SocketAddr,
    /// A socket the daemon bound to a fixed port: a duplicate, for systemd's fd store (the TLS
    /// thread has the socket itself), so that a restart keeps it listening.
    for_store: Option<Arc<OwnedFd>>,
}

/// Every listening socket the TLS thread accepts on, by listener.
#[derive(Debug, Default, Clone)]
pub struct SocketTable {
    entries: Vec<Entry>,
    next_id: u64,
}

/// A listening socket, as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The listener.
    pub listener: String,
    /// The address it accepts on.
    pub addr: SocketAddr,
}

impl SocketTable {
    /// Every socket: listener and address, in config order.
    pub fn listening(&self) -> Vec<Listening> {
        self.entries
            .iter()
            .map(|e| Listening {
                listener: e.listener.clone(),
                addr: e.local,
            })
            .collect()
    }

    /// The table `config` needs and the operations that make it from this one. New sockets
    /// are bound (or duplicated from systemd's) here; nothing else changes until the TLS
    /// thread has the operations and the caller keeps the new table. On an error, the sockets
    /// bound so far are closed again.
    /// Dynamic binds open what they resolve to in `net`; one that cannot be bound (the address
    /// went away meanwhile, the port is taken) is skipped with a warning, not an error: the
    /// next change of the network plans again.
    pub fn plan(
        &self,
        config: &Config,
        systemd: &SystemdSockets,
        net: &NetSnapshot,
    ) -> Result<(SocketTable, Vec<SocketOp>)> {
        let mut next = SocketTable {
            entries: Vec::new(),
            next_id: self.next_id,
        };
        let mut ops = Vec::new();
        for listener in &config.listeners {
            let mut wanted: Vec<(Origin, Option<SocketAddr>)> = match &listener.bind {
                Bind::Addresses(addrs) => addrs.iter().map(|a| (Origin::Bound(*a), None)).collect(),
                Bind::Systemd(name) => systemd
                    .named(name)?
                    .into_iter()
                    .map(|(addr, _)| (Origin::Systemd(name.clone()), Some(addr)))
                    .collect(),
            };
            for bind in &listener.dynamic {
                for addr in net.resolve(bind) {
                    if !wanted.iter().any(|(o, _)| *o == Origin::Dynamic(addr)) {
                        wanted.push((Origin::Dynamic(addr), None));
                    }
                }
            }
            for (origin, local) in wanted {
                let kept = self.entries.iter().find(|e| {
                    e.origin == origin
                        && local.is_none_or(|l| l == e.local)
                        // Port 0 (tests) is matched by listener too: several listeners may
                        // ask for "any port".
                        && (!matches!(origin, Origin::Bound(a) if a.port() == 0)
                            || e.listener == listener.name)
                        && !next.entries.iter().any(|n| n.id == e.id)
                });
                let entry = match kept {
                    Some(kept) => {
                        if kept.listener != listener.name {
                            ops.push(SocketOp::Move {
                                id: kept.id,
                                listener: listener.name.clone(),
                            });
                        }
                        Entry {
                            listener: listener.name.clone(),
                            ..kept.clone()
                        }
                    }
                    None => {
                        let socket = match (open(&origin, local, systemd), &origin) {
                            (Ok(socket), _) => socket,
                            (Err(e), Origin::Dynamic(_)) => {
                                log::warn!(
                                    "listener `{}`: {e:#}; skipped until the network changes",
                                    listener.name
                                );
                                continue;
                            }
                            (Err(e), _) => return Err(e),
                        };
                        let local = socket.local_addr().context("address of a new socket")?;
                        let for_store = match &origin {
                            Origin::Bound(a) | Origin::Dynamic(a) if a.port() != 0 => {
                                socket.as_fd().try_clone_to_owned().ok().map(Arc::new)
                            }
                            _ => None,
                        };
                        let id = next.new_id();
                        ops.push(SocketOp::Open {
                            id,
                            listener: listener.name.clone(),
                            socket,
                        });
                        Entry {
                            id,
                            listener: listener.name.clone(),
                            origin,
                            local,
                            for_store,
                        }
                    }
                };
                next.entries.push(entry);
            }
        }
        for gone in &self.entries {
            if !next.entries.iter().any(|e| e.id == gone.id) {
                ops.push(SocketOp::Close { id: gone.id });
            }
        }
        Ok((next, ops))
    }

    /// Keeps systemd's fd store in step with this table, which replaces `old`: the sockets
    /// bound to a fixed port that are new go in, those that closed come out (`FDSTOREREMOVE=1`).
    /// A restarted daemon takes them back ([`open`]) and goes on listening on the same
    /// sockets: clients that connect meanwhile wait in the backlog instead of being refused.
    pub fn store_changes(&self, old: &SocketTable) {
        for entry in &old.entries {
            if entry.for_store.is_some() && !self.entries.iter().any(|e| e.id == entry.id) {
                super::fdstore::remove_named(&store_name(entry.local));
            }
        }
        for entry in &self.entries {
            if let Some(fd) = &entry.for_store {
                if !old.entries.iter().any(|e| e.id == entry.id) {
                    super::fdstore::store_one(&store_name(entry.local), fd.as_fd());
                }
            }
        }
    }

    fn new_id(&mut self) -> SocketId {
        self.next_id += 1;
        SocketId(self.next_id)
    }
}

/// The fd-store name of a listening socket the daemon bound (`:` is not allowed in one).
pub fn store_name(addr: SocketAddr) -> String {
    format!("{}{}", super::fdstore::LISTENER_PREFIX, addr).replace(':', "_")
}

/// A new listening socket for `origin`: bound (or, after a restart, the one the daemon had
/// bound to that address, back from systemd's fd store), or a duplicate of systemd's at
/// `local`.
fn open(
    origin: &Origin,
    local: Option<SocketAddr>,
    systemd: &SystemdSockets,
) -> Result<std::net::TcpListener> {
    match origin {
        Origin::Bound(addr) | Origin::Dynamic(addr) => {
            if addr.port() != 0 {
                if let Some(socket) = systemd.take_stored_listener(&store_name(*addr), *addr) {
                    log::info!("listening on {addr} again with the socket kept across the restart");
                    return Ok(socket);
                }
            }
            bind_tcp(*addr)
        }
        Origin::Systemd(name) => {
            let (addr, socket) = systemd
                .named(name)?
                .into_iter()
                .find(|(addr, _)| Some(*addr) == local)
                .with_context(|| format!("systemd socket `{name}` at {local:?} is gone"))?;
            socket
                .try_clone()
                .with_context(|| format!("duplicate systemd socket `{name}` ({addr})"))
        }
    }
}

/// A listening TCP socket: SO_REUSEADDR (restarts do not wait for TIME_WAIT), IPv6 sockets
/// IPv6-only (so `0.0.0.0:443` and `[::]:443` can both be configured), a deep backlog for
/// handshake bursts.
pub fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use nix::sys::socket::{
        self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .with_context(|| format!("socket for {addr}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .with_context(|| format!("SO_REUSEADDR on {addr}"))?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .with_context(|| format!("IPV6_V6ONLY on {addr}"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .with_context(|| format!("cannot bind {addr}"))?;
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
        .with_context(|| format!("listen on {addr}"))?;
    Ok(std::net::TcpListener::from(fd))
}
