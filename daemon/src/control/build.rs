//! What a config needs, built beside the running daemon: rustls configs, sockets for new
//! addresses, new rings with their attach sockets, and the plan for the TLS thread. Nothing
//! running is touched, and everything that can fail fails here, before the TLS thread sees the
//! plan; a reload builds on the blocking pool, from a snapshot of what runs.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;

use super::reload::ReloadError;
use super::rings::{self, RingState};
use super::sockets::SocketTable;
use super::watch::NetSnapshot;
use crate::config::{Config, ConfigError, ConfigSource, DaemonConfig};
use crate::gateway::Plan;
use crate::paths::Dirs;
use crate::sys::SystemdSockets;
use crate::tls::{SelfSignedMode, TlsBuilder};

/// What a built config leaves for the control plane to put in place once the TLS thread runs
/// its plan.
#[derive(Debug)]
pub struct Commit {
    /// The config.
    pub config: Arc<Config>,
    /// The socket table after the plan's socket operations.
    pub sockets: SocketTable,
    /// The new rings, to be served.
    pub new_rings: Vec<RingState>,
}

/// A config, built: the plan for the TLS thread and what the control plane commits after it.
#[derive(Debug)]
pub struct Built {
    /// For the TLS thread.
    pub plan: Plan,
    /// For the control plane.
    pub commit: Commit,
}

/// What a build needs of the running daemon; it owns all of it, so it runs on any thread.
#[derive(Debug)]
pub struct Build {
    /// Where the config comes from.
    pub source: ConfigSource,
    /// The running `[daemon]` settings (they change only at a restart).
    pub daemon: DaemonConfig,
    /// The daemon's directories.
    pub dirs: Dirs,
    /// The TLS builder (its ticket keys carry over).
    pub tls: Arc<TlsBuilder>,
    /// The sockets systemd passed.
    pub systemd: Arc<SystemdSockets>,
    /// The socket table in force.
    pub sockets: SocketTable,
    /// The rings that run, with their capacities.
    pub rings: HashMap<String, usize>,
    /// What dynamic binds resolve to now.
    pub net: Arc<NetSnapshot>,
}

impl Build {
    /// Loads the config and builds what it needs.
    pub fn run(self) -> Result<Built, ReloadError> {
        let config = self.source.load()?;
        if config.daemon != self.daemon {
            log::warn!("reload: [daemon] settings changed; they take effect at the next restart");
        }
        for ring in &config.rings {
            match self.rings.get(&ring.name) {
                Some(&running) if running != ring.capacity => {
                    return Err(ReloadError::Apply(anyhow::anyhow!(
                        "ring `{}`: capacity cannot change on reload ({running} -> {}); restart the daemon",
                        ring.name,
                        ring.capacity
                    )))
                }
                _ => {}
            }
        }
        build(
            Arc::new(config),
            &self.dirs,
            &self.tls,
            &self.sockets,
            &self.rings,
            &self.systemd,
            &self.net,
        )
        .map_err(|e| match e.downcast::<ConfigError>() {
            Ok(config_error) => ReloadError::Config(config_error),
            Err(other) => ReloadError::Apply(other),
        })
    }
}

/// Builds everything `config` needs that does not run yet: TLS configs, sockets for new
/// addresses (against `sockets`, the table in force), the rings not in `running`.
pub fn build(
    config: Arc<Config>,
    dirs: &Dirs,
    tls: &TlsBuilder,
    sockets: &SocketTable,
    running: &HashMap<String, usize>,
    systemd: &SystemdSockets,
    net: &NetSnapshot,
) -> Result<Built> {
    let mut listener_tls = HashMap::new();
    for listener in &config.listeners {
        let built = tls.listener(listener, &dirs.state, SelfSignedMode::Persist)?;
        listener_tls.insert(listener.name.clone(), built);
    }
    let (sockets, socket_ops) = sockets.plan(&config, systemd, net)?;
    let mut new_endpoints = HashMap::new();
    let mut new_rings = Vec::new();
    for ring in config
        .rings
        .iter()
        .filter(|r| !running.contains_key(&r.name))
    {
        let (endpoints, served) = rings::create(ring, dirs, systemd)?;
        new_endpoints.insert(ring.name.clone(), endpoints);
        new_rings.push(served);
    }
    Ok(Built {
        plan: Plan {
            config: config.clone(),
            tls: listener_tls,
            new_rings: new_endpoints,
            sockets: socket_ops,
        },
        commit: Commit {
            config,
            sockets,
            new_rings,
        },
    })
}
