//! The hello of FORMAT.md section 6: message layouts, and the attaching side of the handshake.

use crate::format::{Role, StaticHeader, WrapMode, FORMAT_VERSION};
use crate::sys::os;
use crate::{Error, Refusal, Result, RingFds};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// Hello protocol version this library speaks: 2, which understands rings with fd protection
/// (FORMAT.md section 6). It also speaks version 1 to an owner that only knows that one.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest hello version an owner built from this library answers.
pub(crate) const OLDEST_PROTOCOL_VERSION: u16 = 1;
pub(crate) const HELLO_MAGIC: [u8; 4] = *b"EGRH";
pub(crate) const REPLY_MAGIC: [u8; 4] = *b"EGRR";
pub(crate) const HELLO_LEN: usize = 32;
pub(crate) const REPLY_LEN: usize = 128;
/// How long an attaching peer waits for the server's answer.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a hello asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Attach(Role),
    Stat,
}

impl Request {
    fn wire(self) -> u8 {
        match self {
            Request::Attach(r) => r.wire(),
            Request::Stat => 3,
        }
    }
}

pub(crate) fn encode_hello(req: Request, version: u16) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[0..4].copy_from_slice(&HELLO_MAGIC);
    b[4..6].copy_from_slice(&version.to_ne_bytes());
    b[6] = req.wire();
    b
}

/// A parsed hello and its version: `Err(status)` when it must be refused for its form.
pub(crate) fn decode_hello(b: &[u8]) -> std::result::Result<(Request, u16), (u8, u16)> {
    if b.len() != HELLO_LEN || b[0..4] != HELLO_MAGIC {
        return Err((STATUS_MALFORMED, 0));
    }
    let version = u16::from_ne_bytes([b[4], b[5]]);
    if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err((STATUS_VERSION, version));
    }
    match b[6] {
        3 => Ok((Request::Stat, version)),
        v => Role::from_wire(v)
            .map(|role| (Request::Attach(role), version))
            .ok_or((STATUS_MALFORMED, version)),
    }
}

/// The version an owner answers `hello` in (FORMAT.md section 6): the hello's, when it is a
/// hello (its size and magic) in a version the owner speaks; otherwise the owner's newest. A
/// refusal for credentials reads no more of the hello than this.
pub(crate) fn answer_version(hello: &[u8]) -> u16 {
    if hello.len() != HELLO_LEN || hello[0..4] != HELLO_MAGIC {
        return PROTOCOL_VERSION;
    }
    let version = u16::from_ne_bytes([hello[4], hello[5]]);
    if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        version
    } else {
        PROTOCOL_VERSION
    }
}

pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_VERSION: u8 = 1;
pub(crate) const STATUS_NOT_ALLOWED: u8 = 2;
pub(crate) const STATUS_WRONG_ROLE: u8 = 3;
pub(crate) const STATUS_BUSY: u8 = 4;
pub(crate) const STATUS_MALFORMED: u8 = 5;

/// The server's answer (FORMAT.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Reply {
    pub status: u8,
    pub offered_role: u8,
    pub capacity: u64,
    pub generation: u64,
    pub format_version: u32,
    pub wrap_mode: u32,
    pub producer_pos: u64,
    pub consumer_pos: u64,
    pub drops: u64,
    pub state: u32,
    pub page_size: u32,
    /// The owner's counters (bytes 64..128), in stat answers; 0 elsewhere.
    pub owner_counters: [u64; OWNER_COUNTERS],
}

/// Counters an owner can publish in a stat answer.
pub(crate) const OWNER_COUNTERS: usize = 8;

/// Counters an owner can publish in the message that follows a stat answer (FORMAT.md section
/// 6, "More counters").
pub(crate) const MORE_COUNTERS: usize = 24;

/// Magic of the message with more counters.
pub(crate) const MORE_COUNTERS_MAGIC: [u8; 4] = *b"EGRX";

/// The message after a stat answer: magic, u32 count, then the counters (native endian).
pub(crate) fn encode_more_counters(counters: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + counters.len() * 8);
    b.extend_from_slice(&MORE_COUNTERS_MAGIC);
    b.extend_from_slice(&(counters.len() as u32).to_ne_bytes());
    for c in counters {
        b.extend_from_slice(&c.to_ne_bytes());
    }
    b
}

/// The counters of a message after a stat answer; `None` if it is not one. A longer list than
/// this build knows is cut, a shorter one leaves the rest 0.
pub(crate) fn decode_more_counters(b: &[u8]) -> Option<[u64; MORE_COUNTERS]> {
    if b.get(..4)? != MORE_COUNTERS_MAGIC {
        return None;
    }
    let count = u32::from_ne_bytes(b.get(4..8)?.try_into().ok()?) as usize;
    let values = b.get(8..8 + count.checked_mul(8)?)?;
    let mut out = [0; MORE_COUNTERS];
    for (slot, word) in out.iter_mut().zip(values.chunks_exact(8)) {
        *slot = u64::from_ne_bytes(word.try_into().ok()?);
    }
    Some(out)
}

