//! Framing and full rings: frames arrive whole or not at all, backpressure loses nothing, the
//! drop policy counts what it drops.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

fn config(framing: &str, ring: &str) -> String {
    ring_config("", SELF_SIGNED, framing, ring)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn length_prefixed_frames_arrive_as_packets_and_a_cut_delivers_only_whole_frames() {
    let daemon = TestDaemon::start(&config(
        "framing = \"length-prefixed\"\nmax_frame = 3000",
        "",
    ));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let bodies: Vec<Vec<u8>> = [0usize, 1, 100, 2999, 3000, 7, 1500]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 41 + j) as u8).collect())
        .collect();
    let mut wire: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
    // And half a frame, then the connection is cut without close_notify.
    wire.extend_from_slice(&frame(&[9u8; 500])[..200]);
    block_on(async {
        let tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        let (tcp, mut conn) = tls.into_inner();
        // Odd-sized TLS records, so frames straddle them.
        let mut sink = Vec::new();
        for chunk in wire.chunks(777) {
            conn.writer().write_all(chunk).unwrap();
            while conn.wants_write() {
                conn.write_tls(&mut sink).unwrap();
            }
        }
        let mut tcp = tcp;
        tcp.write_all(&sink).await.unwrap();
        tcp.flush().await.unwrap();
        // Cut: the daemon sees end of stream without close_notify.
        drop(tcp);
    });
    let seen = consumer.wait_for("the close record", |s| !s.closes.is_empty());
    let id = seen.opens[0].0;
    let packets: Vec<Vec<u8>> = seen
        .data
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        packets, bodies,
        "each frame is one packet, the cut one is not delivered"
    );
    assert_eq!(seen.closes, vec![(id, 1)], "reason: client aborted");
}

#[test]
fn an_oversized_frame_closes_only_its_connection() {
    let daemon = TestDaemon::start(&config(
        "framing = \"length-prefixed\"\nmax_frame = 100",
        "",
    ));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let config = client_config(&roots, &[]);
        let mut good = connect(daemon.addr("tls"), config.clone(), "localhost")
            .await
            .unwrap();
        let mut bad = connect(daemon.addr("tls"), config, "localhost")
            .await
            .unwrap();
        bad.write_all(&frame(&[1u8; 101])).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut bad, &mut rest),
        )
        .await
        .expect("bad connection closed");
        good.write_all(&frame(b"fine")).await.unwrap();
        let mut echo = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut good, &mut echo)
            .await
            .unwrap();
        assert_eq!(&echo, b"fine");
    });
    daemon.wait_for("oversized frame counted", |s| s.oversized_frames == 1);
    let seen = consumer.wait_for("the bad connection's close", |s| !s.closes.is_empty());
    assert_eq!(seen.closes[0].1, 3, "reason: protocol error");
}

#[test]
fn backpressure_loses_nothing_with_a_slow_consumer_and_a_small_ring() {
    let daemon = TestDaemon::start(&config(
        "",
        "capacity = \"4KiB\"\nwhen_full = \"backpressure\"",
    ));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::from_millis(2));
    let roots = [self_signed_cert(&daemon, "localhost")];
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(&body).await.unwrap();
        tls.shutdown().await.unwrap();
        // Wait for the daemon's close: dropping a socket with unread data (the session ticket)
        // makes the kernel send a reset, which discards what the daemon has not read yet.
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest)
            .await
            .unwrap();
    });
    let seen = consumer.wait_for("every byte and the close", |s| !s.closes.is_empty());
    let id = seen.opens[0].0;
    assert_same_bytes(&seen.bytes_of(id), &body, "in order, nothing lost");
    assert_eq!(daemon.stats().ring_drops, 0);
}

#[test]
fn data_waits_in_the_ring_for_a_consumer_that_attaches_later() {
    let daemon = TestDaemon::start(&config("", "capacity = \"64KiB\""));
    let roots = [self_signed_cert(&daemon, "localhost")];
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(&body).await.unwrap();
        tls.shutdown().await.unwrap();
        // Nobody answers yet (no consumer), so the connection stays open: hold it until the
        // daemon has everything (dropping a socket with unread data, the session ticket, resets
        // it and discards what the daemon has not read yet).
        while daemon.stats().bytes_from_clients < body.len() as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::ZERO);
    let seen = consumer.wait_for("the close", |s| !s.closes.is_empty());
    assert_same_bytes(
        &seen.bytes_of(seen.opens[0].0),
        &body,
        "everything, in order",
    );
}

