//! `[metrics]`: the optional TCP endpoint that serves `edgegw metrics` to a Prometheus scraper.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;
use super::source::Location;

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
    pub allow_remote: Option<bool>,
}

/// Where `GET /metrics` is served, if anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The TCP address; loopback unless `allow_remote`.
    pub listen: Option<SocketAddr>,
}

/// Validates `[metrics]`: `listen` is an IP address and port, on loopback unless
/// `allow_remote = true` (the counters say what the device carries and how much).
pub fn metrics(
    file: &std::path::Path,
    text: &str,
    raw: Option<RawMetrics>,
) -> Result<MetricsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let Some(listen) = &raw.listen else {
        return Ok(MetricsConfig::default());
    };
    let at =
        |message: String| ConfigError::at(Location::of_span(file, text, listen.span()), message);
    let addr: SocketAddr = listen.get_ref().parse().map_err(|_| {
        at(format!(
            "metrics.listen `{}` is not an IP address and port (like \"127.0.0.1:9464\")",
            listen.get_ref()
        ))
    })?;
    if !addr.ip().is_loopback() && raw.allow_remote != Some(true) {
        return Err(at(format!(
            "metrics.listen `{addr}` is not a loopback address: the metrics endpoint has no \
             authentication; use 127.0.0.1 or ::1, or set allow_remote = true to serve it \
             to the network"
        )));
    }
    Ok(MetricsConfig { listen: Some(addr) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetricsConfig, String> {
        #[derive(Deserialize)]
        struct F {
            metrics: Option<RawMetrics>,
        }
        let f: F = toml::from_str(text).unwrap();
        metrics(std::path::Path::new("m.toml"), text, f.metrics).map_err(|e| e.to_string())
    }

    #[test]
    fn a_loopback_listen_address_is_taken_and_a_remote_one_only_when_allowed() {
        assert_eq!(parse("").unwrap().listen, None);
        let local = parse("[metrics]\nlisten = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(local.listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(parse("[metrics]\nlisten = \"[::1]:9464\"").is_ok());
        let remote = parse("[metrics]\nlisten = \"0.0.0.0:9464\"").unwrap_err();
        assert!(
            remote.contains("m.toml:2:10") && remote.contains("not a loopback address"),
            "{remote}"
        );
        assert!(parse("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true").is_ok());
        let bad = parse("[metrics]\nlisten = \"localhost\"").unwrap_err();
        assert!(bad.contains("not an IP address and port"), "{bad}");
    }
}
