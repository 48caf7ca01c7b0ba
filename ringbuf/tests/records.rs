//! Records through a ring in one process: in-place write and read, batches, wrap-around in both
//! wrap modes, size limits and the errors a producer acts on.

mod common;

use common::{fill_payload, pair, payload_byte};
use edgegw_ring::{Error, RingConfig, WrapMode, FIRST_RESERVED_TYPE};

fn both_modes() -> [WrapMode; 2] {
    [WrapMode::Pad, WrapMode::Mirror]
}

#[test]
fn a_record_is_read_in_place_with_its_type_flags_and_bytes() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(64 * 1024));
    p.reserve(11, 0x0102, 0xa5a5)
        .unwrap()
        .copy_from_slice(b"hello, ring");
    assert!(
        c.read().unwrap().is_none(),
        "nothing is visible before publish"
    );
    p.publish();
    let rec = c.read().unwrap().expect("record");
    assert_eq!(rec.record_type(), 0x0102);
    assert_eq!(rec.flags(), 0xa5a5);
    assert_eq!(rec.len(), 11);
    assert_eq!(rec.payload().to_vec(), b"hello, ring");
    assert!(c.read().unwrap().is_none());
}

#[test]
fn a_batch_becomes_visible_at_once_and_is_released_with_one_store() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(64 * 1024));
    for i in 0..10u64 {
        fill_payload(i, p.reserve(100 + i as usize, 1, i as u16).unwrap());
    }
    assert!(p.has_pending());
    assert!(c.read().unwrap().is_none());
    p.publish();
    let before = p.free_space();
    for i in 0..10u64 {
        let rec = c.read().unwrap().expect("record");
        assert_eq!(rec.flags(), i as u16);
        let v = rec.payload().to_vec();
        assert!(v.iter().enumerate().all(|(j, &b)| b == payload_byte(i, j)));
    }
    assert!(c.has_unreleased());
    let (released, read, _) = c.positions();
    assert!(read > released);
    c.release();
    let (released2, read2, _) = c.positions();
    assert_eq!(released2, read2);
    // The producer sees the space again once it looks.
    assert!(p.reserve(p.max_payload(), 1, 0).is_ok());
    assert!(before < p.capacity());
}

#[test]
fn abandoned_reservations_are_never_seen() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    p.reserve(10, 1, 0).unwrap().fill(1);
    p.abandon();
    p.send(2, 0, b"kept").unwrap();
    let rec = c.read().unwrap().unwrap();
    assert_eq!(rec.record_type(), 2);
    assert_eq!(rec.payload().to_vec(), b"kept");
}

#[test]
fn records_of_every_size_cross_the_wrap_point_intact_in_both_modes() {
    for wrap in both_modes() {
        let cap = 4096;
        let (mut p, mut c) = pair(RingConfig::with_capacity(cap).wrap(wrap));
        let max = p.max_payload();
        assert_eq!(max, cap / 2 - 8);
        // Sizes that put the write position at every 8-byte offset, up to the largest record.
        for round in 0..600usize {
            let seq = round as u64;
            let len = match round % 5 {
                0 => max,
                1 => round % 97,
                2 => max - (round % 13),
                3 => 1 + round % 8,
                _ => (round * 131) % max,
            };
            fill_payload(
                seq,
                p.reserve(len, 3, 0)
                    .unwrap_or_else(|e| panic!("{wrap} round {round}: {e}")),
            );
            p.publish();
            let rec = c.read().unwrap().expect("record");
            assert_eq!(rec.len(), len);
            let mut buf = vec![0u8; len];
            assert_eq!(rec.payload().copy_to_slice(&mut buf), len);
            for (i, b) in buf.iter().enumerate() {
                assert_eq!(*b, payload_byte(seq, i), "{wrap} len {len} byte {i}");
            }
            c.release();
        }
        let (prod, _) = p.positions();
        assert!(prod > 10 * cap as u64, "wrapped many times");
    }
}

