//! The daemon's kernel events, for consumers: records of the optional events ring
//! (`[events] ring = "..."` in the daemon's config).
//!
//! The events ring is an ingress ring like any other (same format, same attach protocol), with
//! no reply ring. Every record has type [`EVENT`] and this payload:
//!
//! | bytes | field                                                                      |
//! |-------|----------------------------------------------------------------------------|
//! | 0..8  | u64 LE sequence number: 1, 2, 3, ... for the daemon's life                  |
//! | 8     | u8 [`EventKind`]                                                           |
//! | 9     | u8 flags: bit 0 [`LOST_BEFORE`]: records were dropped before this one       |
//! | 10..12| reserved, zero                                                             |
//! | 12..  | UTF-8 JSON object: the event (its fields per kind, in the README)          |
//!
//! The daemon never waits for the events ring: when it is full, records are dropped (their
//! sequence numbers are skipped) and the next record that fits carries [`LOST_BEFORE`]; a
//! consumer that sees it should re-read whatever state it keeps (the daemon's counters, `ip
//! addr`, ...).

/// Record type of an event.
pub const EVENT: u16 = 16;

/// Bytes before the JSON object.
pub const EVENT_HEADER_LEN: usize = 12;

/// Flag: records were dropped (ring full) before this one.
pub const LOST_BEFORE: u8 = 1;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// A link or address changed (`{"link":..}` / `{"address":..}` as `edgegw events --json`).
    Network = 1,
    /// A source lost notifications and re-reads the kernel's state (`{"source","reason"}`).
    Resync = 2,
    /// The resync is over: the state reported since equals the kernel's (`{"source"}`).
    ResyncDone = 3,
    /// A supervised consumer started, exited or was OOM-killed (`{"ring","cgroup","event"}`).
    Consumer = 4,
    /// A reload ended (`{"ok","error"}`).
    Reload = 5,
    /// Load shedding started or ended under memory pressure (`{"shedding"}`).
    Pressure = 6,
    /// Watched certificate or config files changed (`{"paths"}`).
    Files = 7,
}

impl EventKind {
    /// The kind with this code, if any (unknown codes are for newer daemons: skip them).
    pub fn from_code(code: u8) -> Option<EventKind> {
        use EventKind::*;
        [
            Network, Resync, ResyncDone, Consumer, Reload, Pressure, Files,
        ]
        .into_iter()
        .find(|k| *k as u8 == code)
    }

    /// Its lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Network => "network",
            EventKind::Resync => "resync",
            EventKind::ResyncDone => "resync_done",
            EventKind::Consumer => "consumer",
            EventKind::Reload => "reload",
            EventKind::Pressure => "pressure",
            EventKind::Files => "files",
        }
    }
}

/// Writes an event record's payload into `out` (`EVENT_HEADER_LEN + json.len()` bytes).
pub fn encode_event(out: &mut [u8], seq: u64, kind: EventKind, flags: u8, json: &str) {
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8] = kind as u8;
    out[9] = flags;
    out[10..12].fill(0);
    out[EVENT_HEADER_LEN..EVENT_HEADER_LEN + json.len()].copy_from_slice(json.as_bytes());
}

/// An event record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// Sequence number.
    pub seq: u64,
    /// The kind's code ([`EventKind::from_code`]).
    pub kind: u8,
    /// Flags ([`LOST_BEFORE`]).
    pub flags: u8,
    /// The JSON object.
    pub json: &'a str,
}

/// Decodes an event record's payload; `None` if it is too short or not UTF-8.
pub fn decode_event(payload: &[u8]) -> Option<EventRecord<'_>> {
    if payload.len() < EVENT_HEADER_LEN {
        return None;
    }
    Some(EventRecord {
        seq: u64::from_le_bytes(payload[..8].try_into().ok()?),
        kind: payload[8],
        flags: payload[9],
        json: std::str::from_utf8(&payload[EVENT_HEADER_LEN..]).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_record_round_trips_and_short_or_bad_payloads_are_refused() {
        let json = r#"{"shedding":true}"#;
        let mut buf = vec![0xff; EVENT_HEADER_LEN + json.len()];
        encode_event(&mut buf, 7, EventKind::Pressure, LOST_BEFORE, json);
        let record = decode_event(&buf).unwrap();
        assert_eq!(
            record,
            EventRecord {
                seq: 7,
                kind: EventKind::Pressure as u8,
                flags: LOST_BEFORE,
                json
            }
        );
        assert_eq!(EventKind::from_code(record.kind), Some(EventKind::Pressure));
        assert_eq!(EventKind::from_code(99), None);
        assert!(decode_event(&buf[..11]).is_none());
        buf[EVENT_HEADER_LEN] = 0xff;
        assert!(decode_event(&buf).is_none(), "not UTF-8");
    }
}
