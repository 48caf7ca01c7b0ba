//! The attach protocol: a `RingServer` serving rings to consumers and producers over a unix
//! socket, with credentials, roles, one peer at a time, detach and re-attach without loss, and
//! generations.

mod common;

use common::{consumer_hello, fill_payload, me, payload_byte, temp_dir, Running};
use edgegw_ring::{
    AllowList, Consumer, Error, Producer, Readiness, Reattached, Refusal, RingConfig, RingServer,
    Role, ServerEvent,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn an_attached_consumer_reads_what_the_owner_produces_and_the_owner_sees_it_attached() {
    let dir = temp_dir("srv");
    let path = dir.join("ingress.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    assert!(!producer.peer_status().unwrap().attached);
    let mut consumer = Consumer::attach(&path).unwrap();
    server.wait_for("attach", |e| matches!(e, ServerEvent::Attached { .. }));
    assert!(producer.peer_status().unwrap().attached);
    assert_eq!(consumer.capacity(), 64 * 1024);
    assert_eq!(consumer.generation(), 1);
    for i in 0..100u64 {
        fill_payload(i, producer.reserve(i as usize * 10, 1, 0).unwrap());
    }
    producer.publish();
    for i in 0..100u64 {
        let rec = consumer.read().unwrap().unwrap();
        let v = rec.payload().to_vec();
        assert_eq!(v.len(), i as usize * 10);
        assert!(v.iter().enumerate().all(|(j, &b)| b == payload_byte(i, j)));
    }
    consumer.release();
    drop(consumer);
    server.wait_for("detach", |e| matches!(e, ServerEvent::Detached { .. }));
    assert!(!producer.peer_status().unwrap().attached);
    assert_eq!(producer.peer_status().unwrap().attaches, 1);
    server.stop();
}

#[test]
fn a_peer_that_sends_anything_after_its_hello_is_detached_and_the_ring_waits_for_the_next() {
    // FORMAT.md section 6, "Liveness": the connection stays silent after the attach.
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let chatty = edgegw_ring::tools::attach_raw(&path, edgegw_ring::Role::Consumer).unwrap();
    server.wait_for("attach", |e| matches!(e, ServerEvent::Attached { .. }));
    nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&chatty.link),
        b"hello again",
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    server.wait_for("detach", |e| matches!(e, ServerEvent::Detached { .. }));
    assert!(!producer.peer_status().unwrap().attached);
    // The owner hung up on it, and the next consumer is not told "busy".
    let mut buf = [0u8; 16];
    assert_eq!(
        nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&chatty.link),
            &mut buf,
            nix::sys::socket::MsgFlags::empty()
        )
        .unwrap(),
        0,
        "the owner closed the chatty peer's link"
    );
    Consumer::attach(&path).expect("the next consumer attaches");
    server.stop();
}

#[test]
fn a_connection_that_sends_no_hello_within_5_seconds_is_closed_without_an_answer() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    // A SOCK_SEQPACKET connection read as a stream: what matters is what comes, and when.
    let fd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::UnixAddr::new(&path).unwrap(),
    )
    .unwrap();
    let mut silent = UnixStream::from(fd);
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let since = std::time::Instant::now();
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).unwrap();
    let waited = since.elapsed();
    assert!(answer.is_empty(), "no answer: {answer:?}");
    // The server's 5 s count from its accept, a moment before ours may start.
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(12),
        "closed after {waited:?}"
    );
    server.wait_for("drop", |e| matches!(e, ServerEvent::Dropped { .. }));
    server.stop();
}

#[test]
fn a_second_consumer_is_refused_as_busy_while_one_is_attached() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let _first = Consumer::attach(&path).unwrap();
    let err = Consumer::attach(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: Refusal::Busy,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("another peer is attached"),
        "{err}"
    );
    server.stop();
}

#[test]
fn a_peer_asking_for_the_wrong_role_is_refused_with_both_roles_named() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let err = Producer::attach(&path).unwrap_err();
    match &err {
        Error::Refused {
            reason: Refusal::WrongRole { offered, requested },
            ..
        } => assert_eq!((*offered, *requested), (Role::Consumer, Role::Producer)),
        e => panic!("expected WrongRole, got {e}"),
    }
    assert!(
        err.to_string()
            .contains("peer is a consumer, we asked to be a producer"),
        "{err}"
    );
    server.stop();
}

