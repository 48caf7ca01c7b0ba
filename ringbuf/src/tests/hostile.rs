//! Hostile peers: property tests that scribble on the shared pages the peer may write while the
//! other side keeps using the ring. The side under attack must never panic, never read or write
//! outside its mappings, and report a broken ring as `Error::Corrupt` (and keep reporting it).

use crate::format::{
    encode_record_header, WrapMode, OFF_CONSUMER_POS, OFF_CONSUMER_SLEEP, OFF_DROPS,
    OFF_PRODUCER_FLAGS, OFF_PRODUCER_POS, OFF_PRODUCER_SLEEP,
};
use crate::sys::os::page_size;
use crate::sys::shm::{Access, Mapping};
use crate::{Consumer, Error, Producer, RingConfig};
use proptest::prelude::*;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CAP: usize = 4096;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// The honest side sends (or, under attack, tries to send) a record of this length.
    Send(usize),
    /// The honest consumer reads up to this many records, then releases them.
    Read(usize),
    /// The attacker writes `value` at byte `offset` (8-aligned) of the page it can write.
    Scribble { offset: usize, value: u64 },
}

/// Values an attacker would try: garbage, edges, plausible positions and record headers.
fn hostile_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
        (0u64..4 * CAP as u64),
        (0u64..4 * CAP as u64).prop_map(|v| v | 1),
        (any::<u32>(), any::<u16>(), any::<u16>())
            .prop_map(|(l, t, f)| encode_record_header(l, t, f)),
        (0u32..CAP as u32, 0u16..4, any::<u16>())
            .prop_map(|(l, t, f)| encode_record_header(l, t, f)),
        (0u32..CAP as u32).prop_map(|l| encode_record_header(l, 0xffff, 0)),
        (0u32..CAP as u32).prop_map(|l| encode_record_header(l, 0xff00, 0)),
    ]
}

/// Offsets into the producer-written region: the live header fields, or anywhere in the data.
fn region_offset() -> impl Strategy<Value = usize> {
    let page = page_size();
    prop_oneof![
        Just(OFF_PRODUCER_POS),
        Just(OFF_PRODUCER_SLEEP),
        Just(OFF_DROPS),
        Just(OFF_PRODUCER_FLAGS),
        (0..CAP / 8).prop_map(move |w| page + w * 8),
    ]
}

fn consumer_page_offset() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(OFF_CONSUMER_POS),
        Just(OFF_CONSUMER_SLEEP),
        (0..page_size() / 8).prop_map(|w| w * 8)
    ]
}

fn steps(offsets: BoxedStrategy<usize>) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0usize..1200).prop_map(Step::Send),
            3 => (1usize..8).prop_map(Step::Read),
            2 => (offsets, hostile_value()).prop_map(|(offset, value)| Step::Scribble { offset, value }),
        ],
        1..60,
    )
}

