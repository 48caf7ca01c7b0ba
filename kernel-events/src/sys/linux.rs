//! The Linux constants the crate speaks, in one place (as smoltcp keeps its own), typed the way
//! they appear in the messages: message and attribute types and header flags are `u16`,
//! families `u8`, multicast groups `u32`. The values come from `libc`, so none is typed in by
//! hand, except the lengths of two kernel structs (`struct nlmsghdr`, `struct rtnexthop`),
//! which libc does not define.

// Netlink message headers (linux/netlink.h).

/// Length of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// An error or acknowledgement; the body starts with a negative errno (0: acknowledgement).
pub(crate) const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
/// The end of a dump.
pub(crate) const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
/// A new route takes the place of the one under its key (`ip route replace`, `change`).
pub(crate) const NLM_F_REPLACE: u16 = libc::NLM_F_REPLACE as u16;
/// The dump changed while it was read: objects may be missing from it.
pub(crate) const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
/// Attribute types carry two flag bits (nested, network byte order) above the type.
pub(crate) const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;

// rtnetlink (linux/rtnetlink.h).

pub(crate) const RTM_NEWLINK: u16 = libc::RTM_NEWLINK;
pub(crate) const RTM_DELLINK: u16 = libc::RTM_DELLINK;
pub(crate) const RTM_NEWADDR: u16 = libc::RTM_NEWADDR;
pub(crate) const RTM_DELADDR: u16 = libc::RTM_DELADDR;
pub(crate) const RTM_NEWROUTE: u16 = libc::RTM_NEWROUTE;
pub(crate) const RTM_DELROUTE: u16 = libc::RTM_DELROUTE;
/// A cached clone of a route (PMTU exception, redirect), not a configured route.
pub(crate) const RTM_F_CLONED: u32 = libc::RTM_F_CLONED;
/// A route the kernel installed for an address or a link.
pub(crate) const RTPROT_KERNEL: u8 = libc::RTPROT_KERNEL;
/// Length of `struct rtnexthop`, which starts each next hop of RTA_MULTIPATH.
pub(crate) const RTNH_LEN: usize = 8;

/// Multicast groups of the event socket: links, IPv4 and IPv6 addresses and routes.
pub(crate) const RTMGRP_LINK: u32 = libc::RTMGRP_LINK as u32;
pub(crate) const RTMGRP_IPV4_IFADDR: u32 = libc::RTMGRP_IPV4_IFADDR as u32;
pub(crate) const RTMGRP_IPV4_ROUTE: u32 = libc::RTMGRP_IPV4_ROUTE as u32;
pub(crate) const RTMGRP_IPV6_IFADDR: u32 = libc::RTMGRP_IPV6_IFADDR as u32;
pub(crate) const RTMGRP_IPV6_ROUTE: u32 = libc::RTMGRP_IPV6_ROUTE as u32;

/// Address families, as the family byte of address and route messages carries them.
pub(crate) const AF_INET: u8 = libc::AF_INET as u8;
pub(crate) const AF_INET6: u8 = libc::AF_INET6 as u8;

// Link attributes (linux/if_link.h).

pub(crate) const IFLA_ADDRESS: u16 = libc::IFLA_ADDRESS;
pub(crate) const IFLA_IFNAME: u16 = libc::IFLA_IFNAME;
pub(crate) const IFLA_MTU: u16 = libc::IFLA_MTU;
pub(crate) const IFLA_MASTER: u16 = libc::IFLA_MASTER;
pub(crate) const IFLA_OPERSTATE: u16 = libc::IFLA_OPERSTATE;
pub(crate) const IFLA_LINKINFO: u16 = libc::IFLA_LINKINFO;
/// Nested in IFLA_LINKINFO: the link's kind ("veth", "bridge", ...).
pub(crate) const IFLA_INFO_KIND: u16 = libc::IFLA_INFO_KIND;

// Address attributes (linux/if_addr.h).

pub(crate) const IFA_ADDRESS: u16 = libc::IFA_ADDRESS;
pub(crate) const IFA_LOCAL: u16 = libc::IFA_LOCAL;
pub(crate) const IFA_LABEL: u16 = libc::IFA_LABEL;
pub(crate) const IFA_FLAGS: u16 = libc::IFA_FLAGS;

// Route attributes (linux/rtnetlink.h).

pub(crate) const RTA_DST: u16 = libc::RTA_DST;
pub(crate) const RTA_SRC: u16 = libc::RTA_SRC;
pub(crate) const RTA_OIF: u16 = libc::RTA_OIF;
pub(crate) const RTA_GATEWAY: u16 = libc::RTA_GATEWAY;
pub(crate) const RTA_PRIORITY: u16 = libc::RTA_PRIORITY;
pub(crate) const RTA_PREFSRC: u16 = libc::RTA_PREFSRC;
pub(crate) const RTA_MULTIPATH: u16 = libc::RTA_MULTIPATH;
pub(crate) const RTA_TABLE: u16 = libc::RTA_TABLE;