#[test]
fn credentials_not_on_the_allow_list_are_refused() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let nobody_like = AllowList::new().uid(4_000_000_000).gid(4_000_000_000);
    let server = Running::start(&path, producer.served_ring().unwrap(), nobody_like);
    let err = Consumer::attach(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: Refusal::NotAllowed { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("credentials not allowed"), "{err}");
    server.wait_for("refusal", |e| {
        matches!(
            e,
            ServerEvent::Refused {
                reason: Refusal::NotAllowed { .. },
                ..
            }
        )
    });
    assert!(!producer.peer_status().unwrap().attached);
    server.stop();
}

#[test]
fn a_refusal_for_credentials_is_answered_in_the_hellos_version() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let nobody_like = AllowList::new().uid(4_000_000_000).gid(4_000_000_000);
    let server = Running::start(&path, producer.served_ring().unwrap(), nobody_like);
    for version in [1u16, 2] {
        let mut hello = [0u8; 32];
        hello[..4].copy_from_slice(b"EGRH");
        hello[4..6].copy_from_slice(&version.to_ne_bytes());
        hello[6] = 1;
        let answer = raw_exchange(&path, &hello);
        assert_eq!(answer[6], 2, "status 2: credentials not allowed");
        assert_eq!(
            u16::from_ne_bytes([answer[4], answer[5]]),
            version,
            "FORMAT.md section 6: the hello's version, which the owner speaks"
        );
        assert!(
            answer[7..].iter().all(|&b| b == 0),
            "a stranger learns nothing"
        );
    }
    server.stop();
}

#[test]
fn a_gid_on_the_allow_list_is_enough() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let allow = AllowList::new().gid(nix::unistd::getegid().as_raw());
    let server = Running::start(&path, producer.served_ring().unwrap(), allow);
    Consumer::attach(&path).unwrap();
    server.stop();
}

