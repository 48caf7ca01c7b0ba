//! What the TLS thread tells the control plane.

/// Something the TLS thread needs the control plane to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// A ring's ingress ring is broken: its consumer wrote an impossible position. Nothing is
    /// written to it any more; connections wait. The control plane creates a fresh one, serves
    /// it on the same socket (the consumer is disconnected and attaches again) and hands it over
    /// with `Gateway::renew_ingress`; the unreleased records move to it.
    IngressRingBroken {
        /// The ring's name.
        ring: String,
        /// The broken ring's generation.
        generation: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A ring's reply ring is broken (its consumer wrote impossible positions or records):
    /// replies on it have stopped. The control plane creates a fresh one, serves it on the same
    /// socket and hands it over with `Gateway::renew_reply`.
    ReplyRingBroken {
        /// The ring's name.
        ring: String,
        /// The broken ring's generation.
        generation: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A ring's reply ring was finished by its producer (FORMAT.md section 7) and drained: its
    /// consumer is done replying. The control plane serves a fresh one for the next producer.
    ReplyRingFinished {
        /// The ring's name.
        ring: String,
        /// The finished ring's generation.
        generation: u64,
    },
}
