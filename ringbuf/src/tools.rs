//! Library side of the `edgegw ring stat` and `edgegw ring tail` commands.

use crate::attach::{exchange, Request, STATE_ATTACHED, STATE_FINISHED};
use crate::format::{Role, WrapMode};
use crate::{Consumer, Error, Readiness, Result};
use serde::Serialize;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A ring's state as its server reports it. `Display` is for people; `Serialize` for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    let (reply, _fds, _socket) = exchange(path, Request::Stat)?;
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
        owner_counters: reply.owner_counters,
    })
}

/// What [`tail`] prints and when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailOptions {
    /// Stop after this many packets (`None`: until the ring finishes or the server goes away).
    pub max_packets: Option<u64>,
    /// Bytes of each payload to hex-dump (the rest is summarised).
    pub dump_bytes: usize,
    /// Stop after this long without a packet (`None`: wait forever).
    pub idle_timeout: Option<Duration>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_packets: None,
            dump_bytes: 256,
            idle_timeout: None,
        }
    }
}

/// Why [`tail`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// Printed `max_packets`.
    Count,
    /// The ring was finished and drained.
    Finished,
    /// The server hung up.
    PeerGone,
    /// `idle_timeout` passed without a packet.
    Idle,
    /// The output was closed (a broken pipe, as with `| head`).
    OutputClosed,
}

/// Attach to the ring at `path` as its consumer and print each packet: sequence number, length,
/// type, flags and a hex dump. Packets printed are released: `tail` *is* the consumer while it
/// runs (the server refuses it while another consumer is attached). Returns packets printed and
/// why it stopped.
pub fn tail(
    path: impl AsRef<Path>,
    mut out: impl Write,
    options: &TailOptions,
) -> Result<(u64, TailEnd)> {
    let mut consumer = Consumer::attach(path)?;
    let mut count = 0u64;
    let mut line = String::with_capacity(128);
    let mut buf = Vec::with_capacity(options.dump_bytes);
    let io_end = |e: io::Error| -> Result<(u64, TailEnd)> {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Ok((0, TailEnd::OutputClosed))
        } else {
            Err(Error::io("write tail output", e))
        }
    };
    loop {
        while let Some(rec) = consumer.read()? {
            buf.clear();
            let shown = rec.len().min(options.dump_bytes);
            buf.resize(shown, 0);
            rec.payload().copy_to_slice(&mut buf);
            let res = writeln!(
                out,
                "#{count} len={} type={:#06x} flags={:#06x}",
                rec.len(),
                rec.record_type(),
                rec.flags()
            )
            .and_then(|_| write_hex(&mut out, &buf, rec.len(), &mut line));
            if let Err(e) = res {
                consumer.release();
                return io_end(e).map(|(_, end)| (count, end));
            }
            count += 1;
            if options.max_packets.is_some_and(|m| count >= m) {
                consumer.release();
                let _ = out.flush();
                return Ok((count, TailEnd::Count));
            }
        }
        consumer.release();
        if let Err(e) = out.flush() {
            return io_end(e).map(|(_, end)| (count, end));
        }
        match consumer.wait(options.idle_timeout)? {
            Readiness::Ready => {}
            Readiness::TimedOut => return Ok((count, TailEnd::Idle)),
            Readiness::Finished => return Ok((count, TailEnd::Finished)),
            Readiness::PeerGone => return Ok((count, TailEnd::PeerGone)),
        }
    }
}

/// `hexdump -C` style lines for `bytes`; notes the bytes not shown.
fn write_hex(
    out: &mut impl Write,
    bytes: &[u8],
    total: usize,
    line: &mut String,
) -> io::Result<()> {
    use std::fmt::Write as _;
    for (i, chunk) in bytes.chunks(16).enumerate() {
        line.clear();
        let _ = write!(line, "  {:08x} ", i * 16);
        for j in 0..16 {
            if j == 8 {
                line.push(' ');
            }
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(line, " {b:02x}");
                }
                None => line.push_str("   "),
            }
        }
        line.push_str("  |");
        line.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        line.push('|');
        writeln!(out, "{line}")?;
    }
    if total > bytes.len() {
        writeln!(out, "  ... {} more bytes", total - bytes.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lines_show_offsets_bytes_and_ascii() {
        let mut out = Vec::new();
        let mut line = String::new();
        write_hex(&mut out, b"hello, ring!\x00\x01\x02\x03xyz", 40, &mut line).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "  00000000  68 65 6c 6c 6f 2c 20 72  69 6e 67 21 00 01 02 03  |hello, ring!....|\n  00000010  78 79 7a                                          |xyz|\n  ... 21 more bytes\n"
        );
    }
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
/// [`Consumer::attach`] and [`crate::Producer::attach`] are the checked way.
pub fn attach_raw(path: impl AsRef<Path>, role: Role) -> Result<RawAttachment> {
    let attachment = crate::attach::connect(path.as_ref(), role)?;
    Ok(RawAttachment {
        fds: attachment.fds,
        link: attachment.socket,
    })
}
