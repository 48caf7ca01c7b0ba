//! The daemon's configuration: TOML, parsed and validated whole before anything uses it.
//!
//! Two layers. [`raw`] mirrors the file (serde, unknown keys refused, values that need checking
//! kept with their byte spans); [`Config::from_toml`] turns it into the validated [`Config`]
//! the rest of the daemon uses, or into one [`ConfigError`] that names the file, line and key.
//! Certificates are loaded later, by `tls::TlsSet::load`, with errors of the same shape, so that
//! `edgegw check-config` reports every kind of bad input the same way.

mod raw;
mod source;
mod units;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use source::Location;

/// The configuration the daemon runs with when it is given none: TLS on 127.0.0.1:8443 with a
/// self-signed certificate, every connection into the ring `default`.
pub const BUILTIN_DEFAULT: &str = include_str!("default.toml");

/// A config that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, when it is in the file.
    pub location: Option<Location>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl ConfigError {
    fn at(location: Location, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(location),
            message: message.into(),
        }
    }

    /// An error about a whole file (unreadable, empty, ...).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(Location {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                key: None,
            }),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

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
}

/// How a listener gets its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// Bind these addresses ourselves.
    Addresses(Vec<SocketAddr>),
    /// Take the sockets systemd passed with this `FileDescriptorName=`.
    Systemd(String),
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// What to do with a ClientHello whose server name matches no certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// Abort with an `unrecognized_name` alert (RFC 6066).
    Reject,
    /// Serve the listener's default (first) certificate.
    UseDefault,
}

/// One TLS listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in logs and counters.
    pub name: String,
    /// Where its sockets come from.
    pub bind: Bind,
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

/// What a producer does when its ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// uids allowed to attach (the daemon's own uid is always allowed).
    pub allow_uids: Vec<u32>,
    /// gids allowed to attach.
    pub allow_gids: Vec<u32>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read config: {e}")))?;
        Config::from_toml(path, &text)
    }

    /// The built-in default configuration.
    pub fn builtin() -> Config {
        Config::from_toml(Path::new("<built-in default>"), BUILTIN_DEFAULT)
            .expect("the built-in default config is valid (tested)")
    }

    /// Parses and validates config text; `file` is used in errors and to resolve relative paths.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => ConfigError::at(
                Location::of_span(file, text, span),
                e.message().trim_end().to_string(),
            ),
            None => ConfigError::file(file, e.message().trim_end().to_string()),
        })?;
        Validator {
            file,
            text,
            base: file.parent().unwrap_or(Path::new(".")),
        }
        .config(raw)
    }

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

/// Validation state: the file and its text, for locating errors.
struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    base: &'a Path,
}

type Spanned<T> = toml::Spanned<T>;

