//! `edgegw check-config FILE`: a config validated as the daemon would take it (syntax,
//! semantics, certificates and keys, client-auth files), without writing anything.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::note::note;
use crate::config::Config;
use crate::tls::{SelfSignedMode, TlsBuilder};

/// Checks `file`: says it is ok on `out`, or why not on stderr (exit 1).
pub fn run(file: &Path, out: &mut impl Write) -> Result<ExitCode> {
    match check(file) {
        Ok(config) => {
            writeln!(
                out,
                "{}: ok ({} listener(s), {} route(s), {} ring(s))",
                file.display(),
                config.listeners.len(),
                config.routes.len(),
                config.rings.len()
            )
            .context("write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            note!("edgegw: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads and validates a config, and builds each listener's TLS from its files (self-signed
/// certificates are generated in memory).
fn check(file: &Path) -> Result<Config> {
    let config = Config::load(file)?;
    let tls = TlsBuilder::new()?;
    let nowhere = Path::new("/nonexistent");
    for listener in &config.listeners {
        tls.listener(listener, nowhere, SelfSignedMode::InMemory)?;
    }
    if config.listeners.is_empty() {
        bail!("no listeners");
    }
    Ok(config)
}
