//! Counters the TLS thread keeps and the control plane reads (status, logs, tests).
//!
//! Plain relaxed atomics: each is written by one thread and read as an approximate snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The gateway's counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            /// Each listener's own counters, by name.
            pub listeners: ListenerRegistry,
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// TCP connections accepted.
    accepted,
    /// Refused at once: the listener's max_connections was reached.
    refused_connection_limit,
    /// Refused at once: the listener's max_handshakes was reached.
    refused_handshake_limit,
    /// Refused at once: the client's address (IPv6: its /64) had max_handshakes_per_source
    /// handshakes in progress.
    refused_source_limit,
    /// Handshakes completed.
    handshakes,
    /// Dropped at the handshake timeout (silent or stalled clients).
    handshake_timeouts,
    /// Refused with `unrecognized_name`: SNI matched no certificate.
    unknown_sni,
    /// Closed with an alert for bytes that are not TLS or not well-formed TLS.
    bad_tls_bytes,
    /// Closed with `record_overflow`: a record larger than TLS allows.
    oversized_records,
    /// Closed for a client certificate that failed verification (mTLS).
    bad_client_certificates,
    /// Other TLS errors (no shared cipher suite or version, bad MAC, ...).
    other_tls_errors,
    /// Closed for a length-prefixed frame over max_frame.
    oversized_frames,
    /// Closed at the idle timeout.
    idle_timeouts,
    /// Connections open now (established or handshaking).
    active,
    /// Plaintext bytes received from clients.
    bytes_from_clients,
    /// Plaintext bytes sent to clients.
    bytes_to_clients,
    /// Packets dropped because a ring was full (when_full = "drop").
    ring_drops,
    /// Reply records for connections that are already closed or never existed.
    replies_for_unknown_connections,
    /// Malformed reply records (too short, unknown type): counted and skipped.
    malformed_replies,
    /// Times a connection's client data waited because its consumer had not granted the
    /// window for it (CREDIT): its client's TCP backs up meanwhile.
    credit_stalls,
    /// CREDIT records for connections that are closed or never existed (normal right after a
    /// CLOSE; ignored).
    credits_for_unknown_connections,
    /// CREDIT records that took a window over its bound (the excess is ignored).
    excess_credits,
    /// Reply DATA records a consumer sent with its window for the connection closed (delivered;
    /// the connection's reply cap still applies).
    reply_window_overruns,
    /// Reply rings found corrupt (a consumer broke the ring's contract) and replaced.
    corrupt_reply_rings,
    /// Ingress rings whose consumer page was found broken (an impossible or backwards position,
    /// one off the record boundaries, a bad magic or version) and replaced, with the records it
    /// had not released delivered again in the fresh ring.
    corrupt_ingress_rings,
    /// Reply rings their producer finished (FINISHED flag): drained, then replaced by a fresh
    /// one for the next producer.
    finished_reply_rings,
    /// Connections to a socket route's backend that failed.
    backend_errors,
    /// Ticks of the TLS thread's heartbeat (the control plane checks it moves).
    heartbeat,
    /// Times the heap's free memory was given back after a burst of connections ended.
    heap_trims,
    /// 1 while the daemon sheds load under memory pressure (the control plane sets it): new
    /// connections are closed as soon as they are accepted.
    shedding,
    /// Connections closed at once because the daemon was shedding load (memory pressure).
    refused_memory_pressure,
}

macro_rules! listener_counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// One listener's counters (the daemon-wide ones of [`Stats`], counted for it alone).
        #[derive(Debug, Default)]
        pub struct ListenerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of one listener's counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct ListenerSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ListenerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> ListenerSnapshot {
                ListenerSnapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

