//! Stopping drains: no new connections, every open one gets CLOSE reason 5 at its consumer
//! after the data already read and close_notify at its client, within `daemon.drain_time`;
//! then the ingress ring is marked FINISHED and its consumer woken.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn stopping_sends_close_reason_5_and_close_notify_then_finishes_the_ring() {
    let config = format!(
        "drain_time = \"5s\"\n{}",
        ring_config("", SELF_SIGNED, "", "")
    );
    let daemon = TestDaemon::start(&config);
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let addr = daemon.addr("tls");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut tls = runtime
        .block_on(connect(addr, client_config(&roots, &[]), "localhost"))
        .unwrap();
    runtime.block_on(async {
        tls.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    });
    // A second client still in its handshake (sent nothing): dropped at once, not waited for.
    let _handshaking = std::net::TcpStream::connect(addr).unwrap();
    // Bytes the client sends just before the stop reach the consumer before its CLOSE.
    runtime.block_on(tls.write_all(b"last words")).unwrap();
    consumer.wait_for("the last words", |s| {
        s.data.iter().any(|(_, d)| d == b"last words")
    });

    let started = Instant::now();
    let stopper = std::thread::spawn(move || drop(daemon));
    let end = runtime.block_on(async {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
            .await
            .expect("the daemon closed the connection")
            .map(|_| rest)
    });
    stopper.join().unwrap();
    let took = started.elapsed();
    // read_to_end ends with Ok only after close_notify (a bare EOF is an error in rustls).
    let rest = end.expect("a clean close: close_notify");
    assert_eq!(
        rest, b"last words",
        "the echo of what was read before the stop"
    );
    assert!(took < Duration::from_secs(3), "the drain took {took:?}");

    let seen = consumer.wait_for("FINISHED", |s| s.finished);
    assert_eq!(seen.closes.len(), 1, "{seen:?}");
    assert_eq!(seen.closes[0].1, 5, "CLOSE reason 5 (shutdown)");
    let (id, _) = seen.closes[0];
    assert_eq!(seen.bytes_of(id), b"pinglast words");
}
