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

mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::model::{Batch, Change, EventKind, ResyncReason};

pub use crate::model::{FileEvent, FileKind, Identity};

/// What to watch at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// One file (or whatever the path resolves to, through symlinks).
    File,
    /// A directory and everything below it, new subdirectories included. Symlinks inside the
    /// tree are reported as symlinks, not followed; the root is followed (a symlink to a
    /// directory is watched as that tree, and again when it is re-pointed). While the path is
    /// not a directory (missing, or a file) it is watched as a single file; the choice is made
    /// afresh whenever the path appears or changes type, so a missing path that appears as a
    /// directory is watched as a tree from then on, as if it had existed at start.
    Tree,
}

/// How a spec is watched right now: a `WatchKind::Tree` takes either shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    File,
    Tree,
}

/// What to do when a path to watch does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingPath {
    /// Watch the nearest existing ancestor and report `Added` when the path appears.
    #[default]
    WatchAncestor,
    /// Fail [`crate::KernelEventsBuilder::build`] with [`Error::PathNotFound`].
    Error,
}

/// Tuning of the file reader.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Quiet time after the last inotify event before paths are re-read (default 50 ms).
    pub debounce: Duration,
    /// Longest time a change may wait while events keep coming (default 500 ms).
    pub max_delay: Duration,
    /// Also hash regular files (FNV-1a 64; change detection, not integrity). Default off.
    pub hash_contents: bool,
    /// Files larger than this are not hashed (default 1 MiB).
    pub hash_limit: u64,
    /// What to do about paths that do not exist.
    pub missing: MissingPath,
    /// Rescan period for paths whose watches could not be added (ENOSPC), default 2 s.
    pub degraded_poll: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            hash_contents: false,
            hash_limit: 1 << 20,
            missing: MissingPath::WatchAncestor,
            degraded_poll: Duration::from_secs(2),
        }
    }
}

/// One configured path.
#[derive(Debug)]
struct Spec {
    path: PathBuf,
    kind: WatchKind,
    /// The shape in force (set by every `plan_and_scan`).
    shape: Shape,
    /// Directories this spec needs watched right now.
    dirs: BTreeSet<PathBuf>,
    /// Whether the path itself is missing and we watch an ancestor for it.
    waiting_for: bool,
    degraded: bool,
}

/// The outcome of planning one spec: its shape, the directories watched for it, and where it
/// waits for a missing path.
struct Plan {
    shape: Shape,
    dirs: BTreeSet<PathBuf>,
    exists: bool,
    /// The nearest existing ancestor watched because the path (or its parent) is missing.
    waiting_at: Option<PathBuf>,
    /// An ENOSPC while adding a watch: the spec degrades to polling.
    error: Option<io::Error>,
}

/// What one wait of the file reader brought: the inotify events read.
pub(crate) struct FilesWake(Vec<RawEvent>);

/// One inotify event, copied out of the read buffer.
struct RawEvent {
    wd: i32,
    mask: EventMask,
    name: Option<OsString>,
}

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::EXCL_UNLINK);

/// Shortest rescan period of a degraded path: every poll rescans it whole.
const MIN_DEGRADED_POLL: Duration = Duration::from_millis(100);

/// inotify read buffer: room for ~250 events with short names per read(2).
const READ_BUFFER: usize = 16 * 1024;

/// read(2)s of the inotify fd per wake-up (up to 1 MiB of events).
const READS_PER_WAKE: usize = 64;

pub(crate) struct FileReader {
    inotify: AsyncFd<Inotify>,
    buf: Vec<u8>,
    opts: FileOptions,
    specs: Vec<Spec>,
    by_wd: HashMap<i32, (WatchDescriptor, PathBuf)>,
    by_dir: HashMap<PathBuf, i32>,
    /// Watches we removed whose IN_IGNORED has not arrived yet: their events are stale, not unknown.
    retired: HashSet<i32>,
    model: BTreeMap<PathBuf, Identity>,
    dirty_paths: BTreeSet<PathBuf>,
    dirty_specs: BTreeSet<usize>,
    first_pending: Option<Instant>,
    last_pending: Option<Instant>,
    resync: Option<ResyncReason>,
    next_poll: Option<Instant>,
    /// Watches that failed while building: reported by the first `step`.
    startup_degraded: Vec<(usize, io::Error)>,
}

