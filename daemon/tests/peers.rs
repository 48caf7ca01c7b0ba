//! Local peers that break the ring contract, as a buggy or hostile consumer would: each case is
//! dealt with on its own ring, nothing the daemon accepted is lost, and the rest of the gateway
//! (other connections, other rings, new handshakes) keeps working.

mod common;

use std::time::Duration;

use common::*;
use edgegw_proto as proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> String {
    ring_config("", SELF_SIGNED, "", "capacity = \"64KiB\"")
}

/// Attaches to `path` as the producer, retrying while the daemon still counts the previous
/// peer as attached (it notices a detach on its next attach-server pass).
fn attach_producer(path: &std::path::Path) -> edgegw_ring::Producer {
    attach_with_retry(|| edgegw_ring::Producer::attach(path)).expect("attach as the producer")
}

async fn read_exactly(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    n: usize,
) -> Vec<u8> {
    let mut got = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut got))
        .await
        .expect("the reply came in time")
        .unwrap();
    got
}

#[test]
fn a_finished_reply_ring_is_drained_and_a_new_producer_continues_while_the_gateway_runs_on() {
    let daemon = TestDaemon::start(&config());
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let mut replies = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(b"one").await.unwrap();
        assert_eq!(next_record(&mut ingress).0, proto::OPEN);
        let (_, data) = next_record(&mut ingress);
        let id = u64::from_le_bytes(data[..8].try_into().unwrap());

        // The consumer answers, then stops replying the way FORMAT.md section 7 says a
        // producer stops: FINISHED after its last record, and a signal.
        reply_data(&mut replies, id, b"last");
        replies.finish();
        assert_eq!(
            read_exactly(&mut tls, 4).await,
            b"last",
            "committed replies are drained"
        );

        // The TLS thread carries on: a new client gets its handshake done...
        let mut other = tokio::time::timeout(
            Duration::from_secs(5),
            connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost"),
        )
        .await
        .expect("a handshake while a reply ring is finished")
        .unwrap();
        other.write_all(b"x").await.unwrap();
        // ...the first connection still feeds the ingress ring...
        tls.write_all(b"two").await.unwrap();
        let mut kinds = Vec::new();
        while kinds.len() < 3 {
            kinds.push(next_record(&mut ingress));
        }
        assert!(kinds
            .iter()
            .any(|(k, d)| *k == proto::DATA && d[8..] == *b"two"));

        // ...and a new producer attaches to the reply socket and answers the same connection.
        drop(replies);
        let mut replies = attach_producer(&daemon.reply_socket("app"));
        reply_data(&mut replies, id, b"again");
        assert_eq!(read_exactly(&mut tls, 5).await, b"again");
    });
    let stats = daemon.wait_for("the finished reply ring counted", |s| {
        s.finished_reply_rings == 1
    });
    assert_eq!(stats.corrupt_reply_rings, 0);
}

/// Attaches a conforming consumer to `path`, retrying while the daemon refuses or the ring is
/// being replaced.
fn attach_consumer(path: &std::path::Path) -> edgegw_ring::Consumer {
    attach_with_retry(|| edgegw_ring::Consumer::attach(path))
        .expect("a conforming consumer attaches")
}

