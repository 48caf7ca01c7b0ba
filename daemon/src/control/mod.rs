//! The control plane: the daemon's main thread and its one loop.
//!
//! [`main`] is the daemon's life: it reads the config, starts a current_thread runtime, installs
//! the signal handlers ([`Requests`]), starts the [`Daemon`] and runs its loop until asked to
//! stop. [`Daemon::start`] validates a config whole, loads its certificates, opens its sockets
//! (`sockets.rs`: the one socket table), creates its rings and their attach servers
//! (`rings.rs`), and starts the TLS thread with the resulting plan (`build.rs`).
//!
//! [`Daemon::run`] is the loop. Each thing the daemon reacts to is one branch of it, with its
//! handler beside it:
//!
//! - an attach socket has work: serve it (`rings.rs`);
//! - the TLS thread found a ring broken or finished: replace it (`rings.rs`);
//! - a request (`requests.rs`: a signal, or the in-process queue): reload, dump the counters,
//!   stop;
//! - the reload in flight is built and handed over: commit it (`reload.rs`: one at a time, a
//!   request meanwhile queued once; the build runs on the blocking pool, so the loop keeps
//!   serving meanwhile);
//! - the kernel watchers (`watch/`: certificate and config files, addresses, consumers'
//!   cgroups, memory pressure) ask for a reload: it takes the same one-at-a-time path as SIGHUP
//!   (their other reactions, load shedding and what they record, they carry out themselves);
//! - the one-second tick: expire silent attach connections, flush the log's rate limits;
//! - the watchdog's tick (under systemd with `WatchdogSec=`): pet systemd only if the TLS
//!   thread's heartbeat moved since the last tick (`notify.rs`).
//!
//! systemd hears from the loop (`notify.rs`; nothing without `$NOTIFY_SOCKET`): `READY=1` when
//! it starts, `RELOADING=1` where a reload starts and `READY=1` where it ends, `STOPPING=1`, and
//! a `STATUS=` line (`status.rs`) whenever one of those happens. The control socket
//! (`server.rs`) is one more source of [`Request`]s: `edgegw reload` (whose reply carries the
//! outcome back), `status` and `metrics`. A reload's loading and validation has a time budget
//! (`daemon.reload_timeout`), which wraps the future `start_reload` hands to `reload::Reloads`.

mod accept;
mod build;
pub mod fdstore;
mod http;
mod notify;
mod reload;
mod requests;
mod rings;
mod server;
mod signals;
mod sockets;
mod status;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Config, ConfigSource};
use crate::gateway::{Gateway, GatewayEvents, ThreadSettings};
use crate::paths::Dirs;
use crate::sys::SystemdSockets;
use crate::tls::TlsBuilder;
use build::{Build, Commit};
pub use reload::{ReloadError, ReloadOutcome, ReloadReply, Reloaded};
pub use requests::{Request, RequestSender, Requests};
pub use server::{ask, SOCKET_NAME as CONTROL_SOCKET};
pub use sockets::{bind_tcp, Listening};
pub use watch::{
    ConsumerStatus, Feed, FilesStatus, Gone, NetSnapshot, NetworkStatus, PressureStatus,
    WatchHandle, WatchStatus,
};

