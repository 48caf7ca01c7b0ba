//! `edgegw reload`, `edgegw status [--json]` and `edgegw metrics`: questions to the running
//! daemon over its control socket (`<runtime dir>/control.sock`; the daemon's user and group
//! may connect).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::paths::{self, SYSTEM_RUNTIME_DIR};

/// What to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Reload the config; fail if it was refused.
    Reload,
    /// The daemon's state.
    Status {
        /// As JSON.
        json: bool,
    },
    /// Every counter in Prometheus' text format.
    Metrics,
}

/// Asks the daemon of `config` (or, where `config` names no runtime directory, the one found in
/// the default runtime directory, then in /run/edgegw) and prints its answer. A refused reload is an error: exit 1.
pub fn run(question: Question, config: Option<&Path>, out: &mut impl Write) -> Result<ExitCode> {
    let runtime = runtime_dir(config)?;
    match question {
        Question::Reload => {
            // The daemon answers once the new config is in force or refused: a reload queued
            // behind another waits for both, each within its budget.
            let answer =
                crate::control::ask(&runtime, "reload", Duration::from_secs(60)).map_err(|e| {
                    anyhow::anyhow!("reload refused, the old config is still running: {e:#}")
                })?;
            let mut listening = String::new();
            for l in answer["listening"].as_array().into_iter().flatten() {
                listening.push_str(&format!(
                    " {}={}",
                    l["listener"].as_str().unwrap_or("?"),
                    l["addr"].as_str().unwrap_or("?")
                ));
            }
            writeln!(out, "reloaded; listening:{listening}")?;
        }
        Question::Status { json } => {
            let answer = crate::control::ask(&runtime, "status", Duration::from_secs(10))?;
            let status = &answer["status"];
            if json {
                writeln!(out, "{status}")?;
            } else {
                write_status(status, out)?;
            }
        }
        Question::Metrics => {
            let answer = crate::control::ask(&runtime, "metrics", Duration::from_secs(10))?;
            write!(out, "{}", answer["metrics"].as_str().unwrap_or(""))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A config that names its runtime directory is taken at its word; without one, or with a
/// config that does not name it (the shipped /etc/edgegw/edgegw.toml, which systemd runs in
/// /run/edgegw), the caller's default directory, then the system daemon's.
fn runtime_dir(config: Option<&Path>) -> Result<PathBuf> {
    Ok(
        match config.map(Config::runtime_dir_of).transpose()?.flatten() {
            Some(dir) => paths::runtime_dir(&crate::config::DaemonConfig {
                runtime_dir: Some(dir),
                ..Config::builtin().daemon
            }),
            None => {
                let own = paths::runtime_dir(&Config::builtin().daemon);
                let system = Path::new(SYSTEM_RUNTIME_DIR);
                let socket = crate::control::CONTROL_SOCKET;
                if !own.join(socket).exists() && system.join(socket).exists() {
                    system.to_path_buf()
                } else {
                    own
                }
            }
        },
    )
}

/// The status for a person: one line per listener and ring, then reloads and memory.
fn write_status(status: &serde_json::Value, out: &mut impl Write) -> Result<()> {
    let gateway = &status["gateway"];
    writeln!(
        out,
        "edgegw {} (pid {}), config {}",
        status["version"].as_str().unwrap_or("?"),
        status["pid"],
        status["config"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "connections {} open, {} accepted, {} handshakes; refused: {} connection limit, {} handshake limit, {} source limit; {} handshake timeouts, {} TLS errors",
        gateway["active"],
        gateway["accepted"],
        gateway["handshakes"],
        gateway["refused_connection_limit"],
        gateway["refused_handshake_limit"],
        gateway["refused_source_limit"],
        gateway["handshake_timeouts"],
        gateway["bad_tls_bytes"].as_u64().unwrap_or(0)
            + gateway["other_tls_errors"].as_u64().unwrap_or(0)
            + gateway["unknown_sni"].as_u64().unwrap_or(0)
            + gateway["bad_client_certificates"].as_u64().unwrap_or(0)
    )?;
    for l in status["listeners"].as_array().into_iter().flatten() {
        let addrs: Vec<&str> = l["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        let addrs = if addrs.is_empty() {
            "no address".to_string()
        } else {
            addrs.join(", ")
        };
        writeln!(
            out,
            "listener {} on {addrs}: {} open, {} accepted, {} handshakes; refused: {} connection limit, {} handshake limit, {} source limit, {} memory pressure; {} handshake timeouts, {} TLS errors",
            l["name"].as_str().unwrap_or("?"),
            l["active"],
            l["accepted"],
            l["handshakes"],
            l["refused_connection_limit"],
            l["refused_handshake_limit"],
            l["refused_source_limit"],
            l["refused_memory_pressure"],
            l["handshake_timeouts"],
            l["tls_errors"],
        )?;
    }
    if let Some(rings) = status["rings"].as_object() {
        let mut names: Vec<_> = rings.keys().collect();
        names.sort();
        for name in names {
            let ring = &rings[name];
            let flow = &ring["flow_control"];
            writeln!(
                out,
                "ring {name}: capacity {}, generation {}, consumer {}, reply producer {}, {} connections, {} bytes in, {} bytes out; flow control: {} connections with credits, {} reply bytes held, {} credit stalls, {} excess credits, {} credits for unknown connections, {} reply window overruns",
                ring["capacity"],
                ring["generation"],
                attached(ring, "consumer"),
                attached(ring, "reply_producer"),
                ring["counters"]["connections"],
                ring["counters"]["bytes_in"],
                ring["counters"]["bytes_out"],
                flow["credit_connections"],
                flow["reply_bytes_held"],
                flow["credit_stalls"],
                flow["excess_credits"],
                flow["credits_for_unknown_connections"],
                flow["reply_window_overruns"],
            )?;
        }
    }
    let reloads = &status["reloads"];
    write!(
        out,
        "reloads: {} ok, {} failed",
        reloads["ok"], reloads["failed"]
    )?;
    if let Some(last) = reloads["recent"].as_array().and_then(|r| r.last()) {
        match last["error"].as_str() {
            None => write!(out, "; last {} ok", last["at"].as_str().unwrap_or("?"))?,
            Some(e) => write!(
                out,
                "; last {} FAILED: {e}",
                last["at"].as_str().unwrap_or("?")
            )?,
        }
    }
    writeln!(out)?;
    if let Some(rss) = status["memory"]["resident_bytes"].as_u64() {
        writeln!(out, "memory: {} KiB resident", rss / 1024)?;
    }
    Ok(())
}

/// "attached since T (N s)" or "not attached", for the ring's `peer` (consumer or
/// reply_producer).
fn attached(ring: &serde_json::Value, peer: &str) -> String {
    if ring[format!("{peer}_attached")].as_bool() != Some(true) {
        return "not attached".into();
    }
    format!(
        "attached since {} ({} s)",
        ring[format!("{peer}_attached_since")]
            .as_str()
            .unwrap_or("?"),
        ring[format!("{peer}_attached_seconds")]
    )
}