pub(crate) const STATE_ATTACHED: u32 = 1;
pub(crate) const STATE_FINISHED: u32 = 2;

impl Reply {
    /// The answer in hello protocol `version` (the hello's, when the owner speaks it).
    pub(crate) fn encode(&self, version: u16) -> [u8; REPLY_LEN] {
        let mut b = [0u8; REPLY_LEN];
        b[0..4].copy_from_slice(&REPLY_MAGIC);
        b[4..6].copy_from_slice(&version.to_ne_bytes());
        b[6] = self.status;
        b[7] = self.offered_role;
        b[8..16].copy_from_slice(&self.capacity.to_ne_bytes());
        b[16..24].copy_from_slice(&self.generation.to_ne_bytes());
        b[24..28].copy_from_slice(&self.format_version.to_ne_bytes());
        b[28..32].copy_from_slice(&self.wrap_mode.to_ne_bytes());
        b[32..40].copy_from_slice(&self.producer_pos.to_ne_bytes());
        b[40..48].copy_from_slice(&self.consumer_pos.to_ne_bytes());
        b[48..56].copy_from_slice(&self.drops.to_ne_bytes());
        b[56..60].copy_from_slice(&self.state.to_ne_bytes());
        b[60..64].copy_from_slice(&self.page_size.to_ne_bytes());
        for (i, counter) in self.owner_counters.iter().enumerate() {
            b[64 + i * 8..72 + i * 8].copy_from_slice(&counter.to_ne_bytes());
        }
        b
    }

    /// Parse an answer; `Err` names what is wrong with it.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<(Reply, u16), String> {
        if b.len() != REPLY_LEN {
            return Err(format!("answer of {} bytes, expected {REPLY_LEN}", b.len()));
        }
        if b[0..4] != REPLY_MAGIC {
            return Err(format!(
                "answer magic {:02x?}, expected \"EGRR\" (not a ring server?)",
                &b[0..4]
            ));
        }
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8"));
        let version = u16::from_ne_bytes([b[4], b[5]]);
        Ok((
            Reply {
                status: b[6],
                offered_role: b[7],
                capacity: u64_at(8),
                generation: u64_at(16),
                format_version: u32_at(24),
                wrap_mode: u32_at(28),
                producer_pos: u64_at(32),
                consumer_pos: u64_at(40),
                drops: u64_at(48),
                state: u32_at(56),
                page_size: u32_at(60),
                owner_counters: std::array::from_fn(|i| u64_at(64 + i * 8)),
            },
            version,
        ))
    }
}

/// A successful attach: the fds, the answer, and the socket kept open for liveness.
pub(crate) struct Attachment {
    pub fds: RingFds,
    pub reply: Reply,
    pub socket: OwnedFd,
}