impl Validator<'_> {
    fn loc(&self, span: Range<usize>) -> Location {
        Location::of_span(self.file, self.text, span)
    }

    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.loc(span), message))
    }

    fn path(&self, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        if value.get_ref().is_empty() {
            return self.err(value.span(), "path is empty");
        }
        Ok(self.base.join(value.get_ref()))
    }

    fn duration(
        &self,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match units::parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() => self.err(value.span(), "must be greater than zero"),
            Ok(d) => Ok(d),
            Err(e) => self.err(value.span(), e),
        }
    }

    fn size(&self, value: &Spanned<raw::Size>) -> Result<u64, ConfigError> {
        match value.get_ref() {
            raw::Size::Bytes(n) => Ok(*n),
            raw::Size::Text(t) => units::parse_size(t).or_else(|e| self.err(value.span(), e)),
        }
    }

    fn name(&self, value: &Spanned<String>, seen: &mut HashSet<String>) -> Result<(), ConfigError> {
        let name = value.get_ref();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !valid {
            return self.err(
                value.span(),
                format!(
                    "invalid name `{name}`: use 1 to 64 of [A-Za-z0-9._-], not starting with `.`"
                ),
            );
        }
        if !seen.insert(name.clone()) {
            return self.err(value.span(), format!("duplicate name `{name}`"));
        }
        Ok(())
    }

    fn config(&self, raw: raw::File) -> Result<Config, ConfigError> {
        let daemon = self.daemon(raw.daemon.unwrap_or_default())?;

        let mut ring_names = HashSet::new();
        let mut rings = Vec::new();
        for ring in &raw.ring {
            self.name(&ring.name, &mut ring_names)?;
            rings.push(self.ring(ring)?);
        }

        let mut route_names = HashSet::new();
        let mut routes = Vec::new();
        for route in &raw.route {
            self.name(&route.name, &mut route_names)?;
            let route_config = self.route(route)?;
            if let RouteTarget::Ring(ring) = &route_config.target {
                let span = route
                    .ring
                    .as_ref()
                    .map(|r| r.span())
                    .unwrap_or(route.name.span());
                let Some(ring_config) = rings.iter().find(|r: &&RingConfig| &r.name == ring) else {
                    return self.err(span, format!("route to ring `{ring}`, which is not defined (add a [[ring]] named `{ring}`)"));
                };
                if let Framing::LengthPrefixed { max_frame } = route_config.framing {
                    let limit = crate::proto::max_frame_for_ring(ring_config.capacity);
                    if max_frame as usize > limit {
                        return self.err(
                            route.max_frame.as_ref().map_or(span, |m| m.span()),
                            format!("max_frame {max_frame} does not fit in ring `{ring}` (capacity {}: at most {limit})", ring_config.capacity),
                        );
                    }
                }
            }
            routes.push(route_config);
        }

        if raw.listener.is_empty() {
            return Err(ConfigError::file(
                self.file,
                "no [[listener]]: at least one is needed",
            ));
        }
        let mut listener_names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut listeners = Vec::new();
        for listener in &raw.listener {
            self.name(&listener.name, &mut listener_names)?;
            let config = self.listener(listener, &mut addresses)?;
            if !routes.iter().any(|r| r.name == config.route) {
                return self.err(
                    listener.route.span(),
                    format!(
                        "route `{}` is not defined (add a [[route]] named `{}`)",
                        config.route, config.route
                    ),
                );
            }
            listeners.push(config);
        }

        Ok(Config {
            file: self.file.to_path_buf(),
            daemon,
            listeners,
            routes,
            rings,
        })
    }

    fn daemon(&self, raw: raw::Daemon) -> Result<DaemonConfig, ConfigError> {
        let thread = raw.tls_thread.unwrap_or_default();
        let tls_stack_size = match &thread.stack_size {
            None => 512 * 1024,
            Some(value) => {
                let size = self.size(value)?;
                if !(64 * 1024..=64 * 1024 * 1024).contains(&size) {
                    return self.err(value.span(), "stack_size must be between 64KiB and 64MiB");
                }
                size as usize
            }
        };
        let tls_cpu = match &thread.cpu {
            None => None,
            Some(cpu) => {
                let available = std::thread::available_parallelism().map_or(1, |n| n.get());
                let wanted = *cpu.get_ref();
                if wanted >= 1024 {
                    return self.err(cpu.span(), format!("cpu {wanted} is out of range"));
                }
                if wanted as usize >= available {
                    // Not an error: configs are shared between devices with different core
                    // counts. The TLS thread logs that it runs unpinned.
                }
                Some(wanted as usize)
            }
        };
        Ok(DaemonConfig {
            state_dir: raw.state_dir.as_ref().map(|p| self.path(p)).transpose()?,
            runtime_dir: raw.runtime_dir.as_ref().map(|p| self.path(p)).transpose()?,
            tls_stack_size,
            tls_cpu,
        })
    }

    fn ring(&self, raw: &raw::Ring) -> Result<RingConfig, ConfigError> {
        let capacity = match &raw.capacity {
            None => 256 * 1024,
            Some(value) => {
                let size = self.size(value)?;
                if !size.is_power_of_two() || !(4096..=(1 << 30)).contains(&size) {
                    return self.err(
                        value.span(),
                        format!("capacity {size} must be a power of two between 4KiB and 1GiB"),
                    );
                }
                size as usize
            }
        };
        let when_full = match raw
            .when_full
            .as_ref()
            .map(|w| (w.get_ref().as_str(), w.span()))
        {
            None | Some(("backpressure", _)) => WhenFull::Backpressure,
            Some(("drop", _)) => WhenFull::Drop,
            Some((other, span)) => {
                return self.err(
                    span,
                    format!("unknown policy `{other}` (use \"backpressure\" or \"drop\")"),
                )
            }
        };
        Ok(RingConfig {
            name: raw.name.get_ref().clone(),
            capacity,
            when_full,
            allow_uids: raw.allow_uids.clone(),
            allow_gids: raw.allow_gids.clone(),
        })
    }

    fn route(&self, raw: &raw::Route) -> Result<RouteConfig, ConfigError> {
        let mut targets = Vec::new();
        if let Some(ring) = &raw.ring {
            targets.push((RouteTarget::Ring(ring.get_ref().clone()), ring.span()));
        }
        if let Some(tcp) = &raw.tcp {
            let addr = tcp.get_ref().parse::<SocketAddr>().or_else(|e| {
                self.err(
                    tcp.span(),
                    format!(
                        "bad address `{}`: {e} (want e.g. \"127.0.0.1:9000\")",
                        tcp.get_ref()
                    ),
                )
            })?;
            targets.push((RouteTarget::Tcp(addr), tcp.span()));
        }
        if let Some(unix) = &raw.unix {
            targets.push((RouteTarget::Unix(self.path(unix)?), unix.span()));
        }
        let target = match targets.len() {
            1 => targets.pop().expect("one target").0,
            0 => {
                return self.err(
                    raw.name.span(),
                    "route needs one of `ring`, `tcp` or `unix`",
                )
            }
            _ => {
                return self.err(
                    targets[1].1.clone(),
                    "route has more than one of `ring`, `tcp` and `unix`",
                )
            }
        };
        let framing = match raw
            .framing
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span()))
        {
            None | Some(("stream", _)) => {
                if let Some(max) = &raw.max_frame {
                    return self.err(
                        max.span(),
                        "max_frame applies only to framing = \"length-prefixed\"",
                    );
                }
                Framing::Stream
            }
            Some(("length-prefixed", _)) => {
                let max_frame = match &raw.max_frame {
                    None => 64 * 1024,
                    Some(value) => {
                        let size = self.size(value)?;
                        if size == 0 || size > 16 * 1024 * 1024 {
                            return self
                                .err(value.span(), "max_frame must be between 1 byte and 16MiB");
                        }
                        size as u32
                    }
                };
                Framing::LengthPrefixed { max_frame }
            }
            Some((other, span)) => {
                return self.err(
                    span,
                    format!("unknown framing `{other}` (use \"stream\" or \"length-prefixed\")"),
                )
            }
        };
        Ok(RouteConfig {
            name: raw.name.get_ref().clone(),
            target,
            framing,
        })
    }

    fn listener(
        &self,
        raw: &raw::Listener,
        addresses: &mut HashSet<SocketAddr>,
    ) -> Result<ListenerConfig, ConfigError> {
        let bind = match (&raw.bind, &raw.systemd_socket) {
            (Some(_), Some(s)) => {
                return self.err(s.span(), "use either `bind` or `systemd_socket`, not both")
            }
            (None, None) => {
                return self.err(
                    raw.name.span(),
                    "listener needs `bind` addresses or a `systemd_socket` name",
                )
            }
            (None, Some(name)) => {
                if name.get_ref().is_empty() || name.get_ref().contains(':') {
                    return self.err(
                        name.span(),
                        "systemd_socket must be a FileDescriptorName= (non-empty, no `:`)",
                    );
                }
                Bind::Systemd(name.get_ref().clone())
            }
            (Some(list), None) => {
                if list.is_empty() {
                    return self.err(raw.name.span(), "`bind` is empty");
                }
                let mut out = Vec::new();
                for item in list {
                    let addr: SocketAddr = item.get_ref().parse().or_else(|e| {
                        self.err(
                            item.span(),
                            format!(
                                "bad address `{}`: {e} (want e.g. \"0.0.0.0:443\" or \"[::]:443\")",
                                item.get_ref()
                            ),
                        )
                    })?;
                    // Port 0 (any free port, for tests) can repeat: each gets its own port.
                    if addr.port() != 0 && !addresses.insert(addr) {
                        return self.err(item.span(), format!("address {addr} is bound twice"));
                    }
                    out.push(addr);
                }
                Bind::Addresses(out)
            }
        };

        let versions = match &raw.tls_versions {
            None => vec![TlsVersion::Tls13, TlsVersion::Tls12],
            Some(list) => {
                let mut out = Vec::new();
                for v in list {
                    let version = match v.get_ref().as_str() {
                        "1.3" => TlsVersion::Tls13,
                        "1.2" => TlsVersion::Tls12,
                        other => {
                            return self.err(
                                v.span(),
                                format!(
                                "unsupported TLS version `{other}` (use \"1.3\" and/or \"1.2\")"
                            ),
                            )
                        }
                    };
                    if out.contains(&version) {
                        return self.err(
                            v.span(),
                            format!("TLS version `{}` listed twice", v.get_ref()),
                        );
                    }
                    out.push(version);
                }
                if out.is_empty() {
                    return self.err(raw.name.span(), "tls_versions is empty");
                }
                out
            }
        };

        let mut alpn = Vec::new();
        for proto in &raw.alpn {
            let bytes = proto.get_ref().as_bytes();
            if bytes.is_empty() || bytes.len() > 255 {
                return self.err(proto.span(), "an ALPN protocol is 1 to 255 bytes");
            }
            if alpn.iter().any(|p: &Vec<u8>| p == bytes) {
                return self.err(
                    proto.span(),
                    format!("ALPN protocol `{}` listed twice", proto.get_ref()),
                );
            }
            alpn.push(bytes.to_vec());
        }

        let limits = self.limits(raw)?;

        let unknown_sni = match raw
            .unknown_sni
            .as_ref()
            .map(|u| (u.get_ref().as_str(), u.span()))
        {
            None | Some(("reject", _)) => UnknownSni::Reject,
            Some(("default", _)) => UnknownSni::UseDefault,
            Some((other, span)) => {
                return self.err(
                    span,
                    format!("unknown policy `{other}` (use \"reject\" or \"default\")"),
                )
            }
        };

        if raw.certificate.is_empty() {
            return self.err(raw.name.span(), "listener has no [[listener.certificate]]");
        }
        let mut certificates = Vec::new();
        let mut names_seen = HashSet::new();
        for cert in &raw.certificate {
            certificates.push(self.certificate(cert, &mut names_seen)?);
        }

        let client_auth = match &raw.client_auth {
            None => None,
            Some(auth) => Some(ClientAuthConfig {
                ca: self.path(&auth.ca)?,
                crls: auth
                    .crls
                    .iter()
                    .map(|c| self.path(c))
                    .collect::<Result<_, _>>()?,
                optional: auth.optional.unwrap_or(false),
                location: self.loc(auth.ca.span()),
            }),
        };

        Ok(ListenerConfig {
            name: raw.name.get_ref().clone(),
            bind,
            route: raw.route.get_ref().clone(),
            versions,
            alpn,
            handshake_timeout: self
                .duration(raw.handshake_timeout.as_ref(), Duration::from_secs(10))?,
            idle_timeout: self.duration(raw.idle_timeout.as_ref(), Duration::from_secs(300))?,
            max_connections: limits.0,
            max_handshakes: limits.1,
            max_handshakes_per_source: limits.2,
            unknown_sni,
            certificates,
            client_auth,
        })
    }

    /// A listener's connection limits: `(max_connections, max_handshakes,
    /// max_handshakes_per_source)`, each within the one before.
    fn limits(&self, raw: &raw::Listener) -> Result<(usize, usize, usize), ConfigError> {
        let count = |value: &Option<Spanned<u64>>,
                     default: usize,
                     most: usize,
                     what: &str,
                     within: &str|
         -> Result<usize, ConfigError> {
            match value {
                None => Ok(default),
                Some(v) if *v.get_ref() == 0 || *v.get_ref() > 1_000_000 => {
                    self.err(v.span(), format!("{what} must be between 1 and 1000000"))
                }
                Some(v) if *v.get_ref() as usize > most => self.err(
                    v.span(),
                    format!("{what} ({}) exceeds {within} ({most})", v.get_ref()),
                ),
                Some(v) => Ok(*v.get_ref() as usize),
            }
        };
        let max_connections = count(&raw.max_connections, 1024, 1_000_000, "max_connections", "")?;
        let max_handshakes = count(
            &raw.max_handshakes,
            128.min(max_connections),
            max_connections,
            "max_handshakes",
            "max_connections",
        )?;
        // One source (address, /64) gets an eighth of the handshake slots by default: far more
        // than a host behind NAT needs at once, far less than it takes to lock the listener.
        let per_source = count(
            &raw.max_handshakes_per_source,
            (max_handshakes / 8).max(1),
            max_handshakes,
            "max_handshakes_per_source",
            "max_handshakes",
        )?;
        Ok((max_connections, max_handshakes, per_source))
    }

    fn certificate(
        &self,
        raw: &raw::Certificate,
        names_seen: &mut HashSet<String>,
    ) -> Result<CertificateConfig, ConfigError> {
        let anchor = raw
            .cert
            .as_ref()
            .map(|c| c.span())
            .or_else(|| raw.self_signed.as_ref().map(|s| s.span()))
            .or_else(|| raw.key.as_ref().map(|k| k.span()))
            .or_else(|| raw.server_names.first().map(|n| n.span()))
            .unwrap_or(0..0);
        let self_signed = raw.self_signed.as_ref().is_some_and(|s| *s.get_ref());
        let source = match (&raw.cert, &raw.key, self_signed) {
            (Some(cert), Some(key), false) => CertificateSource::Files {
                cert: self.path(cert)?,
                key: self.path(key)?,
            },
            (None, None, true) => CertificateSource::SelfSigned,
            (Some(_), Some(_), true) => {
                return self.err(
                    anchor,
                    "use either `cert` and `key`, or `self_signed = true`, not both",
                )
            }
            (Some(_), None, false) => return self.err(anchor, "`cert` without `key`"),
            (None, Some(_), false) => return self.err(anchor, "`key` without `cert`"),
            _ => {
                return self.err(
                    anchor,
                    "certificate needs `cert` and `key` files, or `self_signed = true`",
                )
            }
        };
        let mut server_names = Vec::new();
        for name in &raw.server_names {
            let lower = name.get_ref().to_ascii_lowercase();
            if !is_server_name(&lower) {
                return self.err(
                    name.span(),
                    format!("`{}` is not a DNS name or `*.` wildcard", name.get_ref()),
                );
            }
            if !names_seen.insert(lower.clone()) {
                return self.err(
                    name.span(),
                    format!("server name `{lower}` is served by two certificates of this listener"),
                );
            }
            server_names.push(lower);
        }
        if matches!(source, CertificateSource::SelfSigned) && server_names.is_empty() {
            server_names.push("localhost".to_string());
        }
        let cert_span = raw.cert.as_ref().map_or(anchor.clone(), |c| c.span());
        let key_span = raw.key.as_ref().map_or(anchor.clone(), |k| k.span());
        Ok(CertificateConfig {
            source,
            server_names,
            location: self.loc(anchor),
            cert_location: self.loc(cert_span),
            key_location: self.loc(key_span),
        })
    }
}

/// A DNS name (letters, digits, hyphens, dots) or a `*.` wildcard over one.
fn is_server_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests;
