//! Flow control per connection (CREDIT records, `ringbuf/PROTOCOL.md`): a client that writes
//! without reading is held back, not closed, and nobody else on its ring waits for it.
//!
//! A real daemon process and the real `edgegw ring echo` (a consumer that speaks credits). Rates
//! are compared with a baseline measured in the same run, and deadlines are generous, so the
//! test holds on a loaded 2-core machine and under qemu-user.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \"app\"\n[[ring]]\nname = \"app\"\n";

/// What the stalled client sends: 8 MiB, each byte telling its offset apart from its
/// neighbours.
const STALLED_BYTES: usize = 8 * 1024 * 1024;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// Round trips per second of a client echoing `rounds` messages of 1 KiB, one at a time.
async fn echo_rate<S>(client: &mut S, rounds: usize) -> f64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let message = [0x5au8; 1024];
    let mut back = [0u8; 1024];
    let start = Instant::now();
    for _ in 0..rounds {
        client.write_all(&message).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), client.read_exact(&mut back))
            .await
            .expect("an echo within 60 s")
            .unwrap();
        assert_eq!(back, message);
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

/// The best of five rate measurements: whatever else runs on the machine only ever slows one
/// down, so the fastest is the least disturbed, before the stall as during it.
async fn best_rate<S>(client: &mut S, rounds: usize) -> f64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        best = best.max(echo_rate(client, rounds).await);
    }
    best
}

/// The most a TCP socket's send buffer grows to on this machine (`tcp_wmem`'s maximum): what
/// the daemon's socket to a client that does not read may hold in the kernel.
fn tcp_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}

#[test]
fn a_client_that_does_not_read_is_held_back_not_closed_and_the_others_keep_their_rate() {
    let (dir, daemon) = spawn_daemon(CONFIG, "accepting on");
    let addr = accepting_on(&daemon);
    let mut echo = edgegw();
    echo.args(["ring", "echo"])
        .arg(dir.path().join("run/edgegw/rings/app.sock"));
    let echo = Process::spawn(echo, dir.path(), "echo");
    echo.wait_for_log("echoing");
    let roots = [process_cert(dir.path())];
    let sent = pattern(STALLED_BYTES);
    block_on(async {
        let config = client_config(&roots, &[]);
        let mut good = connect(addr, config.clone(), "localhost").await.unwrap();
        // Warm up (code paths, allocator), then the usual rate.
        echo_rate(&mut good, 20).await;
        let rounds = 100;
        let usual = best_rate(&mut good, rounds).await;
        let rss_before = rss_kib(daemon.pid());

        // Small socket buffers, so what the kernel holds is small next to 8 MiB and the
        // backing up shows in how much the client got to write.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.set_send_buffer_size(16 * 1024).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let stalled = tokio_rustls::TlsConnector::from(config)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut reader, mut writer) = tokio::io::split(stalled);
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = written.clone();
        let data = sent.clone();
        let flood = tokio::spawn(async move {
            for chunk in data.chunks(16 * 1024) {
                writer.write_all(chunk).await.unwrap();
                progress.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
            // What rustls still holds goes out too.
            writer.flush().await.unwrap();
            writer
        });
        let stall_began = Instant::now();
        let stall = Duration::from_secs(20);

        // Meanwhile the good client echoes as usual (measured after the stalled one filled
        // its windows: a second without progress).
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = written.load(std::sync::atomic::Ordering::Relaxed);
            if now == last {
                break;
            }
            assert!(
                stall_began.elapsed() < Duration::from_secs(60),
                "the stalled client wrote {now} bytes and was still writing after 60 s: \
                 nothing held it back"
            );
            last = now;
        }
        // A client held up by the stalled one (as before flow control: for seconds at a time)
        // is slow in every measurement; a loaded machine only in some: up to three tries.
        let mut during = 0.0;
        for _ in 0..3 {
            during = best_rate(&mut good, rounds).await.max(during);
            if during >= usual / 2.0 {
                break;
            }
        }
        let rss_during = rss_kib(daemon.pid());
        eprintln!(
            "good client: {usual:.0} round trips/s before, {during:.0}/s while the other \
             stalled; the stalled one wrote {last} of {STALLED_BYTES} bytes; daemon RSS \
             {rss_before} KiB before, {rss_during} KiB during"
        );
        assert!(
            during >= usual / 2.0,
            "the good client's rate fell from {usual:.0}/s to {during:.0}/s while another \
             client on its ring stalled"
        );
        // What it got to write is in kernel buffers (the daemon's socket to it holds up to
        // tcp_wmem's maximum of echoed replies), and at most a window each way in the daemon
        // and the consumer; the rest backs up in the client.
        if tcp_send_buffer_max() + 1024 * 1024 < STALLED_BYTES {
            assert!(
                last < STALLED_BYTES,
                "the stalled client got all its {last} bytes written: its TCP did not back up"
            );
        } else {
            report(
                "a_client_that_does_not_read_is_held_back_not_closed_and_the_others_keep_their_rate",
                &format!(
                    "BACKING UP NOT CHECKED: tcp_wmem's maximum ({} bytes) lets the kernel \
                     hold what the client sends",
                    tcp_send_buffer_max()
                ),
            );
        }
        match emulator() {
            Some(emulator) => report(
                "a_client_that_does_not_read_is_held_back_not_closed_and_the_others_keep_their_rate",
                &format!(
                    "RSS NOT CHECKED under {emulator}: the process's RSS is the emulator's \
                     (read: {rss_before} KiB before the stall, {rss_during} KiB during)"
                ),
            ),
            None => assert!(
                rss_during < rss_before + 2048,
                "daemon RSS grew from {rss_before} KiB to {rss_during} KiB while a client \
                 stalled: it holds what it should have left in the client's TCP"
            ),
        }

        // The rest of the 20 s, then the stalled client reads: every byte comes back.
        tokio::time::sleep(stall.saturating_sub(stall_began.elapsed())).await;
        let mut got = vec![0u8; STALLED_BYTES];
        let mut at = 0;
        while at < STALLED_BYTES {
            // Generous: a debug build under qemu-user on a loaded machine.
            let read = tokio::time::timeout(Duration::from_secs(60), reader.read(&mut got[at..]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "nothing came back for 60 s after byte {at} of the stalled client's echo"
                    )
                })
                .expect("the stalled client was not closed");
            assert!(
                read > 0,
                "the stalled client's connection ended after {at} bytes"
            );
            at += read;
        }
        assert_same_bytes(&got, &sent, "the stalled client's echo");
        let writer = flood.await.unwrap();
        let mut stalled = reader.unsplit(writer);
        // Still open: it echoes as any client does.
        echo_rate(&mut stalled, 1).await;
    });
    assert!(
        !echo.log().contains("reason 6"),
        "a connection was closed as a slow client:\n{}",
        echo.log()
    );
}

