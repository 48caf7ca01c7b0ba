//! The merged, ordered stream: the top floor. It opens the sources ([`KernelEventsBuilder`]),
//! waits on all of them at once, and numbers what they produce ([`emitter`]).

mod builder;
mod emitter;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupReader, CgroupState};
use crate::error::Result;
use crate::files::{FileReader, FilesWake, Identity};
use crate::model::{Batch, Counters, Event, Source};
use crate::net::{NetReader, NetStats, NetWake, NetworkState, ReceiveBuffer};
use crate::pressure::{PressureMode, PressureReader};

pub use builder::KernelEventsBuilder;
use builder::Readers;
use emitter::Emitter;

/// Which reader woke up, with what its wait read.
enum Woke {
    Files(FilesWake),
    Network(NetWake),
    Cgroups,
    Pressure(bool),
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
    emitter: Emitter,
}

impl KernelEventsBuilder {
    /// Opens every configured reader and reads the initial state (the network dump runs here,
    /// after subscribing, so nothing falls between the two). Must run inside a tokio runtime
    /// with IO and time enabled.
    pub async fn build(self) -> Result<KernelEvents> {
        let Readers {
            files,
            network,
            cgroups,
            pressure,
        } = self.open().await?;
        Ok(KernelEvents {
            files,
            network,
            cgroups,
            pressure,
            emitter: Emitter::new(),
        })
    }
}

impl std::fmt::Debug for KernelEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEvents")
            .field("files", &self.files.is_some())
            .field("network", &self.network.is_some())
            .field("cgroups", &self.cgroups.is_some())
            .field("pressure", &self.pressure.is_some())
            .field("next_seq", &self.emitter.next_seq())
            .field("queued", &self.emitter.queued())
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
            if let Some(event) = self.emitter.pop() {
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
            self.handle(woke)?;
        }
    }

    /// Lets the reader that woke do its work, and appends what it produced to the stream.
    /// What a failing reader produced before it failed is kept.
    fn handle(&mut self, woke: Woke) -> Result<()> {
        let (batch, result) = match woke {
            Woke::Files(w) => {
                let mut batch = Batch::new(Source::Files);
                if let Some(f) = &mut self.files {
                    f.handle(w, &mut batch);
                }
                (batch, Ok(()))
            }
            Woke::Network(w) => {
                let mut batch = Batch::new(Source::Network);
                let result = self
                    .network
                    .as_mut()
                    .map_or(Ok(()), |n| n.handle(w, &mut batch));
                (batch, result)
            }
            Woke::Cgroups => {
                let mut batch = Batch::new(Source::Cgroup);
                let result = self
                    .cgroups
                    .as_mut()
                    .map_or(Ok(()), |c| c.handle(&mut batch));
                (batch, result)
            }
            Woke::Pressure(fired) => {
                let mut batch = Batch::new(Source::Pressure);
                let result =
                    (self.pressure.as_mut()).map_or(Ok(()), |p| p.handle(fired, &mut batch));
                (batch, result)
            }
        };
        self.emitter.publish(batch);
        result
    }

    /// The next event if one is queued or can be produced without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.emitter.pop()
    }

    /// Whether a source is between `Resync` and `ResyncDone` right now (only the network
    /// recovery spans several waits; the others resync within one step).
    pub fn is_resyncing(&self) -> bool {
        self.network.as_ref().is_some_and(|n| n.is_resyncing())
    }

    /// Counters per source.
    pub fn counters(&self) -> &Counters {
        self.emitter.counters()
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
