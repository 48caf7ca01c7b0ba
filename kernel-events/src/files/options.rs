//! What the file reader is asked to watch, and how.

use std::time::Duration;

use crate::error::{Error, Result};

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

/// Shortest rescan period of a degraded path: every poll rescans it whole.
const MIN_DEGRADED_POLL: Duration = Duration::from_millis(100);

impl FileOptions {
    /// Checks that the options are consistent (what `build` checks before it opens anything).
    pub fn validate(&self) -> Result<()> {
        if self.max_delay < self.debounce {
            return Err(Error::InvalidOption(
                "file max_delay must be at least the debounce window".into(),
            ));
        }
        if self.degraded_poll < MIN_DEGRADED_POLL {
            return Err(Error::InvalidOption(format!(
                "file degraded_poll must be at least {MIN_DEGRADED_POLL:?} (each poll rescans)"
            )));
        }
        Ok(())
    }
}
