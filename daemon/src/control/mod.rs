//! The control plane: turns configs into running state and swaps it on reload.
//!
//! [`Daemon::start`] validates a config whole, loads its certificates, opens its sockets
//! (`sockets.rs`, the one socket table), creates its rings and their attach servers
//! (`rings.rs`), and starts the TLS thread with the resulting plan. [`Daemon::reload`] does the
//! same for a new config *beside* the running one and only then swaps it in; if anything fails,
//! the old config keeps running and the error says why. Sockets whose address stays are handed
//! over, not rebound; rings whose name stays are kept with their unread records.

mod rings;
mod sockets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::config::{Config, ConfigError};
use crate::gateway::{Gateway, GatewayError, GatewayEvent, GatewayEvents, Plan, ThreadSettings};
use crate::paths::Dirs;
use crate::sys::SystemdSockets;
use crate::tls::{SelfSignedMode, TlsBuilder};
pub use sockets::{bind_tcp, Listening};

/// Why a reload did not happen. The old config is still running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config (or a certificate it names) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new config is valid but cannot be put in place (a port in use, ...).
    #[error("{0:#}")]
    Apply(anyhow::Error),
    /// The TLS thread refused the new plan.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// The running daemon, as the control plane sees it.
#[derive(Debug)]
pub struct Daemon {
    config: Arc<Config>,
    dirs: Dirs,
    tls: TlsBuilder,
    gateway: Gateway,
    events: GatewayEvents,
    sockets: sockets::SocketTable,
    rings: rings::Rings,
    systemd: SystemdSockets,
    /// Events from the TLS thread, taken while waiting, handled by `process_attach`.
    gateway_events: Vec<GatewayEvent>,
}

/// What a new config needs that the running daemon does not have yet.
struct Prepared {
    plan: Plan,
    sockets: sockets::SocketTable,
    new_rings: Vec<rings::NewRing>,
}

