//! The keys for the daemon's reactions to the kernel: `[watch]` (reload when the config or a
//! certificate file changes), `[pressure]` (shed load under memory pressure) and a ring's
//! `consumer_cgroup`/`consumer_unit` (supervise its consumer), and the binds that follow the
//! network (`iface:NAME:PORT`, `when-present:ADDR:PORT`). Raw form, validated form and the
//! check between them, in one place.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;
use super::source::Location;
use super::units;

/// `[watch]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub files: Option<bool>,
    pub debounce: Option<Spanned<String>>,
    pub netlink_buffer: Option<Spanned<super::raw::Size>>,
}

/// `[pressure]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPressure {
    pub shed: Option<bool>,
    pub stall_kind: Option<Spanned<String>>,
    pub cgroup: Option<Spanned<String>>,
    pub stall: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub resume_after: Option<Spanned<String>>,
}

/// Which files the daemon follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Reload when the config file or a certificate, key, CA or CRL file it names changes.
    pub files: bool,
    /// Quiet time after the last change before the reload (a rotation is several renames).
    pub debounce: Duration,
    /// Receive buffer asked for the rtnetlink event socket (iface and when-present binds).
    pub netlink_buffer: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            files: true,
            debounce: Duration::from_millis(50),
            netlink_buffer: 1 << 20,
        }
    }
}

/// Whose memory pressure the daemon watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PressureCgroup {
    /// The daemon's own cgroup (from /proc/self/cgroup).
    Own,
    /// The whole system (/proc/pressure/memory).
    System,
    /// A cgroup, absolute inside the cgroup2 mount or relative to it.
    Path(PathBuf),
}

/// Load shedding under memory pressure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PressureConfig {
    /// Shed load under pressure (default off).
    pub shed: bool,
    /// Whose pressure.
    pub cgroup: PressureCgroup,
    /// Which PSI line: `full` (every task of the cgroup stalled at once: the daemon cannot make
    /// progress) or `some` (at least one stalled).
    pub full: bool,
    /// Stall time within `window` that is pressure.
    pub stall: Duration,
    /// PSI window.
    pub window: Duration,
    /// How often the averages are read (the fallback, and how relief is noticed).
    pub poll_interval: Duration,
    /// Pressure must stay low this long before the daemon accepts again.
    pub resume_after: Duration,
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            // Off unless asked for: a refused connection is an outage, and a cgroup's pressure
            // is only the daemon's own where systemd gives it a cgroup of its own (the device
            // config, systemd/edgegw.toml, turns it on). Run from a shell, the "own" cgroup is
            // the session's or the root, whose pressure is everyone's.
            shed: false,
            cgroup: PressureCgroup::Own,
            full: true,
            // Every task stalled a quarter of the time: the daemon cannot make progress. `some`
            // at 150 ms in 2 s (the reader's default) fires on a busy development host that
            // is not short of memory, and would refuse connections for nothing.
            stall: Duration::from_millis(500),
            window: Duration::from_secs(2),
            poll_interval: Duration::from_secs(5),
            resume_after: Duration::from_secs(10),
        }
    }
}

fn duration(
    file: &std::path::Path,
    text: &str,
    value: Option<&Spanned<String>>,
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let at =
        |message: String| ConfigError::at(Location::of_span(file, text, value.span()), message);
    match units::parse_duration(value.get_ref()) {
        Ok(d) if d < min => Err(at(format!("must be at least {min:?}"))),
        Ok(d) => Ok(d),
        Err(e) => Err(at(e)),
    }
}

/// Validates `[watch]`.
pub fn watch(
    file: &std::path::Path,
    text: &str,
    raw: Option<RawWatch>,
) -> Result<WatchConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let default = WatchConfig::default();
    Ok(WatchConfig {
        files: raw.files.unwrap_or(default.files),
        debounce: duration(
            file,
            text,
            raw.debounce.as_ref(),
            default.debounce,
            Duration::from_millis(1),
        )?,
        netlink_buffer: match &raw.netlink_buffer {
            None => default.netlink_buffer,
            Some(size) => match units::size_value(size.get_ref()) {
                Ok(n) if (4096..=(64 << 20)).contains(&n) => n as usize,
                Ok(_) => {
                    return Err(ConfigError::at(
                        Location::of_span(file, text, size.span()),
                        "netlink_buffer must be between 4KiB and 64MiB",
                    ))
                }
                Err(e) => {
                    return Err(ConfigError::at(
                        Location::of_span(file, text, size.span()),
                        e,
                    ))
                }
            },
        },
    })
}

