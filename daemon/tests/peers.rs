//! Local peers that break the ring contract, as a buggy or hostile consumer would: each case is
//! dealt with on its own ring, nothing the daemon accepted is lost, and the rest of the gateway
//! (other connections, other rings, new handshakes) keeps working.

mod common;

use std::time::{Duration, Instant};

use common::*;
use edgegw::gateway::wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> String {
    ring_config("", SELF_SIGNED, "", "capacity = \"64KiB\"")
}

/// The next record of a ring, waiting up to 10 s: (type, payload).
fn next_record(ring: &mut edgegw_ring::Consumer) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = ring.read().unwrap() {
            let got = (record.record_type(), record.payload().to_vec());
            ring.release();
            return got;
        }
        assert!(Instant::now() < deadline, "no record came");
        let _ = ring.wait(Some(Duration::from_millis(100))).unwrap();
    }
}

/// A reply DATA record for connection `id`.
fn reply(producer: &mut edgegw_ring::Producer, id: u64, bytes: &[u8]) {
    let mut payload = id.to_le_bytes().to_vec();
    payload.extend_from_slice(bytes);
    producer.send(wire::DATA, 0, &payload).unwrap();
}

/// Attaches to `path` as the producer, retrying while the daemon still counts the previous
/// peer as attached (it notices a detach on its next attach-server pass).
fn attach_producer(path: &std::path::Path) -> edgegw_ring::Producer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match edgegw_ring::Producer::attach(path) {
            Ok(p) => return p,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot attach again: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
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
        assert_eq!(next_record(&mut ingress).0, wire::OPEN);
        let (_, data) = next_record(&mut ingress);
        let id = u64::from_le_bytes(data[..8].try_into().unwrap());

        // The consumer answers, then stops replying the way FORMAT.md section 7 says a
        // producer stops: FINISHED after its last record, and a signal.
        reply(&mut replies, id, b"last");
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
            .any(|(k, d)| *k == wire::DATA && d[8..] == *b"two"));

        // ...and a new producer attaches to the reply socket and answers the same connection.
        drop(replies);
        let mut replies = attach_producer(&daemon.reply_socket("app"));
        reply(&mut replies, id, b"again");
        assert_eq!(read_exactly(&mut tls, 5).await, b"again");
    });
    let stats = daemon.wait_for("the finished reply ring counted", |s| {
        s.finished_reply_rings == 1
    });
    assert_eq!(stats.corrupt_reply_rings, 0);
}