listener_counters! {
    /// TCP connections accepted.
    accepted,
    /// Connections open now (established or handshaking).
    active,
    /// Handshakes completed.
    handshakes,
    /// Refused at once: max_connections was reached.
    refused_connection_limit,
    /// Refused at once: max_handshakes was reached.
    refused_handshake_limit,
    /// Refused at once: the client's source had max_handshakes_per_source handshakes.
    refused_source_limit,
    /// Closed at once: the daemon was shedding load (memory pressure).
    refused_memory_pressure,
    /// Handshakes that ended in a TLS error (bad bytes, unknown SNI, no shared parameters, a
    /// client certificate refused, ...).
    tls_errors,
    /// Dropped at the handshake timeout.
    handshake_timeouts,
}

/// Every listener's counters by name. A listener keeps its counters across reloads while the
/// config names it; a listener the config drops loses them (its open connections still count
/// into the dropped entry, which goes with the last of them).
#[derive(Debug, Default)]
pub struct ListenerRegistry(Mutex<BTreeMap<String, Arc<ListenerStats>>>);

impl ListenerRegistry {
    /// The counters of listener `name`, made if it has none.
    pub fn of(&self, name: &str) -> Arc<ListenerStats> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// Forgets every listener but those `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|name, _| keep(name));
    }

    /// Every listener's counters now, by name.
    pub fn snapshot(&self) -> Vec<(String, ListenerSnapshot)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(n, s)| (n.clone(), s.snapshot())).collect()
    }
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a TLS error under the counter its kind belongs to.
    pub fn count_tls_error(&self, error: &rustls::Error) {
        use rustls::Error as E;
        let counter = match error {
            E::InvalidMessage(rustls::InvalidMessage::MessageTooLarge)
            | E::PeerSentOversizedRecord => &self.oversized_records,
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. } => &self.bad_tls_bytes,
            E::InvalidCertificate(_)
            | E::NoCertificatesPresented
            | E::InvalidCertRevocationList(_) => &self.bad_client_certificates,
            _ => &self.other_tls_errors,
        };
        Stats::bump(counter);
    }
}

/// A ring pair's own counters, kept in an [`edgegw_ring::OwnerCounters`] so that
/// `edgegw ring stat` (either socket of the ring) can read them from the attach server
/// (FORMAT.md section 6, the stat answer's bytes 64..128): the slot of each is its position here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingCounter {
    /// Connections routed to the ring (OPEN records written).
    Connections,
    /// Plaintext bytes from clients written into the ingress ring.
    BytesIn,
    /// Reply bytes sent on to clients.
    BytesOut,
    /// Malformed reply records (too short, unknown type), skipped.
    MalformedReplies,
    /// Reply DATA records for connections that are closed or never existed, dropped.
    RepliesForUnknownConnections,
    /// Ingress rings replaced because their consumer broke them.
    ReplacedIngressRings,
    /// Reply rings replaced because their producer broke them.
    ReplacedReplyRings,
    /// Reply rings their producer finished, drained and replaced.
    FinishedReplyRings,
    /// Connections closed, by the reason in their CLOSE record (0 to 6).
    ClosedClientClosed,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedClientAborted,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedIdle,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedProtocolError,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedConsumerClosed,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedShutdown,
    /// See [`RingCounter::ClosedClientClosed`].
    ClosedSlowClient,
    /// Times a connection's client data waited for the consumer's credit.
    CreditStalls,
    /// CREDIT records for connections closed or unknown, ignored.
    CreditsForUnknownConnections,
    /// CREDIT records past a window's bound (the excess ignored).
    ExcessCredits,
    /// Reply DATA sent with the connection's reply window closed (delivered).
    ReplyWindowOverruns,
    /// Gauge: connections with credits on now (flow control active).
    CreditConnections,
    /// Gauge: reply bytes the daemon holds for the ring's clients now, queued for their relay
    /// or encrypted in their outbox.
    ReplyBytesHeld,
}