fn payload_of(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

/// A consumer reading a ring whose producer (and so the whole region) is hostile: the daemon
/// reading a reply ring. The attacker is a legitimate producer that also scribbles.
fn run_hostile_producer(steps: &[Step], wrap: WrapMode) -> Result<(), TestCaseError> {
    let mut consumer = Consumer::create(RingConfig::with_capacity(CAP).wrap(wrap)).unwrap();
    let fds = consumer.fds().unwrap().try_clone().unwrap();
    let mut producer = Producer::from_fds(consumer.served_ring().unwrap().into_fds()).unwrap();
    let attacker =
        Mapping::plain(fds.region.as_fd(), page_size() + CAP, Access::ReadWrite).unwrap();
    let max = consumer.max_payload();
    let mut corrupt = false;
    let mut sent = 0u64;
    let mut read = 0u64;
    for step in steps {
        match step {
            Step::Send(len) => {
                let len = (*len).min(producer.max_payload());
                // The producer side is the attacker's own; its errors are not under test.
                if let Ok(buf) = producer.reserve(len, 7, 0) {
                    buf.copy_from_slice(&payload_of(sent, len));
                    producer.publish();
                    sent += 1;
                }
            }
            Step::Read(n) => {
                for _ in 0..*n {
                    match consumer.read() {
                        Ok(Some(rec)) => {
                            prop_assert!(!corrupt, "a corrupt ring must stay corrupt");
                            prop_assert!(rec.len() <= max);
                            // Reading the whole payload must stay in bounds whatever it holds.
                            let v = rec.payload().to_vec();
                            prop_assert_eq!(v.len(), rec.len());
                            let _ = rec.payload().fold_words(0u64, |a, w| a.wrapping_add(w));
                            let _ = rec.payload().read_u64_le(rec.len().saturating_sub(3));
                            read += 1;
                        }
                        Ok(None) => break,
                        Err(Error::Corrupt(_)) => {
                            corrupt = true;
                            break;
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
                    }
                }
                consumer.release();
                let _ = consumer.has_data();
                let _ = consumer.is_finished();
            }
            Step::Scribble { offset, value } => {
                attacker.store_u64(*offset, *value, Ordering::Relaxed);
            }
        }
    }
    // Waiting never panics either, and returns promptly.
    let _ = consumer.wait(Some(std::time::Duration::ZERO));
    prop_assert!(read <= sent + 4096, "cannot read more records than fit");
    Ok(())
}

/// A producer whose consumer is hostile (the daemon's ingress ring): the attacker writes the
/// consumer page.
fn run_hostile_consumer(steps: &[Step], wrap: WrapMode) -> Result<(), TestCaseError> {
    let mut producer = Producer::create(RingConfig::with_capacity(CAP).wrap(wrap)).unwrap();
    let fds = producer.fds().unwrap().try_clone().unwrap();
    let mut consumer = Consumer::from_fds(producer.served_ring().unwrap().into_fds()).unwrap();
    let attacker =
        Mapping::plain(fds.consumer_page.as_fd(), page_size(), Access::ReadWrite).unwrap();
    let mut corrupt = false;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Send(len) => match producer.reserve(*len, 1, 0) {
                Ok(buf) => {
                    prop_assert!(!corrupt, "a corrupt ring must stay corrupt");
                    prop_assert_eq!(buf.len(), *len);
                    buf.fill(n as u8);
                    producer.publish();
                }
                Err(Error::Full { needed, free }) => prop_assert!(needed > free),
                Err(Error::TooLarge { .. }) => prop_assert!(*len > producer.max_payload()),
                Err(Error::Corrupt(_)) => corrupt = true,
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            },
            Step::Read(k) => {
                // The attacker's own consumer endpoint; its results are not under test.
                for _ in 0..*k {
                    if !matches!(consumer.read(), Ok(Some(_))) {
                        break;
                    }
                }
                consumer.release();
            }
            Step::Scribble { offset, value } => {
                attacker.store_u64(*offset, *value, Ordering::Relaxed)
            }
        }
        let _ = producer.prepare_wait_for_space(64);
        producer.finish_wait_for_space();
    }
    let _ = producer.wait_for_space(16, Some(std::time::Duration::ZERO));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn consumer_survives_a_producer_scribbling_its_region(s in steps(region_offset().boxed())) {
        run_hostile_producer(&s, WrapMode::Pad)?;
    }

    #[test]
    fn mirror_mode_consumer_survives_a_producer_scribbling_its_region(s in steps(region_offset().boxed())) {
        run_hostile_producer(&s, WrapMode::Mirror)?;
    }

    #[test]
    fn producer_survives_a_consumer_scribbling_its_page(s in steps(consumer_page_offset().boxed())) {
        run_hostile_consumer(&s, WrapMode::Pad)?;
    }
}

/// Where a scribble on a stored ring lands: the region or the consumer page.
fn stored_ring_scribble() -> impl Strategy<Value = (bool, usize, u64)> {
    prop_oneof![
        (Just(true), region_offset(), hostile_value()),
        (Just(false), consumer_page_offset(), hostile_value()),
    ]
}

