//! Planning a spec: which directories it needs watched, watched before they are read, so
//! nothing created in a directory between the two is missed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::model::{Shape, Spec};
use super::options::{FileOptions, WatchKind};
use super::scan;
use super::watches::Watches;
use crate::model::{FileKind, Identity};
use crate::sys::is_inotify_watch_limit as is_watch_limit;

/// Rounds of planning while directories on the way keep appearing (one more level per round);
/// a path that keeps changing faster than that is planned again after the debounce window.
const MAX_ROUNDS: usize = 64;

/// The outcome of one planning round.
struct Plan {
    shape: Shape,
    dirs: BTreeSet<PathBuf>,
    exists: bool,
    /// The nearest existing ancestor watched because the path (or its parent) is missing.
    waiting_at: Option<PathBuf>,
    /// An ENOSPC while adding a watch: the spec degrades to polling.
    error: Option<io::Error>,
}

/// How planning a spec went.
pub(super) struct Planned {
    /// Whether the plan held with the watches in place; if not, plan it again later.
    pub(super) settled: bool,
    /// A watch that could not be added for lack of room (the spec degrades).
    pub(super) error: Option<io::Error>,
}

/// Plans and reads specs with the reader's watches.
pub(super) struct Planner<'a> {
    pub(super) watches: &'a mut Watches,
    pub(super) opts: &'a FileOptions,
}

impl Planner<'_> {
    /// Works out which directories `spec` needs, watches them, reads its entries into
    /// `entries`, and records the plan in `spec`.
    ///
    /// A missing path is waited for through a watch on its nearest existing ancestor. If a
    /// deeper directory on the way appeared between finding that ancestor and watching it, its
    /// creation went to no watch of ours, so the plan is made again until it holds after the
    /// watches are in place.
    pub(super) fn plan(
        &mut self,
        spec: &mut Spec,
        entries: &mut BTreeMap<PathBuf, Identity>,
    ) -> Planned {
        let mut round = 0;
        let (plan, settled) = loop {
            round += 1;
            let mut scanned = BTreeMap::new();
            let plan = self.plan_once(spec, &mut scanned);
            let settled = match &plan.waiting_at {
                None => true,
                Some(ancestor) => {
                    scan::exists_as(&spec.path, plan.shape) == plan.exists
                        && scan::nearest_existing_ancestor(&spec.path).as_ref() == Some(ancestor)
                }
            };
            if settled || round == MAX_ROUNDS {
                entries.extend(scanned);
                break (plan, settled);
            }
        };
        spec.shape = plan.shape;
        spec.dirs = plan.dirs;
        spec.waiting_for = plan.waiting_at.is_some() || !plan.exists;
        Planned {
            settled,
            error: plan.error,
        }
    }

    /// One planning round: watches first, then reads.
    fn plan_once(&mut self, spec: &Spec, entries: &mut BTreeMap<PathBuf, Identity>) -> Plan {
        let path = &spec.path;
        let shape = match spec.kind {
            WatchKind::Tree if scan::is_directory(path) => Shape::Tree,
            WatchKind::Tree | WatchKind::File => Shape::File,
        };
        let mut dirs = BTreeSet::new();
        let mut error = None;
        let exists = match shape {
            Shape::File => {
                self.watch_dependency_dirs(path, &mut dirs, &mut error);
                match scan::identity(path, self.opts) {
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
                if scan::is_symlink(path) {
                    self.watch_dependency_dirs(path, &mut dirs, &mut error);
                }
                if let Err(e) = self.walk_tree(path, true, &mut dirs, entries) {
                    error = Some(e);
                }
                true
            }
        };
        // The parent is watched too when the path is missing; keep climbing to an ancestor that
        // exists, so the path's appearance is noticed at any depth.
        let mut waiting_at = None;
        if !exists || (shape == Shape::File && dirs.is_empty()) {
            if let Some(ancestor) = scan::nearest_existing_ancestor(path) {
                match self.watches.add(&ancestor, true) {
                    Ok(()) => {
                        dirs.insert(ancestor.clone());
                    }
                    Err(e) if is_watch_limit(&e) => {
                        error.get_or_insert(e);
                    }
                    // Gone again already: the next round finds the new nearest ancestor.
                    Err(_) => {}
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
            match self.watches.add(&dir, true) {
                Ok(()) => {
                    dirs.insert(dir);
                }
                Err(e) if is_watch_limit(&e) => {
                    error.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
    }

    /// Re-reads one path inside the tree rooted at `root`. A directory that is new (or a new
    /// inode, compared with `known`, its identity in the model) is watched and walked, and its
    /// directories added to `dirs`; a known one is only re-`stat`ed, since its contents have
    /// their own watch. Returns whether the read covered the subtree, and an ENOSPC.
    pub(super) fn rescan_tree_path(
        &mut self,
        root: &Path,
        path: &Path,
        known: Option<&Identity>,
        dirs: &mut BTreeSet<PathBuf>,
        fresh: &mut BTreeMap<PathBuf, Identity>,
    ) -> (bool, io::Result<()>) {
        // Inside a tree symlinks are entries; only the root is followed (it is the tree).
        let is_root = path == root;
        let id = match is_root {
            true => scan::identity(path, self.opts),
            false => scan::identity_nofollow(path, self.opts),
        };
        let Some(id) = id else {
            return (true, Ok(())); // gone: everything below it is gone too
        };
        let known_dir = id.kind == FileKind::Directory
            && self.watches.is_watched(path)
            && known.is_some_and(|old| old.dev == id.dev && old.ino == id.ino);
        if id.kind != FileKind::Directory || known_dir {
            fresh.insert(path.to_path_buf(), id);
            return (false, Ok(()));
        }
        (true, self.walk_tree(path, is_root, dirs, fresh))
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
            match self.watches.add(&dir, follow) {
                Ok(()) => {
                    dirs.insert(dir.clone());
                }
                Err(e) if is_watch_limit(&e) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {} // vanished or not a directory any more: the walk below decides
            }
            let id = match follow {
                true => scan::identity(&dir, self.opts),
                false => scan::identity_nofollow(&dir, self.opts),
            };
            let Some(id) = id else {
                continue;
            };
            let is_dir = id.kind == FileKind::Directory;
            entries.insert(dir.clone(), id);
            if is_dir {
                scan::read_dir_into(&dir, self.opts, &mut stack, entries);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