#[test]
fn a_full_ring_says_how_much_it_needed_and_counts_drops_on_request() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    let mut sent = 0;
    let err = loop {
        match p.send(1, 0, &[7u8; 500]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    match err {
        Error::Full { needed, free } => {
            assert_eq!(needed, 512, "500 payload + 8 header, rounded up to 8");
            assert!(free < needed);
        }
        e => panic!("expected Full, got {e}"),
    }
    assert_eq!(sent, 4096 / 512);
    p.record_drops(3);
    assert_eq!(p.drops(), 3);
    // Draining makes room again; nothing sent was lost.
    let mut got = 0;
    while c.read().unwrap().is_some() {
        got += 1;
    }
    c.release();
    assert_eq!(got, sent);
    p.send(1, 0, &[7u8; 500]).unwrap();
}

#[test]
fn a_record_above_half_the_capacity_is_too_large_and_names_the_limit() {
    let (mut p, _c) = pair(RingConfig::with_capacity(4096));
    match p.reserve(4096 / 2 - 7, 1, 0) {
        Err(Error::TooLarge { len, max, capacity }) => {
            assert_eq!((len, max, capacity), (2041, 2040, 4096));
            let msg = Error::TooLarge { len, max, capacity }.to_string();
            assert!(msg.contains("2041") && msg.contains("2040"), "{msg}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(p.reserve(2040, 1, 0).is_ok());
}

#[test]
fn reserved_record_types_are_refused() {
    let (mut p, _c) = pair(RingConfig::with_capacity(4096));
    assert!(matches!(
        p.reserve(1, FIRST_RESERVED_TYPE, 0),
        Err(Error::ReservedType(0xff00))
    ));
    assert!(matches!(
        p.reserve(1, 0xffff, 0),
        Err(Error::ReservedType(0xffff))
    ));
    assert!(p.reserve(1, FIRST_RESERVED_TYPE - 1, 0).is_ok());
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    for (cap, word) in [
        (5000, "power of two"),
        (1024, "minimum"),
        (1 << 31, "maximum"),
    ] {
        let e = edgegw_ring::Producer::create(RingConfig::with_capacity(cap)).unwrap_err();
        assert!(e.to_string().contains(word), "{cap}: {e}");
    }
}

#[test]
fn payload_views_read_integers_at_any_offset_and_refuse_out_of_range() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    let bytes: Vec<u8> = (0u8..37).collect();
    p.send(9, 0, &bytes).unwrap();
    let rec = c.read().unwrap().unwrap();
    let pl = rec.payload();
    assert_eq!(pl.read_u8(36), Some(36));
    assert_eq!(pl.read_u8(37), None);
    assert_eq!(pl.read_u16_le(1), Some(u16::from_le_bytes([1, 2])));
    assert_eq!(pl.read_u32_be(5), Some(u32::from_be_bytes([5, 6, 7, 8])));
    assert_eq!(
        pl.read_u64_le(29),
        Some(u64::from_le_bytes([29, 30, 31, 32, 33, 34, 35, 36]))
    );
    assert_eq!(pl.read_u64_le(30), None);
    let sub = pl.slice(3, 20).unwrap();
    assert_eq!(sub.to_vec(), &bytes[3..23]);
    assert_eq!(sub.read_u16_le(0), Some(u16::from_le_bytes([3, 4])));
    assert!(pl.slice(30, 8).is_none());
    // Word fold: bytes past the end read as zero.
    let sum = pl.fold_words(0u64, |a, w| a.wrapping_add(w));
    let mut expect = 0u64;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        expect = expect.wrapping_add(u64::from_ne_bytes(w));
    }
    assert_eq!(sum, expect);
    let sub_sum = sub.fold_words(0u64, |a, w| a.wrapping_add(w));
    let mut expect = 0u64;
    for chunk in bytes[3..23].chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        expect = expect.wrapping_add(u64::from_ne_bytes(w));
    }
    assert_eq!(sub_sum, expect);
    let mut v = vec![0xee];
    pl.copy_into(&mut v);
    assert_eq!(&v[1..], &bytes[..]);
    assert_eq!(pl.as_ptr(), pl.as_ptr());
}

#[test]
fn a_finished_ring_is_drained_to_the_end_then_reports_finished() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    p.send(1, 0, b"a").unwrap();
    p.reserve(1, 1, 0).unwrap()[0] = b'b';
    p.finish();
    assert!(!c.is_finished().unwrap(), "records remain");
    assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"a");
    assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"b");
    assert!(c.read().unwrap().is_none());
    assert!(c.is_finished().unwrap());
    assert_eq!(c.wait(None).unwrap(), edgegw_ring::Readiness::Finished);
}

#[test]
fn an_event_loop_cannot_spin_on_a_finished_ring_prepare_wait_reports_the_end() {
    // An event loop reads until empty, then arms the wait: on a finished ring the arming must
    // not say "data is there" forever (a loop that trusts it would spin at 100 %).
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    p.send(1, 0, b"last").unwrap();
    p.finish();
    assert!(
        !c.prepare_wait().unwrap(),
        "a record is still there: do not sleep"
    );
    assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"last");
    assert!(c.read().unwrap().is_none());
    c.release();
    for _ in 0..3 {
        assert!(
            matches!(c.prepare_wait(), Err(Error::Finished)),
            "drained and finished: the end, every time"
        );
    }
}

