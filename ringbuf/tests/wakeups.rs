//! Sleep and wake: eventfds are written only for a peer that said it sleeps, blocking waits end
//! when they should, and nothing is lost between "going to sleep" and "woken".

mod common;

use common::{fill_payload, pair, payload_byte, scaled};
use edgegw_ring::{Readiness, RingConfig};
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// The eventfd's counter without blocking (0 if unsignalled). Reading resets it.
fn eventfd_count(fd: BorrowedFd<'_>) -> u64 {
    let mut b = [0u8; 8];
    match nix::unistd::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        Err(nix::Error::EAGAIN) => 0,
        other => panic!("eventfd read: {other:?}"),
    }
}

#[test]
fn the_producer_writes_no_eventfd_while_the_consumer_is_awake() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(64 * 1024));
    for i in 0..1000u64 {
        fill_payload(i, p.reserve(40, 1, 0).unwrap());
        p.publish();
        assert!(c.read().unwrap().is_some());
        c.release();
    }
    assert_eq!(
        eventfd_count(c.data_fd()),
        0,
        "data eventfd untouched on the fast path"
    );
    assert_eq!(
        eventfd_count(p.space_fd()),
        0,
        "space eventfd untouched on the fast path"
    );
}

#[test]
fn a_consumer_that_announced_sleep_is_signalled_once_per_sleep() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(64 * 1024));
    assert!(c.prepare_wait().unwrap(), "empty ring: go to sleep");
    p.send(1, 0, b"x").unwrap();
    p.send(1, 0, b"y").unwrap();
    assert_eq!(
        eventfd_count(c.data_fd()),
        1,
        "one signal for one sleep, not one per publish"
    );
    c.finish_wait();
    assert!(!c.prepare_wait().unwrap(), "data present: do not sleep");
    while c.read().unwrap().is_some() {}
    c.release();
    assert!(c.prepare_wait().unwrap());
    p.send(1, 0, b"z").unwrap();
    assert_eq!(
        eventfd_count(c.data_fd()),
        1,
        "a new sleep gets a new signal"
    );
    c.finish_wait();
}

#[test]
fn a_producer_waiting_for_space_is_signalled_by_the_release_that_frees_it() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    while p.send(1, 0, &[1u8; 1000]).is_ok() {}
    assert!(p.prepare_wait_for_space(1000).unwrap(), "full: wait");
    assert!(c.read().unwrap().is_some());
    c.release();
    assert_eq!(eventfd_count(p.space_fd()), 1);
    p.finish_wait_for_space();
    assert!(!p.prepare_wait_for_space(1000).unwrap(), "room now");
    assert!(p.send(1, 0, &[1u8; 1000]).is_ok());
}

#[test]
fn a_blocking_wait_times_out_on_an_empty_ring() {
    let (_p, mut c) = pair(RingConfig::with_capacity(4096));
    c.set_spin(Duration::ZERO);
    assert_eq!(
        c.wait(Some(Duration::from_millis(20))).unwrap(),
        Readiness::TimedOut
    );
    assert_eq!(c.wait(Some(Duration::ZERO)).unwrap(), Readiness::TimedOut);
}

#[test]
fn a_blocked_consumer_wakes_when_a_record_is_published_from_another_thread() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    c.set_spin(Duration::ZERO);
    let t = std::thread::spawn(move || {
        let r = c.wait(Some(Duration::from_secs(30))).unwrap();
        let v = c.read().unwrap().map(|r| r.payload().to_vec());
        (r, v)
    });
    std::thread::sleep(Duration::from_millis(20));
    p.send(1, 0, b"wake").unwrap();
    let (r, v) = t.join().unwrap();
    assert_eq!(r, Readiness::Ready);
    assert_eq!(v.as_deref(), Some(&b"wake"[..]));
}

#[test]
fn a_blocked_producer_wakes_when_the_consumer_releases_space() {
    let (mut p, mut c) = pair(RingConfig::with_capacity(4096));
    while p.send(1, 0, &[1u8; 1000]).is_ok() {}
    p.set_spin(Duration::ZERO);
    let t = std::thread::spawn(move || {
        let r = p
            .wait_for_space(1000, Some(Duration::from_secs(30)))
            .unwrap();
        (r, p.send(1, 0, &[2u8; 1000]).is_ok())
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(c.read().unwrap().is_some());
    c.release();
    let (r, sent) = t.join().unwrap();
    assert_eq!(r, Readiness::Ready);
    assert!(sent);
}

/// Threads instead of processes (the multi-process version is in `multiprocess.rs`): the
/// consumer sleeps between bursts, the producer blocks when full; any timeout is a lost wakeup.
#[test]
fn bursts_with_a_sleeping_consumer_never_stall_between_threads() {
    let total = scaled(200_000);
    let (mut p, mut c) = pair(RingConfig::with_capacity(16 * 1024));
    c.set_spin(Duration::ZERO);
    p.set_spin(Duration::ZERO);
    let stall = Duration::from_secs(20);
    let consumer = std::thread::spawn(move || {
        let mut seq = 0u64;
        let mut buf = vec![0u8; 1024];
        while seq < total {
            let mut got = 0;
            while let Some(rec) = c.read().unwrap() {
                assert_eq!(rec.flags() as u64, seq & 0xffff);
                let n = rec.payload().copy_to_slice(&mut buf);
                for (i, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, payload_byte(seq, i));
                }
                seq += 1;
                got += 1;
                if got == 64 {
                    break;
                }
            }
            c.release();
            if seq % 5000 < 64 {
                // Fall behind now and then so the producer fills the ring and must sleep.
                std::thread::sleep(Duration::from_micros(200));
            }
            if got == 0 {
                assert_eq!(
                    c.wait(Some(stall)).unwrap(),
                    Readiness::Ready,
                    "consumer stalled at {seq}"
                );
            }
        }
        seq
    });
    let mut seq = 0u64;
    while seq < total {
        let burst = 1 + seq % 50;
        for _ in 0..burst.min(total - seq) {
            let len = (seq as usize * 13) % 300;
            loop {
                match p.reserve(len, 1, seq as u16) {
                    Ok(buf) => {
                        fill_payload(seq, buf);
                        break;
                    }
                    Err(edgegw_ring::Error::Full { .. }) => {
                        p.publish();
                        assert_eq!(
                            p.wait_for_space(len, Some(stall)).unwrap(),
                            Readiness::Ready,
                            "producer stalled at {seq}"
                        );
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            seq += 1;
        }
        p.publish();
        if seq % 1000 < 50 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    assert_eq!(consumer.join().unwrap(), total);
}
