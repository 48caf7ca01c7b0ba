//! `edgegw ring stat|tail|echo`: tools for a ring's operator and an example consumer.
//!
//! RING is a socket path (nothing else is needed) or a ring's name, whose sockets are in the
//! runtime directory: `--config`'s, or without one the default (`paths::runtime_dir`), and
//! when the ring is not there but in the system daemon's (`/run/edgegw`), that one: a user's
//! tools find the rings of the daemon systemd runs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use edgegw_ring::{Consumer, Producer, Readiness};

use super::args::RingAction;
use super::note::note;
use crate::config::Config;
use crate::gateway::RingCounter;
use crate::paths::{self, SYSTEM_RUNTIME_DIR};
use edgegw_proto::{
    self as proto, CloseReason, OpenInfo, Window, DATA_HEADER_LEN, INITIAL_WINDOW, REPLY_CLOSE_LEN,
};

/// Runs a ring tool on `ring`, a ring name or a socket path.
pub fn run(
    action: RingAction,
    ring: &str,
    config: Option<&Path>,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (socket, reply) = sockets(ring, config)?;
    match action {
        RingAction::Stat { json } => stat(&socket, json, out)?,
        RingAction::Tail { count } => {
            let (packets, end) = tail(&socket, count, out)?;
            note!("{packets} packet(s); stopped: {end:?}");
        }
        RingAction::Echo => echo(ring, &socket, &reply)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A ring's two sockets (ingress, reply): a path as given (`X.sock` and `X.reply.sock`), or
/// the named ring's in the runtime directory.
pub(super) fn sockets(ring: &str, config: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    if ring.contains('/') {
        let reply = match ring.strip_suffix(".sock") {
            Some(stem) => PathBuf::from(format!("{stem}.reply.sock")),
            None => PathBuf::from(format!("{ring}.reply.sock")),
        };
        return Ok((PathBuf::from(ring), reply));
    }
    // A config that names its runtime directory is taken at its word; one that does not (the
    // shipped /etc/edgegw/edgegw.toml) runs under systemd in /run/edgegw, which the caller's
    // default (say root's $XDG_RUNTIME_DIR over ssh) is not: look there too, as without one.
    let runtime = match config.map(Config::runtime_dir_of).transpose()?.flatten() {
        Some(dir) => paths::runtime_dir(&crate::config::DaemonConfig {
            runtime_dir: Some(dir),
            ..Config::builtin().daemon
        }),
        None => find(
            ring,
            paths::runtime_dir(&Config::builtin().daemon),
            Path::new(SYSTEM_RUNTIME_DIR),
        ),
    };
    Ok((
        paths::ring_socket(&runtime, ring),
        paths::reply_socket(&runtime, ring),
    ))
}

/// The runtime directory that has `ring`: `own`, unless only `system` has it.
fn find(ring: &str, own: PathBuf, system: &Path) -> PathBuf {
    if !paths::ring_socket(&own, ring).exists() && paths::ring_socket(system, ring).exists() {
        system.to_path_buf()
    } else {
        own
    }
}

/// Prints a ring's state, with the daemon's counters for it by name (FORMAT.md section 6).
fn stat(socket: &Path, json: bool, out: &mut impl Write) -> Result<()> {
    let stat = edgegw_ring::tools::stat(socket)?;
    let counters = RingCounter::named(&stat.owner_counters);
    if json {
        let mut value = serde_json::to_value(&stat)?;
        value["counters"] = counters.into();
        writeln!(out, "{value}")?;
    } else {
        let counters: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(out, "{stat}\ncounters    {}", counters.join(" "))?;
    }
    Ok(())
}

/// Bytes of each payload `ring tail` shows (the rest is summed up).
const DUMP_BYTES: usize = 256;

/// Why `ring tail` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailEnd {
    /// It printed `--count` packets.
    Count,
    /// The ring was finished and drained.
    Finished,
    /// The server hung up.
    PeerGone,
    /// The output was closed (a broken pipe, as with `| head`).
    OutputClosed,
}

/// Attaches to the ring at `socket` as its consumer and prints each packet: sequence number,
/// length, type, flags and a hex dump. Packets printed are released: `tail` *is* the consumer
/// while it runs (the server refuses it while another consumer is attached). Returns packets
/// printed and why it stopped.
fn tail(socket: &Path, count: Option<u64>, out: &mut impl Write) -> Result<(u64, TailEnd)> {
    let mut consumer = Consumer::attach(socket)?;
    let mut printed = 0u64;
    let mut line = String::with_capacity(128);
    let mut buf = Vec::with_capacity(DUMP_BYTES);
    loop {
        while let Some(record) = consumer.read()? {
            buf.clear();
            buf.resize(record.len().min(DUMP_BYTES), 0);
            record.payload().copy_to_slice(&mut buf);
            let written = writeln!(
                out,
                "#{printed} len={} type={:#06x} flags={:#06x}",
                record.len(),
                record.record_type(),
                record.flags()
            )
            .and_then(|()| write_hex(out, &buf, record.len(), &mut line));
            if let Err(e) = written {
                consumer.release();
                return output_closed(e).map(|end| (printed, end));
            }
            printed += 1;
            if count.is_some_and(|n| printed >= n) {
                consumer.release();
                return match out.flush() {
                    Ok(()) => Ok((printed, TailEnd::Count)),
                    Err(e) => output_closed(e).map(|end| (printed, end)),
                };
            }
        }
        consumer.release();
        if let Err(e) = out.flush() {
            return output_closed(e).map(|end| (printed, end));
        }
        match consumer.wait(None)? {
            Readiness::Ready | Readiness::TimedOut => {}
            Readiness::Finished => return Ok((printed, TailEnd::Finished)),
            Readiness::PeerGone => return Ok((printed, TailEnd::PeerGone)),
        }
    }
}

/// A closed output ends `tail` normally; any other write error is an error.
fn output_closed(e: std::io::Error) -> Result<TailEnd> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(TailEnd::OutputClosed)
    } else {
        Err(e).context("write the packets")
    }
}

