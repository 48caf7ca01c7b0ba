//! The data path end to end: TLS clients through the daemon into rings and sockets and back.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ring_route() -> String {
    ring_config(
        // All test clients come from 127.0.0.1: 20 handshake at once (the default allows 16
        // per source).
        "alpn = [\"edge/1\", \"http/1.1\"]\nmax_handshakes_per_source = 32",
        "self_signed = true\nserver_names = [\"localhost\"]",
        "",
        "capacity = \"64KiB\"",
    )
}

#[test]
fn ring_route_echoes_bytes_through_an_attached_consumer() {
    let daemon = TestDaemon::start(&ring_route());
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let addr = daemon.addr("tls");
    block_on(async {
        let mut tls = connect(addr, client_config(&roots, &["edge/1"]), "localhost")
            .await
            .unwrap();
        // Several sizes, including more than one TLS record and more than the scratch buffer.
        for size in [1usize, 100, 16 * 1024, 40_000] {
            let sent: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            tls.write_all(&sent).await.unwrap();
            let mut got = vec![0; size];
            tls.read_exact(&mut got).await.unwrap();
            assert_same_bytes(&got, &sent, "echo");
        }
        tls.shutdown().await.unwrap();
    });
    let seen = consumer.wait_for("a close record", |s| !s.closes.is_empty());
    let (id, info) = &seen.opens[0];
    assert_eq!(info.listener, "tls");
    assert_eq!(info.sni, "localhost");
    assert_eq!(info.alpn, "edge/1");
    assert!(info.peer.starts_with("127.0.0.1:"), "{info:?}");
    assert_eq!(seen.bytes_of(*id).len(), 1 + 100 + 16 * 1024 + 40_000);
    assert_eq!(seen.closes, vec![(*id, 0)], "closed cleanly by the client");
    let stats = daemon.wait_for("one handshake", |s| s.handshakes == 1);
    assert_eq!(stats.bytes_from_clients, stats.bytes_to_clients);
}

