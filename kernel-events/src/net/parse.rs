//! rtnetlink datagrams to model objects.
//!
//! The datagram is split into messages here, with every length checked against what is left,
//! because a malformed length must cost one skipped message, never a panic or a read past the
//! end. Each message body is then decoded with neli's `Ifinfomsg`, `Ifaddrmsg` and `Rtmsg`.
//! Attributes neli does not know are counted and skipped; attributes whose payload has the wrong
//! size are skipped and counted too.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::rtnl::{Ifa, Ifla, Rta};
use neli::rtnl::{Ifaddrmsg, Ifinfomsg, Rtmsg};
use neli::FromBytesWithInput;

use super::model::NetObject;
use crate::model::{Address, Family, Link, NextHop, Route};
use crate::sys::linux::*;

/// One netlink message inside a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) body: &'a [u8],
}

/// Splits a datagram into messages. Yields `Err(())` once and stops at a length that does not
/// fit (the rest of the datagram cannot be framed).
pub(crate) fn split(mut buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ()>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < NLMSG_HDRLEN {
            buf = &[];
            return Some(Err(()));
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(()));
        }
        let msg = Message {
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            body: &buf[NLMSG_HDRLEN..len],
        };
        let advance = (len + 3) & !3;
        buf = &buf[advance.min(buf.len())..];
        Some(Ok(msg))
    })
}

/// What a message meant to us.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// A link, address or route message.
    Object(NetObject),
    /// End of a dump (NLMSG_DONE).
    Done,
    /// NLMSG_ERROR with this (negative) errno; 0 is an acknowledgement.
    Error(i32),
    /// A message we do not model (another family, a cloned route, a noop).
    Ignored,
}

/// Decoding statistics for the counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ParseStats {
    pub(crate) unknown_attributes: u64,
    pub(crate) bad_attributes: u64,
}

/// Decodes one message. `Err(())` means malformed: skip it and count it.
pub(crate) fn parse(msg: &Message<'_>, stats: &mut ParseStats) -> Result<Parsed, ()> {
    match msg.msg_type {
        NLMSG_DONE => Ok(Parsed::Done),
        NLMSG_ERROR => {
            let errno = msg.body.get(0..4).ok_or(())?;
            Ok(Parsed::Error(i32::from_ne_bytes(
                errno.try_into().map_err(|_| ())?,
            )))
        }
        RTM_NEWLINK | RTM_DELLINK => {
            let link = parse_link(msg.body, stats)?;
            Ok(Parsed::Object(if msg.msg_type == RTM_NEWLINK {
                NetObject::NewLink(link)
            } else {
                NetObject::DelLink(link)
            }))
        }
        RTM_NEWADDR | RTM_DELADDR => match parse_address(msg.body, stats)? {
            Some(addr) if msg.msg_type == RTM_NEWADDR => {
                Ok(Parsed::Object(NetObject::NewAddress(addr)))
            }
            Some(addr) => Ok(Parsed::Object(NetObject::DelAddress(addr))),
            None => Ok(Parsed::Ignored),
        },
        RTM_NEWROUTE | RTM_DELROUTE => match parse_route(msg.body, stats)? {
            Some(route) if msg.msg_type == RTM_NEWROUTE => {
                Ok(Parsed::Object(NetObject::NewRoute {
                    route,
                    replace: msg.flags & NLM_F_REPLACE != 0,
                }))
            }
            Some(route) => Ok(Parsed::Object(NetObject::DelRoute(route))),
            None => Ok(Parsed::Ignored),
        },
        _ => Ok(Parsed::Ignored),
    }
}

