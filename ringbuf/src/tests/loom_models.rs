//! Loom models of the ring protocol: the production `ProducerCore`/`ConsumerCore` code, run over
//! loom atomics instead of a mapping, with eventfds modelled as a counter under a loom mutex.
//!
//! Loom explores the thread interleavings (and, for relaxed and acquire/release accesses, the
//! values a weak memory model allows), so these prove, within their small bounds:
//! - a consumer never reads a record's header or payload before the producer's writes to it are
//!   visible (release/acquire on the positions), and never reads space the producer reuses
//!   before the consumer released it;
//! - no lost wakeup: the consumer sleeps on its event only when the producer is guaranteed to
//!   signal it, and likewise the producer waiting for space. A lost wakeup would leave a thread
//!   blocked forever, which loom reports as a deadlock;
//! - a finished ring is seen finished only after its last record;
//! - a restarted producer that continues a finished ring (clears FINISHED, publishes) is seen by
//!   the consumer that stayed: the new record, once, and no lost wakeup;
//! - the owner's ring server, checking a consumer's release by walking the producer's record
//!   headers while the producer runs (the sequence lock on the checked release), never blames a
//!   consumer that follows the protocol.
//!
//! They run in plain `cargo test` (loom is an ordinary dev-dependency; no `--cfg loom` needed).

use crate::core::{
    check_release, ConsumerCore, Field, Next, ProducerCore, ReleaseCheck, ReleaseHooks, Reserved,
    RingMem, Wake,
};
use crate::format::WrapMode;
use loom::sync::atomic::{fence, AtomicU64};
use loom::sync::{Arc, Condvar, Mutex};
use std::sync::atomic::Ordering;

struct LoomMem {
    fields: [AtomicU64; 6],
    data: Vec<AtomicU64>,
    /// The owner's checked release (`PeerState::checked_release` in production).
    checked: AtomicU64,
}

impl LoomMem {
    fn new(capacity: usize) -> Arc<LoomMem> {
        Arc::new(LoomMem {
            fields: std::array::from_fn(|_| AtomicU64::new(0)),
            data: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            checked: AtomicU64::new(0),
        })
    }

    fn index(f: Field) -> usize {
        match f {
            Field::ProducerPos => 0,
            Field::ProducerSleep => 1,
            Field::Drops => 2,
            Field::ProducerFlags => 3,
            Field::ConsumerPos => 4,
            Field::ConsumerSleep => 5,
        }
    }
}

impl RingMem for Arc<LoomMem> {
    fn load(&self, field: Field, order: Ordering) -> u64 {
        self.fields[LoomMem::index(field)].load(order)
    }
    fn store(&self, field: Field, value: u64, order: Ordering) {
        self.fields[LoomMem::index(field)].store(value, order)
    }
    fn fence(&self) {
        fence(Ordering::SeqCst)
    }
    fn load_data(&self, offset: usize) -> u64 {
        self.data[offset / 8].load(Ordering::Relaxed)
    }
    fn store_data(&self, offset: usize, value: u64) {
        self.data[offset / 8].store(value, Ordering::Relaxed)
    }
}

/// As `PeerState` does it.
impl ReleaseHooks for Arc<LoomMem> {
    fn checked_release(&self) -> u64 {
        self.checked.load(Ordering::Acquire)
    }
    fn set_checked_release(&self, pos: u64) {
        self.checked.fetch_max(pos, Ordering::Release);
        fence(Ordering::Release);
    }
}

/// An eventfd: a counter, a blocking read that resets it, a write that adds one.
#[derive(Default)]
struct LoomEvent {
    count: Mutex<u64>,
    cv: Condvar,
}

impl LoomEvent {
    fn wait_and_drain(&self) {
        let mut c = self.count.lock().unwrap();
        while *c == 0 {
            c = self.cv.wait(c).unwrap();
        }
        *c = 0;
    }
}

impl Wake for Arc<LoomEvent> {
    fn wake(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }
}

/// Payload word `i` of packet `n`: distinct everywhere, so a stale read is caught.
fn word(n: usize, i: usize) -> u64 {
    0x1000 * (n as u64 + 1) + i as u64
}

