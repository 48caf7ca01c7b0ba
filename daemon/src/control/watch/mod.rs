//! The daemon's reactions to the kernel: certificate and config files, and memory pressure.
//!
//! Each source runs as a task of the control plane's runtime, reading its part of
//! `edgegw-kernel-events`, and feeds what it saw into one channel ([`Feed`]). [`Watch::next`]
//! turns that into what the control loop must do ([`Reaction`]); everything else (the pressure
//! state, the counters) [`Watch`] keeps itself, so the loop has one branch for all of it:
//!
//! - `files.rs`: the config file and every certificate, key, CA and CRL file it names, through
//!   their directories (atomic renames, certbot's `live/` links and Kubernetes' `..data` swap
//!   are seen), debounced by the reader; a settled change, or the end of a resync after an
//!   inotify overflow, asks for one reload through the same one-at-a-time path as SIGHUP. The
//!   task follows the config: a reload that names other files restarts it.
//! - `pressure.rs`: the PSI reader of the daemon's own cgroup (a trigger, or the poll where the
//!   kernel refuses one) drives [`pressure::Shedding`]: under pressure new connections are
//!   closed at once and the heap is trimmed; once pressure stayed low for `resume_after`,
//!   connections are accepted again. Both edges are logged.
//!
//! - `consumers.rs`: the cgroups of rings' consumers (a path, or a systemd unit's): an emptied
//!   cgroup or an OOM kill in it is recorded as why the consumer went away, logged once and
//!   counted; the ring keeps its unread records for the next consumer.
//!
//! What the watchers saw is [`WatchStatus`], which `counters()` (SIGUSR1) and status show.

mod consumers;
mod events;
mod files;
mod net;
mod pressure;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use edgegw_kernel_events::pressure::PressureEvent;
use edgegw_proto::events::EventKind;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, ConfigSource, PressureConfig};
use crate::gateway::Stats;
pub use consumers::{ConsumerStatus, Gone};
pub use net::NetSnapshot;
pub use pressure::{PressureStatus, Shedding};

/// What a watcher task saw.
#[derive(Debug)]
pub enum Feed {
    /// Watched files changed (or a resync ended): reload.
    FilesChanged {
        /// The paths that changed (empty after a resync).
        paths: Vec<PathBuf>,
    },
    /// A pressure event of the daemon's cgroup.
    Pressure(PressureEvent),
    /// The network changed what dynamic binds resolve to.
    Network(NetSnapshot),
    /// An event for the events ring (network changes and resyncs, consumers).
    Record(EventKind, serde_json::Value),
}

/// What the control loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// Reload the config, as SIGHUP does.
    Reload,
}

/// The file watcher's part of the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FilesStatus {
    /// Files to watch.
    pub watched: usize,
    /// Their watches are in place (the reader read their initial state).
    pub active: bool,
    /// Settled changes seen (one per debounced batch).
    pub changes: u64,
    /// Inotify overflows (or lost watches) recovered from.
    pub resyncs: u64,
    /// Reloads asked for by file changes.
    pub reloads_requested: u64,
    /// Why the files are not watched, if they are not.
    pub error: Option<String>,
}

/// The network watcher's part of the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStatus {
    /// Link and address changes seen.
    pub changes: u64,
    /// Resyncs (ENOBUFS, truncation, ...) recovered from.
    pub resyncs: u64,
    /// Rebinds asked for (each a reload).
    pub rebinds: u64,
    /// Usable addresses on interfaces that are up, at the last change.
    pub addresses: usize,
    /// Why the network is not watched, if it is not.
    pub error: Option<String>,
}

/// The events ring's part of the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventsStatus {
    /// Its name, while there is one.
    pub ring: Option<String>,
    /// Records written.
    pub written: u64,
    /// Records dropped because it was full.
    pub dropped: u64,
    /// Why it could not be created, if it could not.
    pub error: Option<String>,
}

/// What the daemon's kernel watchers saw: `counters()` and status show it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WatchStatus {
    /// Certificate and config files.
    pub files: FilesStatus,
    /// Memory pressure and load shedding.
    pub pressure: PressureStatus,
    /// The network, for iface and when-present binds.
    pub network: NetworkStatus,
    /// Supervised consumers, by ring.
    pub consumers: std::collections::BTreeMap<String, ConsumerStatus>,
    /// The events ring.
    pub events: EventsStatus,
    /// The error of the last reload, while reloads keep failing with it (logged once).
    pub reload_error: Option<String>,
}

/// A handle on the watchers: their status, and their feed (tests inject events through it).
#[derive(Debug, Clone)]
pub struct WatchHandle {
    status: Arc<Mutex<WatchStatus>>,
    feed: mpsc::UnboundedSender<Feed>,
}

impl WatchHandle {
    /// The status now.
    pub fn status(&self) -> WatchStatus {
        lock(&self.status).clone()
    }

    /// Feeds an event as if a watcher had seen it (the tests' way to cause pressure where the
    /// kernel gives none). False if the daemon is gone.
    pub fn inject(&self, feed: Feed) -> bool {
        self.feed.send(feed).is_ok()
    }
}