fn parse_link(body: &[u8], stats: &mut ParseStats) -> Result<Link, ()> {
    let msg =
        Ifinfomsg::from_bytes_with_input(&mut Cursor::new(body), body.len()).map_err(|_| ())?;
    let mut link = Link {
        index: u32::try_from(*msg.ifi_index()).map_err(|_| ())?,
        name: String::new(),
        kind: None,
        flags: u32::from(*msg.ifi_flags()),
        mtu: None,
        mac: None,
        oper_state: None,
        master: None,
    };
    for attr in msg.rtattrs().iter() {
        let ty = *attr.rta_type();
        if matches!(ty, Ifla::UnrecognizedConst(_)) {
            stats.unknown_attributes += 1;
            continue;
        }
        let payload: &[u8] = attr.rta_payload().as_ref();
        match u16::from(ty) & NLA_TYPE_MASK {
            IFLA_IFNAME => link.name = c_string(payload),
            IFLA_MTU => link.mtu = u32_of(payload, stats),
            IFLA_ADDRESS if !payload.is_empty() => {
                link.mac = Some(
                    payload
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            IFLA_OPERSTATE => link.oper_state = payload.first().copied(),
            IFLA_MASTER => link.master = u32_of(payload, stats),
            IFLA_LINKINFO => {
                for (sub_ty, sub) in raw_attributes(payload, stats) {
                    if sub_ty == IFLA_INFO_KIND {
                        link.kind = Some(c_string(sub));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

fn parse_address(body: &[u8], stats: &mut ParseStats) -> Result<Option<Address>, ()> {
    let msg =
        Ifaddrmsg::from_bytes_with_input(&mut Cursor::new(body), body.len()).map_err(|_| ())?;
    let family = match u8::from(*msg.ifa_family()) {
        AF_INET => Family::Inet,
        AF_INET6 => Family::Inet6,
        _ => return Ok(None),
    };
    let (mut local, mut address, mut label) = (None, None, None);
    let mut flags = u32::from(u8::from(*msg.ifa_flags()));
    for attr in msg.rtattrs().iter() {
        let ty = *attr.rta_type();
        if matches!(ty, Ifa::UnrecognizedConst(_)) {
            stats.unknown_attributes += 1;
            continue;
        }
        let payload: &[u8] = attr.rta_payload().as_ref();
        match u16::from(ty) & NLA_TYPE_MASK {
            IFA_LOCAL => local = ip_of(payload, stats),
            IFA_ADDRESS => address = ip_of(payload, stats),
            IFA_LABEL => label = Some(c_string(payload)),
            IFA_FLAGS => flags = u32_of(payload, stats).unwrap_or(flags),
            _ => {}
        }
    }
    let Some(main) = local.or(address) else {
        return Err(()); // an address message without an address
    };
    Ok(Some(Address {
        index: *msg.ifa_index(),
        family,
        address: main,
        prefix_len: *msg.ifa_prefixlen(),
        peer: address.filter(|a| local.is_some() && *a != main),
        scope: u8::from(*msg.ifa_scope()),
        flags,
        label,
    }))
}

fn parse_route(body: &[u8], stats: &mut ParseStats) -> Result<Option<Route>, ()> {
    let msg = Rtmsg::from_bytes_with_input(&mut Cursor::new(body), body.len()).map_err(|_| ())?;
    let family = match u8::from(*msg.rtm_family()) {
        AF_INET => Family::Inet,
        AF_INET6 => Family::Inet6,
        _ => return Ok(None),
    };
    // Cached clones (PMTU exceptions, redirects) are not routes an operator configured, and
    // `ip route show` does not list them either.
    if u32::from(*msg.rtm_flags()) & RTM_F_CLONED != 0 {
        return Ok(None);
    }
    let mut route = Route {
        family,
        table: u32::from(u8::from(*msg.rtm_table())),
        dst: None,
        dst_len: *msg.rtm_dst_len(),
        src: None,
        src_len: *msg.rtm_src_len(),
        tos: *msg.rtm_tos(),
        priority: 0,
        route_type: u8::from(*msg.rtm_type()),
        protocol: u8::from(*msg.rtm_protocol()),
        scope: u8::from(*msg.rtm_scope()),
        prefsrc: None,
        next_hops: Vec::new(),
    };
    let mut hop = NextHop {
        oif: None,
        gateway: None,
    };
    for attr in msg.rtattrs().iter() {
        let ty = *attr.rta_type();
        if matches!(ty, Rta::UnrecognizedConst(_)) {
            stats.unknown_attributes += 1;
            continue;
        }
        let payload: &[u8] = attr.rta_payload().as_ref();
        match u16::from(ty) & NLA_TYPE_MASK {
            RTA_DST => route.dst = ip_of(payload, stats),
            RTA_SRC => route.src = ip_of(payload, stats),
            RTA_OIF => hop.oif = u32_of(payload, stats),
            RTA_GATEWAY => hop.gateway = ip_of(payload, stats),
            RTA_PRIORITY => route.priority = u32_of(payload, stats).unwrap_or(0),
            RTA_PREFSRC => route.prefsrc = ip_of(payload, stats),
            RTA_TABLE => route.table = u32_of(payload, stats).unwrap_or(route.table),
            RTA_MULTIPATH => route.next_hops = multipath(payload, stats),
            _ => {}
        }
    }
    if route.next_hops.is_empty() && (hop.oif.is_some() || hop.gateway.is_some()) {
        route.next_hops.push(hop);
    }
    Ok(Some(route))
}

/// Decodes RTA_MULTIPATH: a run of `struct rtnexthop` each followed by its own attributes.
fn multipath(mut buf: &[u8], stats: &mut ParseStats) -> Vec<NextHop> {
    let mut hops = Vec::new();
    while buf.len() >= RTNH_LEN {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        if len < RTNH_LEN || len > buf.len() {
            stats.bad_attributes += 1;
            break;
        }
        let ifindex = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let mut hop = NextHop {
            oif: (ifindex != 0).then_some(ifindex),
            gateway: None,
        };
        for (ty, payload) in raw_attributes(&buf[RTNH_LEN..len], stats) {
            if ty == RTA_GATEWAY {
                hop.gateway = ip_of(payload, stats);
            }
        }
        hops.push(hop);
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    hops
}

/// Splits attributes in a raw buffer (nested attributes), checking every length.
fn raw_attributes<'a>(mut buf: &'a [u8], stats: &mut ParseStats) -> Vec<(u16, &'a [u8])> {
    let mut attrs = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            stats.bad_attributes += 1;
            break;
        }
        attrs.push((ty, &buf[4..len]));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    attrs
}

fn c_string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

fn u32_of(payload: &[u8], stats: &mut ParseStats) -> Option<u32> {
    match payload.try_into() {
        Ok(bytes) => Some(u32::from_ne_bytes(bytes)),
        Err(_) => {
            stats.bad_attributes += 1;
            None
        }
    }
}

fn ip_of(payload: &[u8], stats: &mut ParseStats) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(payload) {
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    } else if let Ok(b) = <[u8; 16]>::try_from(payload) {
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        stats.bad_attributes += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(msg_type: u16, body: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&msg_type.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&7u32.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn ifaddrmsg(family: u8, prefix: u8, index: u32) -> Vec<u8> {
        let mut v = vec![family, prefix, 0, 0];
        v.extend_from_slice(&index.to_ne_bytes());
        v
    }

    #[test]
    fn address_message_with_unknown_attribute_is_decoded_and_the_attribute_counted() {
        let mut body = ifaddrmsg(AF_INET, 24, 3);
        body.extend(attr(IFA_LOCAL, &[10, 1, 2, 3]));
        body.extend(attr(999, &[1, 2, 3, 4]));
        let buf = nlmsg(RTM_NEWADDR, &body);
        let msg = split(&buf).next().unwrap().unwrap();
        let mut stats = ParseStats::default();
        let parsed = parse(&msg, &mut stats).unwrap();
        let Parsed::Object(NetObject::NewAddress(a)) = parsed else {
            panic!("expected an address, got {parsed:?}");
        };
        assert_eq!(a.address, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(a.prefix_len, 24);
        assert_eq!(a.index, 3);
        assert_eq!(stats.unknown_attributes, 1);
    }

    #[test]
    fn attribute_with_wrong_payload_size_is_skipped_and_counted() {
        let mut body = ifaddrmsg(AF_INET, 24, 3);
        body.extend(attr(IFA_LOCAL, &[10, 1, 2, 3]));
        body.extend(attr(IFA_FLAGS, &[1, 2])); // u32 expected
        let buf = nlmsg(RTM_NEWADDR, &body);
        let msg = split(&buf).next().unwrap().unwrap();
        let mut stats = ParseStats::default();
        assert!(matches!(parse(&msg, &mut stats), Ok(Parsed::Object(_))));
        assert_eq!(stats.bad_attributes, 1);
    }

    #[test]
    fn attribute_length_past_the_message_is_malformed_not_a_panic() {
        let mut body = ifaddrmsg(AF_INET, 24, 3);
        let mut bad = attr(IFA_LOCAL, &[10, 1, 2, 3]);
        bad[0] = 200; // rta_len beyond the end
        body.extend(bad);
        let buf = nlmsg(RTM_NEWADDR, &body);
        let msg = split(&buf).next().unwrap().unwrap();
        assert!(parse(&msg, &mut ParseStats::default()).is_err());
    }

    #[test]
    fn message_length_past_the_datagram_stops_the_split_with_an_error() {
        let mut buf = nlmsg(NLMSG_DONE, &[0, 0, 0, 0]);
        buf[0] = 250;
        let items: Vec<_> = split(&buf).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
        let short = [1u8, 2, 3];
        assert!(split(&short).next().unwrap().is_err());
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_handled_without_panic() {
        let mut body = vec![0u8; 12];
        body[0] = AF_INET;
        body[1] = 24;
        body.extend(attr(RTA_DST, &[10, 0, 0, 0]));
        body.extend(attr(RTA_OIF, &2u32.to_ne_bytes()));
        body.extend(attr(
            RTA_MULTIPATH,
            &[16, 0, 0, 0, 2, 0, 0, 0, 8, 0, 5, 0, 1, 2, 3, 4],
        ));
        let buf = nlmsg(RTM_NEWROUTE, &body);
        for cut in 0..buf.len() {
            let mut copy = buf[..cut].to_vec();
            if copy.len() >= 4 {
                copy[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            for msg in split(&copy).flatten() {
                let _ = parse(&msg, &mut ParseStats::default());
            }
        }
        let msg = split(&buf).next().unwrap().unwrap();
        let Ok(Parsed::Object(NetObject::NewRoute { route: r, .. })) =
            parse(&msg, &mut ParseStats::default())
        else {
            panic!("the whole message must parse");
        };
        assert_eq!(r.next_hops.len(), 1);
        assert_eq!(
            r.next_hops[0].gateway,
            Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
    }
}