/// Runs the daemon on this thread until SIGTERM or SIGINT: SIGHUP reloads `source`, SIGUSR1
/// logs every counter.
pub fn main(source: ConfigSource) -> Result<()> {
    let config = source.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .event_interval(61)
        // Reloads build on it, one at a time; its thread goes 10 s after the last.
        .max_blocking_threads(1)
        .thread_name("edgegw-reload")
        .build()
        .context("start the control-plane runtime")?;
    let result = runtime.block_on(async move {
        let requests = Requests::from_signals()?;
        Daemon::start(config)?.run(source, requests).await
    });
    // A reload still building is abandoned.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The running daemon, as the control plane sees it.
#[derive(Debug)]
pub struct Daemon {
    config: Arc<Config>,
    dirs: Dirs,
    tls: Arc<TlsBuilder>,
    systemd: Arc<SystemdSockets>,
    gateway: Gateway,
    events: GatewayEvents,
    sockets: sockets::SocketTable,
    rings: rings::Rings,
    reloads: reload::Reloads<Commit>,
    watch: watch::Watch,
    history: status::ReloadHistory,
    control: Option<server::ControlServer>,
    metrics: http::Endpoint,
    notifier: notify::Notifier,
}

impl Daemon {
    /// Starts the daemon on `config`. Must be called inside a tokio runtime (the attach servers
    /// register with it).
    pub fn start(config: Config) -> Result<Daemon> {
        let dirs = Dirs::resolve(&config.daemon)?;
        dirs.create()?;
        raise_fd_limit();
        let tls = Arc::new(TlsBuilder::new()?);
        let systemd = Arc::new(SystemdSockets::from_env()?);
        let nothing = sockets::SocketTable::default();
        let built = build::build(
            Arc::new(config),
            &dirs,
            &tls,
            &nothing,
            &HashMap::new(),
            &systemd,
            &watch::NetSnapshot::default(),
        )?;
        let settings = ThreadSettings {
            stack_size: built.commit.config.daemon.tls_stack_size,
            cpu: built.commit.config.daemon.tls_cpu,
        };
        let (gateway, events) = Gateway::start(&settings, built.plan)?;
        let watch = watch::Watch::new(&built.commit.config, gateway.stats_handle(), dirs.clone());
        let mut rings = rings::Rings::default();
        rings.add(built.commit.new_rings);
        let control = server::ControlServer::bind(&dirs.runtime)?;
        let metrics = http::Endpoint::bind(built.commit.config.metrics.listen)?;
        systemd.warn_unused(&built.commit.config);
        built.commit.sockets.store_changes(&nothing);
        rings::release_unclaimed(&systemd);
        drop_startup_pages();
        let config = built.commit.config;
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
            systemd,
            gateway,
            events,
            sockets: built.commit.sockets,
            rings,
            reloads: reload::Reloads::default(),
            watch,
            history: status::ReloadHistory::default(),
            control: Some(control),
            metrics,
            notifier: notify::Notifier::from_env(),
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

    /// What the kernel watchers saw (files, memory pressure), and their feed.
    pub fn watch(&self) -> WatchHandle {
        self.watch.handle()
    }

    /// The gateway's counters.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Every counter the daemon keeps, as one JSON object: the gateway's, and each ring's by
    /// name (what `edgegw ring stat --json` shows of one ring).
    pub fn counters(&self) -> serde_json::Value {
        serde_json::json!({
            "gateway": self.gateway.stats(),
            "rings": self.rings.counters(),
            "watch": self.watch.status(),
        })
    }

    /// The daemon's state, as `edgegw status --json` prints it.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "config": self.config.file,
            "listening": self.listening().iter().map(|l| serde_json::json!({
                "listener": l.listener, "addr": l.addr.to_string(),
            })).collect::<Vec<_>>(),
            "listeners": self.listeners().iter().map(|l| {
                let mut entry = serde_json::to_value(l.counters).unwrap_or_default();
                entry["name"] = l.name.as_str().into();
                entry["addrs"] = l.addrs.iter().map(|a| a.to_string()).collect();
                entry
            }).collect::<Vec<_>>(),
            "metrics_endpoint": self.metrics.local_addr().map(|a| a.to_string()),
            "gateway": self.gateway.stats(),
            "rings": self.rings.status(),
            "reloads": {
                "ok": self.history.ok,
                "failed": self.history.failed,
                "recent": self.history.recent().collect::<Vec<_>>(),
            },
            "watch": self.watch.status(),
            "memory": { "resident_bytes": status::resident_bytes() },
        })
    }

    /// Every counter in Prometheus' text format (`edgegw metrics`).
    pub fn metrics(&self) -> String {
        status::metrics(
            &self.gateway.stats(),
            &self.listeners(),
            &self.rings.samples(),
            &self.history,
            &self.watch.status(),
        )
    }

    /// Each configured listener's addresses and counters, by name.
    fn listeners(&self) -> Vec<status::ListenerSamples> {
        let listening = self.listening();
        self.gateway
            .listener_stats()
            .into_iter()
            .map(|(name, counters)| status::ListenerSamples {
                addrs: listening
                    .iter()
                    .filter(|l| l.listener == name)
                    .map(|l| l.addr)
                    .collect(),
                name,
                counters,
            })
            .collect()
    }

    /// The one-line status systemd shows.
    fn status_line(&self) -> String {
        let (rings, attached) = self.rings.attached();
        status::status_line(self.gateway.stats().active, rings, attached, &self.history)
    }

    /// The control loop: serves attach sockets, the control socket and the TLS thread's events,
    /// runs reloads of `source` one at a time, pets systemd's watchdog while the TLS thread
    /// answers, and acts on `requests` until one says stop.
    pub async fn run(mut self, source: ConfigSource, mut requests: Requests) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.watch.run(&self.config, &source);
        self.metrics.serve(requests.control_sender());
        if let Some(control) = self.control.take() {
            log::debug!("control socket: {}", control.path().display());
            tokio::spawn(control.serve(requests.control_sender()));
        }
        let mut watchdog = notify::Watchdog::from_env();
        let mut watchdog_tick = tokio::time::interval(
            watchdog
                .as_ref()
                .map_or(Duration::from_secs(3600), |w| w.period),
        );
        let mut shown = self.status_line();
        self.notifier.ready(&shown);
        loop {
            tokio::select! {
                () = self.rings.ready() => self.rings.serve(&self.gateway),
                event = self.events.next() => self.rings.on_gateway_event(&self.gateway, event),
                built = self.reloads.finished() => {
                    let result = built.map(|commit| self.commit(commit));
                    self.reload_done(result, &source);
                }
                watch::Reaction::Reload = self.watch.next() => {
                    if self.reloads.request(None) {
                        self.start_reload(&source);
                    }
                }
                _ = tick.tick() => {
                    self.rings.serve(&self.gateway);
                    crate::log::flush();
                    let status = self.status_line();
                    if status != shown {
                        self.notifier.status(&status);
                        shown = status;
                    }
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    let heartbeat = self.gateway.stats().heartbeat;
                    if watchdog.as_mut().is_some_and(|w| w.check(heartbeat)) {
                        self.notifier.watchdog();
                    }
                }
                request = requests.next() => match request.context("read signals")? {
                    Request::Reload(reply) => {
                        if self.reloads.request(reply) {
                            self.start_reload(&source);
                        }
                    }
                    Request::DumpCounters => log::info!("counters: {}", self.counters()),
                    Request::Status(reply) => {
                        let _ = reply.send(self.status());
                    }
                    Request::Metrics(reply) => {
                        let _ = reply.send(self.metrics());
                    }
                    #[cfg(any(debug_assertions, feature = "stall-trigger"))]
                    Request::StallTlsThread(time) => {
                        log::warn!("stalling the TLS thread for {time:?}, as asked (a test)");
                        self.gateway.stall(time);
                    }
                    Request::Stop => {
                        self.stop().await;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Stops: no new connections; every open one gets CLOSE reason 5 after the data already
    /// read and close_notify, within `daemon.drain_time`; then the ingress rings are marked
    /// FINISHED (their consumers are woken). What is still open after the drain time is dropped.
    async fn stop(&mut self) {
        let time = self.config.daemon.drain_time;
        let open = self.gateway.stats().active;
        log::info!("stopping: {open} connections get up to {time:?} to close");
        self.notifier
            .stopping(&format!("stopping: closing {open} connections"));
        let started = std::time::Instant::now();
        match self.gateway.drain(time).await {
            Some(0) => log::info!(
                "stopped: every connection closed in {:?}",
                started.elapsed()
            ),
            Some(left) => {
                log::warn!("stopped: {left} connections still open after {time:?} are dropped")
            }
            None => log::error!("stopped: the TLS thread did not answer the drain"),
        }
    }

    /// Starts building `source`'s config on the blocking pool and handing it to the TLS
    /// thread, from a snapshot of what runs now.
    fn start_reload(&mut self, source: &ConfigSource) {
        let build = Build {
            source: source.clone(),
            daemon: self.config.daemon.clone(),
            dirs: self.dirs.clone(),
            tls: self.tls.clone(),
            systemd: self.systemd.clone(),
            sockets: self.sockets.clone(),
            rings: self.rings.capacities(),
            net: self.watch.net(),
        };
        let applier = self.gateway.applier();
        let budget = self.config.daemon.reload_timeout;
        self.notifier.reloading();
        self.reloads.start(async move {
            // Past the budget the build is abandoned: what it made (sockets, rings) is dropped
            // when it ends, and a reload queued meanwhile waits for the blocking pool's one
            // thread within its own budget.
            let built =
                tokio::time::timeout(budget, tokio::task::spawn_blocking(move || build.run()))
                    .await
                    .map_err(|_| ReloadError::TimedOut(budget))?
                    .map_err(|e| {
                        ReloadError::Apply(anyhow::anyhow!("the reload's build failed: {e}"))
                    })??;
            applier.apply(built.plan).answer().await?;
            Ok(built.commit)
        });
    }

    /// The TLS thread runs the new plan: the control plane's side follows (nothing here can
    /// fail: the build did whatever could).
    fn commit(&mut self, commit: Commit) {
        self.rings.add(commit.new_rings);
        self.rings.update(&commit.config);
        commit.sockets.store_changes(&self.sockets);
        self.sockets = commit.sockets;
        self.config = commit.config;
        self.metrics.follow(self.config.metrics.listen);
        self.systemd.warn_unused(&self.config);
        drop_startup_pages();
    }

    /// A reload is over: says so, answers who asked, and starts the one queued behind it.
    fn reload_done(&mut self, result: Result<(), ReloadError>, source: &ConfigSource) {
        self.history
            .record(result.as_ref().err().map(|e| format!("{e}")));
        let outcome = match result {
            Ok(()) => {
                log::info!("reloaded {}", self.config.file.display());
                self.watch.reload_done(None);
                self.watch.follow(&self.config, source);
                Ok(Reloaded {
                    listening: self.listening(),
                })
            }
            Err(e) => {
                if self.watch.reload_done(Some(e.to_string())) {
                    log::error!("reload failed, still running the previous config: {e}");
                } else {
                    log::debug!("reload failed again, the same way: {e}");
                }
                Err(Arc::new(e))
            }
        };
        if self.reloads.finish(&outcome) {
            self.start_reload(source);
        } else {
            let status = self.status_line();
            self.notifier.ready(&status);
        }
    }
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