fn lock(status: &Mutex<WatchStatus>) -> std::sync::MutexGuard<'_, WatchStatus> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watcher tasks and what they found, owned by the control loop.
#[derive(Debug)]
pub struct Watch {
    handle: WatchHandle,
    feed: mpsc::UnboundedReceiver<Feed>,
    files: Option<(Vec<PathBuf>, JoinHandle<()>)>,
    /// The consumer supervisor and what it supervises.
    consumers: Option<(consumers::Targets, JoinHandle<()>)>,
    /// The pressure reader and the settings it runs with.
    pressure: Option<(PressureConfig, JoinHandle<()>)>,
    /// The rtnetlink reader (and its receive buffer), while a listener has dynamic binds.
    net: Option<(usize, JoinHandle<()>)>,
    /// The network as of the last change.
    snapshot: Arc<NetSnapshot>,
    /// The dynamic binds of the config in force.
    dynamic: Vec<crate::config::DynamicBind>,
    /// The events ring, if the config has one.
    events: Option<events::EventsRing>,
    dirs: crate::paths::Dirs,
    shedding: Shedding,
    stats: Arc<Stats>,
}

impl Watch {
    /// The watchers' state for `config`; nothing runs before [`Watch::run`].
    pub fn new(config: &Config, stats: Arc<Stats>, dirs: crate::paths::Dirs) -> Watch {
        let (sender, feed) = mpsc::unbounded_channel();
        Watch {
            handle: WatchHandle {
                status: Arc::default(),
                feed: sender,
            },
            feed,
            files: None,
            consumers: None,
            pressure: None,
            net: None,
            snapshot: Arc::default(),
            dynamic: Vec::new(),
            events: None,
            dirs,
            shedding: Shedding::new(config.pressure.resume_after),
            stats,
        }
    }

    /// Starts the watchers `config` asks for. Inside the control plane's runtime.
    pub fn run(&mut self, config: &Config, source: &ConfigSource) {
        self.follow(config, source);
    }

    /// A handle on the status and the feed.
    pub fn handle(&self) -> WatchHandle {
        self.handle.clone()
    }

    /// The status now.
    pub fn status(&self) -> WatchStatus {
        self.handle.status()
    }

    /// A config is in force: watches the files it names and the pressure it asks for
    /// (restarting a watcher only if what it watches changed).
    pub fn follow(&mut self, config: &Config, source: &ConfigSource) {
        self.follow_events(config);
        self.follow_pressure(&config.pressure);
        self.follow_files(config, source);
        self.follow_consumers(config);
        self.follow_network(config);
    }

    fn follow_events(&mut self, config: &Config) {
        if self.events.as_ref().is_some_and(|e| e.is(&config.events)) {
            return;
        }
        self.events = None;
        let mut status = lock(&self.handle.status);
        status.events = EventsStatus::default();
        let Some(name) = &config.events.ring else {
            return;
        };
        match events::EventsRing::create(&config.events, name, &self.dirs) {
            Ok(ring) => {
                status.events.ring = Some(name.clone());
                self.events = Some(ring);
            }
            Err(e) => {
                log::error!("no events ring: {e:#}");
                status.events.error = Some(format!("{e:#}"));
            }
        }
    }

    /// Writes an event to the events ring, if there is one.
    fn publish(&mut self, kind: EventKind, event: serde_json::Value) {
        if let Some(ring) = &mut self.events {
            ring.publish(kind, &event);
            let mut status = lock(&self.handle.status);
            status.events.written = ring.written;
            status.events.dropped = ring.dropped;
        }
    }

    /// What dynamic binds resolve to now (empty until the network reader's first snapshot).
    pub fn net(&self) -> Arc<NetSnapshot> {
        self.snapshot.clone()
    }

    fn follow_network(&mut self, config: &Config) {
        self.dynamic = config
            .listeners
            .iter()
            .flat_map(|l| l.dynamic.iter().cloned())
            .collect();
        let wanted = (net::wanted(config) || config.events.ring.is_some())
            .then_some(config.watch.netlink_buffer);
        if self.net.as_ref().map(|(buffer, _)| *buffer) == wanted {
            return;
        }
        if let Some((_, task)) = self.net.take() {
            task.abort();
        }
        match wanted {
            Some(buffer) => self.net = Some((buffer, net::spawn(buffer, self.handle.clone()))),
            None => self.snapshot = Arc::default(),
        }
    }

    fn follow_consumers(&mut self, config: &Config) {
        let targets = consumers::targets(config);
        if self
            .consumers
            .as_ref()
            .is_some_and(|(now, _)| *now == targets)
        {
            return;
        }
        if let Some((_, task)) = self.consumers.take() {
            task.abort();
        }
        lock(&self.handle.status).consumers.clear();
        if targets.is_empty() {
            return;
        }
        let task = consumers::spawn(targets.clone(), self.handle.clone());
        self.consumers = Some((targets, task));
    }

