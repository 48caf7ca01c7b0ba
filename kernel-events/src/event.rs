//! Where readers put what they found.

use crate::model::{Counters, Event, EventKind, ResyncReason, Source};

/// Where readers put what they found: assigns sequence numbers and counts.
pub(crate) struct Emitter<'a> {
    pub(crate) queue: &'a mut std::collections::VecDeque<Event>,
    pub(crate) next_seq: &'a mut u64,
    pub(crate) counters: &'a mut Counters,
}

impl Emitter<'_> {
    pub(crate) fn emit(&mut self, source: Source, kind: EventKind) {
        let seq = *self.next_seq;
        *self.next_seq += 1;
        self.counters.get_mut(source).events += 1;
        self.queue.push_back(Event { seq, source, kind });
    }

    pub(crate) fn resync(&mut self, source: Source, reason: ResyncReason) {
        self.counters.get_mut(source).resyncs += 1;
        self.emit(source, EventKind::Resync { source, reason });
    }

    pub(crate) fn resync_done(&mut self, source: Source) {
        self.emit(source, EventKind::ResyncDone { source });
    }

    /// Counts one loss of kernel notifications (several may happen within one resync).
    pub(crate) fn overflowed(&mut self, source: Source) {
        self.counters.get_mut(source).overflows += 1;
    }

    pub(crate) fn skipped(&mut self, source: Source) {
        self.counters.get_mut(source).skipped += 1;
    }
}