/// Validates `[pressure]`.
pub fn pressure(
    file: &std::path::Path,
    text: &str,
    raw: Option<RawPressure>,
) -> Result<PressureConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let default = PressureConfig::default();
    let ms = Duration::from_millis;
    let stall = duration(file, text, raw.stall.as_ref(), default.stall, ms(1))?;
    let window = duration(file, text, raw.window.as_ref(), default.window, ms(500))?;
    if stall > window {
        let span = raw.stall.as_ref().map_or(0..0, |s| s.span());
        return Err(ConfigError::at(
            Location::of_span(file, text, span),
            format!("stall ({stall:?}) must be at most the window ({window:?})"),
        ));
    }
    let cgroup = match &raw.cgroup {
        None => default.cgroup,
        Some(c) => match c.get_ref().as_str() {
            "self" => PressureCgroup::Own,
            "system" => PressureCgroup::System,
            "" => {
                return Err(ConfigError::at(
                    Location::of_span(file, text, c.span()),
                    "cgroup is empty (\"self\", \"system\" or a cgroup path)",
                ))
            }
            path => PressureCgroup::Path(PathBuf::from(path)),
        },
    };
    let full = match &raw.stall_kind {
        None => default.full,
        Some(kind) => match kind.get_ref().as_str() {
            "full" => true,
            "some" => false,
            other => {
                return Err(ConfigError::at(
                    Location::of_span(file, text, kind.span()),
                    format!("stall_kind is \"full\" or \"some\", not {other:?}"),
                ))
            }
        },
    };
    Ok(PressureConfig {
        shed: raw.shed.unwrap_or(default.shed),
        full,
        cgroup,
        stall,
        window,
        poll_interval: duration(
            file,
            text,
            raw.poll_interval.as_ref(),
            default.poll_interval,
            ms(100),
        )?,
        resume_after: duration(
            file,
            text,
            raw.resume_after.as_ref(),
            default.resume_after,
            ms(1),
        )?,
    })
}

/// Where a ring's consumer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerCgroup {
    /// A cgroup path, absolute inside the cgroup2 mount or relative to it.
    Path(PathBuf),
    /// A systemd unit; its cgroup is looked up (`systemctl show -P ControlGroup`, or its slice
    /// while it is not running).
    Unit(String),
}

/// Validates a ring's `consumer_cgroup` / `consumer_unit` (one or neither).
pub fn consumer(
    file: &std::path::Path,
    text: &str,
    cgroup: Option<&Spanned<String>>,
    unit: Option<&Spanned<String>>,
) -> Result<Option<ConsumerCgroup>, ConfigError> {
    let at = |value: &Spanned<String>, message: &str| {
        ConfigError::at(Location::of_span(file, text, value.span()), message)
    };
    match (cgroup, unit) {
        (Some(_), Some(unit)) => Err(at(unit, "give consumer_cgroup or consumer_unit, not both")),
        (Some(path), None) => {
            let p = PathBuf::from(path.get_ref());
            let bad = path.get_ref().trim_matches('/').is_empty()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if bad {
                return Err(at(
                    path,
                    "consumer_cgroup must name a cgroup below the root, without `..`",
                ));
            }
            Ok(Some(ConsumerCgroup::Path(p)))
        }
        (None, Some(unit)) => {
            let name = unit.get_ref();
            let valid = [".service", ".scope", ".slice"]
                .iter()
                .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
                && !name.contains('/');
            if !valid {
                return Err(at(
                    unit,
                    "consumer_unit must be a systemd unit name (app.service, app.scope)",
                ));
            }
            Ok(Some(ConsumerCgroup::Unit(name.clone())))
        }
        (None, None) => Ok(None),
    }
}