/// `hexdump -C` style lines for `bytes`, the first of a payload of `total`; notes the bytes
/// not shown.
fn write_hex(
    out: &mut impl Write,
    bytes: &[u8],
    total: usize,
    line: &mut String,
) -> std::io::Result<()> {
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

/// The example consumer: every DATA packet goes back to its connection, unchanged. Survives
/// daemon restarts: when the daemon goes away it waits and attaches again.
fn echo(name: &str, ingress_path: &std::path::Path, reply_path: &std::path::Path) -> Result<()> {
    let mut announced_wait = false;
    loop {
        let attached =
            Consumer::attach(ingress_path).and_then(|c| Ok((c, Producer::attach(reply_path)?)));
        let (mut consumer, mut producer) = match attached {
            Ok(pair) => pair,
            Err(e) if is_retryable(&e) => {
                if !announced_wait {
                    note!("edgegw ring echo: waiting for ring `{name}` ({e})");
                    announced_wait = true;
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("attach to ring `{name}`")),
        };
        announced_wait = false;
        note!(
            "edgegw ring echo: attached to `{name}` (generation {}); echoing",
            consumer.generation()
        );
        match echo_attached(&mut consumer, &mut producer, reply_path)? {
            Readiness::PeerGone | Readiness::Finished => {
                note!(
                    "edgegw ring echo: the daemon went away (or replaced the ring); attaching again"
                );
            }
            other => note!("edgegw ring echo: {other:?}"),
        }
    }
}

fn is_retryable(e: &edgegw_ring::Error) -> bool {
    match e {
        edgegw_ring::Error::Attach { .. } => true,
        edgegw_ring::Error::Refused { reason, .. } => *reason == edgegw_ring::Refusal::Busy,
        _ => false,
    }
}

/// A connection as the echo sees it: the flow-control windows of `ringbuf/PROTOCOL.md`.
#[derive(Debug, Default)]
struct EchoConn {
    /// Reply bytes the daemon lets it send.
    reply_window: Window,
    /// Bytes received but not echoed yet (the reply window was closed). They are granted back
    /// to the daemon only once echoed, so this holds at most one ingress window.
    pending: Vec<u8>,
    /// Bytes echoed since the last CREDIT the echo sent for them.
    ungranted: usize,
    /// The client closed its direction (CLOSE reason 0): close once `pending` is echoed.
    closing: bool,
    /// The echo sent its CLOSE; the daemon's last CLOSE (reason 4) is still to come.
    closed: bool,
}

/// The connections the echo knows, by id.
type EchoConns = HashMap<u64, EchoConn>;

/// Echoes until the daemon goes away. Each batch of ingress records is released with one store,
/// and the replies written for it are published with one store.
///
/// It is a well-behaved consumer of the credit protocol: it turns the windows on for each
/// connection at its OPEN (a CREDIT of 0), echoes a connection's bytes only within the reply
/// window the daemon grants (cutting a record at the window's end, never past it), keeps what
/// does not fit, and grants the daemon credit for bytes
/// only once they are echoed. A client that does not read its replies therefore stops being
/// read by the daemon (its TCP backs up) after about one window each way, and the echo goes on
/// serving everyone else.
fn echo_attached(
    consumer: &mut Consumer,
    producer: &mut Producer,
    reply_path: &std::path::Path,
) -> Result<Readiness> {
    let mut conns = EchoConns::new();
    loop {
        if producer.peer_gone() {
            // The daemon gave up our reply ring (it found it corrupt) or is going away: attach
            // to the reply socket again; if the daemon is gone, so is the ingress ring.
            match Producer::attach(reply_path) {
                Ok(fresh) => {
                    note!("edgegw ring echo: the daemon replaced the reply ring; attached again");
                    *producer = fresh;
                }
                Err(e) if is_retryable(&e) => return Ok(Readiness::PeerGone),
                Err(e) => return Err(e).context("attach to the reply ring again"),
            }
        }
        while let Some(record) = consumer.read()? {
            let payload = record.payload();
            let answered = match record.record_type() {
                proto::DATA if payload.len() >= DATA_HEADER_LEN => {
                    echo_data(producer, &mut conns, payload)?
                }
                proto::OPEN => {
                    if let Some((id, info)) = OpenInfo::decode(&payload.to_vec()) {
                        note!(
                            "connection {id} open: peer {} listener {} sni {:?} alpn {:?} client {:?}",
                            info.peer, info.listener, info.sni, info.alpn, info.client_subject
                        );
                        conns.insert(id, EchoConn::default());
                        // Windows on for this connection.
                        send_credit(producer, id, 0)?
                    } else {
                        None
                    }
                }
                proto::CREDIT => match proto::decode_credit(&payload.to_vec()) {
                    Some((id, increment)) => credit(producer, &mut conns, id, increment)?,
                    None => None,
                },
                proto::CLOSE => match (payload.read_u64_le(0), payload.read_u32_le(8)) {
                    (Some(id), Some(reason)) => {
                        note!("connection {id} closed (reason {reason})");
                        close(producer, &mut conns, id, reason)?
                    }
                    _ => None,
                },
                other => {
                    note!("skipping record of unknown type {other}");
                    None
                }
            };
            if let Some(end) = answered {
                return Ok(end);
            }
        }
        producer.publish();
        consumer.release();
        match consumer.wait(None)? {
            Readiness::Ready => {}
            other => return Ok(other),
        }
    }
}

/// Echoes one DATA record: straight from one ring to the other while the connection's reply
/// window is open and nothing waits before it; kept for later otherwise.
fn echo_data(
    producer: &mut Producer,
    conns: &mut EchoConns,
    payload: edgegw_ring::Payload<'_>,
) -> Result<Option<Readiness>> {
    let id = payload.read_u64_le(0).unwrap_or(0);
    // A connection opened before this echo attached (a restart) is taken as new: its windows
    // start (again) at the CREDIT the echo sends before its first reply (PROTOCOL.md §4).
    let conn = match conns.entry(id) {
        std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
        std::collections::hash_map::Entry::Vacant(new) => {
            if let Some(end) = send_credit(producer, id, 0)? {
                return Ok(Some(end));
            }
            new.insert(EchoConn::default())
        }
    };
    let len = payload.len() - DATA_HEADER_LEN;
    // Never past the window: what does not fit waits for the daemon's credit.
    let fits = len.min(conn.reply_window.available());
    if conn.pending.is_empty() && fits > 0 {
        // Connection id and bytes, copied straight from one ring to the other.
        let end = send_waiting(producer, proto::DATA, DATA_HEADER_LEN + fits, |reply| {
            payload.copy_to_slice(reply);
        })?;
        if end.is_some() {
            return Ok(end);
        }
        conn.reply_window.sent(fits);
        if let Some(rest) = payload.slice(DATA_HEADER_LEN + fits, len - fits) {
            rest.copy_into(&mut conn.pending);
        }
        return echoed(producer, id, conn, fits);
    }
    if let Some(body) = payload.slice(DATA_HEADER_LEN, len) {
        body.copy_into(&mut conn.pending);
    }
    Ok(None)
}

/// The daemon granted reply credit: echo what the connection kept, as far as its reply window
/// goes; then its CLOSE if the client had closed its direction.
fn credit(
    producer: &mut Producer,
    conns: &mut EchoConns,
    id: u64,
    increment: u32,
) -> Result<Option<Readiness>> {
    let Some(conn) = conns.get_mut(&id) else {
        return Ok(None);
    };
    conn.reply_window.grant(increment);
    let max = producer.max_payload() - DATA_HEADER_LEN;
    while !conn.pending.is_empty() && conn.reply_window.available() > 0 {
        let n = conn
            .pending
            .len()
            .min(max)
            .min(conn.reply_window.available());
        let chunk = &conn.pending[..n];
        let end = send_waiting(producer, proto::DATA, DATA_HEADER_LEN + n, |reply| {
            reply[..DATA_HEADER_LEN].copy_from_slice(&id.to_le_bytes());
            reply[DATA_HEADER_LEN..].copy_from_slice(chunk);
        })?;
        if end.is_some() {
            return Ok(end);
        }
        conn.pending.drain(..n);
        conn.reply_window.sent(n);
        if let Some(end) = echoed(producer, id, conn, n)? {
            return Ok(Some(end));
        }
    }
    if conn.pending.is_empty() && conn.closing && !conn.closed {
        conn.closed = true;
        return send_waiting(producer, proto::CLOSE, REPLY_CLOSE_LEN, |reply| {
            proto::encode_reply_close(reply, id)
        });
    }
    Ok(None)
}

/// `n` bytes of a connection were echoed: grant the daemon as much, half a window at a time.
fn echoed(
    producer: &mut Producer,
    id: u64,
    conn: &mut EchoConn,
    n: usize,
) -> Result<Option<Readiness>> {
    conn.ungranted += n;
    if conn.ungranted < INITIAL_WINDOW as usize / 2 {
        return Ok(None);
    }
    let grant = u32::try_from(conn.ungranted).unwrap_or(u32::MAX);
    conn.ungranted -= grant as usize;
    send_credit(producer, id, grant)
}

/// Grants the daemon `increment` more bytes of a connection's client data.
fn send_credit(producer: &mut Producer, id: u64, increment: u32) -> Result<Option<Readiness>> {
    send_waiting(producer, proto::CREDIT, proto::CREDIT_LEN, |reply| {
        proto::encode_credit(reply, id, increment)
    })
}

/// The daemon closed a connection, or its client closed its direction (reason 0): the echo
/// closes it too, after what it still has to echo while the daemon still takes replies. With
/// credits on, the daemon's CLOSE of another reason comes last (PROTOCOL.md §3) and frees the
/// connection's state.
fn close(
    producer: &mut Producer,
    conns: &mut EchoConns,
    id: u64,
    reason: u32,
) -> Result<Option<Readiness>> {
    if reason == CloseReason::ClientClosed as u32 {
        if let Some(conn) = conns.get_mut(&id) {
            conn.closing = true;
            // The daemon takes replies until our CLOSE: echo the rest first.
            return credit(producer, conns, id, 0);
        }
    } else if conns.remove(&id).is_some_and(|conn| conn.closed) {
        // The daemon's answer to our CLOSE.
        return Ok(None);
    }
    // The client is done sending, so is the echo: the daemon may end it.
    send_waiting(producer, proto::CLOSE, REPLY_CLOSE_LEN, |reply| {
        proto::encode_reply_close(reply, id)
    })
}

/// Writes one reply record, waiting for room if the reply ring is full. `Some(readiness)` if
/// the daemon went away while waiting.
fn send_waiting(
    producer: &mut Producer,
    kind: u16,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<Option<Readiness>> {
    let mut fill = Some(fill);
    loop {
        match producer.reserve(len, kind, 0) {
            Ok(buf) => {
                if let Some(fill) = fill.take() {
                    fill(buf);
                }
                return Ok(None);
            }
            Err(edgegw_ring::Error::Full { .. }) => {
                // Let the daemon see what is done, then wait for room.
                producer.publish();
                match producer.wait_for_space(len, None)? {
                    Readiness::Ready => {}
                    other => return Ok(Some(other)),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_ring_is_looked_for_in_the_own_runtime_directory_then_in_the_system_one() {
        let dir = tempfile::tempdir().unwrap();
        let (own, system) = (dir.path().join("own"), dir.path().join("system"));
        let serve = |runtime: &Path, ring: &str| {
            std::fs::create_dir_all(runtime.join("rings")).unwrap();
            std::fs::write(paths::ring_socket(runtime, ring), "").unwrap();
        };
        // Neither has it: the own directory (whose path the error then names).
        assert_eq!(find("app", own.clone(), &system), own);
        // Only the system daemon's has it.
        serve(&system, "app");
        assert_eq!(find("app", own.clone(), &system), system);
        // Both: the own one first.
        serve(&own, "app");
        assert_eq!(find("app", own.clone(), &system), own);
    }

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

    #[test]
    fn a_socket_path_names_both_sockets_without_any_directory() {
        let (ingress, reply) = sockets("/srv/x/app.sock", None).unwrap();
        assert_eq!(ingress, Path::new("/srv/x/app.sock"));
        assert_eq!(reply, Path::new("/srv/x/app.reply.sock"));
    }
}
