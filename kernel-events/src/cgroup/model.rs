//! What the cgroup reader knows: the last state of every watched cgroup, the roles it was
//! given (cgroups watched themselves, parents watched for children), and the configured ones
//! that are gone and waited for. From the roles follows which directories need a watch.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use crate::model::CgroupState;

/// A parent watched for children.
#[derive(Debug, Default)]
pub(super) struct Parent {
    /// Its children's paths now (what `KernelEvents::cgroup_children` shows).
    pub(super) names: BTreeSet<PathBuf>,
    /// Its children now, with their inode numbers (a name listed again with another inode is a
    /// child removed and created again).
    pub(super) children: BTreeMap<PathBuf, u64>,
    /// Whether the parent exists and is watched; a removed one waits in `waiting`.
    pub(super) present: bool,
}

#[derive(Debug, Default)]
pub(super) struct CgroupModel {
    /// The last state read of every watched cgroup (removed ones are dropped).
    pub(super) watched: BTreeMap<PathBuf, CgroupState>,
    /// Cgroups given to `cgroup()`: watched again when they are created again.
    pub(super) explicit: BTreeSet<PathBuf>,
    /// Parents watched for children.
    pub(super) parents: BTreeMap<PathBuf, Parent>,
    /// Configured cgroups (explicit or parents) that are gone, with the ancestor watched for
    /// their return (`None`: to be planned).
    pub(super) waiting: BTreeMap<PathBuf, Option<PathBuf>>,
}

impl CgroupModel {
    /// Whether some role needs a watch on directory `dir`: a present parent watched for
    /// children, the parent directory of a watched cgroup or of a present parent (for their
    /// removal), or the ancestor a gone cgroup is waited for through.
    pub(super) fn needs_watch(&self, dir: &Path) -> bool {
        // Children sort right after their parent: the first one decides.
        let has_watched_child = || {
            self.watched
                .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(dir))
                .any(|(k, _)| k.parent() == Some(dir))
        };
        self.is_present_parent(dir)
            || has_watched_child()
            || (self.parents.iter()).any(|(p, state)| state.present && p.parent() == Some(dir))
            || self.waiting.values().any(|a| a.as_deref() == Some(dir))
    }

    /// Whether `dir` is a parent watched for children that exists now.
    pub(super) fn is_present_parent(&self, dir: &Path) -> bool {
        self.parents.get(dir).is_some_and(|p| p.present)
    }

    /// Every parent watched for children that exists now.
    pub(super) fn present_parents(&self) -> Vec<PathBuf> {
        (self.parents.iter())
            .filter(|(_, p)| p.present)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Whether every role configured for `path` is in place (it is watched if explicit, present
    /// if a parent).
    pub(super) fn is_established(&self, path: &Path) -> bool {
        (!self.explicit.contains(path) || self.watched.contains_key(path))
            && self.parents.get(path).is_none_or(|p| p.present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_needs_a_watch_while_some_role_uses_it() {
        let mut model = CgroupModel::default();
        let cg = Path::new("/cg");
        assert!(!model.needs_watch(cg));
        // The parent directory of a watched cgroup (its removal), not of a grandchild.
        model
            .watched
            .insert("/cg/a/b".into(), CgroupState::default());
        assert!(!model.needs_watch(cg));
        model.watched.insert("/cg/a".into(), CgroupState::default());
        assert!(model.needs_watch(cg));
        model.watched.clear();
        // A parent watched for children, and the directory above it, while it is present.
        let parent = Parent {
            present: true,
            ..Parent::default()
        };
        model.parents.insert("/cg/p".into(), parent);
        assert!(model.needs_watch(Path::new("/cg/p")) && model.needs_watch(cg));
        model.parents.get_mut(Path::new("/cg/p")).unwrap().present = false;
        assert!(!model.needs_watch(Path::new("/cg/p")) && !model.needs_watch(cg));
        // The ancestor a gone cgroup is waited for through.
        model.waiting.insert("/cg/p".into(), Some(cg.to_path_buf()));
        assert!(model.needs_watch(cg));
        assert!(!model.is_established(Path::new("/cg/p")));
    }
}
