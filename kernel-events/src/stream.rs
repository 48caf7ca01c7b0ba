//! The builder and the merged, ordered stream.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupReader, CgroupState};
use crate::error::{Error, Result};
use crate::event::Emitter;
use crate::files::{FileOptions, FileReader, FilesWake, Identity, WatchKind};
use crate::model::{Counters, Event};
use crate::net::{NetOptions, NetReader, NetStats, NetWake, NetworkState};
use crate::pressure::{PressureMode, PressureOptions, PressureReader};
use crate::sys::ReceiveBuffer;

/// Which reader woke up, with what its wait read.
enum Woke {
    Files(FilesWake),
    Network(NetWake),
    Cgroups,
    Pressure(bool),
}

/// Configures which sources to read. Nothing is opened until [`KernelEventsBuilder::build`].
#[derive(Debug, Default, Clone)]
pub struct KernelEventsBuilder {
    paths: Vec<(PathBuf, WatchKind)>,
    file_options: FileOptions,
    network: Option<NetOptions>,
    cgroups: Vec<PathBuf>,
    cgroup_parents: Vec<PathBuf>,
    pressure: Option<PressureOptions>,
}

impl KernelEventsBuilder {
    /// Watches one file (followed through symlinks), through its directory.
    pub fn watch_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push((path.into(), WatchKind::File));
        self
    }

    /// Watches a directory tree, new subdirectories included (a path that is not a directory is
    /// watched as a single file until it is one; see [`WatchKind::Tree`]).
    pub fn watch_tree(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push((path.into(), WatchKind::Tree));
        self
    }

    /// Watches a path as a tree while it is a directory and as a single file otherwise (the
    /// CLI's `--path`): the same as [`Self::watch_tree`], which makes that choice afresh
    /// whenever the path appears or changes type. A missing path that appears as a directory
    /// is watched as a tree from then on, exactly as if it had existed at start.
    pub fn watch_path(self, path: impl Into<PathBuf>) -> Self {
        self.watch_tree(path)
    }

    /// Debounce, hashing and missing-path behaviour of the file reader.
    pub fn file_options(mut self, options: FileOptions) -> Self {
        self.file_options = options;
        self
    }

    /// Reads links, addresses and routes from rtnetlink.
    pub fn network(mut self, options: NetOptions) -> Self {
        self.network = Some(options);
        self
    }

    /// Watches one cgroup's cgroup.events and memory.events (absolute inside the cgroup2 mount,
    /// or relative to it).
    pub fn cgroup(mut self, path: impl Into<PathBuf>) -> Self {
        self.cgroups.push(path.into());
        self
    }

    /// Watches a cgroup for child cgroups appearing and disappearing, and watches each child.
    pub fn cgroup_children(mut self, parent: impl Into<PathBuf>) -> Self {
        self.cgroup_parents.push(parent.into());
        self
    }

    /// Watches memory pressure (PSI).
    pub fn pressure(mut self, options: PressureOptions) -> Self {
        self.pressure = Some(options);
        self
    }

    /// Opens every configured reader and reads the initial state (the network dump runs here,
    /// after subscribing, so nothing falls between the two). Must run inside a tokio runtime
    /// with IO and time enabled.
    pub async fn build(self) -> Result<KernelEvents> {
        if self.paths.is_empty()
            && self.network.is_none()
            && self.cgroups.is_empty()
            && self.cgroup_parents.is_empty()
            && self.pressure.is_none()
        {
            return Err(Error::InvalidOption("no event source configured".into()));
        }
        let files = if self.paths.is_empty() {
            None
        } else {
            Some(FileReader::new(self.paths, self.file_options)?)
        };
        let cgroups = if self.cgroups.is_empty() && self.cgroup_parents.is_empty() {
            None
        } else {
            Some(CgroupReader::new(self.cgroups, self.cgroup_parents)?)
        };
        let pressure = self.pressure.map(PressureReader::new).transpose()?;
        let network = match self.network {
            Some(opts) => Some(NetReader::new(opts).await?),
            None => None,
        };
        Ok(KernelEvents {
            files,
            network,
            cgroups,
            pressure,
            queue: VecDeque::new(),
            next_seq: 1,
            counters: Counters::default(),
        })
    }
}

/// The merged stream of kernel events, and read access to each source's current model.
///
/// All readers run on the caller's task: [`KernelEvents::next`] waits on every source's fd at
/// once (tokio `AsyncFd`, non-blocking fds read until EAGAIN) and returns events in the order
/// they were produced, numbered by `seq`. No thread is started.
pub struct KernelEvents {
    files: Option<FileReader>,
    network: Option<NetReader>,
    cgroups: Option<CgroupReader>,
    pressure: Option<PressureReader>,
    queue: VecDeque<Event>,
    next_seq: u64,
    counters: Counters,
}

