//! Queries for an operator's tools and for tests: a ring's state as its server reports it
//! ([`stat`], a [`RingStat`] that displays itself for people and, with the `serde` feature,
//! serializes for machines), and the bare attach handshake ([`attach_raw`]). The commands
//! themselves (`edgegw ring stat|tail|echo`) are the daemon's.

use crate::attach::{exchange, Request, STATE_ATTACHED, STATE_FINISHED};
use crate::format::{Role, WrapMode};
use crate::sys::os;
use crate::{Error, Result};
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// A ring's state as its server reports it. `Display` is for people; `Serialize` (with the
/// `serde` feature) for `--json`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RingStat {
    /// Socket path asked.
    pub path: PathBuf,
    /// Role the ring offers its peer.
    pub peer_role: Role,
    /// Data capacity, bytes.
    pub capacity: u64,
    /// Generation.
    pub generation: u64,
    /// Wrap mode.
    pub wrap: WrapMode,
    /// Format version.
    pub format_version: u32,
    /// Producer position (bytes ever published).
    pub producer_pos: u64,
    /// Consumer position (bytes ever released).
    pub consumer_pos: u64,
    /// Bytes published and not released.
    pub fill: u64,
    /// `fill` as a percentage of the capacity.
    pub fill_percent: f64,
    /// Packets the producer dropped because the ring was full.
    pub drops: u64,
    /// A peer is attached.
    pub attached: bool,
    /// The producer marked the ring finished.
    pub finished: bool,
    /// The owner's counters (FORMAT.md section 6): what each counts is the owner's to say.
    pub owner_counters: [u64; crate::OwnerCounters::LEN],
}

impl fmt::Display for RingStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ring        {}", self.path.display())?;
        writeln!(f, "generation  {}", self.generation)?;
        writeln!(
            f,
            "capacity    {} bytes ({} wrap, format v{})",
            self.capacity, self.wrap, self.format_version
        )?;
        writeln!(f, "producer    {}", self.producer_pos)?;
        writeln!(f, "consumer    {}", self.consumer_pos)?;
        writeln!(
            f,
            "fill        {} bytes ({:.1}%)",
            self.fill, self.fill_percent
        )?;
        writeln!(f, "drops       {}", self.drops)?;
        writeln!(
            f,
            "peer        {} {}",
            self.peer_role,
            if self.attached {
                "attached"
            } else {
                "not attached"
            }
        )?;
        write!(
            f,
            "finished    {}",
            if self.finished { "yes" } else { "no" }
        )
    }
}

/// Ask the server at `path` for its ring's state. Does not attach: a stat request gets a snapshot
/// and no fds, so it works while a consumer is attached and never disturbs it.
pub fn stat(path: impl AsRef<Path>) -> Result<RingStat> {
    let path = path.as_ref();
    let (reply, _fds, socket) = exchange(path, Request::Stat)?;
    // An owner may send more counters in a second message (FORMAT.md section 6); one that
    // does not closes the connection, which reads as nothing.
    let mut buf = [0u8; 8 + 8 * crate::attach::MORE_COUNTERS + 1];
    let more = os::recv_message(socket.as_fd(), &mut buf, false)
        .ok()
        .flatten()
        .and_then(|m| crate::attach::decode_more_counters(&buf[..m.len]))
        .unwrap_or_default();
    let peer_role = Role::from_wire(reply.offered_role).ok_or_else(|| Error::Attach {
        path: path.to_owned(),
        reason: format!("unknown role {} in the answer", reply.offered_role),
    })?;
    let wrap = WrapMode::from_wire(reply.wrap_mode).ok_or_else(|| Error::Attach {
        path: path.to_owned(),
        reason: format!("unknown wrap mode {} in the answer", reply.wrap_mode),
    })?;
    let fill = reply.producer_pos.saturating_sub(reply.consumer_pos);
    Ok(RingStat {
        path: path.to_owned(),
        peer_role,
        capacity: reply.capacity,
        generation: reply.generation,
        wrap,
        format_version: reply.format_version,
        producer_pos: reply.producer_pos,
        consumer_pos: reply.consumer_pos,
        fill,
        fill_percent: if reply.capacity == 0 {
            0.0
        } else {
            fill as f64 * 100.0 / reply.capacity as f64
        },
        drops: reply.drops,
        attached: reply.state & STATE_ATTACHED != 0,
        finished: reply.state & STATE_FINISHED != 0,
        owner_counters: std::array::from_fn(|i| match i.checked_sub(reply.owner_counters.len()) {
            None => reply.owner_counters[i],
            Some(j) => more[j],
        }),
    })
}

/// A raw attachment: the ring's four fds as the server sent them, and the connection that keeps
/// the peer attached (close it to detach; it hangs up when the owner goes away or replaces the
/// ring).
#[derive(Debug)]
pub struct RawAttachment {
    /// The fds, in protocol order. Unchecked: nothing is mapped or verified.
    pub fds: crate::RingFds,
    /// The attach connection.
    pub link: std::os::fd::OwnedFd,
}

/// Performs only the attach handshake for `role` and returns the fds, unchecked and unmapped.
/// For tools and tests that look at a ring's memory through the file interface, and for
/// bindings that map it their own way: they must do FORMAT.md section 6's checks themselves.
/// [`crate::Consumer::attach`] and [`crate::Producer::attach`] are the checked way.
pub fn attach_raw(path: impl AsRef<Path>, role: Role) -> Result<RawAttachment> {
    let attachment = crate::attach::connect(path.as_ref(), role)?;
    Ok(RawAttachment {
        fds: attachment.fds,
        link: attachment.socket,
    })
}
