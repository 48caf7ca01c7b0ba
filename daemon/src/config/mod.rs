//! The daemon's configuration: TOML, parsed and validated whole before anything uses it.
//!
//! Two layers. `raw` mirrors the file (serde, unknown keys refused, the enums of `model` read
//! by serde, values that need checking kept with their byte spans); `validate` turns it into
//! the validated [`Config`] (`model`) the rest of the daemon uses, or into one [`ConfigError`]
//! that names the file, line and key ([`Config::from_toml`]). Certificates are loaded later, by
//! `tls::TlsBuilder::listener`, with errors of the same shape, so that `edgegw check-config`
//! reports every kind of bad input the same way.

mod error;
mod metrics;
mod model;
mod raw;
mod reactions;
mod source;
mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use metrics::MetricsConfig;
pub use model::*;
pub use reactions::{
    ConsumerCgroup, DynamicBind, EventsConfig, PressureCgroup, PressureConfig, WatchConfig,
};
pub use source::Location;

/// The configuration the daemon runs with when it is given none: TLS on 127.0.0.1:8443 with a
/// self-signed certificate, every connection into the ring `default`.
pub const BUILTIN_DEFAULT: &str = include_str!("default.toml");

/// Where the daemon's config comes from: a file, read again at every reload, or the built-in
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// [`BUILTIN_DEFAULT`].
    Builtin,
}

impl ConfigSource {
    /// The file, or the built-in default without one.
    pub fn from_option(file: Option<PathBuf>) -> ConfigSource {
        file.map_or(ConfigSource::Builtin, ConfigSource::File)
    }

    /// Reads and validates the config.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Builtin => Ok(Config::builtin()),
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read config: {e}")))?;
        Config::from_toml(path, &text)
    }

    /// The `[daemon] runtime_dir` of `path` (`None`: the default), read without validating the
    /// rest. The tools that talk to a running daemon need only this, and a config the daemon
    /// refused (one being edited) must not hide that daemon from them: it runs the old one, and
    /// `edgegw status` is how one learns why the new one was refused. A file that is not TOML
    /// gives the full error.
    pub fn runtime_dir_of(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
        use toml::de::{DeTable, DeValue};
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read config: {e}")))?;
        // TOML's own parser, not serde: a struct for this one key would instantiate the
        // deserializer again (about 10 KB of the firmware binary).
        let full = || Config::from_toml(path, &text).map(|c| c.daemon.runtime_dir);
        let Ok(document) = DeTable::parse(&text) else {
            return full();
        };
        fn get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a DeValue<'i>> {
            table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| v.get_ref())
        }
        match get(document.get_ref(), "daemon") {
            None => Ok(None),
            Some(DeValue::Table(daemon)) => match get(daemon, "runtime_dir") {
                None => Ok(None),
                Some(DeValue::String(dir)) if !dir.is_empty() => {
                    Ok(Some(path.parent().unwrap_or(Path::new(".")).join(&**dir)))
                }
                Some(_) => full(),
            },
            Some(_) => full(),
        }
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
        validate::Validator::new(file, text).config(raw)
    }
}

#[cfg(test)]
mod tests;
