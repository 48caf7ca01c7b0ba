//! What a source hands the stream after one step.

use super::event::{EventKind, ResyncReason, Source};

/// What one step of a source produced, in order: the events, which the stream then numbers and
/// counts, and the losses the source noticed that are not events themselves. Sources write
/// here and never see the stream.
#[derive(Debug)]
pub(crate) struct Batch {
    source: Source,
    pub(crate) events: Vec<EventKind>,
    /// Times the kernel dropped notifications (several may fall within one resync).
    pub(crate) overflows: u64,
    /// Kernel messages or lines skipped as unreadable.
    pub(crate) skipped: u64,
}

impl Batch {
    /// An empty batch of `source`'s (allocates nothing until an event is pushed).
    pub(crate) fn new(source: Source) -> Self {
        Batch {
            source,
            events: Vec::new(),
            overflows: 0,
            skipped: 0,
        }
    }

    /// The source whose step this is.
    pub(crate) fn source(&self) -> Source {
        self.source
    }

    pub(crate) fn push(&mut self, kind: EventKind) {
        self.events.push(kind);
    }

    /// Opens a resync: the events up to [`Batch::resync_done`] are the difference between the
    /// model and a fresh read.
    pub(crate) fn resync(&mut self, reason: ResyncReason) {
        let source = self.source;
        self.push(EventKind::Resync { source, reason });
    }

    pub(crate) fn resync_done(&mut self) {
        let source = self.source;
        self.push(EventKind::ResyncDone { source });
    }

    /// Counts one loss of kernel notifications.
    pub(crate) fn overflowed(&mut self) {
        self.overflows += 1;
    }

    /// Counts `count` messages or lines skipped as unreadable.
    pub(crate) fn skipped(&mut self, count: u64) {
        self.skipped += count;
    }
}
