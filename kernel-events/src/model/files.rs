//! What the file source reports: a watched path's identity and how it changed.

use std::fmt;
use std::path::PathBuf;

use super::change::Change;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (inside a watched tree; single files are followed through links).
    Symlink,
    /// A device, socket or fifo.
    Other,
}

/// The content identity of a path: a change in any field is a change of the path.
///
/// For directories `size` and `mtime_ns` are zero: a directory's own mtime changes with every
/// entry created in it, and those entries are reported themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Identity {
    /// What the path is.
    pub kind: FileKind,
    /// Device number of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// FNV-1a 64 of the contents, when hashing is on and the file is small enough.
    pub hash: Option<u64>,
}

/// A change to a watched path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum FileEvent {
    /// A path appeared, changed identity, or went away.
    Entry {
        /// Added, changed or removed.
        change: Change,
        /// The path (as given for single files; inside the tree for trees).
        path: PathBuf,
        /// The new identity; `None` for `Removed`.
        identity: Option<Identity>,
    },
    /// A watch could not be added (inotify watch limit, ENOSPC): the path is polled instead.
    Degraded {
        /// The watched path (as given).
        path: PathBuf,
        /// What failed, and the polling period.
        reason: String,
    },
    /// The watches of a degraded path could be added again; polling stopped.
    Restored {
        /// The watched path (as given).
        path: PathBuf,
    },
}

/// `CHANGED /etc/app/cert.pem kind=File dev=65024 ino=10010642 size=2 mtime_ns=...`, and for
/// a path gone `REMOVED /etc/app/cert.pem`; `DEGRADED path (reason)`, `RESTORED path`.
impl fmt::Display for FileEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileEvent::Entry {
                change,
                path,
                identity,
            } => {
                let word = match change {
                    Change::Added => "CREATED",
                    Change::Changed => "CHANGED",
                    Change::Removed => "REMOVED",
                };
                write!(f, "{word} {}", path.display())?;
                if let Some(id) = identity {
                    write!(
                        f,
                        " kind={:?} dev={} ino={} size={} mtime_ns={}",
                        id.kind, id.dev, id.ino, id.size, id.mtime_ns
                    )?;
                    if let Some(h) = id.hash {
                        write!(f, " fnv64={h:016x}")?;
                    }
                }
                Ok(())
            }
            FileEvent::Degraded { path, reason } => {
                write!(f, "DEGRADED {} ({reason})", path.display())
            }
            FileEvent::Restored { path } => write!(f, "RESTORED {}", path.display()),
        }
    }
}