/// Raw hello over the socket, to exercise what the client API never sends.
fn raw_exchange(path: &Path, hello: &[u8]) -> Vec<u8> {
    use nix::sys::socket::{
        connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    send(fd.as_raw_fd(), hello, MsgFlags::empty()).unwrap();
    let mut buf = vec![0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_hello_with_another_protocol_version_or_malformed_gets_a_status_not_fds() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let answer = raw_exchange(&path, &consumer_hello(99));
    assert_eq!(answer.len(), 128);
    assert_eq!(&answer[..4], b"EGRR");
    assert_eq!(answer[6], 1, "status 1: version mismatch");
    // FORMAT.md section 6: a version the owner does not speak is answered in the owner's
    // newest, so the peer learns which one to say hello in.
    assert_eq!(
        u16::from_ne_bytes([answer[4], answer[5]]),
        edgegw_ring::PROTOCOL_VERSION,
        "the refusal's version is the owner's, not the hello's 99"
    );
    server.wait_for("version refusal", |e| {
        matches!(
            e,
            ServerEvent::Refused {
                reason: Refusal::VersionMismatch { client: 99, .. },
                ..
            }
        )
    });
    let answer = raw_exchange(&path, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(answer[6], 5, "status 5: malformed");
    assert_eq!(
        u16::from_ne_bytes([answer[4], answer[5]]),
        edgegw_ring::PROTOCOL_VERSION,
        "no hello: answered in the owner's version"
    );
    assert!(
        answer[7..].iter().all(|&b| b == 0),
        "a stranger learns nothing"
    );
    // A role that is none of 1, 2 and 3 is a malformed hello too, answered in its version.
    let mut bad_role = [0u8; 32];
    bad_role[..4].copy_from_slice(b"EGRH");
    bad_role[4..6].copy_from_slice(&1u16.to_ne_bytes());
    bad_role[6] = 7;
    let answer = raw_exchange(&path, &bad_role);
    assert_eq!(answer[6], 5, "status 5: malformed");
    assert_eq!(u16::from_ne_bytes([answer[4], answer[5]]), 1);
    // Nothing of that disturbed a real attach.
    Consumer::attach(&path).unwrap();
    server.stop();
}

#[test]
fn attaching_to_a_missing_path_or_a_dead_socket_names_the_cause() {
    let dir = temp_dir("srv");
    let err = Consumer::attach(dir.join("nothing.sock")).unwrap_err();
    assert!(
        err.to_string().contains("no ring socket at this path"),
        "{err}"
    );
    // A socket file nobody listens on (a crashed server's leftover).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let err = Consumer::attach(&stale).unwrap_err();
    assert!(err.to_string().contains("no server is listening"), "{err}");
}

#[test]
fn bind_replaces_a_stale_socket_but_not_a_live_server_or_another_file() {
    let dir = temp_dir("srv");
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server =
        RingServer::bind(&stale, producer.served_ring().unwrap(), me()).expect("stale replaced");
    let err = RingServer::bind(&stale, producer.served_ring().unwrap(), me()).unwrap_err();
    assert!(
        err.to_string().contains("another ring server is listening"),
        "{err}"
    );
    drop(server);
    let file = dir.join("plain-file");
    std::fs::write(&file, b"keep me").unwrap();
    let err = RingServer::bind(&file, producer.served_ring().unwrap(), me()).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn a_new_consumer_continues_from_the_released_position_and_loses_nothing() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(16 * 1024)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let mut seq = 0u64;
    let mut send = |p: &mut Producer, n: u64| {
        for _ in 0..n {
            p.send(1, 0, &seq.to_le_bytes()).unwrap();
            seq += 1;
        }
    };
    send(&mut producer, 50);
    let mut first = Consumer::attach(&path).unwrap();
    for want in 0..20u64 {
        assert_eq!(
            first.read().unwrap().unwrap().payload().read_u64_le(0),
            Some(want)
        );
    }
    first.release();
    // Read five more without releasing: they must come again.
    for _ in 0..5 {
        first.read().unwrap().unwrap();
    }
    drop(first);
    server.wait_for("detach", |e| matches!(e, ServerEvent::Detached { .. }));
    send(&mut producer, 50);
    let mut second = Consumer::attach(&path).unwrap();
    for want in 20..100u64 {
        assert_eq!(
            second.read().unwrap().unwrap().payload().read_u64_le(0),
            Some(want)
        );
    }
    assert!(second.read().unwrap().is_none());
    server.stop();
}

#[test]
fn the_reply_direction_is_served_the_same_way_with_the_owner_reading() {
    let dir = temp_dir("srv");
    let path = dir.join("reply.sock");
    let mut owner = Consumer::create(RingConfig::with_capacity(8192)).unwrap();
    let server = Running::start(&path, owner.served_ring().unwrap(), me());
    let err = Consumer::attach(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: Refusal::WrongRole { .. },
                ..
            }
        ),
        "{err}"
    );
    let mut peer = Producer::attach(&path).unwrap();
    peer.send(4, 2, b"reply").unwrap();
    let rec = owner.read().unwrap().unwrap();
    assert_eq!((rec.record_type(), rec.flags()), (4, 2));
    assert_eq!(rec.payload().to_vec(), b"reply");
    owner.release();
    server.stop();
    // The owner's server is gone: the attached producer notices the hang-up.
    assert!(peer.peer_gone());
}

#[test]
fn an_attached_consumer_learns_that_the_owner_went_away() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let mut consumer = Consumer::attach(&path).unwrap();
    consumer.set_spin(Duration::ZERO);
    producer.send(1, 0, b"last words").unwrap();
    server.stop();
    drop(producer);
    // What was published stays readable after the owner is gone.
    assert_eq!(
        consumer.wait(Some(Duration::from_secs(10))).unwrap(),
        Readiness::Ready
    );
    assert_eq!(
        consumer.read().unwrap().unwrap().payload().to_vec(),
        b"last words"
    );
    consumer.release();
    assert_eq!(
        consumer.wait(Some(Duration::from_secs(10))).unwrap(),
        Readiness::PeerGone
    );
}