#[test]
fn many_connections_share_a_ring_and_each_gets_its_own_replies() {
    let daemon = TestDaemon::start(&ring_route());
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let addr = daemon.addr("tls");
    block_on(async {
        let config = client_config(&roots, &[]);
        let mut tasks = Vec::new();
        for n in 0..20u8 {
            let config = config.clone();
            tasks.push(tokio::spawn(async move {
                let mut tls = connect(addr, config, "localhost").await.unwrap();
                for round in 0..10u8 {
                    let msg =
                        vec![n.wrapping_mul(17).wrapping_add(round); 1000 + usize::from(n) * 13];
                    tls.write_all(&msg).await.unwrap();
                    let mut got = vec![0; msg.len()];
                    tls.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, msg, "connection {n} round {round}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    daemon.wait_for("twenty handshakes", |s| s.handshakes == 20);
}

#[test]
fn a_consumer_close_record_closes_the_client_connection() {
    let daemon = TestDaemon::start(&ring_route());
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::EchoThenClose, Duration::ZERO);
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(b"bye").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
            .await
            .expect("the daemon closes the connection")
            .expect("with close_notify");
        assert_eq!(got, b"bye");
    });
}

#[test]
fn replies_for_unknown_connections_are_counted_and_dropped() {
    use edgegw_proto as proto;
    let daemon = TestDaemon::start(&ring_route());
    // Attach the reply side only, as a consumer would after a restart with stale ids.
    let mut producer = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    let mut bogus = 999u64.to_le_bytes().to_vec();
    bogus.extend_from_slice(b"nobody is listening");
    producer.send(proto::DATA, 0, &bogus).unwrap();
    producer.send(proto::DATA, 0, b"short").unwrap();
    producer.send(77, 0, &1u64.to_le_bytes()).unwrap();
    let stats = daemon.wait_for("unknown and malformed replies counted", |s| {
        s.replies_for_unknown_connections == 1 && s.malformed_replies == 2
    });
    assert_eq!(stats.handshakes, 0);
    // The ring's own counters are readable with `edgegw ring stat --json`, on either socket.
    for socket in [daemon.reply_socket("app"), daemon.ring_socket("app")] {
        let json = ring_stat_json(&socket);
        let counters = &json["counters"];
        assert_eq!(counters["malformed_replies"], 2, "{json}");
        assert_eq!(counters["replies_for_unknown_connections"], 1, "{json}");
        assert_eq!(counters["connections"], 0, "{json}");
    }
}

#[test]
fn a_corrupt_reply_ring_is_replaced_and_replies_flow_again_on_the_same_connection() {
    use edgegw_proto as proto;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let daemon = TestDaemon::start(&ring_route());
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(b"one").await.unwrap();
        assert_eq!(next_record(&mut ingress).0, proto::OPEN);
        let (kind, data) = next_record(&mut ingress);
        assert_eq!((kind, &data[8..]), (proto::DATA, &b"one"[..]));
        let id = u64::from_le_bytes(data[..8].try_into().unwrap());
        reply_data(&mut reply, id, b"one");
        let mut got = [0u8; 3];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one");

        // Now a buggy consumer (as a C one might be) takes the reply side: it writes an
        // impossible position (not a multiple of 8) into the ring and signals the daemon.
        drop(reply);
        let buggy = loop {
            // The daemon notices the detach on its next attach-server pass: Busy until then.
            match edgegw_ring::tools::attach_raw(
                daemon.reply_socket("app"),
                edgegw_ring::Role::Producer,
            ) {
                Ok(raw) => break raw,
                Err(edgegw_ring::Error::Refused { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let region = std::fs::File::from(buggy.fds.region.try_clone().unwrap());
        let mut word = [0u8; 8];
        region.read_at(&mut word, 128).unwrap();
        let pos = u64::from_ne_bytes(word);
        region.write_at(&(pos + 4).to_ne_bytes(), 128).unwrap();
        std::fs::File::from(buggy.fds.data_event.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        daemon.wait_for("the corrupt reply ring counted", |s| {
            s.corrupt_reply_rings == 1
        });
        // The daemon gives that ring up: the buggy consumer is disconnected (its link reads EOF)...
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut byte = [0u8; 1];
            match nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&buggy.link),
                &mut byte,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => break,
                Err(nix::errno::Errno::EAGAIN) => {}
                other => panic!("the link said {other:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "never disconnected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...and a consumer that attaches now gets a fresh ring: the same connection gets its
        // replies again.
        let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
        tls.write_all(b"two").await.unwrap();
        let (kind, data) = next_record(&mut ingress);
        assert_eq!((kind, &data[8..]), (proto::DATA, &b"two"[..]));
        reply_data(&mut reply, id, b"two");
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut got))
            .await
            .expect("the reply comes through the fresh ring")
            .unwrap();
        assert_eq!(&got, b"two");
    });
    let stats = daemon.stats();
    assert_eq!(stats.corrupt_reply_rings, 1);
    assert_eq!(stats.handshakes, 1);
}

const TCP_CONFIG: &str = r#"
[[listener]]
name = "tls"
bind = ["127.0.0.1:0"]
route = "backend"
  [[listener.certificate]]
  self_signed = true

[[route]]
name = "backend"
tcp = "BACKEND"
"#;

#[test]
fn tcp_route_relays_both_ways_and_relays_half_close() {
    block_on(async {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let daemon = TestDaemon::start(&TCP_CONFIG.replace("BACKEND", &backend_addr.to_string()));
        let roots = vec![self_signed_cert(&daemon, "localhost")];
        let server = tokio::spawn(async move {
            let (mut conn, _) = backend.accept().await.unwrap();
            // Read until the client's half-close, then answer with everything uppercased.
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got.to_ascii_uppercase()).await.unwrap();
            got.len()
        });
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        let body: Vec<u8> = b"stunnel-style relay "
            .iter()
            .copied()
            .cycle()
            .take(100_000)
            .collect();
        tls.write_all(&body).await.unwrap();
        tls.shutdown().await.unwrap(); // close_notify: the backend sees end of stream
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        assert_same_bytes(&answer, &body.to_ascii_uppercase(), "uppercased echo");
        assert_eq!(server.await.unwrap(), body.len());
    });
}

#[test]
fn unix_route_relays_to_a_local_service() {
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let config = format!(
            "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"svc\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"svc\"\nunix = \"{}\"\n",
            path.display()
        );
        let daemon = TestDaemon::start(&config);
        let roots = vec![self_signed_cert(&daemon, "localhost")];
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.unwrap();
            conn.write_all(b"pong!").await.unwrap();
        });
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        tls.write_all(b"ping!").await.unwrap();
        let mut got = [0u8; 5];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong!");
    });
}

#[test]
fn an_unreachable_backend_is_counted_and_the_client_gets_close_notify() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let daemon = TestDaemon::start(&TCP_CONFIG.replace("BACKEND", &port.to_string()));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    block_on(async {
        let mut tls = connect(daemon.addr("tls"), client_config(&roots, &[]), "localhost")
            .await
            .unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.expect("clean close");
        assert!(got.is_empty());
    });
    daemon.wait_for("backend error counted", |s| s.backend_errors == 1);
}

#[test]
fn openssl_s_client_gets_its_bytes_echoed() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let daemon = TestDaemon::start(&ring_route());
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let addr = daemon.addr("tls");
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed (apt-get install openssl)");
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "hello from openssl\n");
    let _ = client.kill();
    let _ = client.wait();
}
