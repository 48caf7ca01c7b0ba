//! Files: single files and directory trees watched through inotify.
//!
//! Files are never watched directly: an atomic save (write a temporary file, rename it over the
//! old one), `sed -i`, an editor's backup dance and the Kubernetes ConfigMap swap (`..data`
//! re-pointed to a new directory) all replace the inode, and a watch on the old inode would go
//! quiet. Instead every directory a watched path depends on is watched: its parent, and the parent
//! of every symlink on the way to the final file. Any event in one of those directories is only a
//! hint: after the debounce window the path is `stat`ed afresh and compared with the model, so a
//! burst of renames gives exactly one `Changed` with the new content identity.
//!
//! Trees are watched directory by directory; a new subdirectory is watched before it is read, so
//! nothing created in it can slip between the two. On IN_Q_OVERFLOW, an event for a watch
//! descriptor we do not know, or a lost root, every watch is re-added first, then everything is
//! rescanned, then the difference is emitted between `Resync` and `ResyncDone`.
//!
//! The parts: `watches` (IO: the inotify instance and its watches), `scan` (IO: fresh reads of
//! the file system), `plan` (IO: which directories a spec needs, watched before they are read),
//! `model` (the specs, the entries' identities, the hints waiting for the debounce window) and
//! `diff` (the model against a fresh read, as events). This file drives them.

mod diff;
mod model;
mod options;
mod plan;
mod scan;
mod watches;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use inotify::EventMask;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::model::{Batch, EventKind, ResyncReason};
use diff::{emit_diff, take_scoped, Scope};
use model::{FileModel, Spec};
use plan::Planner;
use watches::{Origin, RawEvent, Watches};

pub use crate::model::{FileEvent, FileKind, Identity};
pub use options::{FileOptions, MissingPath, WatchKind};

/// What one wait of the file reader brought: the inotify events read.
pub(crate) struct FilesWake(Vec<RawEvent>);

/// Specs whose watching failed (`Some`: ENOSPC, they are polled) or works again (`None`).
type DegradedSpecs = Vec<(usize, Option<io::Error>)>;

pub(crate) struct FileReader {
    watches: Watches,
    model: FileModel,
    opts: FileOptions,
    /// When degraded specs are polled next.
    next_poll: Option<Instant>,
    /// Watches that failed while building: reported by the first `handle`.
    startup_degraded: DegradedSpecs,
}

impl FileReader {
    pub(crate) fn new(paths: Vec<(PathBuf, WatchKind)>, opts: FileOptions) -> Result<Self> {
        opts.validate()?;
        let mut specs = Vec::new();
        for (path, kind) in paths {
            let path = scan::absolute(&path)?;
            if opts.missing == MissingPath::Error && !path.exists() {
                return Err(Error::PathNotFound(path));
            }
            specs.push(Spec::new(path, kind));
        }
        let mut reader = FileReader {
            watches: Watches::new()?,
            model: FileModel {
                specs,
                ..FileModel::default()
            },
            opts,
            next_poll: None,
            startup_degraded: Vec::new(),
        };
        // Initial state: watches first, then the scan, silently (it is the model's start).
        let mut degraded = Vec::new();
        reader.model.entries = reader.rescan_all(&mut degraded);
        reader.startup_degraded = degraded;
        Ok(reader)
    }

    /// The current state: every watched path (and tree entry) that exists, with its identity.
    pub(crate) fn model(&self) -> &BTreeMap<PathBuf, Identity> {
        &self.model.entries
    }

    /// Degraded (polled) paths, as given.
    pub(crate) fn degraded(&self) -> Vec<PathBuf> {
        (self.model.specs.iter())
            .filter(|s| s.degraded)
            .map(|s| s.path.clone())
            .collect()
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.watches.raw_fd()
    }

    /// Number of directories watched right now (one inotify watch each).
    pub(crate) fn watch_count(&self) -> usize {
        self.watches.count()
    }

