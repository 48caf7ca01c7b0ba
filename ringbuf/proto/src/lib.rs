//! The gateway's records inside a ring: what a consumer reads and writes.
//!
//! The ring itself (see `ringbuf/FORMAT.md`) carries records with a type, flags and a payload.
//! The gateway uses three types, and puts the connection id first in every payload:
//!
//! | type | name  | direction      | payload after the u64 LE connection id                 |
//! |------|-------|----------------|--------------------------------------------------------|
//! | 1    | OPEN  | ingress        | five u16 LE length-prefixed UTF-8 strings: peer address, listener, SNI, ALPN, client certificate subject (RFC 4514); empty when absent |
//! | 2    | DATA  | both           | the bytes (stream chunk, or one length-prefixed frame) |
//! | 3    | CLOSE | both           | u32 LE [`CloseReason`] (ingress); nothing (reply: close it) |
//! | 4    | CREDIT| both           | u32 LE bytes the sender may now send more of, for this connection |
//!
//! Every connection's records come in order: one OPEN, any number of DATA (and CREDIT), one
//! CLOSE. A reply DATA for a connection id that is closed or unknown is counted and dropped.
//! Records of a type a reader does not know are skipped, so the protocol can grow.
//!
//! CREDIT is flow control per connection and per direction, as HTTP/2's WINDOW_UPDATE: each
//! side may send a connection's DATA bytes within a window that starts at [`INITIAL_WINDOW`]
//! and grows by the CREDIT records its peer sends. A consumer that never sends CREDIT is not
//! held to a window and is sent none (the daemon's older limits apply); its first CREDIT for a
//! connection (an increment of 0 is allowed) turns the windows on for that connection. The
//! whole contract is `ringbuf/PROTOCOL.md`.
//!
//! This module is the single place that encodes and decodes the records; `ringbuf/PROTOCOL.md`
//! and `ringbuf/include/edgegw_proto.h` repeat them for consumers in other languages.
//!
//! It depends on nothing, so the daemon's config (which checks that a route's frames fit its
//! ring), its data path, its ring tools and every Rust consumer build on it without pulling in
//! rustls, tokio or the daemon.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod events;

/// Record type: a connection opened.
pub const OPEN: u16 = 1;
/// Record type: bytes of a connection.
pub const DATA: u16 = 2;
/// Record type: a connection closed (ingress) or should be closed (reply).
pub const CLOSE: u16 = 3;

/// Record type: the sender may send this many more DATA bytes of a connection.
pub const CREDIT: u16 = 4;

/// The window each direction of a connection starts with once credits are on: DATA bytes that
/// may be sent before the first CREDIT.
pub const INITIAL_WINDOW: u32 = 64 * 1024;

/// The largest a window may grow: credit beyond it is counted and ignored (clamped).
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;

/// Bytes before the data in a DATA record: the connection id.
pub const DATA_HEADER_LEN: usize = 8;

/// Payload length of an ingress CLOSE record: the connection id and the reason.
pub const CLOSE_LEN: usize = 12;

/// Payload length of a reply CLOSE record: the connection id.
pub const REPLY_CLOSE_LEN: usize = 8;

/// Payload length of a CREDIT record: the connection id and the increment.
pub const CREDIT_LEN: usize = 12;

/// Why a connection closed, in an ingress CLOSE record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseReason {
    /// The client closed cleanly (close_notify or end of stream after it).
    ClientClosed = 0,
    /// The client went away without close_notify, or its socket failed.
    ClientAborted = 1,
    /// Idle timeout.
    Idle = 2,
    /// A TLS or framing error (garbage, oversized frame, ...).
    ProtocolError = 3,
    /// The consumer asked for it (reply CLOSE).
    ConsumerClosed = 4,
    /// The daemon is shutting down. (Load shedding refuses new connections before their OPEN;
    /// it never ends one a consumer knows.)
    Shutdown = 5,
    /// The client did not read its replies while 256 KiB of them waited for it.
    SlowClient = 6,
}

/// What an OPEN record says about a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenInfo {
    /// Client address, `ip:port`.
    pub peer: String,
    /// Listener name.
    pub listener: String,
    /// Server name the client asked for.
    pub sni: String,
    /// Negotiated ALPN protocol.
    pub alpn: String,
    /// Client certificate subject, RFC 4514.
    pub client_subject: String,
}

impl OpenInfo {
    /// Encoded payload length, connection id included.
    pub fn encoded_len(&self) -> usize {
        DATA_HEADER_LEN
            + self
                .fields()
                .iter()
                .map(|f| 2 + cut(f).len())
                .sum::<usize>()
    }

