//! No per-packet allocation on either side: a counting global allocator watches this thread
//! while packets are reserved, written, published, read (copied, parsed, summed in place) and
//! released, including the sleep/wake path.

mod common;

use common::{fill_payload, pair, scaled};
use edgegw_ring::{Error, RingConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; the thread-locals are
// const-initialised Cells, so touching them never allocates or recurses.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

#[test]
fn sending_and_receiving_packets_allocates_nothing_per_packet() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(64 * 1024));
    let mut copy = vec![0u8; 4096];
    let mut sink = 0u64;
    // Warm-up outside the count (first use of thread-locals and the like).
    p.send(1, 0, b"warm").unwrap();
    c.read().unwrap().unwrap();
    c.release();
    let packets = scaled(100_000).max(1000);
    let n = allocations_in(|| {
        for seq in 0..packets {
            let len = (seq as usize * 61) % 4000;
            // A batch of two, then one single send.
            fill_payload(seq, p.reserve(len, 1, seq as u16).unwrap());
            fill_payload(seq, p.reserve(len / 2, 2, 0).unwrap());
            p.publish();
            p.send(3, 0, &copy[..8]).unwrap();
            while let Some(rec) = c.read().unwrap() {
                let pl = rec.payload();
                pl.copy_to_slice(&mut copy);
                sink = sink.wrapping_add(pl.fold_words(0, |a, w| a.wrapping_add(w)));
                sink = sink.wrapping_add(pl.read_u32_le(0).unwrap_or(0) as u64);
            }
            c.release();
            // The sleep/wake path: announce sleep, get signalled, wake.
            if seq % 64 == 0 {
                assert!(c.prepare_wait().unwrap());
                p.send(1, 0, b"wake").unwrap();
                c.finish_wait();
                assert_eq!(c.wait(None).unwrap(), edgegw_ring::Readiness::Ready);
                c.read().unwrap().unwrap();
                c.release();
            }
        }
        // The full path and the drop counter.
        loop {
            match p.reserve(1000, 1, 0) {
                Ok(_) => p.publish(),
                Err(Error::Full { .. }) => {
                    p.record_drops(1);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert_eq!(n, 0, "{n} allocations for {packets} packets (sink {sink})");
    // The counter itself works.
    assert!(allocations_in(|| drop(vec![0u8; 10])) >= 1);
}