    fn deadline(&self) -> Option<Instant> {
        let flush = (self.model.pending).due_at(self.opts.debounce, self.opts.max_delay);
        match (flush, self.next_poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits for inotify events or a timer; returns the events read (until EAGAIN). Cancel-safe:
    /// nothing changes before the wait completes.
    pub(crate) async fn wait(&mut self) -> Result<FilesWake> {
        if !self.startup_degraded.is_empty() {
            return Ok(FilesWake(Vec::new()));
        }
        let deadline = self.deadline();
        Ok(FilesWake(self.watches.read(deadline).await?))
    }

    /// Does all the work that is due after a wake-up.
    pub(crate) fn handle(&mut self, wake: FilesWake, out: &mut Batch) {
        if !self.startup_degraded.is_empty() {
            let degraded = std::mem::take(&mut self.startup_degraded);
            self.emit_degraded(degraded, out);
            self.schedule_poll();
        }
        let now = Instant::now();
        self.absorb(wake.0, now);
        if let Some(reason) = self.model.resync.take() {
            self.full_resync(reason, out);
            return;
        }
        let due = (self.model.pending).due_at(self.opts.debounce, self.opts.max_delay);
        if due.is_some_and(|t| now >= t) {
            self.flush(out);
        }
        if self.next_poll.is_some_and(|t| now >= t) {
            self.poll_degraded(out);
        }
    }

    /// Turns raw events into hints in the model (or a pending resync).
    fn absorb(&mut self, raw: Vec<RawEvent>, now: Instant) {
        for event in raw {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                self.model.resync.get_or_insert(ResyncReason::QueueOverflow);
                continue;
            }
            match self.watches.origin(&event) {
                Origin::Dir(dir) => {
                    let self_gone = (event.mask).intersects(
                        EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF,
                    );
                    self.model.hint(&dir, event.name.as_deref(), self_gone, now);
                }
                Origin::Retired => {}
                Origin::Unknown => {
                    self.model.resync.get_or_insert(ResyncReason::UnknownWatch);
                }
            }
        }
    }

    /// Re-reads every pending path and spec and emits the differences.
    fn flush(&mut self, out: &mut Batch) {
        let (dirty_specs, dirty_paths) = self.model.pending.take();
        let mut degraded = Vec::new();
        let mut fresh = BTreeMap::new();
        let mut scopes: Vec<Scope> = Vec::new();
        for i in dirty_specs {
            self.plan_and_scan(i, &mut fresh, &mut degraded);
            scopes.push((self.model.specs[i].path.clone(), true));
        }
        // Paths inside a spec that was re-read whole are covered already. (Only the few spec
        // scopes are checked, so a burst of thousands of paths stays linear.)
        let spec_scopes = scopes.len();
        for path in dirty_paths {
            if scopes[..spec_scopes]
                .iter()
                .any(|(s, _)| path.starts_with(s))
            {
                continue;
            }
            let Some(i) = self.model.tree_spec_of(&path) else {
                continue;
            };
            let mut dirs = BTreeSet::new();
            let spec = &self.model.specs[i];
            let known = self.model.entries.get(&path);
            let mut planner = Planner {
                watches: &mut self.watches,
                opts: &self.opts,
            };
            let (recursive, result) =
                planner.rescan_tree_path(&spec.path, &path, known, &mut dirs, &mut fresh);
            self.model.specs[i].dirs.extend(dirs);
            if let Err(e) = result {
                degraded.push((i, Some(e)));
            }
            scopes.push((path, recursive));
        }
        self.watches.retain(&self.model.needed_dirs());
        let old = take_scoped(&mut self.model.entries, &scopes);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model.entries.extend(fresh);
        self.schedule_poll();
    }

    /// Plans and reads spec `i` into `entries`.
    fn plan_and_scan(
        &mut self,
        i: usize,
        entries: &mut BTreeMap<PathBuf, Identity>,
        degraded: &mut DegradedSpecs,
    ) {
        let spec = &mut self.model.specs[i];
        let was_degraded = spec.degraded;
        let mut planner = Planner {
            watches: &mut self.watches,
            opts: &self.opts,
        };
        let planned = planner.plan(spec, entries);
        if !planned.settled {
            self.model.pending.spec(i, Instant::now());
        }
        match planned.error {
            Some(e) => degraded.push((i, Some(e))),
            None if was_degraded => degraded.push((i, None)),
            None => {}
        }
    }

    /// Re-adds every watch, then rescans everything; returns the fresh state.
    fn rescan_all(&mut self, degraded: &mut DegradedSpecs) -> BTreeMap<PathBuf, Identity> {
        let mut fresh = BTreeMap::new();
        for i in 0..self.model.specs.len() {
            self.plan_and_scan(i, &mut fresh, degraded);
        }
        self.watches.retain(&self.model.needed_dirs());
        fresh
    }

    fn full_resync(&mut self, reason: ResyncReason, out: &mut Batch) {
        out.resync(reason);
        if reason == ResyncReason::QueueOverflow {
            out.overflowed();
        }
        let _superseded = self.model.pending.take();
        let mut degraded = Vec::new();
        let fresh = self.rescan_all(&mut degraded);
        let old = std::mem::take(&mut self.model.entries);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model.entries = fresh;
        self.schedule_poll();
        out.resync_done();
    }

    /// Reports specs entering or leaving the degraded (polled) state.
    fn emit_degraded(&mut self, results: DegradedSpecs, out: &mut Batch) {
        for (i, error) in results {
            let spec = &mut self.model.specs[i];
            match error {
                Some(e) if !spec.degraded => {
                    spec.degraded = true;
                    out.push(EventKind::File(FileEvent::Degraded {
                        path: spec.path.clone(),
                        reason: format!(
                            "cannot add inotify watch ({e}); rescanning every {:?} instead",
                            self.opts.degraded_poll
                        ),
                    }));
                }
                None if spec.degraded => {
                    spec.degraded = false;
                    out.push(EventKind::File(FileEvent::Restored {
                        path: spec.path.clone(),
                    }));
                }
                _ => {}
            }
        }
    }

    fn schedule_poll(&mut self) {
        self.next_poll =
            (self.model.any_degraded()).then(|| Instant::now() + self.opts.degraded_poll);
    }

    /// The fallback for degraded specs: try to watch again, and rescan them either way.
    fn poll_degraded(&mut self, out: &mut Batch) {
        let mut fresh = BTreeMap::new();
        let mut degraded = Vec::new();
        let mut scopes = Vec::new();
        for i in 0..self.model.specs.len() {
            if self.model.specs[i].degraded {
                self.plan_and_scan(i, &mut fresh, &mut degraded);
                scopes.push((self.model.specs[i].path.clone(), true));
            }
        }
        // Watches the new plans no longer need (e.g. the ancestor of a path that appeared)
        // would otherwise stay until the next flush, while watches are what is short.
        self.watches.retain(&self.model.needed_dirs());
        let old = take_scoped(&mut self.model.entries, &scopes);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model.entries.extend(fresh);
        self.schedule_poll();
    }
}
