//! Listeners that follow the network: `iface:NAME:PORT` and `when-present:ADDR:PORT` binds.
//!
//! The rtnetlink reader (`edgegw-kernel-events`, network) keeps a model of links and addresses
//! that equals the kernel's after every event, and after every ENOBUFS resync. After each batch
//! of events (never in the middle of a resync) the model is reduced to a [`NetSnapshot`]: the
//! usable addresses of each interface that is up (an IPv6 address is usable once duplicate
//! address detection has finished: not tentative, not failed). When that snapshot changes, the
//! listeners are rebound: the next reload's socket plan opens a socket for each address a
//! dynamic bind resolves to and closes the ones that no longer resolve, so the sockets open
//! always converge to the snapshot of the last event. A rebind is a reload through the one-at-
//! a-time path: a snapshot that changes while one runs queues exactly one more.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use edgegw_kernel_events::net::{NetOptions, NetworkState};
use edgegw_kernel_events::{EventKind, KernelEvents, Source};
use tokio::task::JoinHandle;

use edgegw_proto::events::EventKind as EventRecord;

use super::{lock, Feed, WatchHandle};
use crate::config::{Config, DynamicBind};

/// `IFA_F_DADFAILED` (linux/if_addr.h): duplicate address detection failed.
const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`: duplicate address detection has not finished.
const IFA_F_TENTATIVE: u32 = 0x40;

/// The network as dynamic binds see it: each interface that is up, with its usable addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    /// By name: (ifindex, usable addresses).
    interfaces: BTreeMap<String, (u32, Vec<IpAddr>)>,
}

impl NetSnapshot {
    /// Reduces the reader's model.
    pub fn from_state(state: &NetworkState) -> NetSnapshot {
        let mut interfaces = BTreeMap::new();
        for link in state.links.values().filter(|l| l.is_up()) {
            let mut addresses: Vec<IpAddr> = state
                .addresses_on(link.index)
                .filter(|a| a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0)
                .map(|a| a.address)
                .collect();
            addresses.sort();
            addresses.dedup();
            interfaces.insert(link.name.clone(), (link.index, addresses));
        }
        NetSnapshot { interfaces }
    }

    /// The socket addresses `bind` stands for now.
    pub fn resolve(&self, bind: &DynamicBind) -> Vec<SocketAddr> {
        match bind {
            DynamicBind::Interface { name, port } => match self.interfaces.get(name) {
                Some((index, addresses)) => addresses
                    .iter()
                    .map(|ip| socket_addr(*ip, *port, *index))
                    .collect(),
                None => Vec::new(),
            },
            DynamicBind::Address(addr) => self
                .interfaces
                .values()
                .find(|(_, addresses)| addresses.contains(&addr.ip()))
                .map(|(index, _)| vec![socket_addr(addr.ip(), addr.port(), *index)])
                .unwrap_or_default(),
        }
    }

    /// Interfaces up and usable addresses, for the status.
    pub fn addresses(&self) -> usize {
        self.interfaces.values().map(|(_, a)| a.len()).sum()
    }
}

/// An IPv6 link-local address is bound with its interface as scope.
fn socket_addr(ip: IpAddr, port: u16, index: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, index))
        }
        ip => SocketAddr::new(ip, port),
    }
}

/// Whether `config` has binds that follow the network.
pub(super) fn wanted(config: &Config) -> bool {
    config.listeners.iter().any(|l| !l.dynamic.is_empty())
}

/// Starts the rtnetlink reader; each changed snapshot goes to the feed.
pub(super) fn spawn(receive_buffer: usize, handle: WatchHandle) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = watch(receive_buffer, &handle).await {
            log::error!("the network is not watched any more; iface and when-present binds stay as they are and the events ring gets no network events: {e}");
            lock(&handle.status).network.error = Some(e.to_string());
        }
    })
}

async fn watch(receive_buffer: usize, handle: &WatchHandle) -> edgegw_kernel_events::Result<()> {
    let options = NetOptions {
        receive_buffer,
        ..NetOptions::default()
    };
    let mut events = KernelEvents::builder().network(options).build().await?;
    log::info!("watching the network (rtnetlink)");
    let mut last = None;
    loop {
        // Everything ready now is one batch; the snapshot is taken after it.
        let first = events.next().await?;
        for event in std::iter::once(first).chain(std::iter::from_fn(|| events.try_next())) {
            // For the events ring: links, addresses and resyncs (routes are not the daemon's
            // business), as `edgegw events --json` writes them.
            let record = match &event.kind {
                EventKind::Link { .. } | EventKind::Address { .. } => Some(EventRecord::Network),
                EventKind::Resync { .. } => Some(EventRecord::Resync),
                EventKind::ResyncDone { .. } => Some(EventRecord::ResyncDone),
                _ => None,
            };
            if let Some(kind) = record {
                let json = serde_json::to_value(&event.kind).unwrap_or_default();
                if !handle.inject(Feed::Record(kind, json)) {
                    return Ok(());
                }
            }
            match event.kind {
                EventKind::Resync {
                    source: Source::Network,
                    reason,
                } => {
                    lock(&handle.status).network.resyncs += 1;
                    log::info!(
                        "network events lost ({reason:?}): reading the kernel's state again"
                    );
                }
                EventKind::Link { .. } | EventKind::Address { .. } => {
                    lock(&handle.status).network.changes += 1;
                }
                _ => {}
            }
        }
        if events.is_resyncing() {
            continue;
        }
        let Some(state) = events.network() else {
            continue;
        };
        let snapshot = NetSnapshot::from_state(state);
        if last.as_ref() != Some(&snapshot) {
            last = Some(snapshot.clone());
            if !handle.inject(Feed::Network(snapshot)) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> NetSnapshot {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "wlan0".to_string(),
            (
                3,
                vec![
                    "192.0.2.7".parse().unwrap(),
                    "2001:db8::7".parse().unwrap(),
                    "fe80::7".parse().unwrap(),
                ],
            ),
        );
        NetSnapshot { interfaces }
    }

    #[test]
    fn an_interface_bind_is_every_usable_address_with_link_local_scoped() {
        let got = snapshot().resolve(&DynamicBind::Interface {
            name: "wlan0".into(),
            port: 8443,
        });
        let want: Vec<SocketAddr> = vec![
            "192.0.2.7:8443".parse().unwrap(),
            "[2001:db8::7]:8443".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::7".parse().unwrap(), 8443, 0, 3)),
        ];
        assert_eq!(got, want);
        let missing = DynamicBind::Interface {
            name: "eth9".into(),
            port: 1,
        };
        assert!(snapshot().resolve(&missing).is_empty());
    }

    #[test]
    fn a_when_present_bind_resolves_only_while_the_address_is_up() {
        let present = DynamicBind::Address("192.0.2.7:443".parse().unwrap());
        assert_eq!(snapshot().resolve(&present).len(), 1);
        let absent = DynamicBind::Address("192.0.2.8:443".parse().unwrap());
        assert!(snapshot().resolve(&absent).is_empty());
    }
}
