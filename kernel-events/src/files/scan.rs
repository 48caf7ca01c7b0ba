//! Fresh reads of the file system: content identity, directory entries, symlink chains,
//! ancestors. Every state the file reader reports comes from here, never from an inotify event.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::model::Shape;
use super::options::FileOptions;
use crate::error::{Error, Result};
use crate::model::{FileKind, Identity};

/// Identity of `path`, following symlinks (single watched files).
pub(super) fn identity(path: &Path, opts: &FileOptions) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok()?;
    Some(from_meta(path, &meta, opts))
}

/// Identity of `path` itself (tree entries: links are entries, not followed).
pub(super) fn identity_nofollow(path: &Path, opts: &FileOptions) -> Option<Identity> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(from_meta(path, &meta, opts))
}

fn from_meta(path: &Path, meta: &Metadata, opts: &FileOptions) -> Identity {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    let (size, mtime_ns) = if kind == FileKind::Directory {
        (0, 0)
    } else {
        (
            meta.size(),
            meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
        )
    };
    let hash = (opts.hash_contents && kind == FileKind::File && meta.size() <= opts.hash_limit)
        .then(|| hash_file(path))
        .flatten();
    Identity {
        kind,
        dev: meta.dev(),
        ino: meta.ino(),
        size,
        mtime_ns,
        hash,
    }
}

/// FNV-1a 64 of a file's contents; `None` if it cannot be read.
fn hash_file(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u8; 8192];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            return Some(hash);
        }
        for b in &buf[..n] {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The directories whose entries decide what `path` resolves to: its parent, and the parent of
/// every symlink target on the way (e.g. certbot's `live/` links into `archive/`). Only
/// directories that exist are returned, canonicalized.
pub(super) fn dependency_dirs(path: &Path) -> BTreeSet<PathBuf> {
    const MAX_HOPS: usize = 40; // the kernel's own symlink limit
    let mut dirs = BTreeSet::new();
    let mut current = path.to_path_buf();
    for _ in 0..MAX_HOPS {
        let Some(parent) = current.parent() else {
            break;
        };
        let Ok(parent) = std::fs::canonicalize(parent) else {
            break;
        };
        let Some(name) = current.file_name() else {
            break;
        };
        dirs.insert(parent.clone());
        let here = parent.join(name);
        match std::fs::read_link(&here) {
            Ok(target) => current = parent.join(target),
            Err(_) => break,
        }
    }
    dirs
}

/// The closest ancestor of `path` that exists as a directory.
pub(super) fn nearest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            return std::fs::canonicalize(d).ok();
        }
        dir = d.parent();
    }
    None
}

/// Reads `dir`'s entries: subdirectories go on `stack` (to be watched before they are read),
/// everything else into `entries` with its own identity (symlinks are not followed).
pub(super) fn read_dir_into(
    dir: &Path,
    opts: &FileOptions,
    stack: &mut Vec<PathBuf>,
    entries: &mut BTreeMap<PathBuf, Identity>,
) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => stack.push(path),
            Ok(_) => {
                if let Some(id) = identity_nofollow(&path, opts) {
                    entries.insert(path, id);
                }
            }
            Err(_) => {}
        }
    }
}

/// `path` made absolute, lexically: symlinks in it are part of what is watched, so they are
/// kept, and `..` removes the component before it.
pub(super) fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolve watched path {:?}", path.display()), e))?;
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
pub(super) fn exists_as(path: &Path, shape: Shape) -> bool {
    match shape {
        Shape::File => std::fs::metadata(path).is_ok(),
        Shape::Tree => is_directory(path),
    }
}

pub(super) fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether `path` is a directory, following symlinks (a link to a directory is watched as the
/// tree it points to).
pub(super) fn is_directory(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}
