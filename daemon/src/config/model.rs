//! The validated config: what the rest of the daemon reads (the TLS thread takes it as its plan).
//! Its enums are the file's own words too: `raw` reads them with serde.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::source::Location;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (`<built-in default>` for the default).
    pub file: PathBuf,
    /// Daemon-wide settings.
    pub daemon: DaemonConfig,
    /// TLS listeners; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Where each listener's plaintext goes.
    pub routes: Vec<RouteConfig>,
    /// Shared-memory rings to local consumers.
    pub rings: Vec<RingConfig>,
    /// Which files the daemon follows (`[watch]`).
    pub watch: super::WatchConfig,
    /// Load shedding under memory pressure (`[pressure]`).
    pub pressure: super::PressureConfig,
    /// The events ring (`[events]`).
    pub events: super::EventsConfig,
    /// The metrics endpoint (`[metrics]`).
    pub metrics: super::MetricsConfig,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Overrides $STATE_DIRECTORY and the per-user default.
    pub state_dir: Option<PathBuf>,
    /// Overrides $RUNTIME_DIRECTORY and the per-user default.
    pub runtime_dir: Option<PathBuf>,
    /// Stack size of the TLS thread, in bytes.
    pub tls_stack_size: usize,
    /// CPU the TLS thread is pinned to, if any.
    pub tls_cpu: Option<usize>,
    /// How long loading and validating a new config may take before the reload is abandoned.
    pub reload_timeout: std::time::Duration,
    /// How long a stopping daemon lets its connections end cleanly.
    pub drain_time: std::time::Duration,
}

/// How a listener gets its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// Bind these addresses ourselves.
    Addresses(Vec<SocketAddr>),
    /// Take the sockets systemd passed with this `FileDescriptorName=`.
    Systemd(String),
}

/// TLS protocol versions, as the config writes them (`"1.3"`, `"1.2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// What to do with a ClientHello whose server name matches no certificate (`"reject"`,
/// `"default"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum UnknownSni {
    /// Abort with an `unrecognized_name` alert (RFC 6066).
    #[serde(rename = "reject")]
    Reject,
    /// Serve the listener's default (first) certificate.
    #[serde(rename = "default")]
    UseDefault,
}

/// One TLS listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in logs and counters.
    pub name: String,
    /// Where its sockets come from.
    pub bind: Bind,
    /// Binds that follow the network: an interface's addresses, an address once present.
    pub dynamic: Vec<super::DynamicBind>,
    /// Name of the route its connections take.
    pub route: String,
    /// Allowed protocol versions (non-empty).
    pub versions: Vec<TlsVersion>,
    /// ALPN protocols offered, in preference order; empty for none.
    pub alpn: Vec<Vec<u8>>,
    /// A connection that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// An established connection idle for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this are refused at once.
    pub max_connections: usize,
    /// Handshakes in progress beyond this are refused at once.
    pub max_handshakes: usize,
    /// Handshakes in progress from one source beyond this are refused at once: one IPv4
    /// address, or one IPv6 /64 (what one host or one customer line gets).
    pub max_handshakes_per_source: usize,
    /// Policy for unknown server names.
    pub unknown_sni: UnknownSni,
    /// Certificates, chosen by SNI; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// Client-certificate verification (mTLS), if enabled.
    pub client_auth: Option<ClientAuthConfig>,
}

/// Where a certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// PEM files: the chain (leaf first) and its private key.
    Files {
        /// Certificate chain PEM.
        cert: PathBuf,
        /// Private key PEM (PKCS#8, SEC1 or PKCS#1).
        key: PathBuf,
    },
    /// An ECDSA P-256 certificate generated on first start and kept in the state directory.
    SelfSigned,
}

/// One certificate of a listener.
#[derive(Debug, Clone)]
pub struct CertificateConfig {
    /// Its files, or self-signed.
    pub source: CertificateSource,
    /// SNI names it serves (`*.example.com` allowed); empty: the names in the certificate.
    pub server_names: Vec<String>,
    /// Where it is configured, for errors found while loading it.
    pub location: Location,
    /// Locations of the `cert` and `key` values, for errors about those files.
    pub cert_location: Location,
    /// See `cert_location`.
    pub key_location: Location,
}

/// Client-certificate verification.
#[derive(Debug, Clone)]
pub struct ClientAuthConfig {
    /// CA bundle (PEM) client certificates must chain to.
    pub ca: PathBuf,
    /// Certificate revocation lists (PEM or DER).
    pub crls: Vec<PathBuf>,
    /// Accept clients that present no certificate (those that do are still verified).
    pub optional: bool,
    /// Where it is configured.
    pub location: Location,
}

/// Where a route sends plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Into a shared-memory ring to a local consumer (replies come back on its reply ring).
    Ring(String),
    /// To a TCP socket on this host.
    Tcp(SocketAddr),
    /// To a unix stream socket.
    Unix(PathBuf),
}

impl RouteTarget {
    /// The ring's name, for a route to a ring.
    pub fn ring(&self) -> Option<&str> {
        match self {
            RouteTarget::Ring(name) => Some(name),
            RouteTarget::Tcp(_) | RouteTarget::Unix(_) => None,
        }
    }
}

/// How the decrypted byte stream is cut into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Chunks of the stream, as they decrypt.
    Stream,
    /// u32 big-endian length, then that many bytes; each frame is one packet.
    LengthPrefixed {
        /// Largest frame accepted; a larger one closes the connection.
        max_frame: u32,
    },
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// Destination.
    pub target: RouteTarget,
    /// Framing of the client's byte stream.
    pub framing: Framing,
}

/// What a producer does when its ring is full (`"backpressure"`, `"drop"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Stop reading the client until there is room: nothing is lost.
    Backpressure,
    /// Drop the packet and count it.
    Drop,
}

/// One shared-memory ring pair (ingress and reply) to a local consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Unique name; its attach sockets are `<runtime dir>/rings/<name>.sock` and `<name>.reply.sock`.
    pub name: String,
    /// Data capacity of each direction, in bytes (a power of two).
    pub capacity: usize,
    /// Full-ring policy for the ingress direction.
    pub when_full: WhenFull,
    /// uids allowed to attach (the daemon's own uid is always allowed); names in the file are
    /// looked up when the config is loaded (and at each reload).
    pub allow_uids: Vec<u32>,
    /// gids allowed to attach (a peer's primary or supplementary group); names as for uids.
    pub allow_gids: Vec<u32>,
    /// How the daemon keeps consumers from writing what it writes (FORMAT.md section 6): `fd`
    /// (the default) continues across a restart and needs peers of attach protocol 2; `seal`
    /// serves peers of protocol 1 and starts fresh at every restart.
    pub protection: edgegw_ring::Protection,
    /// The consumer's cgroup, supervised: why it went away is recorded.
    pub consumer: Option<super::ConsumerCgroup>,
}

impl Config {
    /// The route a listener uses (validation guarantees it exists).
    pub fn route(&self, name: &str) -> &RouteConfig {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .expect("validated: every listener's route exists")
    }

    /// The ring with this name, if any.
    pub fn ring(&self, name: &str) -> Option<&RingConfig> {
        self.rings.iter().find(|r| r.name == name)
    }
}
