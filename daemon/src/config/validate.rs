//! From the file as written (`raw`) to a validated [`Config`]: every check that needs more than
//! a type, each failing with the place in the file it is about.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::model::{
    Bind, CertificateConfig, CertificateSource, ClientAuthConfig, Config, DaemonConfig, Framing,
    ListenerConfig, RingConfig, RouteConfig, RouteTarget, TlsVersion, UnknownSni, WhenFull,
};
use super::raw::{self, FramingKind};
use super::source::Location;
use super::units;

/// Validation state: the file and its text, for locating errors.
pub(super) struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    base: &'a Path,
}

type Spanned<T> = toml::Spanned<T>;

impl<'a> Validator<'a> {
    /// A validator for `text`, the contents of `file` (whose directory relative paths are
    /// resolved against).
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Validator {
            file,
            text,
            base: file.parent().unwrap_or(Path::new(".")),
        }
    }
}

impl Validator<'_> {
    fn loc(&self, span: Range<usize>) -> Location {
        Location::of_span(self.file, self.text, span)
    }

    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.loc(span), message))
    }

    /// An allow list's numbers, its names looked up in the user or group database (NSS: on a
    /// static musl build, `/etc/passwd` and `/etc/group`).
    fn ids(&self, ids: &[Spanned<raw::Id>], kind: IdKind) -> Result<Vec<u32>, ConfigError> {
        ids.iter()
            .map(|id| match id.get_ref() {
                raw::Id::Number(n) => Ok(*n),
                raw::Id::Name(name) => {
                    let found =
                        match kind {
                            IdKind::User => nix::unistd::User::from_name(name)
                                .map(|u| u.map(|u| u.uid.as_raw())),
                            IdKind::Group => nix::unistd::Group::from_name(name)
                                .map(|g| g.map(|g| g.gid.as_raw())),
                        };
                    match found {
                        Ok(Some(n)) => Ok(n),
                        Ok(None) => self.err(
                            id.span(),
                            format!("no {} named {name:?} on this system", kind.noun()),
                        ),
                        Err(e) => self.err(
                            id.span(),
                            format!("cannot look up the {} {name:?}: {e}", kind.noun()),
                        ),
                    }
                }
            })
            .collect()
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
        units::size_value(value.get_ref()).or_else(|e| self.err(value.span(), e))
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

    pub(super) fn config(&self, raw: raw::File) -> Result<Config, ConfigError> {
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
                    let limit =
                        edgegw_proto::max_frame(edgegw_ring::max_payload(ring_config.capacity));
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

        let ring_names: Vec<String> = rings.iter().map(|r| r.name.clone()).collect();
        Ok(Config {
            file: self.file.to_path_buf(),
            daemon,
            listeners,
            routes,
            rings,
            watch: super::reactions::watch(self.file, self.text, raw.watch)?,
            pressure: super::reactions::pressure(self.file, self.text, raw.pressure)?,
            events: super::reactions::events(self.file, self.text, raw.events, &ring_names)?,
            metrics: super::metrics::metrics(self.file, self.text, raw.metrics)?,
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
            reload_timeout: self
                .duration(raw.reload_timeout.as_ref(), Duration::from_millis(500))?,
            drain_time: self.duration(raw.drain_time.as_ref(), Duration::from_secs(10))?,
        })
    }

    fn ring(&self, raw: &raw::Ring) -> Result<RingConfig, ConfigError> {
        let capacity = match &raw.capacity {
            None => 256 * 1024,
            Some(value) => {
                let size = self.size(value)?;
                units::ring_capacity(size, edgegw_ring::page_size(), 1 << 30)
                    .or_else(|e| self.err(value.span(), e))?
            }
        };
        let when_full = raw.when_full.unwrap_or(WhenFull::Backpressure);
        Ok(RingConfig {
            name: raw.name.get_ref().clone(),
            capacity,
            when_full,
            allow_uids: self.ids(&raw.allow_uids, IdKind::User)?,
            allow_gids: self.ids(&raw.allow_gids, IdKind::Group)?,
            protection: match raw.protection {
                None | Some(raw::ProtectionKind::Fd) => edgegw_ring::Protection::Fd,
                Some(raw::ProtectionKind::Seal) => edgegw_ring::Protection::Seal,
            },
            consumer: super::reactions::consumer(
                self.file,
                self.text,
                raw.consumer_cgroup.as_ref(),
                raw.consumer_unit.as_ref(),
            )?,
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
        let framing = match raw.framing.unwrap_or(FramingKind::Stream) {
            FramingKind::Stream => {
                if let Some(max) = &raw.max_frame {
                    return self.err(
                        max.span(),
                        "max_frame applies only to framing = \"length-prefixed\"",
                    );
                }
                Framing::Stream
            }
            FramingKind::LengthPrefixed => {
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
        let limits = self.limits(raw)?;
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
            bind: self.bind(raw, addresses)?,
            dynamic: super::reactions::dynamic_binds(self.file, self.text, raw.bind.as_deref())?,
            route: raw.route.get_ref().clone(),
            versions: self.versions(raw)?,
            alpn: self.alpn(&raw.alpn)?,
            handshake_timeout: self
                .duration(raw.handshake_timeout.as_ref(), Duration::from_secs(10))?,
            idle_timeout: self.duration(raw.idle_timeout.as_ref(), Duration::from_secs(300))?,
            max_connections: limits.0,
            max_handshakes: limits.1,
            max_handshakes_per_source: limits.2,
            unknown_sni: raw.unknown_sni.unwrap_or(UnknownSni::Reject),
            certificates,
            client_auth,
        })
    }

    /// Where a listener's sockets come from; `addresses` are those other listeners bind.
    fn bind(
        &self,
        raw: &raw::Listener,
        addresses: &mut HashSet<SocketAddr>,
    ) -> Result<Bind, ConfigError> {
        match (&raw.bind, &raw.systemd_socket) {
            (Some(_), Some(s)) => {
                self.err(s.span(), "use either `bind` or `systemd_socket`, not both")
            }
            (None, None) => self.err(
                raw.name.span(),
                "listener needs `bind` addresses or a `systemd_socket` name",
            ),
            (None, Some(name)) => {
                if name.get_ref().is_empty() || name.get_ref().contains(':') {
                    return self.err(
                        name.span(),
                        "systemd_socket must be a FileDescriptorName= (non-empty, no `:`)",
                    );
                }
                Ok(Bind::Systemd(name.get_ref().clone()))
            }
            (Some(list), None) => {
                if list.is_empty() {
                    return self.err(raw.name.span(), "`bind` is empty");
                }
                let mut out = Vec::new();
                for item in list {
                    // `iface:` and `when-present:` binds follow the network (`dynamic`).
                    if super::reactions::is_dynamic(item.get_ref()) {
                        continue;
                    }
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
                Ok(Bind::Addresses(out))
            }
        }
    }

    fn versions(&self, raw: &raw::Listener) -> Result<Vec<TlsVersion>, ConfigError> {
        let Some(list) = &raw.tls_versions else {
            return Ok(vec![TlsVersion::Tls13, TlsVersion::Tls12]);
        };
        let mut out = Vec::new();
        for version in list {
            if out.contains(version.get_ref()) {
                return self.err(
                    version.span(),
                    format!("TLS version `{}` listed twice", version.get_ref().as_str()),
                );
            }
            out.push(*version.get_ref());
        }
        if out.is_empty() {
            return self.err(raw.name.span(), "tls_versions is empty");
        }
        Ok(out)
    }

    fn alpn(&self, list: &[Spanned<String>]) -> Result<Vec<Vec<u8>>, ConfigError> {
        let mut alpn = Vec::new();
        for proto in list {
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
        Ok(alpn)
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

/// Which database an allow list's names are looked up in.
#[derive(Debug, Clone, Copy)]
enum IdKind {
    User,
    Group,
}

impl IdKind {
    fn noun(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
}