impl FileReader {
    pub(crate) fn new(paths: Vec<(PathBuf, WatchKind)>, opts: FileOptions) -> Result<Self> {
        if opts.max_delay < opts.debounce {
            return Err(Error::InvalidOption(
                "file max_delay must be at least the debounce window".into(),
            ));
        }
        if opts.degraded_poll < MIN_DEGRADED_POLL {
            return Err(Error::InvalidOption(format!(
                "file degraded_poll must be at least {MIN_DEGRADED_POLL:?} (each poll rescans)"
            )));
        }
        let mut specs = Vec::new();
        for (path, kind) in paths {
            let path = absolute(&path)?;
            if opts.missing == MissingPath::Error && !path.exists() {
                return Err(Error::PathNotFound(path));
            }
            specs.push(Spec {
                path,
                kind,
                shape: Shape::File, // set by the first plan
                dirs: BTreeSet::new(),
                waiting_for: false,
                degraded: false,
            });
        }
        let inotify = Inotify::init().map_err(|e| Error::inotify_init("file", e))?;
        let inotify = crate::sys::register(inotify, tokio::io::Interest::READABLE)
            .map_err(|e| Error::io("register inotify fd", e))?;
        let mut reader = FileReader {
            inotify,
            buf: vec![0; READ_BUFFER],
            opts,
            specs,
            by_wd: HashMap::new(),
            by_dir: HashMap::new(),
            retired: HashSet::new(),
            model: BTreeMap::new(),
            dirty_paths: BTreeSet::new(),
            dirty_specs: BTreeSet::new(),
            first_pending: None,
            last_pending: None,
            resync: None,
            next_poll: None,
            startup_degraded: Vec::new(),
        };
        // Initial state: watches first, then the scan, silently (it is the model's start).
        let mut degraded = Vec::new();
        reader.model = reader.rescan_all(&mut degraded);
        reader.startup_degraded = degraded;
        Ok(reader)
    }

    /// The current state: every watched path (and tree entry) that exists, with its identity.
    pub(crate) fn model(&self) -> &BTreeMap<PathBuf, Identity> {
        &self.model
    }

    /// Degraded (polled) paths, as given.
    pub(crate) fn degraded(&self) -> Vec<PathBuf> {
        self.specs
            .iter()
            .filter(|s| s.degraded)
            .map(|s| s.path.clone())
            .collect()
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.inotify.get_ref().as_raw_fd()
    }

    /// Number of directories watched right now (one inotify watch each).
    pub(crate) fn watch_count(&self) -> usize {
        self.by_wd.len()
    }

