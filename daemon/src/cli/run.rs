//! `edgegw run`: the daemon, until SIGTERM or SIGINT (the control plane's `main`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config::ConfigSource;

/// Runs the daemon on `config`, or on the built-in default without one.
pub fn run(config: Option<PathBuf>) -> Result<ExitCode> {
    if config.is_none() {
        log::info!(
            "no --config: running the built-in default (edgegw print-default-config shows it)"
        );
    }
    crate::control::main(ConfigSource::from_option(config))?;
    Ok(ExitCode::SUCCESS)
}
