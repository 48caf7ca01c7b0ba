//! rtnetlink datagrams to model objects.
//!
//! The datagram is split into messages here, with every length checked against what is left,
//! because a malformed length must cost one skipped message, never a panic or a read past the
//! end. Each message body is then decoded with neli's `Ifinfomsg`, `Ifaddrmsg` and `Rtmsg`.
//! Attributes neli does not know are counted and skipped; attributes whose payload has the wrong
//! size are skipped and counted too. A message that cannot be read at all is a [`ParseError`]
//! that says what was wrong and where, ready for a log line.

use std::borrow::Cow;
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
    /// Where the message starts in its datagram.
    pub(crate) offset: usize,
    pub(crate) body: &'a [u8],
}

/// Why a netlink message was skipped, and where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("netlink {} at byte {offset} of its datagram: {problem}", message_name(.message))]
pub(crate) struct ParseError {
    /// Where the message starts in its datagram.
    pub(crate) offset: usize,
    /// The message type, when its header could be read.
    pub(crate) message: Option<u16>,
    /// What was wrong.
    pub(crate) problem: Problem,
}

/// What was wrong with a netlink message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    /// The datagram ends inside the message's header.
    #[error("the datagram ends inside its header ({left} of {NLMSG_HDRLEN} bytes)")]
    TruncatedHeader { left: usize },
    /// The header's length is shorter than a header or longer than what is left.
    #[error("its header says {len} bytes, and {left} are left")]
    BadLength { len: usize, left: usize },
    /// An NLMSG_ERROR too short to hold its errno.
    #[error("its body of {len} bytes holds no errno")]
    NoErrno { len: usize },
    /// The fixed part or an attribute header of the body does not decode.
    #[error("its body of {len} bytes does not decode: {reason}")]
    Body { len: usize, reason: String },
    /// A link message with a negative interface index.
    #[error("its interface index {0} is negative")]
    NegativeIndex(i32),
    /// An address message without an address.
    #[error("it names no address (neither IFA_LOCAL nor IFA_ADDRESS)")]
    NoAddress,
}

/// The name of a message type, for a log line.
fn message_name(message: &Option<u16>) -> Cow<'static, str> {
    let name = match *message {
        None => "message",
        Some(NLMSG_ERROR) => "NLMSG_ERROR",
        Some(NLMSG_DONE) => "NLMSG_DONE",
        Some(RTM_NEWLINK) => "RTM_NEWLINK",
        Some(RTM_DELLINK) => "RTM_DELLINK",
        Some(RTM_NEWADDR) => "RTM_NEWADDR",
        Some(RTM_DELADDR) => "RTM_DELADDR",
        Some(RTM_NEWROUTE) => "RTM_NEWROUTE",
        Some(RTM_DELROUTE) => "RTM_DELROUTE",
        Some(other) => return format!("message of type {other}").into(),
    };
    name.into()
}

/// Splits a datagram into messages. Yields one error and stops at a length that does not fit
/// (the rest of the datagram cannot be framed).
pub(crate) fn split(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ParseError>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let buf = &datagram[offset..];
        if buf.is_empty() {
            return None;
        }
        let failed = |message, problem| {
            let at = offset;
            Some(Err(ParseError {
                offset: at,
                message,
                problem,
            }))
        };
        if buf.len() < NLMSG_HDRLEN {
            let left = buf.len();
            let error = failed(None, Problem::TruncatedHeader { left });
            offset = datagram.len();
            return error;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            let left = buf.len();
            let error = failed(Some(msg_type), Problem::BadLength { len, left });
            offset = datagram.len();
            return error;
        }
        let msg = Message {
            msg_type,
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            offset,
            body: &buf[NLMSG_HDRLEN..len],
        };
        let advance = (len + 3) & !3;
        offset += advance.min(buf.len());
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

/// Decodes one message. An error means malformed: skip it and count it.
pub(crate) fn parse(msg: &Message<'_>, stats: &mut ParseStats) -> Result<Parsed, ParseError> {
    decode(msg, stats).map_err(|problem| ParseError {
        offset: msg.offset,
        message: Some(msg.msg_type),
        problem,
    })
}

fn decode(msg: &Message<'_>, stats: &mut ParseStats) -> Result<Parsed, Problem> {
    match msg.msg_type {
        NLMSG_DONE => Ok(Parsed::Done),
        NLMSG_ERROR => match msg.body.first_chunk::<4>() {
            Some(errno) => Ok(Parsed::Error(i32::from_ne_bytes(*errno))),
            None => Err(Problem::NoErrno {
                len: msg.body.len(),
            }),
        },
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

/// The fixed part and the attribute headers of a message body, decoded by neli.
fn decode_body<T: FromBytesWithInput<Input = usize>>(body: &[u8]) -> Result<T, Problem> {
    T::from_bytes_with_input(&mut Cursor::new(body), body.len()).map_err(|e| Problem::Body {
        len: body.len(),
        reason: e.to_string(),
    })
}

fn parse_link(body: &[u8], stats: &mut ParseStats) -> Result<Link, Problem> {
    let msg: Ifinfomsg = decode_body(body)?;
    let index = *msg.ifi_index();
    let mut link = Link {
        index: u32::try_from(index).map_err(|_| Problem::NegativeIndex(index))?,
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

fn parse_address(body: &[u8], stats: &mut ParseStats) -> Result<Option<Address>, Problem> {
    let msg: Ifaddrmsg = decode_body(body)?;
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
        return Err(Problem::NoAddress);
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

fn parse_route(body: &[u8], stats: &mut ParseStats) -> Result<Option<Route>, Problem> {
    let msg: Rtmsg = decode_body(body)?;
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
        let err = parse(&msg, &mut ParseStats::default()).unwrap_err();
        assert_eq!((err.offset, err.message), (0, Some(RTM_NEWADDR)));
        assert!(
            matches!(err.problem, Problem::Body { len: 16, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn message_length_past_the_datagram_stops_the_split_with_an_error() {
        let mut buf = nlmsg(NLMSG_DONE, &[0, 0, 0, 0]);
        buf[0] = 250;
        let items: Vec<_> = split(&buf).collect();
        assert_eq!(items.len(), 1);
        let err = items[0].clone().unwrap_err();
        assert_eq!(err.problem, Problem::BadLength { len: 250, left: 20 });
        let short = [1u8, 2, 3];
        let err = split(&short).next().unwrap().unwrap_err();
        assert_eq!(err.problem, Problem::TruncatedHeader { left: 3 });
    }

    #[test]
    fn a_skipped_message_is_named_by_its_type_and_place_in_the_datagram() {
        // A good address message, then one without an address, then a header cut short.
        let mut good = ifaddrmsg(AF_INET, 24, 3);
        good.extend(attr(IFA_LOCAL, &[10, 1, 2, 3]));
        let mut buf = nlmsg(RTM_NEWADDR, &good);
        let second = buf.len();
        buf.extend(nlmsg(RTM_DELADDR, &ifaddrmsg(AF_INET, 24, 3)));
        let third = buf.len();
        buf.extend([0u8; 6]);
        let mut stats = ParseStats::default();
        let lines: Vec<String> = split(&buf)
            .map(|m| m.and_then(|m| parse(&m, &mut stats)))
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(
            lines,
            [
                format!(
                    "netlink RTM_DELADDR at byte {second} of its datagram: it names no address \
                     (neither IFA_LOCAL nor IFA_ADDRESS)"
                ),
                format!(
                    "netlink message at byte {third} of its datagram: the datagram ends inside \
                     its header (6 of 16 bytes)"
                ),
            ]
        );
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
