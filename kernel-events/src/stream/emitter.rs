//! Where the sources' batches become the stream: sequence numbers and counters.

use std::collections::VecDeque;

use crate::model::{Batch, Counters, Event, EventKind};

/// Numbers every event in the order the sources produced it (gap-free, from 1, across sources)
/// and counts per source; holds the events until `next()` hands them out.
#[derive(Debug)]
pub(super) struct Emitter {
    queue: VecDeque<Event>,
    next_seq: u64,
    counters: Counters,
}

impl Emitter {
    pub(super) fn new() -> Self {
        Emitter {
            queue: VecDeque::new(),
            next_seq: 1,
            counters: Counters::default(),
        }
    }

    /// Appends a source's batch to the stream.
    pub(super) fn publish(&mut self, batch: Batch) {
        let source = batch.source();
        let counters = self.counters.get_mut(source);
        counters.overflows += batch.overflows;
        counters.skipped += batch.skipped;
        for kind in batch.events {
            if matches!(kind, EventKind::Resync { .. }) {
                counters.resyncs += 1;
            }
            counters.events += 1;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queue.push_back(Event { seq, source, kind });
        }
    }

    pub(super) fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResyncReason, Source};

    #[test]
    fn events_are_numbered_across_sources_and_counted_per_source() {
        let mut emitter = Emitter::new();
        let mut files = Batch::new(Source::Files);
        files.overflowed();
        files.resync(ResyncReason::QueueOverflow);
        files.resync_done();
        emitter.publish(files);
        let mut net = Batch::new(Source::Network);
        net.skipped(3);
        net.resync(ResyncReason::Malformed);
        emitter.publish(net);
        let seqs: Vec<(u64, Source)> =
            std::iter::from_fn(|| emitter.pop().map(|e| (e.seq, e.source))).collect();
        assert_eq!(
            seqs,
            [(1, Source::Files), (2, Source::Files), (3, Source::Network)]
        );
        let files = emitter.counters().get(Source::Files);
        assert_eq!((files.events, files.resyncs, files.overflows), (2, 1, 1));
        let net = emitter.counters().get(Source::Network);
        assert_eq!((net.events, net.resyncs, net.skipped), (1, 1, 3));
        assert_eq!(emitter.next_seq(), 4);
    }
}
