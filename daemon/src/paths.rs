//! Where the daemon keeps state (the self-signed certificate) and runtime files (ring attach
//! sockets).
//!
//! Under systemd, `StateDirectory=` and `RuntimeDirectory=` set `$STATE_DIRECTORY` and
//! `$RUNTIME_DIRECTORY`; run by hand, the per-user XDG directories are used, so a newcomer's
//! `cargo run -- run` needs no root and no setup. The config may override both. The ring tools
//! need only the runtime directory ([`runtime_dir`]), so they work where no state directory
//! can be worked out (a `DynamicUser=` unit has no `$HOME`).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::DaemonConfig;

/// The two directories the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Persistent state (private keys): mode 0700.
    pub state: PathBuf,
    /// Runtime files (sockets): gone after a reboot.
    pub runtime: PathBuf,
}

impl Dirs {
    /// Works out the directories without creating them.
    pub fn resolve(config: &DaemonConfig) -> Result<Dirs> {
        let state = match &config.state_dir {
            Some(dir) => dir.clone(),
            None => default_state_dir()?,
        };
        Ok(Dirs {
            state,
            runtime: runtime_dir(config),
        })
    }

    /// Creates both directories if needed.
    pub fn create(&self) -> Result<()> {
        create_dir(&self.state, 0o700)?;
        create_dir(&self.runtime, 0o755)?;
        create_dir(&self.rings(), 0o755)
    }

    /// Directory of the ring attach sockets.
    pub fn rings(&self) -> PathBuf {
        self.runtime.join("rings")
    }

    /// Attach socket of a ring's ingress direction (the consumer reads from it).
    pub fn ring_socket(&self, ring: &str) -> PathBuf {
        ring_socket(&self.runtime, ring)
    }

    /// Attach socket of a ring's reply direction (the consumer writes to it).
    pub fn reply_socket(&self, ring: &str) -> PathBuf {
        reply_socket(&self.runtime, ring)
    }
}

/// The runtime directory of the system daemon (root's default, and systemd's
/// `RuntimeDirectory=edgegw`).
pub const SYSTEM_RUNTIME_DIR: &str = "/run/edgegw";

/// The runtime directory: the config's `runtime_dir`, else `$RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/edgegw`, else `/run/edgegw` (root) or `/tmp/edgegw-<uid>`.
pub fn runtime_dir(config: &DaemonConfig) -> PathBuf {
    match &config.runtime_dir {
        Some(dir) => dir.clone(),
        None => default_runtime_dir(),
    }
}

/// Attach socket of a ring's ingress direction in `runtime_dir`.
pub fn ring_socket(runtime_dir: &Path, ring: &str) -> PathBuf {
    runtime_dir.join("rings").join(format!("{ring}.sock"))
}

/// Attach socket of a ring's reply direction in `runtime_dir`.
pub fn reply_socket(runtime_dir: &Path, ring: &str) -> PathBuf {
    runtime_dir.join("rings").join(format!("{ring}.reply.sock"))
}

fn first_of_list(var: &str) -> Option<PathBuf> {
    // systemd passes several directories separated by ':'; ours is the first.
    let value = std::env::var_os(var)?;
    let value = value.to_str()?.split(':').next()?.to_string();
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(dir) = first_of_list("STATE_DIRECTORY") {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("edgegw"));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/edgegw"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no state directory: set $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME, or daemon.state_dir in the config")?;
    Ok(PathBuf::from(home).join(".local/state/edgegw"))
}

fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = first_of_list("RUNTIME_DIRECTORY") {
        return dir;
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("edgegw");
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        PathBuf::from(SYSTEM_RUNTIME_DIR)
    } else {
        std::env::temp_dir().join(format!("edgegw-{uid}"))
    }
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}
