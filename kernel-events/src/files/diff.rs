//! What changed between the model and a fresh read, as events.
//!
//! A re-read covers scopes (a whole spec, a subtree, or one path); the model's entries in those
//! scopes are taken out and compared with what the read found, so an entry that is gone is
//! reported removed, and nothing outside the scopes is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::model::{Batch, Change, EventKind, FileEvent, Identity};

/// A part of the model a re-read covers: `path`, and everything below it if `recursive`.
pub(super) type Scope = (PathBuf, bool);

/// Removes and returns the entries in `scopes` from `entries`.
pub(super) fn take_scoped(
    entries: &mut BTreeMap<PathBuf, Identity>,
    scopes: &[Scope],
) -> BTreeMap<PathBuf, Identity> {
    let mut old = BTreeMap::new();
    for (scope, recursive) in scopes {
        let keys: Vec<PathBuf> = if *recursive {
            entries
                .range(scope.clone()..)
                .take_while(|(k, _)| k.starts_with(scope))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            entries
                .get_key_value(scope)
                .map(|(k, _)| k.clone())
                .into_iter()
                .collect()
        };
        for k in keys {
            if let Some(v) = entries.remove(&k) {
                old.insert(k, v);
            }
        }
    }
    old
}

/// Emits Added/Changed/Removed for the difference between two states, in path order.
pub(super) fn emit_diff(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileKind, Source};

    fn id(ino: u64) -> Identity {
        Identity {
            kind: FileKind::File,
            dev: 1,
            ino,
            size: 0,
            mtime_ns: 0,
            hash: None,
        }
    }

    fn state(entries: &[(&str, u64)]) -> BTreeMap<PathBuf, Identity> {
        entries
            .iter()
            .map(|(p, ino)| (p.into(), id(*ino)))
            .collect()
    }

    #[test]
    fn a_scope_takes_its_subtree_or_its_path_alone() {
        let mut entries = state(&[
            ("/t", 1),
            ("/t/a", 2),
            ("/t/a/b", 3),
            ("/t/ab", 4),
            ("/u", 5),
        ]);
        let old = take_scoped(&mut entries, &[("/t/a".into(), true), ("/u".into(), false)]);
        assert_eq!(old, state(&[("/t/a", 2), ("/t/a/b", 3), ("/u", 5)]));
        assert_eq!(entries, state(&[("/t", 1), ("/t/ab", 4)]));
    }

    #[test]
    fn the_difference_is_reported_in_path_order_with_the_new_identity() {
        let old = state(&[("/t/a", 1), ("/t/b", 2), ("/t/c", 3)]);
        let fresh = state(&[("/t/b", 2), ("/t/c", 9), ("/t/d", 4)]);
        let mut out = Batch::new(Source::Files);
        emit_diff(&old, &fresh, &mut out);
        let changes: Vec<(Change, String, Option<u64>)> = out
            .events
            .iter()
            .map(|e| match e {
                EventKind::File(FileEvent::Entry {
                    change,
                    path,
                    identity,
                }) => (
                    *change,
                    path.display().to_string(),
                    identity.as_ref().map(|i| i.ino),
                ),
                other => panic!("not a file entry: {other:?}"),
            })
            .collect();
        assert_eq!(
            changes,
            [
                (Change::Removed, "/t/a".to_string(), None),
                (Change::Changed, "/t/c".to_string(), Some(9)),
                (Change::Added, "/t/d".to_string(), Some(4)),
            ]
        );
    }
}
