//! What the network source reports: links, addresses and routes, keyed the way the kernel
//! identifies them, and the network state they make up.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Address family of an address or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
}

/// A network interface (RTM_NEWLINK).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name (IFLA_IFNAME).
    pub name: String,
    /// Link kind from IFLA_LINKINFO (e.g. "veth"), when the kernel reports one.
    pub kind: Option<String>,
    /// IFF_* flags (IFF_UP = 1, IFF_LOWER_UP = 0x10000, ...).
    pub flags: u32,
    /// MTU.
    pub mtu: Option<u32>,
    /// Hardware address, as lower-case hex bytes joined by ':'.
    pub mac: Option<String>,
    /// RFC 2863 operational state (IF_OPER_*: 6 = up, 2 = down, 0 = unknown).
    pub oper_state: Option<u8>,
    /// Index of the master device (bridge, bond, vrf), if any.
    pub master: Option<u32>,
}

impl Link {
    /// Whether the administrative IFF_UP flag is set.
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }
}

/// An interface address (RTM_NEWADDR).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Address {
    /// Interface index it is on.
    pub index: u32,
    /// IPv4 or IPv6.
    pub family: Family,
    /// The local address (IFA_LOCAL, or IFA_ADDRESS where there is no IFA_LOCAL).
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// The peer of a point-to-point address, when it differs from the local one.
    pub peer: Option<IpAddr>,
    /// RT_SCOPE_* (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// IFA_F_* flags (IFA_FLAGS when present, which carries the bits above 8).
    pub flags: u32,
    /// IPv4 label (IFA_LABEL).
    pub label: Option<String>,
}

/// The kernel's identity of an address: re-adding the same key replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressKey {
    /// Interface index.
    pub index: u32,
    /// The local address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Point-to-point peer.
    pub peer: Option<IpAddr>,
}

impl Address {
    /// The key under which the model keeps this address.
    pub fn key(&self) -> AddressKey {
        AddressKey {
            index: self.index,
            address: self.address,
            prefix_len: self.prefix_len,
            peer: self.peer,
        }
    }
}

/// One next hop of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NextHop {
    /// Outgoing interface index.
    pub oif: Option<u32>,
    /// Gateway address.
    pub gateway: Option<IpAddr>,
}

/// A route (RTM_NEWROUTE), in any table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Route {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Routing table id (RTA_TABLE; 254 main, 255 local).
    pub table: u32,
    /// Destination prefix; `None` is the default route.
    pub dst: Option<IpAddr>,
    /// Destination prefix length.
    pub dst_len: u8,
    /// Source prefix (IPv6 source routing).
    pub src: Option<IpAddr>,
    /// Source prefix length.
    pub src_len: u8,
    /// Type of service (IPv4).
    pub tos: u8,
    /// Metric (RTA_PRIORITY).
    pub priority: u32,
    /// RTN_* type (1 unicast, 2 local, 3 broadcast, 6 blackhole, ...).
    pub route_type: u8,
    /// RTPROT_* (2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// RT_SCOPE_*.
    pub scope: u8,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// Next hops: one for an ordinary route, several for multipath.
    pub next_hops: Vec<NextHop>,
}

/// The kernel's identity of a route within its table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Family.
    pub family: Family,
    /// Table.
    pub table: u32,
    /// Destination.
    pub dst: Option<IpAddr>,
    /// Destination length.
    pub dst_len: u8,
    /// Source (IPv6).
    pub src: Option<IpAddr>,
    /// Source length.
    pub src_len: u8,
    /// TOS (IPv4).
    pub tos: u8,
    /// Metric.
    pub priority: u32,
}

impl Route {
    /// The key under which the model keeps this route.
    pub fn key(&self) -> RouteKey {
        RouteKey {
            family: self.family,
            table: self.table,
            dst: self.dst,
            dst_len: self.dst_len,
            src: self.src,
            src_len: self.src_len,
            tos: self.tos,
            priority: self.priority,
        }
    }

    /// Whether any next hop leaves through interface `index`.
    pub fn uses_link(&self, index: u32) -> bool {
        self.next_hops.iter().any(|h| h.oif == Some(index))
    }
}

/// The network state as the kernel has it: what the daemon asks when it needs "every address
/// right now" (e.g. to rebind listeners) instead of keeping its own copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkState {
    /// Links by interface index.
    pub links: BTreeMap<u32, Link>,
    /// Addresses by their kernel identity.
    pub addresses: BTreeMap<AddressKey, Address>,
    /// Routes by their kernel identity.
    pub routes: BTreeMap<RouteKey, Route>,
}

impl NetworkState {
    /// The addresses on interface `index`.
    pub fn addresses_on(&self, index: u32) -> impl Iterator<Item = &Address> {
        self.addresses.values().filter(move |a| a.index == index)
    }

    /// The link called `name`.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }
}

/// `1: lo UP mtu 65536 link 00:00:00:00:00:00`, `4: veth0 type veth DOWN`.
impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.index, self.name)?;
        if let Some(kind) = &self.kind {
            write!(f, " type {kind}")?;
        }
        f.write_str(if self.is_up() { " UP" } else { " DOWN" })?;
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        if let Some(mac) = &self.mac {
            write!(f, " link {mac}")?;
        }
        Ok(())
    }
}

/// Interface names to show instead of indexes, where a network state has them; `#index`
/// otherwise.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkNames<'a>(pub(super) Option<&'a NetworkState>);

impl LinkNames<'_> {
    fn write(self, f: &mut fmt::Formatter<'_>, index: u32) -> fmt::Result {
        match self.0.and_then(|n| n.links.get(&index)) {
            Some(link) => f.write_str(&link.name),
            None => write!(f, "#{index}"),
        }
    }
}

impl Address {
    pub(super) fn write(&self, f: &mut fmt::Formatter<'_>, names: LinkNames<'_>) -> fmt::Result {
        write!(f, "{}/{} dev ", self.address, self.prefix_len)?;
        names.write(f, self.index)?;
        if let Some(peer) = self.peer {
            write!(f, " peer {peer}")?;
        }
        write!(f, " scope {}", self.scope)?;
        if let Some(label) = &self.label {
            write!(f, " label {label}")?;
        }
        Ok(())
    }
}

/// `10.9.0.1/24 dev #1 scope 0 label lo` (the interface by index: [`Event::display`](super::event::Event::display)
/// shows names).
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, LinkNames(None))
    }
}

impl Route {
    pub(super) fn write(&self, f: &mut fmt::Formatter<'_>, names: LinkNames<'_>) -> fmt::Result {
        match self.dst {
            Some(dst) => write!(f, "{dst}/{}", self.dst_len)?,
            None => f.write_str("default")?,
        }
        for hop in &self.next_hops {
            if let Some(gw) = hop.gateway {
                write!(f, " via {gw}")?;
            }
            if let Some(oif) = hop.oif {
                f.write_str(" dev ")?;
                names.write(f, oif)?;
            }
        }
        write!(
            f,
            " table {} metric {} type {} proto {}",
            self.table, self.priority, self.route_type, self.protocol
        )?;
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

/// `default via 10.9.0.254 dev #2 table 254 metric 100 type 1 proto 4` (interfaces by index:
/// [`Event::display`](super::event::Event::display) shows names).
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, LinkNames(None))
    }
}
