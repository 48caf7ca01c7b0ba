//! What to watch: the builder that opens the sources.

use std::path::PathBuf;

use crate::cgroup::CgroupReader;
use crate::error::{Error, Result};
use crate::files::{FileOptions, FileReader, WatchKind};
use crate::net::{NetOptions, NetReader};
use crate::pressure::{PressureOptions, PressureReader};

/// The readers a builder opened.
pub(super) struct Readers {
    pub(super) files: Option<FileReader>,
    pub(super) network: Option<NetReader>,
    pub(super) cgroups: Option<CgroupReader>,
    pub(super) pressure: Option<PressureReader>,
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

    /// Opens every configured reader and reads its initial state (see
    /// [`KernelEventsBuilder::build`]).
    pub(super) async fn open(self) -> Result<Readers> {
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
        Ok(Readers {
            files,
            network,
            cgroups,
            pressure,
        })
    }
}