/// A bind that follows the network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DynamicBind {
    /// `iface:NAME:PORT`: every usable address of the interface (IPv4 and IPv6, link-local
    /// ones with the interface as scope) while it is up.
    Interface {
        /// Interface name.
        name: String,
        /// Port.
        port: u16,
    },
    /// `when-present:ADDR:PORT`: the address, while an interface that is up has it.
    Address(std::net::SocketAddr),
}

/// Whether a `bind` entry follows the network.
pub fn is_dynamic(entry: &str) -> bool {
    entry.starts_with("iface:") || entry.starts_with("when-present:")
}

/// The `iface:` and `when-present:` entries of a listener's `bind`.
pub fn dynamic_binds(
    file: &std::path::Path,
    text: &str,
    list: Option<&[Spanned<String>]>,
) -> Result<Vec<DynamicBind>, ConfigError> {
    let mut out = Vec::new();
    for item in list.unwrap_or_default() {
        let at =
            |message: String| ConfigError::at(Location::of_span(file, text, item.span()), message);
        let entry = item.get_ref();
        let bind = if let Some(rest) = entry.strip_prefix("iface:") {
            let (name, port) = rest.rsplit_once(':').ok_or_else(|| {
                at(format!(
                    "bad bind `{entry}`: want iface:NAME:PORT (e.g. iface:wlan0:8443)"
                ))
            })?;
            // IFNAMSIZ is 16 with the NUL; the kernel refuses `/`, `:` and whitespace.
            let bad_name = name.is_empty()
                || name.len() > 15
                || name.contains(['/', ':'])
                || name.chars().any(char::is_whitespace);
            if bad_name {
                return Err(at(format!(
                    "bad bind `{entry}`: `{name}` is not an interface name"
                )));
            }
            let port = match port.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(at(format!("bad bind `{entry}`: port must be 1-65535"))),
            };
            DynamicBind::Interface {
                name: name.to_string(),
                port,
            }
        } else if let Some(rest) = entry.strip_prefix("when-present:") {
            let addr: std::net::SocketAddr = rest.parse().map_err(|e| {
                at(format!(
                    "bad bind `{entry}`: {e} (want e.g. \"when-present:192.0.2.10:443\")"
                ))
            })?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(at(format!(
                    "bad bind `{entry}`: when-present needs a specific address and port"
                )));
            }
            DynamicBind::Address(addr)
        } else {
            continue;
        };
        if out.contains(&bind) {
            return Err(at(format!("`{entry}` is bound twice")));
        }
        out.push(bind);
    }
    Ok(out)
}

/// `[events]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub ring: Option<Spanned<String>>,
    pub capacity: Option<Spanned<super::raw::Size>>,
}

/// The events ring: the daemon's kernel events, for consumers (`edgegw_proto::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Its name (attach socket `<runtime dir>/rings/<name>.sock`), if there is one.
    pub ring: Option<String>,
    /// Data capacity, bytes (a power of two).
    pub capacity: usize,
}

/// Validates `[events]`; `rings` are the `[[ring]]` names (the events ring may not take one).
pub fn events(
    file: &std::path::Path,
    text: &str,
    raw: Option<RawEvents>,
    rings: &[String],
) -> Result<EventsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let at = |span: std::ops::Range<usize>, message: String| {
        ConfigError::at(Location::of_span(file, text, span), message)
    };
    let ring = match &raw.ring {
        None => None,
        Some(name) => {
            let n = name.get_ref();
            let valid = !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(at(
                    name.span(),
                    format!("bad ring name `{n}` (letters, digits, - and _)"),
                ));
            }
            if rings.contains(n) {
                return Err(at(
                    name.span(),
                    format!("`{n}` is a [[ring]] already: the events ring needs a name of its own"),
                ));
            }
            Some(n.clone())
        }
    };
    let capacity = match &raw.capacity {
        None => 64 * 1024,
        Some(value) => units::size_value(value.get_ref())
            .and_then(|n| units::ring_capacity(n, edgegw_ring::page_size(), 16 << 20))
            .map_err(|e| at(value.span(), e))?,
    };
    Ok(EventsConfig { ring, capacity })
}
