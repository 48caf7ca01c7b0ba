//! Protection and restarts (FORMAT.md sections 6 to 8): a ring with fd protection hands its
//! peer a read-only description of the owner's part; a version 1 hello is refused on it and
//! served on a ring with seal protection; an owner that kept its fds takes the ring back after a
//! "restart" (a new server, a new producer over the same memfds) and a consumer that stays up
//! continues without loss or duplicate; a stored ring someone scribbled on is not continued.

mod common;

use common::{consumer_hello, me, temp_dir, Running};
use edgegw_ring::{
    Consumer, Producer, Protection, Readiness, Reattached, Refusal, RingConfig, RingFds,
    ServerEvent, TakenBack,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Sends a raw hello of `version` asking for the consumer role; returns the answer's version,
/// status and how many fds came.
fn raw_hello(path: &Path, version: u16) -> (u16, u8, Vec<OwnedFd>) {
    use nix::sys::socket::{
        connect, recvmsg, send, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
        SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    send(fd.as_raw_fd(), &consumer_hello(version), MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 128];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: SCM_RIGHTS gave this process a new fd that nothing else owns.
                fds.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) });
            }
        }
    }
    let len = msg.bytes;
    assert_eq!(len, 128);
    (u16::from_ne_bytes([buf[4], buf[5]]), buf[6], fds)
}

fn seals(fd: &OwnedFd) -> nix::fcntl::SealFlag {
    nix::fcntl::SealFlag::from_bits_truncate(
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap(),
    )
}