/// The producer: for each packet of `lens`, reserve (sleeping for space when full), write the
/// payload words, publish; then optionally finish.
fn produce(
    mem: &Arc<LoomMem>,
    data_ev: &Arc<LoomEvent>,
    space_ev: &Arc<LoomEvent>,
    cap: usize,
    lens: &[usize],
    batch: bool,
    finish: bool,
) {
    let mut p = ProducerCore::resume(mem, cap, WrapMode::Pad).unwrap();
    for (n, &len) in lens.iter().enumerate() {
        let off = loop {
            match p.reserve(mem, mem, len, n as u16, 0) {
                Reserved::Payload(off) => break off,
                Reserved::Full { needed } => {
                    // Publish what we have first, or the consumer could wait for it forever.
                    p.publish(mem, data_ev);
                    if p.prepare_wait(mem, mem, needed).unwrap() {
                        space_ev.wait_and_drain();
                        p.finish_wait(mem);
                    }
                }
                other => panic!("reserve: {other:?}"),
            }
        };
        for i in 0..len / 8 {
            mem.store_data(off + i * 8, word(n, i));
        }
        if !batch {
            p.publish(mem, data_ev);
        }
    }
    if finish {
        p.finish(mem, data_ev);
    } else {
        p.publish(mem, data_ev);
    }
}

/// The consumer: read until `count` packets arrived (and, if `expect_finish`, the ring reports
/// finished), sleeping on the data event when empty; check every header and payload word.
fn consume(
    mem: &Arc<LoomMem>,
    data_ev: &Arc<LoomEvent>,
    space_ev: &Arc<LoomEvent>,
    cap: usize,
    lens: &[usize],
    expect_finish: bool,
) {
    let mut c = ConsumerCore::resume(mem, cap, WrapMode::Pad, true).unwrap();
    let mut n = 0;
    loop {
        while let Next::Record(rec) = c.next(mem) {
            assert_eq!(rec.ty as usize, n, "records in order");
            assert_eq!(rec.len, lens[n]);
            for i in 0..rec.len / 8 {
                assert_eq!(
                    mem.load_data(rec.payload_offset + i * 8),
                    word(n, i),
                    "payload visible"
                );
            }
            n += 1;
            c.release(mem, space_ev);
        }
        if n == lens.len() && !expect_finish {
            break;
        }
        if n == lens.len() && c.is_finished(mem).unwrap() {
            break;
        }
        match c.prepare_wait(mem) {
            Ok(true) => {
                data_ev.wait_and_drain();
                c.finish_wait(mem);
            }
            Ok(false) => {}
            // The end is an error, so a waiting loop cannot spin on a finished ring.
            Err(crate::Error::Finished) => {
                assert!(expect_finish, "finished only when the producer finishes");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, lens.len());
}

fn run(preemptions: usize, cap: usize, lens: &'static [usize], batch: bool, finish: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(move || {
        let mem = LoomMem::new(cap);
        let data_ev = Arc::new(LoomEvent::default());
        let space_ev = Arc::new(LoomEvent::default());
        let (m2, d2, s2) = (mem.clone(), data_ev.clone(), space_ev.clone());
        let producer =
            loom::thread::spawn(move || produce(&m2, &d2, &s2, cap, lens, batch, finish));
        consume(&mem, &data_ev, &space_ev, cap, lens, finish);
        producer.join().unwrap();
    });
}

#[test]
fn loom_records_are_visible_in_order_and_the_sleeping_consumer_is_always_woken() {
    // Roomy ring: only the consumer sleeps.
    run(3, 256, &[8, 16], false, false);
}

#[test]
fn loom_batch_publish_makes_all_records_visible_with_one_store() {
    run(3, 256, &[8, 16, 0], true, false);
}

#[test]
fn loom_full_ring_producer_waits_for_space_and_is_always_woken() {
    // 64-byte ring, 32-byte records: the producer fills it, wraps with a padding record and must
    // sleep for space while the consumer sleeps for data.
    run(2, 64, &[16, 24, 16], false, false);
}

#[test]
fn loom_finish_is_seen_only_after_the_last_record() {
    run(3, 256, &[8], false, true);
}