#[test]
fn an_old_ring_can_be_drained_read_only_from_its_fds() {
    // A restarted owner that consumed a reply ring gets its fds back and drains them.
    let mut owner = edgegw_ring::Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let fds = owner.fds().unwrap().try_clone().unwrap();
    let mut p = edgegw_ring::Producer::from_fds(owner.served_ring().unwrap().into_fds()).unwrap();
    p.send(1, 0, b"one").unwrap();
    p.send(1, 0, b"two").unwrap();
    assert_eq!(owner.read().unwrap().unwrap().payload().to_vec(), b"one");
    owner.release();
    drop(owner);
    drop(p);
    let mut drain = edgegw_ring::Consumer::drain_from_fds(fds).unwrap();
    assert_eq!(drain.read().unwrap().unwrap().payload().to_vec(), b"two");
    assert!(drain.read().unwrap().is_none());
    drain.release();
    assert_eq!(drain.wait(None).unwrap(), edgegw_ring::Readiness::PeerGone);
    // Nothing will ever signal a read-only drain: arming its wait reports that, not "data".
    assert!(matches!(drain.prepare_wait(), Err(Error::PeerGone)));
}

#[test]
fn endpoints_and_the_server_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<edgegw_ring::Producer>();
    is_send::<edgegw_ring::Consumer>();
    is_send::<edgegw_ring::ServedRing>();
    is_send::<edgegw_ring::RingServer>();
    is_send::<edgegw_ring::RingFds>();
    // And really do it: build on one thread, use on another.
    let (p, c) = pair(RingConfig::with_capacity(4096));
    let t = std::thread::spawn(move || {
        let mut p = p;
        p.send(1, 0, b"moved").unwrap();
        p
    });
    let _p = t.join().unwrap();
    let mut c = std::thread::spawn(move || c).join().unwrap();
    assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"moved");
}

#[test]
fn a_consumer_position_off_the_record_boundaries_is_corrupt_for_the_producer() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    for wrap in both_modes() {
        let (mut p, mut c) = pair(RingConfig::with_capacity(4096).wrap(wrap));
        let page = std::fs::File::from(
            p.fds()
                .unwrap()
                .consumer_page
                .as_fd()
                .try_clone_to_owned()
                .unwrap(),
        );
        // Fill the ring with 40-byte records; the consumer reads and releases two.
        let mut sent = 0;
        while p.reserve(32, 1, 0).is_ok() {
            sent += 1;
        }
        p.publish();
        for _ in 0..2 {
            c.read().unwrap().unwrap();
        }
        c.release();
        assert!(
            p.check_consumer().is_ok(),
            "{wrap:?}: a real release is fine"
        );
        // 80 is two records; 88 is aligned and in range, but inside the third.
        page.write_at(&88u64.to_ne_bytes(), 128).unwrap();
        let err = p.check_consumer().unwrap_err();
        assert!(
            err.to_string().contains("not on a record boundary"),
            "{wrap:?}: {err}"
        );
        assert!(
            matches!(p.reserve(8, 1, 0), Err(Error::Corrupt(_))),
            "{wrap:?}: sticky"
        );
        assert!(sent > 2);
    }
}

#[test]
fn the_unreleased_records_move_in_order_into_a_fresh_ring_across_the_wrap() {
    for wrap in both_modes() {
        let config = RingConfig::with_capacity(4096).wrap(wrap);
        let (mut p, mut c) = pair(config);
        // Go round the ring a few times with odd sizes, so the unreleased part wraps (with a
        // padding record in pad mode).
        let mut next = 0u64;
        let mut released = 0u64;
        for round in 0..40u64 {
            let len = 100 + (round as usize * 37) % 700;
            if p.reserve(len, (round % 7) as u16, round as u16).is_err() {
                while c.read().unwrap().is_some() {
                    released += 1;
                    if released + 3 >= next {
                        break;
                    }
                }
                c.release();
                continue;
            }
            p.publish();
            next += 1;
        }
        let unread = next - released;
        // The producer sees releases lazily (when it needs room); an owner checks the
        // position before it moves records, or the ones released since move too.
        p.check_consumer().unwrap();
        let mut fresh = edgegw_ring::Producer::create(config.generation(2)).unwrap();
        let moved = p.move_unreleased_to(&mut fresh).unwrap();
        assert_eq!(moved.records, unread, "{wrap:?}");
        let mut c2 =
            edgegw_ring::Consumer::from_fds(fresh.served_ring().unwrap().into_fds()).unwrap();
        // The old consumer would read the same records, in the same order, as the new one.
        let mut n = 0;
        while let Some(old) = c.read().unwrap() {
            let (ty, flags, bytes) = (old.record_type(), old.flags(), old.payload().to_vec());
            let new = c2.read().unwrap().expect("moved");
            assert_eq!(
                (new.record_type(), new.flags(), new.payload().to_vec()),
                (ty, flags, bytes)
            );
            n += 1;
        }
        assert_eq!(n, unread);
        assert!(c2.read().unwrap().is_none());
        // The fresh ring takes new records after the moved ones.
        fresh.send(9, 0, b"after").unwrap();
        assert_eq!(c2.read().unwrap().unwrap().payload().to_vec(), b"after");
    }
}