/// The next record of `ring` that is not a CREDIT (which the daemon may send at any time).
fn next_non_credit(ring: &mut edgegw_ring::Consumer) -> (u16, Vec<u8>) {
    loop {
        let record = next_record(ring);
        if record.0 != edgegw_proto::CREDIT {
            return record;
        }
    }
}

fn credit(reply: &mut edgegw_ring::Producer, id: u64, increment: u32) {
    let mut payload = [0; edgegw_proto::CREDIT_LEN];
    edgegw_proto::encode_credit(&mut payload, id, increment);
    reply.send(edgegw_proto::CREDIT, 0, &payload).unwrap();
}

#[test]
fn the_daemon_forwards_client_data_within_the_window_the_consumer_grants_and_ignores_bad_credit() {
    use edgegw_proto::{CLOSE, DATA, INITIAL_WINDOW, OPEN};
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", ""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    let upload = pattern(256 * 1024);
    let addr = daemon.addr("tls");
    let sent = upload.clone();
    let (go, credits_on) = std::sync::mpsc::channel();
    // The client on a thread of its own: it writes while this thread plays the consumer, once
    // the consumer turned credits on (what the daemon forwards before counts against the
    // window all the same, but then the window would close at once).
    let client = std::thread::spawn(move || {
        block_on(async {
            let mut tls = connect(addr, client_config(&roots, &[]), "localhost")
                .await
                .unwrap();
            credits_on.recv().unwrap();
            tls.write_all(&sent).await.unwrap();
            tls.flush().await.unwrap();
            let mut back = [0u8; 4];
            tls.read_exact(&mut back).await.unwrap();
            tls.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            back
        })
    });

    let (kind, open) = next_record(&mut ingress);
    assert_eq!(kind, OPEN);
    let id = u64::from_le_bytes(open[..8].try_into().unwrap());
    // Credits on, then bad input: credit for nobody, an unknown type, a short credit.
    credit(&mut reply, id, 0);
    credit(&mut reply, 999, 4096);
    reply.send(77, 0, &id.to_le_bytes()).unwrap();
    reply
        .send(edgegw_proto::CREDIT, 0, &id.to_le_bytes())
        .unwrap();
    daemon.wait_for("the credits read", |s| s.malformed_replies == 2);
    go.send(()).unwrap();
    daemon.wait_for("the connection's window to close", |s| s.credit_stalls >= 1);

    // Exactly one window came: the stream is cut to it.
    let mut got = Vec::new();
    while let Some(record) = ingress.read().unwrap() {
        assert_eq!(record.record_type(), DATA);
        got.extend_from_slice(&record.payload().to_vec()[8..]);
    }
    ingress.release();
    assert_eq!(
        got.len(),
        INITIAL_WINDOW as usize,
        "one window of client data"
    );

    // More credit than the bound: clamped (counted), and the rest of the upload flows.
    credit(&mut reply, id, u32::MAX);
    while got.len() < upload.len() {
        let (kind, data) = next_non_credit(&mut ingress);
        assert_eq!(kind, DATA);
        got.extend_from_slice(&data[8..]);
    }
    assert_same_bytes(&got, &upload, "the upload through the window");
    reply_data(&mut reply, id, b"pong");
    // The client's close_notify (reason 0); the consumer's CLOSE; the daemon's last CLOSE
    // (reason 4), which a consumer that speaks credits gets so it knows when to free its state.
    let (kind, close) = next_non_credit(&mut ingress);
    assert_eq!((kind, &close[8..]), (CLOSE, &0u32.to_le_bytes()[..]));
    reply.send(CLOSE, 0, &id.to_le_bytes()).unwrap();
    let (kind, close) = next_non_credit(&mut ingress);
    assert_eq!((kind, &close[8..]), (CLOSE, &4u32.to_le_bytes()[..]));
    assert_eq!(&client.join().unwrap(), b"pong");

    let stats = daemon.stats();
    assert_eq!(
        (
            stats.credits_for_unknown_connections,
            stats.malformed_replies,
            stats.excess_credits,
            stats.reply_window_overruns
        ),
        (1, 2, 1, 0),
        "{stats:#?}"
    );
    // The ring's own counters, as `edgegw ring stat --json` shows them.
    let out = edgegw()
        .args(["ring", "stat", "--json"])
        .arg(daemon.ring_socket("app"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counters = &json["counters"];
    for (name, value) in [
        ("credit_stalls", 1),
        ("credits_for_unknown_connections", 1),
        ("excess_credits", 1),
        ("reply_window_overruns", 0),
        ("malformed_replies", 2),
        ("closed_client_closed", 1),
        ("closed_consumer_closed", 1),
        ("closed_slow_client", 0),
    ] {
        assert_eq!(counters[name], value, "{name}: {json}");
    }
}

#[test]
fn an_echo_that_attaches_to_open_connections_takes_them_as_new_and_their_data_flows() {
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", ""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let first = pattern(200 * 1024);
    let then = pattern(1024 * 1024);
    let (go, echo_attached) = std::sync::mpsc::channel::<()>();
    let (first_sent, wait_first) = std::sync::mpsc::channel::<()>();
    let addr = daemon.addr("tls");
    let (first_bytes, then_bytes) = (first.clone(), then.clone());
    let client = std::thread::spawn(move || {
        block_on(async {
            let mut tls = connect(addr, client_config(&roots, &[]), "localhost")
                .await
                .unwrap();
            tls.write_all(&first_bytes).await.unwrap();
            tls.flush().await.unwrap();
            first_sent.send(()).unwrap();
            echo_attached.recv().unwrap();
            let (mut reader, mut writer) = tokio::io::split(tls);
            let len = then_bytes.len();
            let write = tokio::spawn(async move {
                writer.write_all(&then_bytes).await.unwrap();
                writer.flush().await.unwrap();
            });
            let mut got = vec![0u8; len];
            tokio::time::timeout(Duration::from_secs(300), reader.read_exact(&mut got))
                .await
                .expect("1 MiB echoed within 300 s")
                .unwrap();
            write.await.unwrap();
            got
        })
    });
    // A consumer that speaks no credits reads the OPEN and more than a window of data, then
    // goes away (as a consumer being replaced does).
    {
        let mut ingress =
            attach_with_retry(|| edgegw_ring::Consumer::attach(daemon.ring_socket("app"))).unwrap();
        wait_first.recv().unwrap();
        let mut seen = 0;
        while seen < first.len() {
            let (kind, payload) = next_record(&mut ingress);
            if kind == edgegw_proto::DATA {
                seen += payload.len() - 8;
            }
        }
    }
    let mut echo = edgegw();
    echo.args(["ring", "echo"]).arg(daemon.ring_socket("app"));
    let echo = Process::spawn(echo, daemon.dir.path(), "echo");
    echo.wait_for_log("echoing");
    go.send(()).unwrap();
    let got = client.join().unwrap();
    assert_same_bytes(&got, &then, "what the client sent after the echo attached");
}

/// The next record of `ring` within `time` (generous: the daemon may have to notice a consumer
/// go first), released at once; `None` if none came.
fn record_within(ring: &mut edgegw_ring::Consumer, time: Duration) -> Option<(u16, Vec<u8>)> {
    let deadline = Instant::now() + time;
    loop {
        if let Some(record) = ring.read().unwrap() {
            let got = (record.record_type(), record.payload().to_vec());
            ring.release();
            return Some(got);
        }
        if Instant::now() >= deadline {
            return None;
        }
        let _ = ring.wait(Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn a_connection_stalled_on_a_dead_consumers_window_flows_again_with_the_next_consumer() {
    use edgegw_proto::{DATA, INITIAL_WINDOW, OPEN};
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", ""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let upload = pattern(512 * 1024);
    let addr = daemon.addr("tls");
    let sent = upload.clone();
    let (go, credits_on) = std::sync::mpsc::channel();
    let (done, client_may_close) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        block_on(async {
            let mut tls = connect(addr, client_config(&roots, &[]), "localhost")
                .await
                .unwrap();
            credits_on.recv().unwrap();
            tls.write_all(&sent).await.unwrap();
            tls.flush().await.unwrap();
            // Open until the consumers saw everything: the connection must not need its
            // client to close to get unstuck.
            client_may_close.recv().unwrap();
        })
    });

    // The first consumer turns credits on, takes one window and grants nothing back, then
    // goes away (killed, or detached) with the window spent and nothing left in the ring.
    let mut got = Vec::new();
    let id = {
        let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
        let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
        let (kind, open) = next_record(&mut ingress);
        assert_eq!(kind, OPEN);
        let id = u64::from_le_bytes(open[..8].try_into().unwrap());
        credit(&mut reply, id, 0);
        // A credit for nobody behind it: once the daemon counted that one, it read ours.
        credit(&mut reply, 999, 0);
        daemon.wait_for("the credits read", |s| {
            s.credits_for_unknown_connections == 1
        });
        go.send(()).unwrap();
        daemon.wait_for("the connection's window to close", |s| s.credit_stalls >= 1);
        while let Some(record) = ingress.read().unwrap() {
            assert_eq!(record.record_type(), DATA);
            got.extend_from_slice(&record.payload().to_vec()[8..]);
        }
        ingress.release();
        assert_eq!(got.len(), INITIAL_WINDOW as usize, "one window");
        id
    };

    // The next consumer knows nothing of the connection. What it sees of it is new to it: it
    // turns credits on (a CREDIT of 0) at its first DATA and grants what it consumed, half a
    // window at a time, as PROTOCOL.md section 4 says.
    let mut ingress =
        attach_with_retry(|| edgegw_ring::Consumer::attach(daemon.ring_socket("app"))).unwrap();
    let mut reply =
        attach_with_retry(|| edgegw_ring::Producer::attach(daemon.reply_socket("app"))).unwrap();
    let mut known = false;
    let mut ungranted = 0usize;
    while got.len() < upload.len() {
        let Some((kind, payload)) = record_within(&mut ingress, Duration::from_secs(120)) else {
            panic!(
                "the connection stalled with {} of {} bytes through: the new consumer got \
                 nothing in 120 s",
                got.len(),
                upload.len()
            );
        };
        if kind != DATA {
            // The daemon's CREDIT for the old consumer's replies (there were none) or others.
            continue;
        }
        assert_eq!(u64::from_le_bytes(payload[..8].try_into().unwrap()), id);
        if !known {
            credit(&mut reply, id, 0);
            known = true;
        }
        got.extend_from_slice(&payload[8..]);
        ungranted += payload.len() - 8;
        if ungranted >= INITIAL_WINDOW as usize / 2 {
            credit(&mut reply, id, ungranted as u32);
            ungranted = 0;
        }
    }
    assert_same_bytes(
        &got,
        &upload,
        "the upload across two consumers, every byte once",
    );
    done.send(()).unwrap();
    client.join().unwrap();
    let stats = daemon.stats();
    assert_eq!(stats.reply_window_overruns, 0, "{stats:#?}");
    assert_eq!(stats.excess_credits, 0, "{stats:#?}");
}