/// A restart that continues the ring (FORMAT.md section 7): the old producer published record 0
/// and finished; the consumer read it and saw the ring finished. The restarted producer resumes
/// the same memory, clears FINISHED and publishes record 1, while the consumer (re-attached to
/// the same ring, keeping its own position) looks again and sleeps when there is nothing: it gets
/// record 1, intact, once, and is never left asleep.
#[test]
fn loom_a_restarted_producer_continues_a_finished_ring_and_its_consumer_gets_what_follows() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let cap = 256;
        let mem = LoomMem::new(cap);
        let data_ev = Arc::new(LoomEvent::default());
        let space_ev = Arc::new(LoomEvent::default());
        // The old life.
        let mut old = ProducerCore::resume(&mem, cap, WrapMode::Pad).unwrap();
        let Reserved::Payload(off) = old.reserve(&mem, &mem, 8, 0, 0) else {
            panic!("room for record 0");
        };
        mem.store_data(off, word(0, 0));
        old.finish(&mem, &data_ev);
        let mut c = ConsumerCore::resume(&mem, cap, WrapMode::Pad, true).unwrap();
        let Next::Record(first) = c.next(&mem) else {
            panic!("record 0");
        };
        assert_eq!(first.ty, 0);
        c.release(&mem, &space_ev);
        assert!(
            c.is_finished(&mem).unwrap(),
            "the old life finished the ring"
        );
        // The new life, on the same memory.
        let (m2, d2) = (mem.clone(), data_ev.clone());
        let restarted = loom::thread::spawn(move || {
            let mut p = ProducerCore::resume(&m2, cap, WrapMode::Pad).unwrap();
            p.clear_finished(&m2);
            let Reserved::Payload(off) = p.reserve(&m2, &m2, 16, 1, 0) else {
                panic!("room for record 1");
            };
            m2.store_data(off, word(1, 0));
            m2.store_data(off + 8, word(1, 1));
            p.publish(&m2, &d2);
        });
        loop {
            match c.next(&mem) {
                Next::Record(rec) => {
                    assert_eq!((rec.ty, rec.len), (1, 16), "record 1, not record 0 again");
                    assert_eq!(mem.load_data(rec.payload_offset), word(1, 0));
                    assert_eq!(mem.load_data(rec.payload_offset + 8), word(1, 1));
                    c.release(&mem, &space_ev);
                    break;
                }
                Next::Empty => {}
                Next::Corrupt => panic!("corrupt: {:?}", c.corruption()),
            }
            match c.prepare_wait(&mem) {
                Ok(true) => {
                    data_ev.wait_and_drain();
                    c.finish_wait(&mem);
                }
                Ok(false) => {}
                // Still the old life's FINISHED: the consumer attaches again (the same ring, its
                // own position) and looks once more.
                Err(crate::Error::Finished) => loom::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        restarted.join().unwrap();
    });
}

/// The owner's ring server, checking the consumer's release as `ServedRing` does (there the
/// headers come from `pread` of the region; here from the same words the producer writes).
fn check_as_server(mem: &Arc<LoomMem>, cap: usize) {
    let checked = mem.checked_release();
    let c = mem.load(Field::ConsumerPos, Ordering::Acquire);
    let p = mem.load(Field::ProducerPos, Ordering::Acquire);
    let mask = cap as u64 - 1;
    let found = check_release(
        cap as u64,
        WrapMode::Pad,
        (checked, c, p),
        |pos| Some(mem.load_data((pos & mask) as usize)),
        || {
            fence(Ordering::Acquire);
            mem.checked.load(Ordering::Relaxed)
        },
    );
    match found {
        ReleaseCheck::Checked(c) => mem.set_checked_release(c),
        ReleaseCheck::Moving => {}
        ReleaseCheck::Broken(why) => panic!("a conforming consumer was blamed: {why}"),
    }
}

#[test]
fn loom_the_servers_release_check_never_blames_a_conforming_consumer() {
    // A full ring, so the producer writes over space the consumer released while the server
    // walks the headers of that space.
    let cap = 64;
    // Distinct sizes: a header read after the producer wrote over it sends the walk astray
    // (without the re-check of the checked release this model finds such a false blame at
    // once). Preemption bound 1 keeps it to seconds; bound 2 (about 80 s) passed too.
    let lens: &'static [usize] = &[16, 24, 8];
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(1);
    b.check(move || {
        let mem = LoomMem::new(cap);
        let data_ev = Arc::new(LoomEvent::default());
        let space_ev = Arc::new(LoomEvent::default());
        let (m2, d2, s2) = (mem.clone(), data_ev.clone(), space_ev.clone());
        let producer = loom::thread::spawn(move || produce(&m2, &d2, &s2, cap, lens, false, false));
        let m3 = mem.clone();
        let server = loom::thread::spawn(move || check_as_server(&m3, cap));
        consume(&mem, &data_ev, &space_ev, cap, lens, false);
        producer.join().unwrap();
        server.join().unwrap();
    });
}
