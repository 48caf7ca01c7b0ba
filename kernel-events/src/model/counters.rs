//! What the stream counted per source.

use super::event::Source;

/// Counts for one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SourceCounters {
    /// Events emitted (including Resync markers).
    pub events: u64,
    /// Times the kernel dropped notifications for us (IN_Q_OVERFLOW, ENOBUFS, truncation).
    pub overflows: u64,
    /// Resyncs started (overflows, unknown watches, lost roots, silent flushes, retries).
    pub resyncs: u64,
    /// Kernel messages that could not be parsed or had unknown attributes, skipped.
    pub skipped: u64,
}

/// Counters for every source, indexed by [`Source`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    per_source: [SourceCounters; 4],
}

impl Counters {
    /// The counters of one source.
    pub fn get(&self, source: Source) -> SourceCounters {
        self.per_source[source.index()]
    }

    pub(crate) fn get_mut(&mut self, source: Source) -> &mut SourceCounters {
        &mut self.per_source[source.index()]
    }
}
