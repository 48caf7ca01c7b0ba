//! Clients that misbehave: each is dealt with alone, with the right alert and a counter, while
//! an established connection next to it keeps working.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(limits: &str) -> String {
    ring_config(limits, SELF_SIGNED, "", "")
}

/// An established, echoing connection that must survive the abuse next to it.
struct Bystander {
    runtime: tokio::runtime::Runtime,
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl Bystander {
    fn new(daemon: &TestDaemon) -> Bystander {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let roots = [self_signed_cert(daemon, "localhost")];
        let tls = runtime
            .block_on(connect(
                daemon.addr("tls"),
                client_config(&roots, &[]),
                "localhost",
            ))
            .unwrap();
        let mut b = Bystander { runtime, tls };
        b.still_works();
        b
    }

    fn still_works(&mut self) {
        let tls = &mut self.tls;
        self.runtime.block_on(async {
            tls.write_all(b"still here").await.unwrap();
            let mut buf = [0u8; 10];
            tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
                .await
                .expect("bystander answered in time")
                .unwrap();
            assert_eq!(&buf, b"still here");
        });
    }
}

/// Reads until the server closes; returns what it sent and how long it took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
    (got, start.elapsed())
}

/// The first bytes a real rustls client sends: its ClientHello.
fn client_hello() -> Vec<u8> {
    let config = client_config(&[], &[]);
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let daemon = TestDaemon::start(&config("handshake_timeout = \"300ms\""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut bystander = Bystander::new(&daemon);
    let mut silent = TcpStream::connect(daemon.addr("tls")).unwrap();
    let (got, took) = read_until_closed(&mut silent);
    assert!(got.is_empty(), "no alert for a silent client: {got:?}");
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    daemon.wait_for("handshake timeout counted", |s| s.handshake_timeouts == 1);
    bystander.still_works();
}

#[test]
fn a_client_stalled_mid_handshake_is_dropped_at_the_timeout() {
    let daemon = TestDaemon::start(&config("handshake_timeout = \"300ms\""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut bystander = Bystander::new(&daemon);
    let hello = client_hello();
    let mut stalled = TcpStream::connect(daemon.addr("tls")).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let (got, _) = read_until_closed(&mut stalled);
    assert!(got.is_empty(), "{got:?}");
    daemon.wait_for("handshake timeout counted", |s| s.handshake_timeouts == 1);
    bystander.still_works();
}

#[test]
fn at_the_connection_limit_new_connections_are_refused_at_once() {
    let daemon = TestDaemon::start(&config("max_connections = 3\nmax_handshakes = 3"));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut established: Vec<Bystander> = (0..3).map(|_| Bystander::new(&daemon)).collect();
    daemon.wait_for("three handshakes", |s| s.handshakes == 3);
    let mut extra = TcpStream::connect(daemon.addr("tls")).unwrap();
    extra.write_all(&client_hello()).unwrap();
    let (got, took) = read_until_closed(&mut extra);
    assert!(got.is_empty());
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not at a timeout: {took:?}"
    );
    daemon.wait_for("refusal counted", |s| s.refused_connection_limit == 1);
    for b in &mut established {
        b.still_works();
    }
    // Room again once one leaves.
    drop(established.pop());
    daemon.wait_for("a slot freed", |s| s.active == 2);
    Bystander::new(&daemon).still_works();
}

#[test]
fn at_the_handshake_limit_new_handshakes_are_refused_at_once() {
    let daemon = TestDaemon::start(&config(
        "max_handshakes = 2\nmax_handshakes_per_source = 2\nhandshake_timeout = \"10s\"",
    ));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut bystander = Bystander::new(&daemon);
    let _slow: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(daemon.addr("tls")).unwrap())
        .collect();
    daemon.wait_for("two handshakes in progress", |s| s.active == 3);
    let mut extra = TcpStream::connect(daemon.addr("tls")).unwrap();
    let (_, took) = read_until_closed(&mut extra);
    assert!(took < Duration::from_secs(2), "{took:?}");
    daemon.wait_for("refusal counted", |s| s.refused_handshake_limit == 1);
    bystander.still_works();
}

#[test]
fn garbage_bytes_get_a_fatal_alert_and_a_counter() {
    let daemon = TestDaemon::start(&config(""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut bystander = Bystander::new(&daemon);
    let mut garbage = TcpStream::connect(daemon.addr("tls")).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (got, _) = read_until_closed(&mut garbage);
    assert_eq!(got.first(), Some(&21), "a TLS alert record: {got:?}");
    assert_eq!(got.get(5), Some(&2), "fatal: {got:?}");
    daemon.wait_for("bad bytes counted", |s| s.bad_tls_bytes == 1);
    bystander.still_works();
}

#[test]
fn an_oversized_record_gets_record_overflow() {
    let daemon = TestDaemon::start(&config(""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let mut bystander = Bystander::new(&daemon);
    let mut big = TcpStream::connect(daemon.addr("tls")).unwrap();
    // A handshake record claiming 20000 bytes: more than TLS allows for a plaintext record.
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&20_000u16.to_be_bytes());
    record.extend(std::iter::repeat_n(0u8, 64));
    big.write_all(&record).unwrap();
    let (got, _) = read_until_closed(&mut big);
    assert_eq!(got, [21, 3, 3, 0, 2, 2, 22], "fatal record_overflow alert");
    daemon.wait_for("oversized record counted", |s| s.oversized_records == 1);
    bystander.still_works();
}

#[test]
fn an_idle_established_connection_is_closed_at_the_idle_timeout() {
    let daemon = TestDaemon::start(&config("idle_timeout = \"300ms\""));
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
            .await
            .expect("closed at the idle timeout")
            .expect("with close_notify");
    });
    daemon.wait_for("idle timeout counted", |s| s.idle_timeouts == 1);
    let seen = consumer.wait_for("a close record", |s| !s.closes.is_empty());
    assert_eq!(seen.closes[0].1, 2, "reason: idle");
}

/// A TLS client connecting from `source` (a loopback address of this host).
async fn connect_from(
    source: &str,
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let tcp = socket.connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

#[test]
fn one_source_cannot_take_every_handshake_slot_of_a_listener() {
    // The defaults: 128 concurrent handshakes per listener. One address opens all 128 and stays
    // silent (refreshing them before the timeout would keep the listener locked).
    let daemon = TestDaemon::start(&config(""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let addr = daemon.addr("tls");
    let silent: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let stats = daemon.wait_for("the silent connections seen", |s| s.accepted == 128);
    assert!(
        stats.active <= 16,
        "one source holds {} of 128 handshake slots",
        stats.active
    );
    // Another source still gets its handshake done.
    let roots = [self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect_from("127.0.0.2", addr, client_config(&roots, &[]))
            .await
            .expect("a handshake from another address");
        tls.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        tls.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
    });
    // The default per-source limit is an eighth of max_handshakes: 16 of the 128 got a slot.
    let stats = daemon.stats();
    assert_eq!(stats.refused_handshake_limit, 0);
    assert_eq!(stats.refused_source_limit, 128 - 16);
    drop(silent);
}

#[test]
fn an_oversized_record_after_the_handshake_gets_record_overflow() {
    // RFC 8446 section 5.2: a TLSCiphertext longer than 2^14 + 256 bytes ends the connection
    // with record_overflow, not decode_error, even when it is too long for the library's own
    // buffer.
    let daemon = TestDaemon::start(&config(""));
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let tls12 = {
        let mut store = rustls::RootCertStore::empty();
        store.add(roots[0].clone()).unwrap();
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(edgegw::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(store)
                .with_no_client_auth(),
        )
    };
    // TLS 1.3 allows 2^14 + 256 bytes, TLS 1.2 2^14 + 2048 (RFC 5246 section 6.2.3).
    let cases = [
        (client_config(&roots, &[]), 16_641usize),
        (client_config(&roots, &[]), 18_944),
        (tls12.clone(), 18_433),
        (tls12, 18_944),
    ];
    for (client, len) in cases {
        let alert = block_on(async {
            let tls = connect(daemon.addr("tls"), client, "localhost")
                .await
                .unwrap();
            let (mut tcp, mut conn) = tls.into_inner();
            let mut record = vec![23, 3, 3];
            record.extend_from_slice(&(len as u16).to_be_bytes());
            record.resize(5 + len, 0);
            tcp.write_all(&record).await.unwrap();
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
            conn.read_tls(&mut &answer[..]).unwrap();
            conn.process_new_packets().unwrap_err()
        });
        assert_eq!(
            alert,
            rustls::Error::AlertReceived(rustls::AlertDescription::RecordOverflow),
            "a {len}-byte record"
        );
    }
    daemon.wait_for("each counted", |s| s.oversized_records == 4);
}