/// A ring kept across a restart (its owner's fds), scribbled on while the owner was down, then
/// taken back: never a panic; untouched, it continues with exactly the records not released;
/// continued after scribbles, every record in it reads without a corruption and the ring
/// carries new records; otherwise it is unfit and salvages at most what was sent (at most what
/// fits in the ring when `producer_pos` itself was overwritten).
fn run_take_back(
    sizes: &[usize],
    released: usize,
    scribbles: &[(bool, usize, u64)],
    wrap: WrapMode,
) -> Result<(), TestCaseError> {
    use crate::TakenBack;
    let mut producer = Producer::create(RingConfig::with_capacity(CAP).wrap(wrap)).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    let mut consumer = Consumer::from_fds(producer.served_ring().unwrap().into_fds()).unwrap();
    let mut sent = 0u64;
    for len in sizes {
        if producer.send(1, 0, &payload_of(sent, *len)).is_err() {
            break;
        }
        sent += 1;
    }
    let mut read = 0u64;
    while read < released as u64 && consumer.read().unwrap().is_some() {
        read += 1;
    }
    consumer.release();
    producer.finish();
    drop(producer);
    drop(consumer);
    for (region, offset, value) in scribbles {
        let fd = if *region {
            &stored.region
        } else {
            &stored.consumer_page
        };
        nix::sys::uio::pwrite(fd, &value.to_ne_bytes(), *offset as i64).unwrap();
    }
    match Producer::take_back(stored).unwrap() {
        TakenBack::Continued(mut p) => {
            let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
            let mut got = Vec::new();
            while let Some(r) = c.read().map_err(|e| TestCaseError::fail(format!("{e}")))? {
                got.push(r.payload().to_vec());
            }
            c.release();
            if scribbles.is_empty() {
                let want: Vec<Vec<u8>> = (read..sent)
                    .map(|n| payload_of(n, sizes[n as usize]))
                    .collect();
                prop_assert_eq!(got, want);
            }
            let last = payload_of(999, 24);
            match p.send(2, 0, &last) {
                Ok(()) => {
                    let r = c.read().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert_eq!(r.map(|r| r.payload().to_vec()), Some(last));
                }
                // Released nothing, or a scribbled release that is lower but still checks.
                Err(Error::Full { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("the continued ring: {e}"))),
            }
        }
        TakenBack::Unfit {
            salvaged, reason, ..
        } => {
            prop_assert!(
                !scribbles.is_empty(),
                "an untouched ring is unfit: {}",
                reason
            );
            // The checks cannot tell a record from what a larger, overwritten `producer_pos`
            // exposes (zeroed memory reads as empty records of type 0, and the previous lap's
            // released records as records): FORMAT.md section 7 says so. Otherwise nothing is
            // salvaged that was not sent; either way, no more than fits in the ring.
            let producer_pos_scribbled = scribbles
                .iter()
                .any(|(region, offset, _)| *region && *offset == OFF_PRODUCER_POS);
            let bound = if producer_pos_scribbled {
                (CAP / crate::format::RECORD_HEADER_LEN) as u64
            } else {
                sent
            };
            prop_assert!(
                salvaged.len() as u64 <= bound,
                "{} salvaged, {} sent: {}",
                salvaged.len(),
                sent,
                reason
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_ring_taken_back_after_scribbles_continues_only_when_every_check_passes(
        sizes in prop::collection::vec(0usize..700, 0..24),
        released in 0usize..24,
        scribbles in prop::collection::vec(stored_ring_scribble(), 0..3),
        mirror in any::<bool>(),
    ) {
        let wrap = if mirror { WrapMode::Mirror } else { WrapMode::Pad };
        run_take_back(&sizes, released, &scribbles, wrap)?;
    }
}

/// Concurrently: a producer thread publishes valid records while an attacker thread scribbles the
/// region; the consumer thread must end with records or `Corrupt`, never a panic.
#[test]
fn consumer_survives_concurrent_scribbling_while_the_producer_runs() {
    let rounds = crate::tests::scaled(20);
    for round in 0..rounds {
        let wrap = if round % 2 == 0 {
            WrapMode::Pad
        } else {
            WrapMode::Mirror
        };
        let mut consumer = Consumer::create(RingConfig::with_capacity(CAP).wrap(wrap)).unwrap();
        let fds = consumer.fds().unwrap().try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Producer::from_fds(consumer.served_ring().unwrap().into_fds()).unwrap();
        let producer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let len = (n as usize * 37) % 700;
                    match p.reserve(len, 3, 0) {
                        Ok(buf) => {
                            buf.fill(n as u8);
                            p.publish();
                            n += 1;
                        }
                        // Corrupt (the attacker broke the positions) or full: keep trying.
                        Err(_) => std::thread::yield_now(),
                    }
                }
            })
        };
        let attacker = {
            let fds = fds.try_clone().unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let m = Mapping::plain(fds.region.as_fd(), page_size() + CAP, Access::ReadWrite)
                    .unwrap();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ round;
                let mut writes = 0;
                while !stop.load(Ordering::Relaxed) && writes < 200 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = if x.is_multiple_of(5) {
                        OFF_PRODUCER_POS
                    } else {
                        page_size() + (x as usize >> 8) % (CAP / 8) * 8
                    };
                    let value = match x % 3 {
                        0 => x,
                        1 => encode_record_header(
                            (x >> 20) as u32 % (CAP as u32 * 2),
                            (x >> 52) as u16 % 4,
                            0,
                        ),
                        _ => m.load_u64(OFF_PRODUCER_POS, Ordering::Relaxed) + (x >> 60) * 8,
                    };
                    m.store_u64(off, value, Ordering::Relaxed);
                    writes += 1;
                    std::thread::yield_now();
                }
            })
        };
        let mut records = 0u64;
        let mut corrupt = false;
        for _ in 0..20_000 {
            match consumer.read() {
                Ok(Some(rec)) => {
                    let _ = rec.payload().fold_words(0u64, |a, w| a ^ w);
                    records += 1;
                }
                Ok(None) => {
                    consumer.release();
                    std::thread::yield_now();
                }
                Err(Error::Corrupt(_)) => {
                    corrupt = true;
                    break;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        producer.join().unwrap();
        attacker.join().unwrap();
        if corrupt {
            assert!(
                matches!(consumer.read(), Err(Error::Corrupt(_))),
                "corruption is sticky"
            );
            assert!(consumer.corruption().is_some());
        }
        let _ = records;
    }
}

/// A padding record published without the record after it is nothing to read: `wait` does not
/// return `Ready` for it (it times out), `read` returns nothing, and the record published after
/// it is read normally.
#[test]
fn a_padding_record_published_alone_is_not_readiness() {
    use crate::{Readiness, RECORD_HEADER_LEN};
    use std::time::Duration;
    let mut consumer = Consumer::create(RingConfig::with_capacity(CAP)).unwrap();
    let fds = consumer.fds().unwrap().try_clone().unwrap();
    let attacker =
        Mapping::plain(fds.region.as_fd(), page_size() + CAP, Access::ReadWrite).unwrap();
    let data = |offset: usize| page_size() + offset;
    // A first record of CAP/2 - 8 bytes, published and read.
    let first = CAP / 2 - 8;
    attacker.store_u64(
        data(0),
        encode_record_header((first - RECORD_HEADER_LEN) as u32, 3, 0),
        Ordering::Relaxed,
    );
    attacker.store_u64(OFF_PRODUCER_POS, first as u64, Ordering::Release);
    assert_eq!(
        consumer.wait(Some(Duration::ZERO)).unwrap(),
        Readiness::Ready
    );
    assert_eq!(consumer.read().unwrap().unwrap().record_type(), 3);
    consumer.release();
    // Padding to the end of the lap, published alone.
    let pad_len = CAP - first - RECORD_HEADER_LEN;
    attacker.store_u64(
        data(first),
        encode_record_header(pad_len as u32, 0xffff, 0),
        Ordering::Relaxed,
    );
    attacker.store_u64(OFF_PRODUCER_POS, CAP as u64, Ordering::Release);
    consumer.set_spin(Duration::from_micros(1));
    assert_eq!(
        consumer.wait(Some(Duration::from_millis(20))).unwrap(),
        Readiness::TimedOut,
        "a lone padding record is no record"
    );
    assert!(!consumer.has_data().unwrap());
    assert!(consumer.read().unwrap().is_none());
    // The record after it, at the start of the next lap.
    attacker.store_u64(data(0), encode_record_header(8, 4, 0), Ordering::Relaxed);
    attacker.store_u64(OFF_PRODUCER_POS, (CAP + 16) as u64, Ordering::Release);
    assert_eq!(
        consumer.wait(Some(Duration::ZERO)).unwrap(),
        Readiness::Ready
    );
    assert_eq!(consumer.read().unwrap().unwrap().record_type(), 4);
    assert!(consumer.read().unwrap().is_none());
}