    fn deadline(&self) -> Option<Instant> {
        let flush = match (self.first_pending, self.last_pending) {
            (Some(first), Some(last)) => {
                Some((last + self.opts.debounce).min(first + self.opts.max_delay))
            }
            _ => None,
        };
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
        let mut raw = Vec::new();
        tokio::select! {
            guard = self.inotify.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("wait for inotify", e))?;
                let buf = &mut self.buf;
                // Bounded, so a storm cannot hold the runtime's thread; readiness is cleared
                // only by EAGAIN, so a wait after an early stop returns at once.
                for _ in 0..READS_PER_WAKE {
                    match guard.try_io(|fd| {
                        let events = fd.get_mut().read_events(buf)?;
                        raw.extend(events.map(|e| RawEvent {
                            wd: e.wd.get_watch_descriptor_id(),
                            mask: e.mask,
                            name: e.name.map(|n| n.to_os_string()),
                        }));
                        Ok(())
                    }) {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => return Err(Error::io("read inotify events", e)),
                        Err(_would_block) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {}
        }
        Ok(FilesWake(raw))
    }

    /// Does all the work that is due after a wake-up.
    pub(crate) fn handle(&mut self, wake: FilesWake, out: &mut Batch) {
        if !self.startup_degraded.is_empty() {
            let degraded = std::mem::take(&mut self.startup_degraded);
            self.emit_degraded(degraded, out);
            self.schedule_poll();
        }
        let now = Instant::now();
        if !wake.0.is_empty() {
            self.absorb(wake.0, now);
        }
        if let Some(reason) = self.resync.take() {
            self.full_resync(reason, out);
            return;
        }
        let flush_due = match (self.first_pending, self.last_pending) {
            (Some(first), Some(last)) => {
                now >= last + self.opts.debounce || now >= first + self.opts.max_delay
            }
            _ => false,
        };
        if flush_due {
            self.flush(out);
        }
        if self.next_poll.is_some_and(|t| now >= t) {
            self.poll_degraded(out);
        }
    }

    /// Turns raw events into dirty paths and specs (or a pending resync).
    fn absorb(&mut self, raw: Vec<RawEvent>, now: Instant) {
        for ev in raw {
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                self.resync.get_or_insert(ResyncReason::QueueOverflow);
                continue;
            }
            let Some((_, dir)) = self.by_wd.get(&ev.wd) else {
                if ev.mask.contains(EventMask::IGNORED) {
                    self.retired.remove(&ev.wd);
                } else if !self.retired.contains(&ev.wd) {
                    self.resync.get_or_insert(ResyncReason::UnknownWatch);
                }
                continue;
            };
            let dir = dir.clone();
            if ev.mask.contains(EventMask::IGNORED) {
                // The kernel dropped the watch: the directory is gone (or unmounted).
                self.by_wd.remove(&ev.wd);
                self.by_dir.remove(&dir);
            }
            let self_gone = ev
                .mask
                .intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF);
            for (i, spec) in self.specs.iter_mut().enumerate() {
                if !spec.dirs.contains(&dir) {
                    continue;
                }
                match spec.shape {
                    Shape::File => {
                        self.dirty_specs.insert(i);
                    }
                    Shape::Tree if spec.waiting_for || !dir.starts_with(&spec.path) => {
                        self.dirty_specs.insert(i);
                    }
                    Shape::Tree => {
                        if self_gone && dir == spec.path {
                            self.resync.get_or_insert(ResyncReason::RootLost);
                        } else if self_gone {
                            spec.dirs.remove(&dir);
                            self.dirty_paths.insert(dir.clone());
                        } else {
                            let path = match &ev.name {
                                Some(name) => dir.join(name),
                                None => dir.clone(),
                            };
                            self.dirty_paths.insert(path);
                        }
                    }
                }
            }
            self.first_pending.get_or_insert(now);
            self.last_pending = Some(now);
        }
    }

    /// Re-reads every dirty path and spec and emits the differences.
    fn flush(&mut self, out: &mut Batch) {
        self.first_pending = None;
        self.last_pending = None;
        let mut degraded = Vec::new();
        let mut fresh = BTreeMap::new();
        let mut scopes: Vec<(PathBuf, bool)> = Vec::new();
        for i in std::mem::take(&mut self.dirty_specs) {
            let spec_path = self.specs[i].path.clone();
            self.plan_and_scan(i, &mut fresh, &mut degraded);
            scopes.push((spec_path, true));
        }
        // Paths inside a spec that was re-read whole are covered already. (Only the few spec
        // scopes are checked, so a burst of thousands of paths stays linear.)
        let spec_scopes = scopes.len();
        for path in std::mem::take(&mut self.dirty_paths) {
            if scopes[..spec_scopes]
                .iter()
                .any(|(s, _)| path.starts_with(s))
            {
                continue;
            }
            let Some(i) = self.tree_spec_of(&path) else {
                continue;
            };
            let recursive = self.scan_tree_path(i, &path, &mut fresh, &mut degraded);
            scopes.push((path, recursive));
        }
        self.collect_unused_watches();
        let old = self.take_scoped(&scopes);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model.extend(fresh);
        self.schedule_poll();
    }

    /// Removes and returns the model entries in the given scopes (recursive or the path alone).
    fn take_scoped(&mut self, scopes: &[(PathBuf, bool)]) -> BTreeMap<PathBuf, Identity> {
        let mut old = BTreeMap::new();
        for (scope, recursive) in scopes {
            let keys: Vec<PathBuf> = if *recursive {
                self.model
                    .range(scope.clone()..)
                    .take_while(|(k, _)| k.starts_with(scope))
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                self.model
                    .get_key_value(scope)
                    .map(|(k, _)| k.clone())
                    .into_iter()
                    .collect()
            };
            for k in keys {
                if let Some(v) = self.model.remove(&k) {
                    old.insert(k, v);
                }
            }
        }
        old
    }

    fn tree_spec_of(&self, path: &Path) -> Option<usize> {
        self.specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.shape == Shape::Tree && !s.waiting_for && path.starts_with(&s.path))
            .max_by_key(|(_, s)| s.path.components().count())
            .map(|(i, _)| i)
    }

    /// Re-reads one path inside a tree. A directory that is new (or a new inode) is watched and
    /// walked; a known one is only re-`stat`ed, since its contents have their own watch. Returns
    /// whether the scope is recursive.
    fn scan_tree_path(
        &mut self,
        spec: usize,
        path: &Path,
        fresh: &mut BTreeMap<PathBuf, Identity>,
        degraded: &mut Vec<(usize, io::Error)>,
    ) -> bool {
        // Inside a tree symlinks are entries; only the root is followed (it is the tree).
        let is_root = path == self.specs[spec].path;
        let id = match is_root {
            true => scan::identity(path, &self.opts),
            false => scan::identity_nofollow(path, &self.opts),
        };
        let Some(id) = id else {
            return true; // gone: everything below it is gone too
        };
        let known_dir = id.kind == FileKind::Directory
            && self.by_dir.contains_key(path)
            && self
                .model
                .get(path)
                .is_some_and(|old| old.dev == id.dev && old.ino == id.ino);
        if id.kind != FileKind::Directory || known_dir {
            fresh.insert(path.to_path_buf(), id);
            return false;
        }
        let mut dirs = BTreeSet::new();
        let result = self.walk_tree(path, is_root, &mut dirs, fresh);
        self.specs[spec].dirs.extend(dirs);
        if let Err(e) = result {
            degraded.push((spec, e));
        }
        true
    }

    /// Watches then reads a directory tree; fills `dirs` with the directories now watched.
    /// With `follow_root`, `root` is followed if it is a symlink (it is a spec's root); every
    /// other symlink is an entry, never followed, watched or walked.
    fn walk_tree(
        &mut self,
        root: &Path,
        follow_root: bool,
        dirs: &mut BTreeSet<PathBuf>,
        entries: &mut BTreeMap<PathBuf, Identity>,
    ) -> io::Result<()> {
        let mut stack = vec![root.to_path_buf()];
        let mut first_error = None;
        while let Some(dir) = stack.pop() {
            let follow = follow_root && dir == root;
            match self.add_watch(&dir, follow) {
                Ok(()) => {
                    dirs.insert(dir.clone());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {} // vanished or not a directory any more: the walk below decides
            }
            let id = match follow {
                true => scan::identity(&dir, &self.opts),
                false => scan::identity_nofollow(&dir, &self.opts),
            };
            let Some(id) = id else {
                continue;
            };
            let is_dir = id.kind == FileKind::Directory;
            entries.insert(dir.clone(), id);
            if !is_dir {
                continue;
            }
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in read.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(path),
                    Ok(_) => {
                        if let Some(id) = scan::identity_nofollow(&path, &self.opts) {
                            entries.insert(path, id);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Watches `dir`. Without `follow`, a symlink is refused (ENOTDIR) rather than followed:
    /// a link inside a tree must not bring its target into the tree.
    fn add_watch(&mut self, dir: &Path, follow: bool) -> io::Result<()> {
        let mask = match follow {
            true => DIR_MASK,
            false => DIR_MASK | WatchMask::DONT_FOLLOW,
        };
        let wd = self.inotify.get_ref().watches().add(dir, mask)?;
        let id = wd.get_watch_descriptor_id();
        self.retired.remove(&id);
        if let Some(old) = self.by_dir.insert(dir.to_path_buf(), id) {
            if old != id {
                // The path leads to another directory now (a symlinked root re-pointed, a
                // directory renamed over): the old one's watch goes, its late events with it.
                if let Some((old_wd, _)) = self.by_wd.remove(&old) {
                    self.retired.insert(old);
                    let _ = self.inotify.get_ref().watches().remove(old_wd);
                }
            }
        }
        self.by_wd.insert(id, (wd, dir.to_path_buf()));
        Ok(())
    }

    /// Works out which directories spec `i` needs, watches them, and reads its entries.
    ///
    /// A missing path is waited for through a watch on its nearest existing ancestor. If a
    /// deeper directory on the way appeared between finding that ancestor and watching it, its
    /// creation went to no watch of ours, so the plan is made again until it holds after the
    /// watches are in place (one more level per round). A path that keeps changing faster than
    /// that is planned again after the debounce window.
    fn plan_and_scan(
        &mut self,
        i: usize,
        entries: &mut BTreeMap<PathBuf, Identity>,
        degraded: &mut Vec<(usize, io::Error)>,
    ) {
        const MAX_ROUNDS: usize = 64;
        let path = self.specs[i].path.clone();
        let mut round = 0;
        let plan = loop {
            round += 1;
            let mut scanned = BTreeMap::new();
            let plan = self.plan_once(i, &mut scanned);
            let settled = match &plan.waiting_at {
                None => true,
                Some(ancestor) => {
                    exists_as(&path, plan.shape) == plan.exists
                        && scan::nearest_existing_ancestor(&path).as_ref() == Some(ancestor)
                }
            };
            if settled || round == MAX_ROUNDS {
                if !settled {
                    let now = Instant::now();
                    self.dirty_specs.insert(i);
                    self.first_pending.get_or_insert(now);
                    self.last_pending = Some(now);
                }
                entries.extend(scanned);
                break plan;
            }
        };
        let spec = &mut self.specs[i];
        spec.shape = plan.shape;
        spec.dirs = plan.dirs;
        spec.waiting_for = plan.waiting_at.is_some() || !plan.exists;
        if let Some(e) = plan.error {
            degraded.push((i, e));
        } else if spec.degraded {
            degraded.push((i, io::Error::from_raw_os_error(0)));
        }
    }

    /// One planning round of spec `i`: watches first, then reads (so nothing created in a
    /// directory between the two is missed).
    fn plan_once(&mut self, i: usize, entries: &mut BTreeMap<PathBuf, Identity>) -> Plan {
        let path = self.specs[i].path.clone();
        let shape = match self.specs[i].kind {
            WatchKind::Tree if is_directory(&path) => Shape::Tree,
            WatchKind::Tree | WatchKind::File => Shape::File,
        };
        let mut dirs = BTreeSet::new();
        let mut error = None;
        let exists = match shape {
            Shape::File => {
                self.watch_dependency_dirs(&path, &mut dirs, &mut error);
                match scan::identity(&path, &self.opts) {
                    Some(id) => {
                        entries.insert(path.clone(), id);
                        true
                    }
                    None => false,
                }
            }
            Shape::Tree => {
                // A root reached through a symlink can be re-pointed (a versioned deploy):
                // the directories of its link chain are watched too, and any change there
                // re-reads the tree.
                if is_symlink(&path) {
                    self.watch_dependency_dirs(&path, &mut dirs, &mut error);
                }
                if let Err(e) = self.walk_tree(&path, true, &mut dirs, entries) {
                    error = Some(e);
                }
                true
            }
        };
        // The parent is watched too when the path is missing; keep climbing to an ancestor that
        // exists, so the path's appearance is noticed at any depth.
        let mut waiting_at = None;
        if !exists || (shape == Shape::File && dirs.is_empty()) {
            if let Some(ancestor) = scan::nearest_existing_ancestor(&path) {
                match self.add_watch(&ancestor, true) {
                    Ok(()) => {
                        dirs.insert(ancestor.clone());
                    }
                    // Gone again already: the next round finds the new nearest ancestor.
                    Err(e) if e.raw_os_error() != Some(libc::ENOSPC) => {}
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
                waiting_at = Some(ancestor);
            }
        }
        Plan {
            shape,
            dirs,
            exists,
            waiting_at,
            error,
        }
    }

    /// Watches the directories that decide what `path` resolves to (its parent, and the parent
    /// of every symlink on the way); an ENOSPC is kept in `error` (the spec degrades).
    fn watch_dependency_dirs(
        &mut self,
        path: &Path,
        dirs: &mut BTreeSet<PathBuf>,
        error: &mut Option<io::Error>,
    ) {
        for dir in scan::dependency_dirs(path) {
            match self.add_watch(&dir, true) {
                Ok(()) => {
                    dirs.insert(dir);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    error.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
    }

    /// Drops watches no spec needs any more (e.g. a symlink now points elsewhere).
    fn collect_unused_watches(&mut self) {
        let needed: HashSet<&PathBuf> = self.specs.iter().flat_map(|s| s.dirs.iter()).collect();
        let unused: Vec<PathBuf> = self
            .by_dir
            .keys()
            .filter(|d| !needed.contains(d))
            .cloned()
            .collect();
        for dir in unused {
            if let Some(id) = self.by_dir.remove(&dir) {
                if let Some((wd, _)) = self.by_wd.remove(&id) {
                    // The kernel still sends IN_IGNORED (and maybe queued events) for it.
                    self.retired.insert(id);
                    let _ = self.inotify.get_ref().watches().remove(wd);
                }
            }
        }
    }

    /// Re-adds every watch, then rescans everything; returns the fresh state.
    fn rescan_all(
        &mut self,
        degraded: &mut Vec<(usize, io::Error)>,
    ) -> BTreeMap<PathBuf, Identity> {
        let mut fresh = BTreeMap::new();
        for i in 0..self.specs.len() {
            self.plan_and_scan(i, &mut fresh, degraded);
        }
        self.collect_unused_watches();
        fresh
    }

    fn full_resync(&mut self, reason: ResyncReason, out: &mut Batch) {
        out.resync(reason);
        if reason == ResyncReason::QueueOverflow {
            out.overflowed();
        }
        self.dirty_paths.clear();
        self.dirty_specs.clear();
        self.first_pending = None;
        self.last_pending = None;
        let mut degraded = Vec::new();
        let fresh = self.rescan_all(&mut degraded);
        let old = std::mem::take(&mut self.model);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model = fresh;
        self.schedule_poll();
        out.resync_done();
    }

    /// Reports specs entering or leaving the degraded (polled) state.
    fn emit_degraded(&mut self, results: Vec<(usize, io::Error)>, out: &mut Batch) {
        for (i, e) in results {
            let spec = &mut self.specs[i];
            let failed = e.raw_os_error() != Some(0);
            if failed && !spec.degraded {
                spec.degraded = true;
                out.push(EventKind::File(FileEvent::Degraded {
                    path: spec.path.clone(),
                    reason: format!(
                        "cannot add inotify watch ({e}); rescanning every {:?} instead",
                        self.opts.degraded_poll
                    ),
                }));
            } else if !failed && spec.degraded {
                spec.degraded = false;
                out.push(EventKind::File(FileEvent::Restored {
                    path: spec.path.clone(),
                }));
            }
        }
    }

    fn schedule_poll(&mut self) {
        self.next_poll = self
            .specs
            .iter()
            .any(|s| s.degraded)
            .then(|| Instant::now() + self.opts.degraded_poll);
    }

    /// The fallback for degraded specs: try to watch again, and rescan them either way.
    fn poll_degraded(&mut self, out: &mut Batch) {
        let mut fresh = BTreeMap::new();
        let mut degraded = Vec::new();
        let mut scopes = Vec::new();
        for i in 0..self.specs.len() {
            if self.specs[i].degraded {
                self.plan_and_scan(i, &mut fresh, &mut degraded);
                scopes.push((self.specs[i].path.clone(), true));
            }
        }
        // Watches the new plans no longer need (e.g. the ancestor of a path that appeared)
        // would otherwise stay until the next flush, while watches are what is short.
        self.collect_unused_watches();
        let old = self.take_scoped(&scopes);
        self.emit_degraded(degraded, out);
        emit_diff(&old, &fresh, out);
        self.model.extend(fresh);
        self.schedule_poll();
    }
}

/// Emits Added/Changed/Removed for the difference between two states, in path order.
fn emit_diff(
    old: &BTreeMap<PathBuf, Identity>,
    fresh: &BTreeMap<PathBuf, Identity>,
    out: &mut Batch,
) {
    let paths: BTreeSet<&PathBuf> = old.keys().chain(fresh.keys()).collect();
    for path in paths {
        let change = match (old.get(path), fresh.get(path)) {
            (None, Some(_)) => Change::Added,
            (Some(_), None) => Change::Removed,
            (Some(a), Some(b)) if a != b => Change::Changed,
            _ => continue,
        };
        out.push(EventKind::File(FileEvent::Entry {
            change,
            path: path.clone(),
            identity: fresh.get(path).cloned(),
        }));
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolve watched path {:?}", path.display()), e))?;
    // Lexical clean-up only: symlinks in the path are part of what is watched.
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    Ok(clean)
}

/// Whether `path` exists the way a spec of this shape reads it (through symlinks: a tree is
/// what its root leads to).
fn exists_as(path: &Path, shape: Shape) -> bool {
    match shape {
        Shape::File => std::fs::metadata(path).is_ok(),
        Shape::Tree => is_directory(path),
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether `path` is a directory, following symlinks (a link to a directory is watched as the
/// tree it points to).
fn is_directory(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