#[test]
fn a_consumer_of_a_ring_with_fd_protection_gets_the_region_read_only_and_cannot_map_it_writable() {
    let dir = temp_dir("fdprot");
    let path = dir.join("ingress.sock");
    let producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let _server = Running::start(&path, producer.served_ring().unwrap(), me());
    let consumer = Consumer::attach(&path).expect("a version 2 peer attaches");
    drop(consumer);
    let (version, status, fds) = raw_hello(&path, 2);
    assert_eq!((version, status, fds.len()), (2, 0, 4));
    let region = &fds[0];
    let flags = nix::fcntl::fcntl(region.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(
        flags & libc::O_ACCMODE,
        libc::O_RDONLY,
        "a read-only description"
    );
    assert!(
        !seals(region).contains(nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE),
        "no F_SEAL_FUTURE_WRITE: the owner can write it again after a restart"
    );
    let err = memmap2::MmapOptions::new()
        .len(4096)
        .map_raw(region)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    assert_eq!(
        nix::unistd::write(region, b"x").unwrap_err(),
        nix::Error::EBADF
    );
    // Only the owner's uid may open it again (through /proc) for writing.
    let mode = std::fs::metadata(format!("/proc/self/fd/{}", region.as_raw_fd()))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_version_1_hello_on_a_ring_with_fd_protection_is_refused_as_a_version_mismatch() {
    let dir = temp_dir("v1fd");
    let path = dir.join("ingress.sock");
    let producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let (version, status, fds) = raw_hello(&path, 1);
    assert_eq!(
        (version, status, fds.len()),
        (2, 1, 0),
        "status 1 (version mismatch) in version 2, which a version 1 peer reports as such"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        server.events().iter().any(|e| matches!(
            e,
            ServerEvent::Refused {
                reason: Refusal::NeedsSealProtection { client: 1 },
                ..
            }
        )),
        "{:?}",
        server.events()
    );
}

#[test]
fn a_ring_with_seal_protection_serves_a_version_1_peer_the_sealed_fds() {
    let dir = temp_dir("v1seal");
    let path = dir.join("ingress.sock");
    let config = RingConfig::with_capacity(64 * 1024).protection(Protection::Seal);
    let producer = Producer::create(config).unwrap();
    assert_eq!(
        producer.served_ring().unwrap().protection(),
        Protection::Seal
    );
    let _server = Running::start(&path, producer.served_ring().unwrap(), me());
    let (version, status, fds) = raw_hello(&path, 1);
    assert_eq!(
        (version, status, fds.len()),
        (1, 0, 4),
        "answered in version 1"
    );
    assert!(seals(&fds[0]).contains(nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE));
    // ...and this library's consumer attaches to it too.
    drop(fds);
    std::thread::sleep(Duration::from_millis(50));
    common_attach(&path);
}

fn common_attach(path: &Path) -> Consumer {
    for _ in 0..500 {
        match Consumer::attach(path) {
            Ok(c) => return c,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Consumer::attach(path).expect("attach")
}

fn send_numbered(producer: &mut Producer, range: std::ops::Range<u64>) {
    for n in range {
        producer.send(1, 0, &n.to_le_bytes()).unwrap();
    }
    producer.publish();
}

/// Reads every numbered record there is now, without releasing.
fn read_all(consumer: &mut Consumer, got: &mut Vec<u64>) {
    while let Some(r) = consumer.read().unwrap() {
        got.push(u64::from_le_bytes(r.payload().read_array(0).unwrap()));
    }
}

#[test]
fn a_restarted_owner_takes_its_ring_back_and_a_consumer_that_stays_up_loses_and_repeats_nothing() {
    let dir = temp_dir("restart");
    let path = dir.join("ingress.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let mut consumer = Consumer::attach(&path).unwrap();
    let identity = |fds: &RingFds| {
        let m = std::fs::metadata(format!("/proc/self/fd/{}", fds.region.as_raw_fd())).unwrap();
        (m.dev(), m.ino())
    };
    send_numbered(&mut producer, 0..100);
    // The consumer reads 40 and releases 30: 10 read and not released, 60 not read.
    let mut got = Vec::new();
    for i in 0..40 {
        let r = consumer.read().unwrap().unwrap();
        got.push(u64::from_le_bytes(r.payload().read_array(0).unwrap()));
        if i == 29 {
            consumer.release();
        }
    }
    // The old life stops: FINISHED, its server goes (the consumer's link hangs up).
    producer.finish();
    drop(server);
    drop(producer);
    // The consumer reads the old ring to its end (nothing released), sees FINISHED, and finds
    // no socket to attach to while the owner is down.
    read_all(&mut consumer, &mut got);
    assert_eq!(got.len(), 100);
    assert!(matches!(
        consumer.wait(Some(Duration::from_millis(100))).unwrap(),
        Readiness::Finished | Readiness::PeerGone
    ));
    assert!(consumer.reattach().is_err(), "no owner yet");
    // The new life takes the ring back from the stored fds.
    let mut producer = match Producer::take_back(stored).unwrap() {
        TakenBack::Continued(p) => p,
        TakenBack::Unfit { reason, .. } => panic!("a consistent ring is continued: {reason}"),
    };
    assert_eq!(producer.generation(), 1, "same generation");
    assert_eq!(producer.positions(), (100 * 16, 30 * 16), "same positions");
    let before = identity(producer.fds().unwrap());
    let _server = Running::start(&path, producer.served_ring().unwrap(), me());
    send_numbered(&mut producer, 100..150);
    let mut how = consumer.reattach();
    for _ in 0..500 {
        if how.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        how = consumer.reattach();
    }
    assert_eq!(how.unwrap(), Reattached::SameRing);
    read_all(&mut consumer, &mut got);
    consumer.release();
    assert_eq!(
        got,
        (0..150).collect::<Vec<_>>(),
        "in order, none lost, none twice"
    );
    assert_eq!(identity(producer.fds().unwrap()), before);
}

#[test]
fn a_stored_ring_with_a_scribbled_record_is_not_continued_and_the_records_before_it_are_salvaged() {
    let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    send_numbered(&mut producer, 0..10);
    drop(producer);
    // Record 3's header (each record is 16 bytes) gets a reserved type.
    let header_at = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as u64
        + 3 * 16;
    let word: u64 = 8 | (0xff00u64 << 32);
    nix::sys::uio::pwrite(&stored.region, &word.to_ne_bytes(), header_at as i64).unwrap();
    match Producer::take_back(stored).unwrap() {
        TakenBack::Unfit {
            reason,
            generation,
            salvaged,
        } => {
            assert!(reason.contains("reserved type"), "{reason}");
            assert_eq!(generation, Some(1));
            let numbers: Vec<u64> = salvaged
                .iter()
                .map(|r| u64::from_le_bytes(r.payload[..8].try_into().unwrap()))
                .collect();
            assert_eq!(numbers, vec![0, 1, 2], "the records before the scribble");
        }
        TakenBack::Continued(_) => panic!("a scribbled ring must not continue"),
    }
}

#[test]
fn a_stored_ring_with_impossible_positions_or_a_broken_header_is_not_continued() {
    // Consumer position beyond the producer's.
    let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    send_numbered(&mut producer, 0..4);
    drop(producer);
    nix::sys::uio::pwrite(&stored.consumer_page, &4096u64.to_ne_bytes(), 128).unwrap();
    assert!(matches!(
        Producer::take_back(stored).unwrap(),
        TakenBack::Unfit { salvaged, .. } if salvaged.is_empty()
    ));
    // A rewritten magic.
    let producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    drop(producer);
    nix::sys::uio::pwrite(&stored.region, b"XDGEGWRG", 0).unwrap();
    assert!(matches!(
        Producer::take_back(stored).unwrap(),
        TakenBack::Unfit {
            generation: None,
            ..
        }
    ));
    // A ring with seal protection cannot be written again.
    let config = RingConfig::with_capacity(64 * 1024).protection(Protection::Seal);
    let producer = Producer::create(config).unwrap();
    let stored = producer.fds().unwrap().try_clone().unwrap();
    drop(producer);
    match Producer::take_back(stored).unwrap() {
        TakenBack::Unfit { reason, .. } => assert!(reason.contains("seal protection"), "{reason}"),
        TakenBack::Continued(_) => panic!("a sealed ring cannot continue"),
    }
}

#[test]
fn a_restarted_owner_takes_back_its_reply_ring_and_reads_what_was_published_meanwhile() {
    let dir = temp_dir("reply");
    let path = dir.join("reply.sock");
    let owner = Consumer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let stored = owner.fds().unwrap().try_clone().unwrap();
    let server = Running::start(&path, owner.served_ring().unwrap(), me());
    let mut producer = common_attach_producer(&path);
    send_numbered(&mut producer, 0..5);
    drop(server);
    drop(owner);
    // Published while the owner is down.
    send_numbered(&mut producer, 5..8);
    let mut owner = match Consumer::take_back(stored).unwrap() {
        TakenBack::Continued(c) => c,
        TakenBack::Unfit { reason, .. } => panic!("{reason}"),
    };
    let mut got = Vec::new();
    while let Some(r) = owner.read().unwrap() {
        got.push(u64::from_le_bytes(r.payload().read_array(0).unwrap()));
    }
    owner.release();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    // The producer attaches again and continues.
    let _server = Running::start(&path, owner.served_ring().unwrap(), me());
    let mut producer = common_attach_producer(&path);
    send_numbered(&mut producer, 8..9);
    assert_eq!(
        u64::from_le_bytes(
            owner
                .read()
                .unwrap()
                .unwrap()
                .payload()
                .read_array(0)
                .unwrap()
        ),
        8
    );
}

fn common_attach_producer(path: &Path) -> Producer {
    for _ in 0..500 {
        match Producer::attach(path) {
            Ok(p) => return p,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Producer::attach(path).expect("attach")
}
