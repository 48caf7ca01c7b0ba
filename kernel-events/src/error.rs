//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::sys::Errno;

/// What went wrong while setting up or running a reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed; `context` says which step.
    #[error("{context}: {source}")]
    Io {
        /// The step that failed, e.g. "open netlink event socket".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A watched path does not exist and the options asked for an error in that case.
    #[error("path does not exist: {0}")]
    PathNotFound(PathBuf),
    /// No cgroup2 file system is mounted (nothing of type cgroup2 in /proc/self/mountinfo).
    #[error("no cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroup2Mount,
    /// A cgroup path was given that is not inside the cgroup2 mount.
    #[error("{path} is not a cgroup: it is outside the cgroup2 mount {mount}")]
    OutsideCgroup2 {
        /// The path as given.
        path: PathBuf,
        /// Where cgroup2 is mounted on this system.
        mount: PathBuf,
    },
    /// A builder option was out of range or inconsistent.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A failed inotify_init1, naming the limit behind the usual cause (EMFILE: the per-user
    /// number of inotify instances).
    pub(crate) fn inotify_init(reader: &str, source: io::Error) -> Self {
        let context = if crate::sys::errno(&source) == Some(Errno::EMFILE) {
            format!(
                "create the {reader} reader's inotify instance (the user's limit, \
                 fs.inotify.max_user_instances, may be reached)"
            )
        } else {
            format!("create the {reader} reader's inotify instance")
        };
        Error::io(context, source)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_inotify_instances_names_the_sysctl() {
        let err = Error::inotify_init("file", io::Error::from(Errno::EMFILE));
        let text = err.to_string();
        assert!(text.contains("fs.inotify.max_user_instances"), "{text}");
        assert!(text.contains("file reader"), "{text}");
        let err = Error::inotify_init("cgroup", io::Error::from(Errno::ENOMEM));
        assert!(!err.to_string().contains("max_user_instances"), "{err}");
    }
}
