//! Fresh reads of the file system: content identity, symlink chains, ancestors.

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::FileOptions;
use crate::model::{FileKind, Identity};

/// Identity of `path`, following symlinks (single watched files).
pub(crate) fn identity(path: &Path, opts: &FileOptions) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok()?;
    Some(from_meta(path, &meta, opts))
}

/// Identity of `path` itself (tree entries: links are entries, not followed).
pub(crate) fn identity_nofollow(path: &Path, opts: &FileOptions) -> Option<Identity> {
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
pub(crate) fn dependency_dirs(path: &Path) -> BTreeSet<PathBuf> {
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
pub(crate) fn nearest_existing_ancestor(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            return std::fs::canonicalize(d).ok();
        }
        dir = d.parent();
    }
    None
}