#[test]
fn a_consumer_drains_a_finished_ring_then_follows_the_new_generation() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut old = Producer::create(RingConfig::with_capacity(4096).generation(7)).unwrap();
    let server = Running::start(&path, old.served_ring().unwrap(), me());
    let mut consumer = Consumer::attach(&path).unwrap();
    old.send(1, 0, b"old-1").unwrap();
    old.send(1, 0, b"old-2").unwrap();
    old.finish();
    // The "restarted daemon": a new ring, a new generation, same path.
    server.stop();
    drop(old);
    let mut new = Producer::create(RingConfig::with_capacity(4096).generation(8)).unwrap();
    new.send(1, 0, b"new-1").unwrap();
    let server = Running::start(&path, new.served_ring().unwrap(), me());
    // Re-attaching before the old ring is drained is refused, and changes nothing.
    let err = consumer.reattach().unwrap_err();
    assert!(err.to_string().contains("drain it first"), "{err}");
    assert_eq!(consumer.generation(), 7);
    assert_eq!(
        consumer.read().unwrap().unwrap().payload().to_vec(),
        b"old-1"
    );
    assert_eq!(
        consumer.read().unwrap().unwrap().payload().to_vec(),
        b"old-2"
    );
    consumer.release();
    assert_eq!(consumer.wait(None).unwrap(), Readiness::Finished);
    assert_eq!(
        consumer.reattach().unwrap(),
        Reattached::NewGeneration { old: 7, new: 8 }
    );
    assert_eq!(
        consumer.read().unwrap().unwrap().payload().to_vec(),
        b"new-1"
    );
    server.stop();
}

#[test]
fn reattaching_to_the_same_ring_continues_it() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let mut consumer = Consumer::attach(&path).unwrap();
    producer.send(1, 0, b"a").unwrap();
    consumer.read().unwrap().unwrap();
    consumer.release();
    // Busy while attached; a consumer drops its old link when re-attaching.
    producer.send(1, 0, b"b").unwrap();
    let err = consumer.reattach().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: Refusal::Busy,
                ..
            }
        ),
        "{err}"
    );
    server.stop();
}