    fn follow_pressure(&mut self, config: &PressureConfig) {
        self.shedding.configure(
            config.shed,
            config.resume_after,
            &self.stats,
            &self.handle.status,
        );
        let reader = |c: &PressureConfig| PressureConfig {
            resume_after: Default::default(),
            ..c.clone()
        };
        let wanted = config.shed.then(|| reader(config));
        if self.pressure.as_ref().map(|(running, _)| running) == wanted.as_ref() {
            return;
        }
        if let Some((_, task)) = self.pressure.take() {
            task.abort();
            let mut status = lock(&self.handle.status);
            status.pressure.mode = None;
            status.pressure.target = None;
            status.pressure.error = None;
        }
        if let Some(wanted) = wanted {
            let task = pressure::spawn(&wanted, self.handle.clone());
            self.pressure = Some((wanted, task));
        }
    }

    fn follow_files(&mut self, config: &Config, source: &ConfigSource) {
        let paths = if config.watch.files {
            files::paths(config, source)
        } else {
            Vec::new()
        };
        if self.files.as_ref().is_some_and(|(now, _)| *now == paths) {
            return;
        }
        if let Some((_, task)) = self.files.take() {
            task.abort();
        }
        {
            let mut status = lock(&self.handle.status);
            status.files.watched = paths.len();
            status.files.active = false;
        }
        if paths.is_empty() {
            return;
        }
        let task = files::spawn(paths.clone(), config.watch.debounce, self.handle.clone());
        self.files = Some((paths, task));
    }

    /// The next thing the loop must do. Cancel-safe: pressure edges and counters are handled
    /// here, between two awaits.
    pub async fn next(&mut self) -> Reaction {
        loop {
            let resume = self.shedding.resume_at();
            let feed = tokio::select! {
                feed = self.feed.recv() => feed,
                () = events_ready(&mut self.events) => {
                    if let Some(ring) = &mut self.events {
                        ring.serve();
                    }
                    continue;
                }
                () = sleep_until(resume) => {
                    self.shedding
                        .resume_if_due(Instant::now(), &self.stats, &self.handle.status);
                    if !self.shedding.is_on() {
                        self.publish(EventKind::Pressure, json!({ "shedding": false }));
                    }
                    continue;
                }
            };
            match feed {
                Some(Feed::FilesChanged { paths }) => {
                    let mut status = lock(&self.handle.status);
                    if paths.is_empty() {
                        status.files.resyncs += 1;
                    } else {
                        status.files.changes += 1;
                    }
                    status.files.reloads_requested += 1;
                    drop(status);
                    log::info!(
                        "{} changed: reloading",
                        if paths.is_empty() {
                            "watched files may have".to_string()
                        } else {
                            paths
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    );
                    self.publish(EventKind::Files, json!({ "paths": paths }));
                    return Reaction::Reload;
                }
                Some(Feed::Record(kind, event)) => self.publish(kind, event),
                Some(Feed::Network(snapshot)) => {
                    let resolve = |s: &NetSnapshot| -> Vec<_> {
                        self.dynamic.iter().map(|b| s.resolve(b)).collect()
                    };
                    // Changes elsewhere (other interfaces, other addresses) rebind nothing.
                    let rebind = resolve(&snapshot) != resolve(&self.snapshot);
                    lock(&self.handle.status).network.addresses = snapshot.addresses();
                    self.snapshot = Arc::new(snapshot);
                    if !rebind {
                        continue;
                    }
                    lock(&self.handle.status).network.rebinds += 1;
                    log::info!("the network changed: rebinding iface and when-present listeners");
                    return Reaction::Reload;
                }
                Some(Feed::Pressure(event)) => {
                    let was = self.shedding.is_on();
                    self.shedding.on_event(
                        &event,
                        Instant::now(),
                        &self.stats,
                        &self.handle.status,
                    );
                    if self.shedding.is_on() != was {
                        self.publish(EventKind::Pressure, json!({ "shedding": !was }));
                    }
                }
                // We hold a sender ourselves: never.
                None => std::future::pending().await,
            }
        }
    }

    /// A reload ended: whether its error (if any) should be logged, which is once for as long
    /// as reloads keep failing with the same one (a half-written certificate pair fails every
    /// reload until its second file lands).
    pub fn reload_done(&mut self, error: Option<String>) -> bool {
        self.publish(
            EventKind::Reload,
            json!({ "ok": error.is_none(), "error": error }),
        );
        let mut status = lock(&self.handle.status);
        let new = error.is_some() && status.reload_error != error;
        status.reload_error = error;
        new
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some((_, task)) = self.files.take() {
            task.abort();
        }
        if let Some((_, task)) = self.pressure.take() {
            task.abort();
        }
        if let Some((_, task)) = self.consumers.take() {
            task.abort();
        }
        if let Some((_, task)) = self.net.take() {
            task.abort();
        }
    }
}

async fn events_ready(ring: &mut Option<events::EventsRing>) {
    match ring {
        Some(ring) => ring.ready().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
