//! The event vocabulary: what every source reports and the stream carries. It imports nothing
//! of the crate: the sources build these values, the stream numbers them, and a consumer reads
//! them, so this is the floor the rest stands on.

mod batch;
mod cgroup;
mod change;
mod counters;
mod event;
mod files;
mod net;
mod pressure;

pub(crate) use batch::Batch;
pub use cgroup::{CgroupEvent, CgroupState};
pub use change::Change;
pub use counters::{Counters, SourceCounters};
pub use event::{Event, EventKind, EventLine, ResyncReason, Source};
pub use files::{FileEvent, FileKind, Identity};
pub use net::{Address, AddressKey, Family, Link, NetworkState, NextHop, Route, RouteKey};
pub use pressure::{PressureAverages, PressureEvent, PressureMode, PressureTarget};