#[test]
fn a_peer_that_talks_after_the_hello_is_disconnected_and_the_ring_freed() {
    use std::os::fd::AsRawFd;
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    // A raw client: hello, take the answer, then chatter.
    use nix::sys::socket::{
        connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    let hello = consumer_hello(edgegw_ring::PROTOCOL_VERSION);
    send(fd.as_raw_fd(), &hello, MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!((n, buf[6]), (128, 0), "attached");
    server.wait_for("attach", |e| matches!(e, ServerEvent::Attached { .. }));
    for _ in 0..100 {
        if send(fd.as_raw_fd(), b"chatter", MsgFlags::MSG_NOSIGNAL).is_err() {
            break;
        }
    }
    server.wait_for("detach", |e| matches!(e, ServerEvent::Detached { .. }));
    // The server closed its end; a proper consumer can attach now.
    Consumer::attach(&path).unwrap();
    drop(fd);
    server.stop();
}

#[test]
fn a_replaced_ring_disconnects_the_peer_and_the_next_attach_gets_the_new_ring() {
    let dir = temp_dir("srv");
    let path = dir.join("reply.sock");
    let mut broken = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut server = RingServer::bind(&path, broken.served_ring().unwrap(), me()).unwrap();
    // Serves until `f` is seen among the events (the peer attaches from another thread).
    let serve_until = |server: &mut RingServer, what: &str, f: &dyn Fn(&ServerEvent) -> bool| {
        for _ in 0..500 {
            let events = server.serve_for(Some(Duration::from_millis(10))).unwrap();
            if events.iter().any(f) {
                return;
            }
        }
        panic!("no {what}");
    };
    let attach = |path: PathBuf| std::thread::spawn(move || Producer::attach(&path).unwrap());
    let peer = attach(path.clone());
    serve_until(&mut server, "attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let mut peer = peer.join().unwrap();
    peer.send(1, 0, b"into the old ring").unwrap();
    assert!(!peer.peer_gone());

    let mut unused = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let event = server.replace_ring(unused.served_ring().unwrap());
    assert!(
        matches!(event, Some(ServerEvent::Detached { .. })),
        "{event:?}"
    );
    assert!(!server.peer_attached());
    assert!(
        peer.peer_gone(),
        "the disconnected peer sees its link hang up"
    );
    // Nothing attached now: replacing again reports no detach.
    let mut fresh = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    assert_eq!(server.replace_ring(fresh.served_ring().unwrap()), None);

    let peer = attach(path.clone());
    serve_until(&mut server, "second attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let mut peer = peer.join().unwrap();
    peer.send(2, 0, b"into the new ring").unwrap();
    let rec = fresh.read().unwrap().expect("the new ring has the record");
    assert_eq!(rec.payload().to_vec(), b"into the new ring");
    fresh.release();
    // The old rings have only what was written before the swap.
    let rec = broken.read().unwrap().unwrap();
    assert_eq!(rec.payload().to_vec(), b"into the old ring");
    broken.release();
    assert!(broken.read().unwrap().is_none());
    assert!(unused.read().unwrap().is_none());
}

/// Serves `server` from this thread until an event matching `f` comes; returns all events.
fn serve_until(
    server: &mut RingServer,
    what: &str,
    f: &dyn Fn(&ServerEvent) -> bool,
) -> Vec<ServerEvent> {
    let mut seen = Vec::new();
    for _ in 0..500 {
        let events = server.serve_for(Some(Duration::from_millis(10))).unwrap();
        let done = events.iter().any(f);
        seen.extend(events);
        if done {
            return seen;
        }
    }
    panic!("no {what}; events: {seen:?}");
}

#[test]
fn a_consumer_page_broken_by_a_departed_consumer_is_reported_once_and_its_records_move_to_a_fresh_ring(
) {
    use std::os::unix::fs::FileExt;
    let dir = temp_dir("srv");
    let path = dir.join("ingress.sock");
    let mut owner = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut server = RingServer::bind(&path, owner.served_ring().unwrap(), me()).unwrap();
    owner.send(1, 0, b"first").unwrap();
    owner.send(2, 7, b"second").unwrap();
    // A consumer reads the first record and releases it properly, then writes a position
    // inside the second record and leaves.
    let reader = std::thread::spawn({
        let path = path.clone();
        move || {
            let mut c = Consumer::attach(&path).unwrap();
            assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"first");
            c.release();
            let raw = edgegw_ring::tools::attach_raw(&path, Role::Consumer);
            assert!(raw.is_err(), "busy while one is attached");
            c
        }
    });
    serve_until(&mut server, "attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let consumer = reader.join().unwrap();
    drop(consumer);
    serve_until(&mut server, "detach", &|e| {
        matches!(e, ServerEvent::Detached { .. })
    });
    let hostile = std::thread::spawn({
        let path = path.clone();
        move || edgegw_ring::tools::attach_raw(&path, Role::Consumer).unwrap()
    });
    serve_until(&mut server, "raw attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let hostile = hostile.join().unwrap();
    let page = std::fs::File::from(hostile.fds.consumer_page.try_clone().unwrap());
    let mut word = [0u8; 8];
    page.read_at(&mut word, 128).unwrap();
    let released = u64::from_ne_bytes(word);
    assert_eq!(released, 16, "the first record was released");
    page.write_at(&(released + 8).to_ne_bytes(), 128).unwrap();
    drop(hostile);
    let events = serve_until(&mut server, "the broken ring", &|e| {
        matches!(e, ServerEvent::RingBroken { .. })
    });
    let broken: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::RingBroken { generation, reason } => Some((*generation, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(broken.len(), 1, "{events:?}");
    assert_eq!(broken[0].0, 1);
    assert!(
        broken[0].1.contains("not on a record boundary"),
        "{broken:?}"
    );
    // Until it is replaced, nobody gets the broken ring, and it is reported only once.
    let refused = std::thread::spawn({
        let path = path.clone();
        move || Consumer::attach(&path).unwrap_err()
    });
    let events = serve_until(&mut server, "a refusal", &|e| {
        matches!(e, ServerEvent::Refused { .. })
    });
    assert!(!events
        .iter()
        .any(|e| matches!(e, ServerEvent::RingBroken { .. })));
    assert!(matches!(
        refused.join().unwrap(),
        Error::Refused {
            reason: Refusal::Busy,
            ..
        }
    ));
    // The owner agrees, and moves what was not released into a fresh ring.
    assert!(owner.check_consumer().is_err());
    let mut fresh = Producer::create(RingConfig::with_capacity(4096).generation(2)).unwrap();
    let moved = owner.move_unreleased_to(&mut fresh).unwrap();
    assert_eq!((moved.records, moved.bytes), (1, 6));
    assert_eq!(server.replace_ring(fresh.served_ring().unwrap()), None);
    let next = std::thread::spawn({
        let path = path.clone();
        move || {
            let mut c = Consumer::attach(&path).unwrap();
            let generation = c.generation();
            let r = c.read().unwrap().unwrap();
            (generation, r.record_type(), r.flags(), r.payload().to_vec())
        }
    });
    serve_until(&mut server, "attach to the fresh ring", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    assert_eq!(next.join().unwrap(), (2, 2, 7, b"second".to_vec()));
}

#[test]
fn a_reply_ring_header_rewritten_by_its_producer_is_reported_when_it_leaves() {
    use std::os::unix::fs::FileExt;
    let dir = temp_dir("srv");
    let path = dir.join("reply.sock");
    let owner = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut server = RingServer::bind(&path, owner.served_ring().unwrap(), me()).unwrap();
    let hostile = std::thread::spawn({
        let path = path.clone();
        move || edgegw_ring::tools::attach_raw(&path, Role::Producer).unwrap()
    });
    serve_until(&mut server, "attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let hostile = hostile.join().unwrap();
    // The producer may write the region: it overwrites the header's magic, then leaves. The
    // next producer would refuse the ring forever.
    std::fs::File::from(hostile.fds.region.try_clone().unwrap())
        .write_at(b"XXXXXXXX", 0)
        .unwrap();
    drop(hostile);
    let events = serve_until(&mut server, "the broken ring", &|e| {
        matches!(e, ServerEvent::RingBroken { .. })
    });
    assert!(
        events.iter().any(
            |e| matches!(e, ServerEvent::RingBroken { reason, .. } if reason.contains("magic"))
        ),
        "{events:?}"
    );
}

#[test]
fn a_peer_not_on_the_allow_list_is_refused_before_its_hello_is_parsed_and_learns_nothing() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    producer.send(1, 0, b"private").unwrap();
    // Nobody is allowed, not even us.
    let server = Running::start(&path, producer.served_ring().unwrap(), AllowList::new());
    for hello in [&b"GET / HTTP/1.0\r\n\r\n"[..], &[0u8; 32][..]] {
        let answer = raw_exchange(&path, hello);
        assert_eq!(answer.len(), 128);
        assert_eq!(&answer[..4], b"EGRR");
        assert_eq!(answer[6], 2, "status 2 (credentials), not 5 (malformed)");
        assert!(
            answer[7..].iter().all(|&b| b == 0),
            "nothing about the ring: {:?}",
            &answer[7..]
        );
    }
    server.wait_for("a credentials refusal", |e| {
        matches!(
            e,
            ServerEvent::Refused {
                reason: Refusal::NotAllowed { .. },
                ..
            }
        )
    });
    assert!(!server.events().iter().any(|e| matches!(
        e,
        ServerEvent::Refused {
            reason: Refusal::Malformed,
            ..
        }
    )));
    server.stop();
}

#[test]
fn a_stat_answer_carries_eight_owner_counters_and_the_message_after_it_the_rest() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut server = RingServer::bind(&path, producer.served_ring().unwrap(), me()).unwrap();
    let counters = Arc::new(edgegw_ring::OwnerCounters::default());
    server.set_owner_counters(counters.clone());
    counters.add(0, 3);
    counters.add(7, 1 << 40);
    counters.add(8, 99); // beyond the eight: in the message after the answer
    counters.add(31, 5);
    counters.add(32, 7); // beyond them all: ignored
    let stat = std::thread::spawn({
        let path = path.clone();
        move || edgegw_ring::tools::stat(&path).unwrap()
    });
    serve_until(&mut server, "a stat", &|e| {
        matches!(e, ServerEvent::Stat { .. })
    });
    let stat = stat.join().unwrap();
    assert_eq!(stat.owner_counters[..8], [3, 0, 0, 0, 0, 0, 0, 1 << 40]);
    assert_eq!(stat.owner_counters[8], 99);
    assert_eq!(stat.owner_counters[31], 5);
    assert_eq!(
        stat.owner_counters.iter().sum::<u64>(),
        3 + (1 << 40) + 99 + 5
    );
}

#[test]
fn a_consumer_of_a_replaced_ring_switches_without_draining_it_and_reads_the_records_again() {
    let dir = temp_dir("srv");
    let path = dir.join("r.sock");
    let mut owner = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut server = RingServer::bind(&path, owner.served_ring().unwrap(), me()).unwrap();
    owner.send(1, 0, b"unread").unwrap();
    let attach = std::thread::spawn({
        let path = path.clone();
        move || Consumer::attach(&path).unwrap()
    });
    serve_until(&mut server, "attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let mut consumer = attach.join().unwrap();
    // The owner replaces the ring (as after its consumer broke it): the record moves over, the
    // old ring is marked REPLACED, the consumer is disconnected.
    let mut fresh = Producer::create(RingConfig::with_capacity(4096).generation(2)).unwrap();
    owner.move_unreleased_to(&mut fresh).unwrap();
    server.replace_ring(fresh.served_ring().unwrap());
    assert_eq!(
        consumer.wait(None).unwrap(),
        Readiness::Ready,
        "the record is still there"
    );
    let reattach = std::thread::spawn(move || {
        let got = consumer.reattach().unwrap();
        let record = consumer.read().unwrap().unwrap().payload().to_vec();
        (got, record)
    });
    serve_until(&mut server, "re-attach", &|e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let (got, record) = reattach.join().unwrap();
    assert_eq!(
        got,
        Reattached::Replaced { old: 1, new: 2 },
        "no need to drain it first"
    );
    assert_eq!(record, b"unread");
}

#[test]
fn byte_slices_are_offered_to_a_consumer_of_its_owners_ring_and_never_to_an_owner_reading_its_peer()
{
    let dir = temp_dir("srv");
    // Ingress: the owner produces, the attached consumer trusts it.
    let path = dir.join("ingress.sock");
    let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let server = Running::start(&path, producer.served_ring().unwrap(), me());
    let mut consumer = Consumer::attach(&path).unwrap();
    assert!(consumer.producer_trusted());
    for i in 0..50u64 {
        fill_payload(i, producer.reserve(i as usize * 7, 1, 0).unwrap());
    }
    producer.publish();
    for i in 0..50u64 {
        let rec = consumer.read().unwrap().unwrap();
        let bytes = rec.bytes().expect("the owner is the producer: trusted");
        assert_eq!(bytes, rec.payload().to_vec().as_slice());
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(j, &b)| b == payload_byte(i, j)));
    }
    consumer.release();
    drop(consumer);
    server.wait_for("detach", |e| matches!(e, ServerEvent::Detached { .. }));
    assert!(Consumer::attach(&path).unwrap().producer_trusted());
    server.stop();

    // Reply: the owner consumes what an attached producer writes: no slices.
    let path = dir.join("reply.sock");
    let mut owner = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let server = Running::start(&path, owner.served_ring().unwrap(), me());
    let mut peer = Producer::attach(&path).unwrap();
    peer.send(2, 0, b"from the peer").unwrap();
    assert!(!owner.producer_trusted());
    let rec = owner.read().unwrap().unwrap();
    assert_eq!(
        rec.bytes(),
        None,
        "the owner never trusts its peer's writes"
    );
    assert_eq!(rec.payload().to_vec(), b"from the peer");
    drop(peer);
    server.stop();

    // Inherited fds: unknown until the program says so.
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let mut inherited = Consumer::from_fds(producer.served_ring().unwrap().into_fds()).unwrap();
    producer.send(3, 0, b"sibling").unwrap();
    assert!(!inherited.producer_trusted());
    assert_eq!(inherited.read().unwrap().unwrap().bytes(), None);
    producer.send(3, 0, b"sibling again").unwrap();
    // SAFETY: the producer is this test's own `Producer`, which never writes a published record.
    unsafe { inherited.trust_producer() };
    assert_eq!(
        inherited.read().unwrap().unwrap().bytes(),
        Some(&b"sibling again"[..])
    );
}
