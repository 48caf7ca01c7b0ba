//! The event: its number, its source, and what happened; and how it reads as one line.

use std::fmt;

use super::cgroup::CgroupEvent;
use super::change::Change;
use super::files::FileEvent;
use super::net::{Address, Link, LinkNames, NetworkState, Route};
use super::pressure::PressureEvent;

/// Which reader an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Source {
    /// inotify: watched files and trees.
    Files,
    /// rtnetlink: links, addresses, routes.
    Network,
    /// cgroup v2: cgroup.events, memory.events, child cgroups.
    Cgroup,
    /// Pressure stall information (PSI) triggers and averages.
    Pressure,
}

impl Source {
    /// Every source, in a fixed order (the index order of [`Counters`](super::Counters)).
    pub const ALL: [Source; 4] = [
        Source::Files,
        Source::Network,
        Source::Cgroup,
        Source::Pressure,
    ];

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// A short lower-case name, as used in the human output.
    pub fn name(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::Network => "net",
            Source::Cgroup => "cgroup",
            Source::Pressure => "pressure",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of the ordered stream. `seq` starts at 1 and grows by one per event, across sources.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Event {
    /// Position in the stream; gap-free.
    pub seq: u64,
    /// The reader that produced it.
    pub source: Source,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The event as one human line, as `edgegw events` prints it (like `ip monitor` plus
    /// `inotifywait`): `seq source what details`. Interface indexes are shown as the names
    /// `network` has for them, `#index` otherwise. (`Display` of an `Event` is this line
    /// without names.)
    ///
    /// ```text
    ///      8 net      +addr 10.9.0.1/24 dev lo scope 0 label lo
    ///     14 net      RESYNC reason=NoBuffers
    /// ```
    pub fn display<'a>(&'a self, network: Option<&'a NetworkState>) -> EventLine<'a> {
        EventLine {
            event: self,
            names: LinkNames(network),
        }
    }
}

/// An [`Event`] as one human line; see [`Event::display`].
#[derive(Debug, Clone, Copy)]
pub struct EventLine<'a> {
    event: &'a Event,
    names: LinkNames<'a>,
}

impl fmt::Display for EventLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Event { seq, source, kind } = self.event;
        write!(f, "{seq:>6} {:<8} ", source.name())?;
        let sign = |change: &Change| match change {
            Change::Added => "+",
            Change::Changed => "~",
            Change::Removed => "-",
        };
        match kind {
            EventKind::Resync { reason, .. } => write!(f, "RESYNC reason={reason:?}"),
            EventKind::ResyncDone { .. } => f.write_str("RESYNC-DONE"),
            EventKind::File(e) => fmt::Display::fmt(e, f),
            EventKind::Link { change, link } => write!(f, "{}link {link}", sign(change)),
            EventKind::Address { change, address } => {
                write!(f, "{}addr ", sign(change))?;
                address.write(f, self.names)
            }
            EventKind::Route { change, route } => {
                write!(f, "{}route ", sign(change))?;
                route.write(f, self.names)
            }
            EventKind::Cgroup(e) => fmt::Display::fmt(e, f),
            EventKind::Pressure(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// The event's human line, with interfaces by index (see [`Event::display`]).
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.display(None), f)
    }
}

/// Why a reader lost track of the kernel's state and re-read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ResyncReason {
    /// The inotify queue overflowed (IN_Q_OVERFLOW): events were dropped by the kernel.
    QueueOverflow,
    /// An inotify event named a watch descriptor we do not know.
    UnknownWatch,
    /// A watched root directory was removed or moved away.
    RootLost,
    /// The netlink socket's receive buffer overflowed (ENOBUFS): messages were dropped.
    NoBuffers,
    /// A netlink datagram was larger than our receive buffer (MSG_TRUNC).
    Truncated,
    /// A netlink message could not be parsed; it was skipped and the state re-read.
    Malformed,
    /// The kernel flushed IPv4 routes without notification (a link went down or was deleted,
    /// or a preferred-source address was removed): the routes are re-read.
    SilentRouteFlush,
    /// A route notification the model could not place for sure (a replace or a deletion among
    /// several routes that share a key): the routes are re-read.
    AmbiguousRoute,
}

/// What happened. Every variant except `Resync`/`ResyncDone` describes the state after the change,
/// read fresh from the kernel, so a consumer can apply events to a model without re-reading.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum EventKind {
    /// The source lost events; the events up to the matching `ResyncDone` are the difference
    /// between the state before and a fresh read.
    Resync {
        /// The source that resyncs (same as [`Event::source`]).
        source: Source,
        /// Why.
        reason: ResyncReason,
    },
    /// The resync of `source` is complete: the model now equals the kernel's state.
    ResyncDone {
        /// The source that finished resyncing.
        source: Source,
    },
    /// A watched file or tree entry changed.
    File(FileEvent),
    /// A network link appeared, changed or went away.
    Link {
        /// Added, changed or removed.
        change: Change,
        /// The link as it is now (as it was, for `Removed`).
        link: Link,
    },
    /// An address appeared, changed or went away.
    Address {
        /// Added, changed or removed.
        change: Change,
        /// The address as it is now (as it was, for `Removed`).
        address: Address,
    },
    /// A route appeared, changed or went away.
    Route {
        /// Added, changed or removed.
        change: Change,
        /// The route as it is now (as it was, for `Removed`).
        route: Route,
    },
    /// A cgroup changed state.
    Cgroup(CgroupEvent),
    /// Memory pressure changed, or the pressure reader reports its mode.
    Pressure(PressureEvent),
}