impl RingCounter {
    /// Every counter, in slot order.
    pub const ALL: [RingCounter; 21] = [
        RingCounter::Connections,
        RingCounter::BytesIn,
        RingCounter::BytesOut,
        RingCounter::MalformedReplies,
        RingCounter::RepliesForUnknownConnections,
        RingCounter::ReplacedIngressRings,
        RingCounter::ReplacedReplyRings,
        RingCounter::FinishedReplyRings,
        RingCounter::ClosedClientClosed,
        RingCounter::ClosedClientAborted,
        RingCounter::ClosedIdle,
        RingCounter::ClosedProtocolError,
        RingCounter::ClosedConsumerClosed,
        RingCounter::ClosedShutdown,
        RingCounter::ClosedSlowClient,
        RingCounter::CreditStalls,
        RingCounter::CreditsForUnknownConnections,
        RingCounter::ExcessCredits,
        RingCounter::ReplyWindowOverruns,
        RingCounter::CreditConnections,
        RingCounter::ReplyBytesHeld,
    ];

    /// The name `ring stat --json` and the SIGUSR1 dump give it.
    pub fn name(self) -> &'static str {
        match self {
            RingCounter::Connections => "connections",
            RingCounter::BytesIn => "bytes_in",
            RingCounter::BytesOut => "bytes_out",
            RingCounter::MalformedReplies => "malformed_replies",
            RingCounter::RepliesForUnknownConnections => "replies_for_unknown_connections",
            RingCounter::ReplacedIngressRings => "replaced_ingress_rings",
            RingCounter::ReplacedReplyRings => "replaced_reply_rings",
            RingCounter::FinishedReplyRings => "finished_reply_rings",
            RingCounter::ClosedClientClosed => "closed_client_closed",
            RingCounter::ClosedClientAborted => "closed_client_aborted",
            RingCounter::ClosedIdle => "closed_idle",
            RingCounter::ClosedProtocolError => "closed_protocol_error",
            RingCounter::ClosedConsumerClosed => "closed_consumer_closed",
            RingCounter::ClosedShutdown => "closed_shutdown",
            RingCounter::ClosedSlowClient => "closed_slow_client",
            RingCounter::CreditStalls => "credit_stalls",
            RingCounter::CreditsForUnknownConnections => "credits_for_unknown_connections",
            RingCounter::ExcessCredits => "excess_credits",
            RingCounter::ReplyWindowOverruns => "reply_window_overruns",
            RingCounter::CreditConnections => "credit_connections",
            RingCounter::ReplyBytesHeld => "reply_bytes_held",
        }
    }

    /// Whether it is a gauge (a value now, which goes up and down) rather than a count.
    pub fn is_gauge(self) -> bool {
        matches!(
            self,
            RingCounter::CreditConnections | RingCounter::ReplyBytesHeld
        )
    }

    /// The counter of connections closed for `reason`.
    pub fn closed(reason: edgegw_proto::CloseReason) -> RingCounter {
        use edgegw_proto::CloseReason as R;
        match reason {
            R::ClientClosed => RingCounter::ClosedClientClosed,
            R::ClientAborted => RingCounter::ClosedClientAborted,
            R::Idle => RingCounter::ClosedIdle,
            R::ProtocolError => RingCounter::ClosedProtocolError,
            R::ConsumerClosed => RingCounter::ClosedConsumerClosed,
            R::Shutdown => RingCounter::ClosedShutdown,
            R::SlowClient => RingCounter::ClosedSlowClient,
        }
    }

    /// Adds `n` to this counter of `counters`.
    pub fn add(self, counters: &edgegw_ring::OwnerCounters, n: u64) {
        counters.add(self as usize, n);
    }

    /// Takes `n` from this gauge of `counters` (the atomic add wraps: adding the two's
    /// complement subtracts).
    pub fn sub(self, counters: &edgegw_ring::OwnerCounters, n: u64) {
        debug_assert!(self.is_gauge(), "{} only grows", self.name());
        counters.add(self as usize, n.wrapping_neg());
    }

    /// The counters as a JSON object, by name.
    pub fn named(
        values: &[u64; edgegw_ring::OwnerCounters::LEN],
    ) -> serde_json::Map<String, serde_json::Value> {
        Self::ALL
            .iter()
            .map(|c| (c.name().to_string(), values[*c as usize].into()))
            .collect()
    }
}
