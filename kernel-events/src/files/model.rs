//! The file reader's model: the configured paths and how each is watched right now, the
//! identity of every entry, and the hints waiting for the debounce window to be re-read.
//!
//! An inotify event is only a hint about a directory: [`FileModel::hint`] turns it into the
//! paths (inside trees) or whole specs (single files, and trees that wait or follow a symlink)
//! to re-read, or into a resync when a tree's root itself went away.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::options::WatchKind;
use crate::model::{Identity, ResyncReason};

/// How a spec is watched right now: a `WatchKind::Tree` takes either shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    File,
    Tree,
}

/// One configured path.
#[derive(Debug)]
pub(super) struct Spec {
    pub(super) path: PathBuf,
    pub(super) kind: WatchKind,
    /// The shape in force (set by every plan).
    pub(super) shape: Shape,
    /// Directories this spec needs watched right now.
    pub(super) dirs: BTreeSet<PathBuf>,
    /// Whether the path itself is missing and we watch an ancestor for it.
    pub(super) waiting_for: bool,
    /// Whether a watch it needs could not be added (ENOSPC): it is polled.
    pub(super) degraded: bool,
}

impl Spec {
    pub(super) fn new(path: PathBuf, kind: WatchKind) -> Self {
        Spec {
            path,
            kind,
            shape: Shape::File, // set by the first plan
            dirs: BTreeSet::new(),
            waiting_for: false,
            degraded: false,
        }
    }
}

/// Hints waiting to be re-read, and since when: a re-read happens after `debounce` of quiet, or
/// `max_delay` after the first hint if hints keep coming.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Paths inside trees.
    pub(super) paths: BTreeSet<PathBuf>,
    /// Specs to plan and read whole (by index).
    pub(super) specs: BTreeSet<usize>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Pending {
    /// Notes a hint at `now`.
    pub(super) fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// A spec to read whole after the window.
    pub(super) fn spec(&mut self, spec: usize, now: Instant) {
        self.specs.insert(spec);
        self.touch(now);
    }

    /// When the hints are due, if there are any.
    pub(super) fn due_at(&self, debounce: Duration, max_delay: Duration) -> Option<Instant> {
        match (self.first, self.last) {
            (Some(first), Some(last)) => Some((last + debounce).min(first + max_delay)),
            _ => None,
        }
    }

    /// Takes every hint, and starts a new window.
    pub(super) fn take(&mut self) -> (BTreeSet<usize>, BTreeSet<PathBuf>) {
        self.first = None;
        self.last = None;
        (
            std::mem::take(&mut self.specs),
            std::mem::take(&mut self.paths),
        )
    }
}

/// What the file reader knows.
#[derive(Debug, Default)]
pub(super) struct FileModel {
    pub(super) specs: Vec<Spec>,
    /// Every watched path (and tree entry) that exists, with its identity.
    pub(super) entries: BTreeMap<PathBuf, Identity>,
    pub(super) pending: Pending,
    /// Set when the model can no longer be trusted: everything is re-read.
    pub(super) resync: Option<ResyncReason>,
}

impl FileModel {
    /// Something happened in watched directory `dir` (to entry `name`, if given; `self_gone`:
    /// to `dir` itself, removed or moved). Marks what must be re-read.
    pub(super) fn hint(&mut self, dir: &Path, name: Option<&OsStr>, self_gone: bool, now: Instant) {
        for (i, spec) in self.specs.iter_mut().enumerate() {
            if !spec.dirs.contains(dir) {
                continue;
            }
            match spec.shape {
                Shape::File => {
                    self.pending.specs.insert(i);
                }
                Shape::Tree if spec.waiting_for || !dir.starts_with(&spec.path) => {
                    self.pending.specs.insert(i);
                }
                Shape::Tree if self_gone && dir == spec.path => {
                    self.resync.get_or_insert(ResyncReason::RootLost);
                }
                Shape::Tree if self_gone => {
                    spec.dirs.remove(dir);
                    self.pending.paths.insert(dir.to_path_buf());
                }
                Shape::Tree => {
                    let path = match name {
                        Some(name) => dir.join(name),
                        None => dir.to_path_buf(),
                    };
                    self.pending.paths.insert(path);
                }
            }
        }
        self.pending.touch(now);
    }

    /// The innermost tree spec (watched as a tree, not waiting) that `path` lies in.
    pub(super) fn tree_spec_of(&self, path: &Path) -> Option<usize> {
        self.specs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.shape == Shape::Tree && !s.waiting_for && path.starts_with(&s.path))
            .max_by_key(|(_, s)| s.path.components().count())
            .map(|(i, _)| i)
    }

    /// Every directory some spec needs watched.
    pub(super) fn needed_dirs(&self) -> HashSet<&PathBuf> {
        self.specs.iter().flat_map(|s| s.dirs.iter()).collect()
    }

    pub(super) fn any_degraded(&self) -> bool {
        self.specs.iter().any(|s| s.degraded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(path: &str, dirs: &[&str]) -> Spec {
        let mut spec = Spec::new(path.into(), WatchKind::Tree);
        spec.shape = Shape::Tree;
        spec.dirs = dirs.iter().map(PathBuf::from).collect();
        spec
    }

    #[test]
    fn a_hint_in_a_tree_marks_the_entry_and_one_in_a_files_directory_the_whole_spec() {
        let mut file = Spec::new("/etc/app/cert.pem".into(), WatchKind::File);
        file.dirs.insert("/etc/app".into());
        let mut model = FileModel {
            specs: vec![tree("/srv/conf", &["/srv/conf", "/srv/conf/d"]), file],
            ..FileModel::default()
        };
        let now = Instant::now();
        model.hint(Path::new("/srv/conf/d"), Some(OsStr::new("a")), false, now);
        model.hint(Path::new("/etc/app"), Some(OsStr::new("x.tmp")), false, now);
        assert_eq!(
            model.pending.paths,
            BTreeSet::from(["/srv/conf/d/a".into()])
        );
        assert_eq!(model.pending.specs, BTreeSet::from([1]));
        assert_eq!(model.resync, None);
    }

    #[test]
    fn a_subdirectory_gone_is_re_read_and_a_root_gone_is_a_resync() {
        let mut model = FileModel {
            specs: vec![tree("/srv/conf", &["/srv/conf", "/srv/conf/d"])],
            ..FileModel::default()
        };
        let now = Instant::now();
        model.hint(Path::new("/srv/conf/d"), None, true, now);
        assert_eq!(model.pending.paths, BTreeSet::from(["/srv/conf/d".into()]));
        assert!(!model.specs[0].dirs.contains(Path::new("/srv/conf/d")));
        model.hint(Path::new("/srv/conf"), None, true, now);
        assert_eq!(model.resync, Some(ResyncReason::RootLost));
    }

    #[test]
    fn hints_are_due_after_the_quiet_window_or_the_maximum_delay() {
        let (debounce, max_delay) = (Duration::from_millis(50), Duration::from_millis(500));
        let mut pending = Pending::default();
        assert_eq!(pending.due_at(debounce, max_delay), None);
        let start = Instant::now();
        pending.touch(start);
        assert_eq!(pending.due_at(debounce, max_delay), Some(start + debounce));
        // Hints that keep coming push the window, up to the maximum delay after the first.
        pending.touch(start + Duration::from_millis(480));
        assert_eq!(pending.due_at(debounce, max_delay), Some(start + max_delay));
        pending.spec(0, start);
        let (specs, paths) = pending.take();
        assert_eq!((specs.len(), paths.len()), (1, 0));
        assert_eq!(pending.due_at(debounce, max_delay), None);
    }
}