impl std::fmt::Debug for KernelEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEvents")
            .field("files", &self.files.is_some())
            .field("network", &self.network.is_some())
            .field("cgroups", &self.cgroups.is_some())
            .field("pressure", &self.pressure.is_some())
            .field("next_seq", &self.next_seq)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl KernelEvents {
    /// Starts a configuration.
    pub fn builder() -> KernelEventsBuilder {
        KernelEventsBuilder::default()
    }

    /// The next event, waiting for one. Cancel-safe: an event is never lost if the future is
    /// dropped (readers only change state after their wait completes, and events are queued).
    ///
    /// An error is a failure of the reader itself (e.g. the fd could not be read), not of the
    /// kernel dropping events: those are `Resync`s.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            // Each wait only waits (and reads into a local buffer), so the ones that lose the
            // race are dropped harmlessly; the winner's work is done after the select.
            let woke = tokio::select! {
                r = async { match &mut self.files { Some(f) => f.wait().await.map(Woke::Files), None => std::future::pending().await } } => r?,
                r = async { match &mut self.network { Some(n) => n.wait().await.map(Woke::Network), None => std::future::pending().await } } => r?,
                r = async { match &mut self.cgroups { Some(c) => c.wait().await.map(|()| Woke::Cgroups), None => std::future::pending().await } } => r?,
                r = async { match &mut self.pressure { Some(p) => p.wait().await.map(Woke::Pressure), None => std::future::pending().await } } => r?,
            };
            let mut out = Emitter {
                queue: &mut self.queue,
                next_seq: &mut self.next_seq,
                counters: &mut self.counters,
            };
            match woke {
                Woke::Files(w) => {
                    if let Some(f) = &mut self.files {
                        f.handle(w, &mut out);
                    }
                }
                Woke::Network(w) => {
                    if let Some(n) = &mut self.network {
                        n.handle(w, &mut out)?;
                    }
                }
                Woke::Cgroups => {
                    if let Some(c) = &mut self.cgroups {
                        c.handle(&mut out)?;
                    }
                }
                Woke::Pressure(fired) => {
                    if let Some(p) = &mut self.pressure {
                        p.handle(fired, &mut out)?;
                    }
                }
            }
        }
    }

    /// The next event if one is queued or can be produced without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Whether a source is between `Resync` and `ResyncDone` right now (only the network
    /// recovery spans several waits; the others resync within one step).
    pub fn is_resyncing(&self) -> bool {
        self.network.as_ref().is_some_and(|n| n.is_resyncing())
    }

    /// Counters per source.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Every watched path (and tree entry) that exists now, with its identity.
    pub fn files(&self) -> Option<&BTreeMap<PathBuf, Identity>> {
        self.files.as_ref().map(|f| f.model())
    }

    /// Watched paths in the degraded (polled) state.
    pub fn degraded_paths(&self) -> Vec<PathBuf> {
        self.files
            .as_ref()
            .map(|f| f.degraded())
            .unwrap_or_default()
    }

    /// inotify watches held by the file reader (one per directory).
    pub fn file_watch_count(&self) -> usize {
        self.files.as_ref().map_or(0, |f| f.watch_count())
    }

    /// Links, addresses and routes as the kernel has them now.
    pub fn network(&self) -> Option<&NetworkState> {
        self.network.as_ref().map(|n| n.state())
    }

    /// The netlink event socket's receive buffer: asked, granted, forced or not.
    pub fn network_receive_buffer(&self) -> Option<ReceiveBuffer> {
        self.network.as_ref().map(|n| n.receive_buffer())
    }

    /// Dump and decode statistics of the network reader.
    pub fn network_stats(&self) -> Option<NetStats> {
        self.network.as_ref().map(|n| n.stats())
    }

    /// The last state read of every watched cgroup (removed ones are dropped).
    pub fn cgroups(&self) -> BTreeMap<PathBuf, CgroupState> {
        self.cgroups
            .as_ref()
            .map(|c| c.states())
            .unwrap_or_default()
    }

    /// Children of a parent given to [`KernelEventsBuilder::cgroup_children`] (resolved path).
    pub fn cgroup_children(&self, parent: &Path) -> Option<&BTreeSet<PathBuf>> {
        self.cgroups.as_ref().and_then(|c| c.children(parent))
    }

    /// Whether pressure comes from a kernel trigger or from polling.
    pub fn pressure_mode(&self) -> Option<&PressureMode> {
        self.pressure.as_ref().map(|p| p.mode())
    }

    /// Every file descriptor the readers hold (for checks such as "all are non-blocking").
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = Vec::new();
        if let Some(f) = &self.files {
            fds.push(f.raw_fd());
        }
        if let Some(n) = &self.network {
            fds.extend(n.fds().iter().map(|fd| fd.as_raw_fd()));
        }
        if let Some(c) = &self.cgroups {
            fds.extend(c.raw_fds());
        }
        if let Some(p) = &self.pressure {
            fds.extend(p.raw_fd());
        }
        fds
    }
}