/// A hostile consumer takes the ingress ring, writes `bytes` at `offset` of the consumer page
/// (positions, magic: what a consumer can write) and goes away. A conforming consumer that
/// attaches afterwards must get everything the daemon accepted and had not seen released, and
/// what comes next.
fn a_broken_consumer_page_is_replaced_and_nothing_accepted_is_lost(
    consume_first: bool,
    scribble: impl FnOnce(&std::fs::File, u64),
) {
    let daemon = TestDaemon::start(&config());
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(b"before").await.unwrap();
        daemon.wait_for("the bytes accepted", |s| s.bytes_from_clients == 6);
        let mut id = None;
        if consume_first {
            // A conforming consumer reads and releases everything, then detaches.
            let mut first = attach_consumer(&daemon.ring_socket("app"));
            assert_eq!(next_record(&mut first).0, proto::OPEN);
            let (_, data) = next_record(&mut first);
            assert_eq!(&data[8..], b"before");
            id = Some(u64::from_le_bytes(data[..8].try_into().unwrap()));
        }
        let stat = edgegw_ring::tools::stat(daemon.ring_socket("app")).unwrap();
        let hostile = loop {
            match edgegw_ring::tools::attach_raw(
                daemon.ring_socket("app"),
                edgegw_ring::Role::Consumer,
            ) {
                Ok(raw) => break raw,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let page = std::fs::File::from(hostile.fds.consumer_page.try_clone().unwrap());
        scribble(&page, stat.producer_pos);
        drop(hostile);

        let mut ingress = attach_consumer(&daemon.ring_socket("app"));
        let mut replies = attach_producer(&daemon.reply_socket("app"));
        if !consume_first {
            let (kind, open) = next_record(&mut ingress);
            assert_eq!(kind, proto::OPEN, "the OPEN record is delivered again");
            let (kind, data) = next_record(&mut ingress);
            assert_eq!((kind, &data[8..]), (proto::DATA, &b"before"[..]));
            assert_eq!(open[..8], data[..8]);
            id = Some(u64::from_le_bytes(data[..8].try_into().unwrap()));
        }
        let id = id.unwrap();
        tls.write_all(b"after").await.unwrap();
        let (kind, data) = next_record(&mut ingress);
        assert_eq!(
            (kind, &data[..]),
            (proto::DATA, &[&id.to_le_bytes()[..], b"after"].concat()[..])
        );
        reply_data(&mut replies, id, b"still");
        assert_eq!(read_exactly(&mut tls, 5).await, b"still");
    });
    let stats = daemon.wait_for("the replaced ingress ring counted", |s| {
        s.corrupt_ingress_rings == 1
    });
    assert_eq!(stats.bytes_from_clients, 11);
}

#[test]
fn an_impossible_consumer_position_gets_a_fresh_ingress_ring_with_the_unreleased_records() {
    a_broken_consumer_page_is_replaced_and_nothing_accepted_is_lost(false, |page, _| {
        use std::os::unix::fs::FileExt;
        page.write_at(&(!7u64).to_ne_bytes(), 128).unwrap();
    });
}

#[test]
fn a_consumer_position_off_the_record_boundaries_gets_a_fresh_ingress_ring() {
    // Aligned, behind the producer, within the capacity: plausible, but inside the OPEN record.
    a_broken_consumer_page_is_replaced_and_nothing_accepted_is_lost(false, |page, _| {
        use std::os::unix::fs::FileExt;
        page.write_at(&8u64.to_ne_bytes(), 128).unwrap();
    });
}

#[test]
fn a_consumer_position_moved_backwards_gets_a_fresh_ingress_ring() {
    a_broken_consumer_page_is_replaced_and_nothing_accepted_is_lost(true, |page, _| {
        use std::os::unix::fs::FileExt;
        page.write_at(&0u64.to_ne_bytes(), 128).unwrap();
    });
}

#[test]
fn an_overwritten_consumer_page_magic_gets_a_fresh_ingress_ring() {
    a_broken_consumer_page_is_replaced_and_nothing_accepted_is_lost(false, |page, _| {
        use std::os::unix::fs::FileExt;
        page.write_at(b"XXXXXXXX", 0).unwrap();
    });
}

#[test]
fn a_bad_position_written_while_attached_is_caught_when_the_daemon_needs_room() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    // A 4 KiB ring fills at once: the daemon reloads the consumer's position to find room.
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", "capacity = \"4KiB\""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let hostile =
        edgegw_ring::tools::attach_raw(daemon.ring_socket("app"), edgegw_ring::Role::Consumer)
            .unwrap();
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(&sent).await.unwrap();
        // The ring is full; the consumer "releases" to a position inside the first record and
        // says so.
        daemon.wait_for("a full ring", |s| s.bytes_from_clients > 0);
        std::fs::File::from(hostile.fds.consumer_page.try_clone().unwrap())
            .write_at(&16u64.to_ne_bytes(), 128)
            .unwrap();
        std::fs::File::from(hostile.fds.space_event.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        daemon.wait_for("the broken ring replaced", |s| s.corrupt_ingress_rings == 1);
        // A conforming consumer gets every byte, from the OPEN on.
        let mut ingress = attach_consumer(&daemon.ring_socket("app"));
        assert_eq!(next_record(&mut ingress).0, proto::OPEN);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let (kind, data) = next_record(&mut ingress);
            assert_eq!(kind, proto::DATA);
            got.extend_from_slice(&data[8..]);
        }
        assert_same_bytes(&got, &sent, "bytes through a replaced ring");
    });
    drop(hostile);
}