fn attach_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Attach {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Put the socket path on an error from the ring checks.
pub(crate) fn wrap_err(path: &Path, e: Error) -> Error {
    match e {
        Error::InvalidRing(msg) => attach_err(path, format!("invalid ring: {msg}")),
        other => other,
    }
}

/// Connect, say hello, and read the answer. For an attach, returns the fds (not yet checked);
/// for a stat request, the answer alone. An owner that speaks only version 1 of the hello
/// refuses ours as a version mismatch in its own version: then we say hello again in version 1
/// (whose rings are sealed, which `ring::check` accepts as well).
pub(crate) fn exchange(path: &Path, req: Request) -> Result<(Reply, Vec<OwnedFd>, OwnedFd)> {
    match exchange_in(path, req, PROTOCOL_VERSION) {
        Err(Error::Refused {
            reason: Refusal::VersionMismatch { server: 1, .. },
            ..
        }) => exchange_in(path, req, 1),
        other => other,
    }
}

fn exchange_in(
    path: &Path,
    req: Request,
    hello_version: u16,
) -> Result<(Reply, Vec<OwnedFd>, OwnedFd)> {
    let socket = os::seqpacket_connect(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => " (no ring socket at this path)",
            std::io::ErrorKind::ConnectionRefused => " (no server is listening: stale socket?)",
            std::io::ErrorKind::PermissionDenied => " (no permission on the socket file)",
            _ => "",
        };
        attach_err(path, format!("connect: {e}{hint}"))
    })?;
    os::set_recv_timeout(socket.as_fd(), ANSWER_TIMEOUT)?;
    os::send_message(socket.as_fd(), &encode_hello(req, hello_version), &[])
        .map_err(|e| attach_err(path, format!("send hello: {e}")))?;
    let mut buf = [0u8; REPLY_LEN + 1];
    let msg = os::recv_message(socket.as_fd(), &mut buf, false)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                attach_err(
                    path,
                    format!("no answer from the server within {ANSWER_TIMEOUT:?}"),
                )
            } else {
                attach_err(path, format!("receive answer: {e}"))
            }
        })?
        .ok_or_else(|| attach_err(path, "no answer"))?;
    if msg.len == 0 {
        return Err(attach_err(
            path,
            "the server closed the connection without answering",
        ));
    }
    if msg.truncated || msg.len != REPLY_LEN {
        return Err(attach_err(
            path,
            format!("malformed answer of {} bytes", msg.len),
        ));
    }
    if msg.fds_truncated {
        return Err(attach_err(
            path,
            "the server sent more fds than the protocol has",
        ));
    }
    let (reply, version) = Reply::decode(&buf[..msg.len]).map_err(|e| attach_err(path, e))?;
    if version != hello_version {
        return Err(Error::Refused {
            path: path.to_owned(),
            reason: Refusal::VersionMismatch {
                server: version,
                client: hello_version,
            },
        });
    }
    let offered = Role::from_wire(reply.offered_role);
    let refusal = match reply.status {
        STATUS_OK => None,
        STATUS_VERSION => Some(Refusal::VersionMismatch {
            server: version,
            client: hello_version,
        }),
        STATUS_NOT_ALLOWED => {
            let uid = nix::unistd::geteuid().as_raw();
            let gid = nix::unistd::getegid().as_raw();
            Some(Refusal::NotAllowed { uid, gid })
        }
        STATUS_WRONG_ROLE => match (offered, req) {
            (Some(offered), Request::Attach(requested)) => {
                Some(Refusal::WrongRole { offered, requested })
            }
            _ => Some(Refusal::Malformed),
        },
        STATUS_BUSY => Some(Refusal::Busy),
        STATUS_MALFORMED => Some(Refusal::Malformed),
        other => return Err(attach_err(path, format!("unknown answer status {other}"))),
    };
    if let Some(reason) = refusal {
        return Err(Error::Refused {
            path: path.to_owned(),
            reason,
        });
    }
    Ok((reply, msg.fds, socket))
}

/// Attach handshake for `role`: the fds in protocol order, not yet checked.
pub(crate) fn connect(path: &Path, role: Role) -> Result<Attachment> {
    let (reply, fds, socket) = exchange(path, Request::Attach(role))?;
    let fds: [OwnedFd; 4] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
        attach_err(
            path,
            format!("the server sent {} fds, the protocol has 4", v.len()),
        )
    })?;
    if reply.format_version != FORMAT_VERSION {
        return Err(attach_err(
            path,
            format!(
                "the ring is format version {}, this library reads version {FORMAT_VERSION}",
                reply.format_version
            ),
        ));
    }
    Ok(Attachment {
        fds: RingFds::from_array(fds),
        reply,
        socket,
    })
}

/// The mapped header must say what the server's answer said.
/// Everything an attaching endpoint does before it exists: connect and say hello, check the
/// answer, the fds and the header against the answer, and map. Shared by `Consumer::attach`
/// and `Producer::attach`.
pub(crate) fn open_attached(
    path: &Path,
    role: Role,
) -> Result<(
    crate::sys::shm::MappedRing,
    StaticHeader,
    RingFds,
    crate::endpoint::Link,
)> {
    let att = connect(path, role)?;
    let (mem, header) = crate::ring::open(&att.fds, role)
        .and_then(|(m, h)| check_matches(&att.reply, &h).map(|_| (m, h)))
        .map_err(|e| wrap_err(path, e))?;
    let link = crate::endpoint::Link::Attached {
        socket: att.socket,
        path: path.to_owned(),
    };
    Ok((mem, header, att.fds, link))
}

pub(crate) fn check_matches(reply: &Reply, h: &StaticHeader) -> Result<()> {
    if reply.capacity != h.capacity as u64
        || reply.generation != h.generation
        || WrapMode::from_wire(reply.wrap_mode) != Some(h.wrap)
        || reply.page_size as usize != h.page_size
    {
        return Err(Error::InvalidRing(format!(
            "the server announced capacity {} generation {} wrap {} page {}, the ring header says capacity {} generation {} wrap {} page {}",
            reply.capacity, reply.generation, reply.wrap_mode, reply.page_size,
            h.capacity, h.generation, h.wrap.wire(), h.page_size
        )));
    }
    Ok(())
}
