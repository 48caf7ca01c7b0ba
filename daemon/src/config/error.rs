//! A config error: where in the file, and what is wrong.

use std::path::Path;

use super::source::Location;

/// A config that failed to parse or validate: `file:line:column: key: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", .location.as_ref().map_or(String::new(), |at| format!("{at}: ")))]
pub struct ConfigError {
    /// Where the problem is, when it is in the file.
    pub location: Option<Location>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl ConfigError {
    /// An error at a place in the file.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(location),
            message: message.into(),
        }
    }

    /// An error about a whole file (unreadable, empty, ...).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(Location {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                key: None,
            }),
            message: message.into(),
        }
    }
}