impl Daemon {
    /// Starts the daemon on `config`. Must be called inside a tokio runtime (the attach servers
    /// register with it).
    pub fn start(config: Config) -> Result<Daemon> {
        let dirs = Dirs::resolve(&config.daemon)?;
        dirs.create()?;
        raise_fd_limit();
        let tls = TlsBuilder::new()?;
        let systemd = SystemdSockets::from_env()?;
        let config = Arc::new(config);
        let empty = (sockets::SocketTable::default(), rings::Rings::default());
        let prepared = prepare(&config, &dirs, &tls, &empty.0, &empty.1, &systemd)?;
        let (gateway, events) = Gateway::start(
            &ThreadSettings {
                stack_size: config.daemon.tls_stack_size,
                cpu: config.daemon.tls_cpu,
            },
            prepared.plan,
        )?;
        let mut rings = empty.1;
        rings.add(prepared.new_rings)?;
        drop_startup_pages();
        log::info!(
            "edgegw {} running with {} ({} crypto, {} first); state in {}, rings in {}",
            env!("CARGO_PKG_VERSION"),
            config.file.display(),
            crate::tls::PROVIDER_NAME,
            if crate::tls::aes_in_hardware() {
                "AES-128-GCM"
            } else {
                "ChaCha20-Poly1305"
            },
            dirs.state.display(),
            dirs.rings().display()
        );
        Ok(Daemon {
            config,
            dirs,
            tls,
            gateway,
            events,
            sockets: prepared.sockets,
            rings,
            systemd,
            gateway_events: Vec::new(),
        })
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The directories in use.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Where each listener accepts.
    pub fn listening(&self) -> Vec<Listening> {
        self.sockets.listening()
    }

    /// The gateway's counters.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Every counter the daemon keeps, as one JSON object: the gateway's, and each ring's by
    /// name (what `edgegw ring stat --json` shows of one ring).
    pub fn counters(&self) -> serde_json::Value {
        serde_json::json!({ "gateway": self.gateway.stats(), "rings": self.rings.counters() })
    }

    /// Replaces the running config with `config`: everything is built and checked first; on any
    /// error the running config stays and the error says why. Established connections are
    /// untouched either way; new handshakes use the new certificates.
    pub async fn reload(&mut self, config: Config) -> Result<(), ReloadError> {
        if config.daemon != self.config.daemon {
            log::warn!("reload: [daemon] settings changed; they take effect at the next restart");
        }
        for ring in &config.rings {
            match self.rings.capacity(&ring.name) {
                Some(running) if running != ring.capacity => {
                    return Err(ReloadError::Apply(anyhow::anyhow!(
                        "ring `{}`: capacity cannot change on reload ({running} -> {}); restart the daemon",
                        ring.name,
                        ring.capacity
                    )))
                }
                _ => {}
            }
        }
        let config = Arc::new(config);
        let prepared = prepare(
            &config,
            &self.dirs,
            &self.tls,
            &self.sockets,
            &self.rings,
            &self.systemd,
        )
        .map_err(|e| match e.downcast::<ConfigError>() {
            Ok(config_error) => ReloadError::Config(config_error),
            Err(other) => ReloadError::Apply(other),
        })?;
        self.gateway.apply(prepared.plan).answer().await?;
        // In force: update our side.
        self.rings
            .add(prepared.new_rings)
            .map_err(ReloadError::Apply)?;
        self.rings.update(&config);
        self.sockets = prepared.sockets;
        self.config = config;
        drop_startup_pages();
        Ok(())
    }

    /// Waits until an attach server has work (a connection, a hello, a hang-up), or the TLS
    /// thread has told us something (a corrupt reply ring).
    pub async fn attach_ready(&mut self) {
        tokio::select! {
            event = self.events.next() => self.gateway_events.push(event),
            () = self.rings.ready() => {}
        }
    }

    /// Does whatever work the attach servers have now, and what the TLS thread asked for (a
    /// fresh ring); also expires silent connections, so call it periodically too.
    pub fn process_attach(&mut self) {
        for event in std::mem::take(&mut self.gateway_events) {
            self.rings.on_gateway_event(&self.gateway, event);
        }
        self.rings.serve(&self.gateway);
    }
}

/// Builds, beside the running state, everything `config` needs: TLS configs, sockets for new
/// addresses, new rings with their attach servers. Nothing running is touched.
fn prepare(
    config: &Arc<Config>,
    dirs: &Dirs,
    tls: &TlsBuilder,
    sockets: &sockets::SocketTable,
    running: &rings::Rings,
    systemd: &SystemdSockets,
) -> Result<Prepared> {
    let mut listener_tls = HashMap::new();
    for listener in &config.listeners {
        let built = tls.listener(listener, &dirs.state, SelfSignedMode::Persist)?;
        listener_tls.insert(listener.name.clone(), built);
    }
    let (sockets, socket_ops) = sockets.plan(config, systemd)?;
    let mut new_endpoints = HashMap::new();
    let mut new_rings = Vec::new();
    for ring in config.rings.iter().filter(|r| !running.contains(&r.name)) {
        let (endpoints, served) = rings::create(ring, dirs)?;
        new_endpoints.insert(ring.name.clone(), endpoints);
        new_rings.push(served);
    }
    Ok(Prepared {
        plan: Plan {
            config: config.clone(),
            tls: listener_tls,
            new_rings: new_endpoints,
            sockets: socket_ops,
        },
        sockets,
        new_rings,
    })
}

/// Gives back the executable's pages that start-up (or a reload) touched and the running daemon
/// does not need: config parsing, certificate generation and rustls config building leave most
/// of the binary resident otherwise (about 3 MiB of a 5.7 MiB idle RSS), on devices where every
/// MiB counts. Pages the data path uses come back from the file on first use.
fn drop_startup_pages() {
    match crate::sys::page_out_executable() {
        Ok(bytes) => {
            log::debug!("asked the kernel to reclaim {bytes} bytes of executable mappings")
        }
        // Kernels before 5.4 have no MADV_PAGEOUT: the pages stay, nothing else changes.
        Err(e) => log::debug!("cannot page out start-up code: {e}"),
    }
    // And the heap it freed (parsed configs, certificate generation, rustls builders).
    crate::sys::trim_heap();
}

/// Raises the soft fd limit to the hard limit: each connection is an fd (two on socket
/// routes), and the default soft limit of 1024 would cap the daemon far below max_connections.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the fd limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Loads a config file for `check-config`: syntax, semantics, certificates and keys, client-auth
/// files. Writes nothing (self-signed certificates are generated in memory).
pub fn check_config(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    let tls = TlsBuilder::new()?;
    let scratch = PathBuf::from("/nonexistent");
    for listener in &config.listeners {
        tls.listener(listener, &scratch, SelfSignedMode::InMemory)?;
    }
    if config.listeners.is_empty() {
        bail!("no listeners");
    }
    Ok(config)
}
