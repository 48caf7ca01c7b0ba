//! Who gets in: a listener's limits on connections, on handshakes in progress, and on
//! handshakes from one source, checked when a connection is accepted; and what a refusal
//! counts and logs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use super::stats::{ListenerStats, Stats};
use crate::config::ListenerConfig;

/// Where handshakes are counted together: an IPv4 address, or an IPv6 /64 (the prefix one
/// host, or one customer line, gets: anyone holding a /64 can pick any address in it, so a
/// per-address count would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (also an IPv4-mapped IPv6 one).
    V4(Ipv4Addr),
    /// The high 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The source a client address counts under.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections`.
    Connections,
    /// `max_handshakes`.
    Handshakes,
    /// `max_handshakes_per_source`.
    Source,
}

/// A listener's load, which its limits are checked against.
#[derive(Debug)]
pub struct Load {
    /// Connections open (established or handshaking).
    active: Cell<usize>,
    /// Handshakes in progress.
    handshaking: Cell<usize>,
    /// Handshakes in progress by source; only sources with one are kept.
    sources: RefCell<HashMap<Source, usize>>,
    /// The listener's counters, which `edgegw status` reads.
    counters: Arc<ListenerStats>,
}

impl Load {
    /// No load yet, counted into `counters`.
    pub fn new(counters: Arc<ListenerStats>) -> Load {
        Load {
            active: Cell::default(),
            handshaking: Cell::default(),
            sources: RefCell::default(),
            counters,
        }
    }

    /// The listener's counters.
    pub fn counters(&self) -> &ListenerStats {
        &self.counters
    }
}

/// A connection's places in its listener's load (connections, handshakes, handshakes from its
/// source), taken when it is accepted, so a burst of accepts sees every earlier one, and given
/// back as each ends.
#[derive(Debug)]
pub struct Admission {
    load: Rc<Load>,
    stats: Arc<Stats>,
    source: Source,
    handshaking: bool,
}

impl Admission {
    /// Takes the places, or says which limit is reached.
    pub fn take(
        load: &Rc<Load>,
        limits: &ListenerConfig,
        source: Source,
        stats: &Arc<Stats>,
    ) -> Result<Admission, Refused> {
        if load.active.get() >= limits.max_connections {
            return Err(Refused::Connections);
        }
        if load.handshaking.get() >= limits.max_handshakes {
            return Err(Refused::Handshakes);
        }
        let mut sources = load.sources.borrow_mut();
        let from_source = sources.entry(source).or_insert(0);
        if *from_source >= limits.max_handshakes_per_source {
            return Err(Refused::Source);
        }
        *from_source += 1;
        load.active.set(load.active.get() + 1);
        load.handshaking.set(load.handshaking.get() + 1);
        Stats::bump(&stats.active);
        Stats::bump(&load.counters.active);
        Ok(Admission {
            load: load.clone(),
            stats: stats.clone(),
            source,
            handshaking: true,
        })
    }

    /// Its listener's counters.
    pub fn counters(&self) -> &ListenerStats {
        &self.load.counters
    }

    /// The handshake is over: its places go back.
    pub fn handshake_done(&mut self) {
        if !std::mem::take(&mut self.handshaking) {
            return;
        }
        let load = &self.load;
        load.handshaking.set(load.handshaking.get() - 1);
        let mut sources = load.sources.borrow_mut();
        if let Some(n) = sources.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                // Memory follows the sources handshaking now, not every source ever seen.
                sources.remove(&self.source);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.handshake_done();
        self.load.active.set(self.load.active.get() - 1);
        self.stats
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.load
            .counters
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Refused {
    /// Counts and logs (rate-limited, one key per limit) a connection refused at once; the
    /// socket is closed by the caller dropping it.
    pub fn count(
        self,
        stats: &Stats,
        load: &Load,
        limits: &ListenerConfig,
        peer: SocketAddr,
        source: Source,
    ) {
        let own = &load.counters;
        let (counter, own, key, limit, what) = match self {
            Refused::Connections => (
                &stats.refused_connection_limit,
                &own.refused_connection_limit,
                "edgegw::listener::max-connections",
                limits.max_connections,
                "connections open (max_connections)".to_string(),
            ),
            Refused::Handshakes => (
                &stats.refused_handshake_limit,
                &own.refused_handshake_limit,
                "edgegw::listener::max-handshakes",
                limits.max_handshakes,
                "handshakes in progress (max_handshakes)".to_string(),
            ),
            Refused::Source => (
                &stats.refused_source_limit,
                &own.refused_source_limit,
                "edgegw::listener::max-handshakes-per-source",
                limits.max_handshakes_per_source,
                format!("handshakes from {source} in progress (max_handshakes_per_source)"),
            ),
        };
        Stats::bump(counter);
        Stats::bump(own);
        log::info!(target: key, "listener `{}`: refused {peer}: {limit} {what}", limits.name);
    }
}

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn ipv4_counts_by_address_and_ipv6_by_its_64_bit_prefix() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(
            of("192.0.2.1"),
            of("::ffff:192.0.2.1"),
            "mapped IPv4 is IPv4"
        );
        assert_ne!(of("192.0.2.1"), of("192.0.2.2"));
        assert_eq!(
            of("2001:db8:1:2::1"),
            of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(of("192.0.2.1").to_string(), "192.0.2.1");
    }
}
