//! What the cgroup source reports: a cgroup's state and how it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// A change of a watched cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CgroupEvent {
    /// `populated` in cgroup.events changed: whether any process lives in the cgroup or below.
    Populated {
        /// The cgroup directory.
        path: PathBuf,
        /// The new value.
        populated: bool,
    },
    /// `frozen` in cgroup.events changed.
    Frozen {
        /// The cgroup directory.
        path: PathBuf,
        /// The new value.
        frozen: bool,
    },
    /// Counters in memory.events went up (or were reset).
    Memory {
        /// The cgroup directory.
        path: PathBuf,
        /// How much each counter that moved went up since the last reading (for a reset
        /// counter: its new value, counted from zero).
        deltas: BTreeMap<String, u64>,
        /// Every counter's value now.
        totals: BTreeMap<String, u64>,
        /// Counters found lower than in the last reading: they started again from zero (the
        /// cgroup was created again under the same path). Usually empty.
        resets: BTreeSet<String>,
    },
    /// The cgroup was removed (reported once).
    Removed {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// A cgroup given to `KernelEventsBuilder::cgroup` that was removed exists again
    /// and is watched again; its state follows as changes from a fresh cgroup's.
    Reappeared {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// A child cgroup appeared under a parent watched for children.
    ChildAdded {
        /// The parent.
        parent: PathBuf,
        /// The new child.
        child: PathBuf,
    },
    /// A child cgroup went away.
    ChildRemoved {
        /// The parent.
        parent: PathBuf,
        /// The removed child.
        child: PathBuf,
    },
}

/// The last state read for a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CgroupState {
    /// `populated` from cgroup.events.
    pub populated: bool,
    /// `frozen` from cgroup.events.
    pub frozen: bool,
    /// memory.events counters (empty where the memory controller is not enabled).
    pub memory: BTreeMap<String, u64>,
    /// Whether memory.events exists for this cgroup (memory controller enabled in the parent).
    pub memory_events: bool,
}

/// `/sys/fs/cgroup/app populated=1`, `... memory.events oom=reset oom_kill+=1`,
/// `... REMOVED`, `+child /sys/fs/cgroup/app/worker`, ...
impl fmt::Display for CgroupEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupEvent::Populated { path, populated } => {
                write!(f, "{} populated={}", path.display(), u8::from(*populated))
            }
            CgroupEvent::Frozen { path, frozen } => {
                write!(f, "{} frozen={}", path.display(), u8::from(*frozen))
            }
            CgroupEvent::Memory {
                path,
                deltas,
                resets,
                ..
            } => {
                write!(f, "{} memory.events", path.display())?;
                for k in resets {
                    write!(f, " {k}=reset")?;
                }
                for (k, v) in deltas {
                    write!(f, " {k}+={v}")?;
                }
                Ok(())
            }
            CgroupEvent::Removed { path } => write!(f, "{} REMOVED", path.display()),
            CgroupEvent::Reappeared { path } => write!(f, "{} REAPPEARED", path.display()),
            CgroupEvent::ChildAdded { child, .. } => write!(f, "+child {}", child.display()),
            CgroupEvent::ChildRemoved { child, .. } => write!(f, "-child {}", child.display()),
        }
    }
}
