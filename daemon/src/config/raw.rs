//! The config file as written: serde structs that refuse unknown keys and keep the spans of the
//! values validation looks at.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::model::{TlsVersion, UnknownSni, WhenFull};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub daemon: Option<Daemon>,
    #[serde(default)]
    pub listener: Vec<Listener>,
    #[serde(default)]
    pub route: Vec<Route>,
    #[serde(default)]
    pub ring: Vec<Ring>,
    pub watch: Option<super::reactions::RawWatch>,
    pub pressure: Option<super::reactions::RawPressure>,
    pub events: Option<super::reactions::RawEvents>,
    pub metrics: Option<super::metrics::RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daemon {
    pub state_dir: Option<Spanned<String>>,
    pub runtime_dir: Option<Spanned<String>>,
    pub reload_timeout: Option<Spanned<String>>,
    pub drain_time: Option<Spanned<String>>,
    pub tls_thread: Option<TlsThread>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsThread {
    pub stack_size: Option<Spanned<Size>>,
    pub cpu: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: Spanned<String>,
    pub bind: Option<Vec<Spanned<String>>>,
    pub systemd_socket: Option<Spanned<String>>,
    pub route: Spanned<String>,
    pub tls_versions: Option<Vec<Spanned<TlsVersion>>>,
    #[serde(default)]
    pub alpn: Vec<Spanned<String>>,
    pub handshake_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_handshakes: Option<Spanned<u64>>,
    pub max_handshakes_per_source: Option<Spanned<u64>>,
    pub unknown_sni: Option<UnknownSni>,
    #[serde(default)]
    pub certificate: Vec<Certificate>,
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub self_signed: Option<Spanned<bool>>,
    #[serde(default)]
    pub server_names: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    pub ca: Spanned<String>,
    #[serde(default)]
    pub crls: Vec<Spanned<String>>,
    pub optional: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Spanned<String>,
    pub ring: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub unix: Option<Spanned<String>>,
    pub framing: Option<FramingKind>,
    pub max_frame: Option<Spanned<Size>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub name: Spanned<String>,
    pub capacity: Option<Spanned<Size>>,
    pub when_full: Option<WhenFull>,
    #[serde(default)]
    pub allow_uids: Vec<Spanned<Id>>,
    #[serde(default)]
    pub allow_gids: Vec<Spanned<Id>>,
    pub consumer_cgroup: Option<Spanned<String>>,
    pub consumer_unit: Option<Spanned<String>>,
    pub protection: Option<ProtectionKind>,
}

/// `protection` of a ring as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionKind {
    /// Read-only descriptions for the peer; continues across a restart (attach protocol 2).
    Fd,
    /// `F_SEAL_FUTURE_WRITE`, for peers that speak attach protocol 1 only.
    Seal,
}

/// `framing` as written; with `max_frame` it makes a [`super::Framing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FramingKind {
    Stream,
    LengthPrefixed,
}

/// A byte size as written: an integer, or a string with a unit (checked by validation).
#[derive(Debug)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// A user or group of an allow list as written: its number, or its name, which validation looks
/// up in the system's user or group database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match deserializer.deserialize_any(ScalarVisitor(Scalar::Id))? {
                NumberOrText::Number(n) => Id::Number(n as u32),
                NumberOrText::Text(name) => Id::Name(name),
            },
        )
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match deserializer.deserialize_any(ScalarVisitor(Scalar::Size))? {
                NumberOrText::Number(n) => Size::Bytes(n),
                NumberOrText::Text(text) => Size::Text(text),
            },
        )
    }
}

/// What a size and an allow list's id share as written: a number or a string.
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// Which of the two a [`ScalarVisitor`] reads, for its messages and its range.
#[derive(Clone, Copy)]
enum Scalar {
    Size,
    Id,
}

/// One visitor for sizes and ids, so that the TOML deserializer is instantiated once for both
/// (each visitor type costs the aarch64 firmware binary about 10 KB, cross/README.md "Size").
struct ScalarVisitor(Scalar);

impl Visitor<'_> for ScalarVisitor {
    type Value = NumberOrText;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Scalar::Size => "a size in bytes (65536) or with a unit (\"64KiB\")",
            Scalar::Id => "a number (1000) or a name (\"edgegw\")",
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumberOrText, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(match self.0 {
                Scalar::Size => E::custom("a size cannot be negative"),
                Scalar::Id => E::custom(format!("{v} is not a uid or gid (0 to 4294967295)")),
            }),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumberOrText, E> {
        match self.0 {
            Scalar::Id if u32::try_from(v).is_err() => Err(E::custom(format!(
                "{v} is not a uid or gid (0 to 4294967295)"
            ))),
            _ => Ok(NumberOrText::Number(v)),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NumberOrText, E> {
        Ok(NumberOrText::Text(v.to_string()))
    }
}