    fn fields(&self) -> [&str; 5] {
        [
            &self.peer,
            &self.listener,
            &self.sni,
            &self.alpn,
            &self.client_subject,
        ]
    }

    /// Writes the payload into `out` (exactly `encoded_len()` bytes).
    pub fn encode(&self, conn_id: u64, out: &mut [u8]) {
        out[..8].copy_from_slice(&conn_id.to_le_bytes());
        let mut at = 8;
        for field in self.fields() {
            let bytes = cut(field).as_bytes();
            out[at..at + 2].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
            out[at + 2..at + 2 + bytes.len()].copy_from_slice(bytes);
            at += 2 + bytes.len();
        }
    }

    /// Reads an OPEN payload (connection id included). `None` if malformed.
    pub fn decode(payload: &[u8]) -> Option<(u64, OpenInfo)> {
        let id = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let mut rest = &payload[8..];
        let mut field = || -> Option<String> {
            let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
            let text = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
            rest = &rest[2 + len..];
            Some(text)
        };
        let info = OpenInfo {
            peer: field()?,
            listener: field()?,
            sni: field()?,
            alpn: field()?,
            client_subject: field()?,
        };
        Some((id, info))
    }
}

/// A string as OPEN carries it: at most 65535 bytes, cut at the last whole character.
fn cut(field: &str) -> &str {
    let mut end = field.len().min(u16::MAX as usize);
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    &field[..end]
}

/// Writes an ingress CLOSE payload (exactly [`CLOSE_LEN`] bytes).
pub fn encode_close(out: &mut [u8], conn_id: u64, reason: CloseReason) {
    out[..8].copy_from_slice(&conn_id.to_le_bytes());
    out[8..12].copy_from_slice(&(reason as u32).to_le_bytes());
}

/// Writes a reply CLOSE payload (exactly [`REPLY_CLOSE_LEN`] bytes): the consumer asks the
/// daemon to close the connection.
pub fn encode_reply_close(out: &mut [u8], conn_id: u64) {
    out[..8].copy_from_slice(&conn_id.to_le_bytes());
}

/// Writes a CREDIT payload (exactly [`CREDIT_LEN`] bytes).
pub fn encode_credit(out: &mut [u8], conn_id: u64, increment: u32) {
    out[..8].copy_from_slice(&conn_id.to_le_bytes());
    out[8..12].copy_from_slice(&increment.to_le_bytes());
}

/// Reads a CREDIT payload: (connection id, increment). `None` if shorter than [`CREDIT_LEN`]
/// (longer ones are read: later versions may add fields).
pub fn decode_credit(payload: &[u8]) -> Option<(u64, u32)> {
    let id = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let increment = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
    Some((id, increment))
}

/// A connection's window in one direction: what the sender may still send. It starts at
/// [`INITIAL_WINDOW`], shrinks by what is sent and grows by credit, up to [`MAX_WINDOW`]. A
/// length-prefixed frame is never cut, so the sender sends while the window is positive and the
/// window may end below zero by less than one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(i64);

impl Default for Window {
    fn default() -> Self {
        Window(i64::from(INITIAL_WINDOW))
    }
}

impl Window {
    /// Bytes that may be sent now (0 when the window is closed).
    pub fn available(self) -> usize {
        usize::try_from(self.0.max(0)).unwrap_or(usize::MAX)
    }