#[test]
fn the_drop_policy_counts_drops_and_keeps_connections_alive() {
    let daemon = TestDaemon::start(&config("", "capacity = \"4KiB\"\nwhen_full = \"drop\""));
    let roots = [self_signed_cert(&daemon, "localhost")];
    // Nobody reads the ring: it fills, then packets are dropped and counted.
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        for _ in 0..50 {
            tls.write_all(&[7u8; 1000]).await.unwrap();
            tls.flush().await.unwrap();
        }
        tls.shutdown().await.unwrap();
        while daemon.stats().ring_drops == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // The ring header counts the same drops (read both until the last packets are done).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counted = daemon.stats().ring_drops;
        let stat = edgegw_ring::tools::stat(daemon.ring_socket("app")).unwrap();
        if counted > 0 && stat.drops == counted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ring header says {} drops, the counter {counted}",
            stat.drops
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // OPEN and CLOSE are never dropped: a consumer that attaches now sees both.
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::ZERO);
    let seen = consumer.wait_for("the close", |s| !s.closes.is_empty());
    assert_eq!(seen.opens.len(), 1);
    assert!(seen.bytes_of(seen.opens[0].0).len() < 50_000);
    let _ = std::io::stdout().flush();
}

#[test]
fn closed_slow_clients_give_their_reply_budget_back_at_once() {
    // Clients that never read their replies, one after the other: each is closed (reason 6)
    // once 256 KiB of replies wait for it. What it held must stop counting against the ring's
    // 4 MiB then, not at the flush timeout (10 s): 16 of them would otherwise hold the whole
    // budget, the daemon would stop reading the reply ring, and every connection on the ring
    // would wait.
    // The final flush of a closed connection waits up to the handshake timeout: a long one
    // makes a held budget show.
    let daemon = TestDaemon::start(&ring_config(
        "handshake_timeout = \"60s\"",
        SELF_SIGNED,
        "",
        "capacity = \"256KiB\"",
    ));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let slow_closes = |consumer: &TestConsumer| {
        consumer
            .seen()
            .closes
            .iter()
            .filter(|(_, r)| *r == 6)
            .count()
    };
    block_on(async {
        let config = client_config(&roots, &[]);
        let mut slow = Vec::new();
        for i in 0..20 {
            // A small receive window, so the replies pile up in the daemon, not in the kernel.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let tcp = socket.connect(daemon.addr("tls")).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            let (reader, mut writer) = tokio::io::split(tls);
            slow.push(reader);
            tokio::spawn(async move {
                let chunk = vec![7u8; 16 * 1024];
                for _ in 0..256 {
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
            // Well under the 60 s a held budget would last, well over what a loaded machine
            // takes to push a client's 4 MiB through a debug build.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while slow_closes(&consumer) <= i {
                assert!(
                    std::time::Instant::now() < deadline,
                    "slow client {i} was not closed: the reply ring is held up by the {i} \
                     closed before it; {:?}",
                    daemon.stats()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut good = connect(daemon.addr("tls"), config, "localhost")
            .await
            .unwrap();
        good.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(
            Duration::from_secs(3),
            tokio::io::AsyncReadExt::read_exact(&mut good, &mut back),
        )
        .await
        .expect("a new client's reply is not held up by closed slow clients")
        .unwrap();
        assert_eq!(&back, b"ping");
        drop(slow);
    });
}

#[test]
fn a_close_that_found_the_ring_full_reaches_the_consumer_once_it_reads() {
    // The drop policy: nobody ever waits for room, so nobody else would wake the daemon when
    // the consumer frees some. The connection ends at its idle timeout with the ring full; its
    // CLOSE must still come once a consumer reads.
    let daemon = TestDaemon::start(&ring_config(
        "idle_timeout = \"300ms\"",
        SELF_SIGNED,
        "",
        "capacity = \"4KiB\"\nwhen_full = \"drop\"",
    ));
    let roots = [self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        // One-byte records (24 bytes each in the ring) fill it to less than a CLOSE record's 24.
        for _ in 0..300 {
            tls.write_all(&[7u8]).await.unwrap();
            tls.flush().await.unwrap();
        }
        daemon.wait_for("the idle timeout", |s| s.idle_timeouts == 1);
        assert!(daemon.stats().ring_drops > 0, "the ring was filled");
        let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::ZERO);
        let seen = consumer.wait_for("the CLOSE record", |s| !s.closes.is_empty());
        assert_eq!(seen.closes[0].1, 2, "reason: idle");
        drop(tls);
    });
}

#[test]
fn a_socket_route_checks_frames_and_forwards_nothing_of_an_oversized_one() {
    block_on(async {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = format!(
            "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"backend\"\n  \
             [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"backend\"\n\
             tcp = \"{}\"\nframing = \"length-prefixed\"\nmax_frame = 100\n",
            backend.local_addr().unwrap()
        );
        let daemon = TestDaemon::start(&config);
        let roots = [self_signed_cert(&daemon, "localhost")];
        let received = tokio::spawn(async move {
            let (mut conn, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut got)
                .await
                .unwrap();
            got
        });
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(&frame(b"ok")).await.unwrap();
        tls.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One record: a frame over max_frame, then one that would be fine on its own.
        let bad = [frame(&[7u8; 101]), frame(b"after")].concat();
        tls.write_all(&bad).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest),
        )
        .await
        .expect("the connection is closed");
        let got = tokio::time::timeout(Duration::from_secs(10), received)
            .await
            .expect("the backend connection is closed")
            .unwrap();
        assert_eq!(got, frame(b"ok"), "the backend got only the frame before");
        daemon.wait_for("oversized frame counted", |s| s.oversized_frames == 1);
    });
}