    /// `n` bytes were sent.
    pub fn sent(&mut self, n: usize) {
        self.0 = self.0.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The peer granted `increment` more bytes. Returns `false` if that took the window over
    /// [`MAX_WINDOW`] (it is then clamped there).
    pub fn grant(&mut self, increment: u32) -> bool {
        let grown = self.0 + i64::from(increment);
        self.0 = grown.min(i64::from(MAX_WINDOW));
        grown <= i64::from(MAX_WINDOW)
    }
}

/// The largest frame (DATA payload after the connection id) in a record of at most
/// `max_payload` bytes (a ring's largest record: `edgegw_ring::max_payload(capacity)`).
pub fn max_frame(max_payload: usize) -> usize {
    max_payload.saturating_sub(DATA_HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_info_round_trips_and_rejects_truncation() {
        let info = OpenInfo {
            peer: "127.0.0.1:5000".into(),
            listener: "default".into(),
            sni: "gw.example".into(),
            alpn: "h2".into(),
            client_subject: "CN=client,O=Example".into(),
        };
        let mut buf = vec![0; info.encoded_len()];
        info.encode(42, &mut buf);
        assert_eq!(OpenInfo::decode(&buf), Some((42, info)));
        for cut in 0..buf.len() {
            assert_eq!(OpenInfo::decode(&buf[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn a_long_open_string_is_cut_at_a_whole_character() {
        let info = OpenInfo {
            client_subject: format!("CN=x{}", "é".repeat(40_000)),
            ..OpenInfo::default()
        };
        let mut buf = vec![0; info.encoded_len()];
        info.encode(1, &mut buf);
        let (_, decoded) = OpenInfo::decode(&buf).expect("valid UTF-8 after the cut");
        assert_eq!(decoded.client_subject.len(), 65534);
        assert!(info.client_subject.starts_with(&decoded.client_subject));
    }

    /// `ringbuf/include/edgegw_proto.h` (for C consumers) names every constant of this crate
    /// with the same value.
    #[test]
    fn the_c_header_says_what_the_crate_says() {
        let header = include_str!("../../include/edgegw_proto.h");
        let defined = |name: &str| -> u64 {
            let line = header
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("{name} is not in edgegw_proto.h"));
            let value = line.split_whitespace().nth(2).unwrap();
            value.trim_end_matches('u').parse().unwrap()
        };
        let reasons = [
            ("CLIENT_CLOSED", CloseReason::ClientClosed),
            ("CLIENT_ABORTED", CloseReason::ClientAborted),
            ("IDLE", CloseReason::Idle),
            ("PROTOCOL_ERROR", CloseReason::ProtocolError),
            ("CONSUMER_CLOSED", CloseReason::ConsumerClosed),
            ("SHUTDOWN", CloseReason::Shutdown),
            ("SLOW_CLIENT", CloseReason::SlowClient),
        ];
        for (name, reason) in reasons {
            assert_eq!(
                defined(&format!("EDGEGW_PROTO_CLOSE_{name}")),
                reason as u64
            );
        }
        let constants = [
            ("OPEN", u64::from(OPEN)),
            ("DATA", u64::from(DATA)),
            ("CLOSE", u64::from(CLOSE)),
            ("CREDIT", u64::from(CREDIT)),
            ("DATA_HEADER_LEN", DATA_HEADER_LEN as u64),
            ("CLOSE_LEN", CLOSE_LEN as u64),
            ("REPLY_CLOSE_LEN", REPLY_CLOSE_LEN as u64),
            ("CREDIT_LEN", CREDIT_LEN as u64),
            ("INITIAL_WINDOW", u64::from(INITIAL_WINDOW)),
            ("MAX_WINDOW", u64::from(MAX_WINDOW)),
            ("EVENT", u64::from(events::EVENT)),
            ("EVENT_HEADER_LEN", events::EVENT_HEADER_LEN as u64),
            ("EVENT_LOST_BEFORE", u64::from(events::LOST_BEFORE)),
        ];
        for (name, value) in constants {
            assert_eq!(defined(&format!("EDGEGW_PROTO_{name}")), value, "{name}");
        }
        let kinds = [
            ("NETWORK", events::EventKind::Network),
            ("RESYNC", events::EventKind::Resync),
            ("RESYNC_DONE", events::EventKind::ResyncDone),
            ("CONSUMER", events::EventKind::Consumer),
            ("RELOAD", events::EventKind::Reload),
            ("PRESSURE", events::EventKind::Pressure),
            ("FILES", events::EventKind::Files),
        ];
        for (name, kind) in kinds {
            assert_eq!(
                defined(&format!("EDGEGW_PROTO_EVENT_{name}")),
                kind as u64,
                "{name}"
            );
        }
    }

    #[test]
    fn credit_round_trips_and_a_short_one_is_refused() {
        let mut buf = [0; CREDIT_LEN];
        encode_credit(&mut buf, 7, 4096);
        assert_eq!(decode_credit(&buf), Some((7, 4096)));
        assert_eq!(decode_credit(&buf[..11]), None);
    }

    #[test]
    fn a_window_closes_at_zero_goes_below_by_a_frame_and_is_clamped_at_its_bound() {
        let mut window = Window::default();
        assert_eq!(window.available(), INITIAL_WINDOW as usize);
        window.sent(INITIAL_WINDOW as usize + 10);
        assert_eq!(window.available(), 0);
        assert!(window.grant(10));
        assert_eq!(
            window.available(),
            0,
            "10 bytes below zero, then 10 granted"
        );
        assert!(window.grant(5));
        assert_eq!(window.available(), 5);
        assert!(!window.grant(u32::MAX), "over the bound");
        assert_eq!(window.available(), MAX_WINDOW as usize);
    }
}
