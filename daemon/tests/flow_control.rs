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

/// How long any one step of a client may take before the test fails rather than hangs:
/// generous, for a debug build under qemu-user on a loaded machine.
const STEP: Duration = Duration::from_secs(60);

/// `step`, failing the test with `what` if it takes longer than [`STEP`].
async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, step)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing for {} s", STEP.as_secs()))
}

/// Runs a test's client side, failing it instead of hanging if the whole takes over 15 minutes
/// (every step has its own deadline where a stall is likely; this catches the rest).
fn run_clients<F: std::future::Future>(clients: F) -> F::Output {
    block_on(async {
        tokio::time::timeout(Duration::from_secs(15 * 60), clients)
            .await
            .expect("the test's clients took over 15 minutes: something hangs")
    })
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
        within("writing an echo's message", client.write_all(&message))
            .await
            .unwrap();
        within("reading an echo", client.read_exact(&mut back))
            .await
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

/// A daemon process on [`CONFIG`] and `edgegw ring echo` attached to its ring.
fn daemon_and_echo() -> (tempfile::TempDir, Process, Process) {
    let (dir, daemon) = spawn_daemon(CONFIG, "accepting on");
    let mut echo = edgegw();
    echo.args(["ring", "echo"])
        .arg(dir.path().join("run/edgegw/rings/app.sock"));
    let echo = Process::spawn(echo, dir.path(), "echo");
    echo.wait_for_log("echoing");
    (dir, daemon, echo)
}

/// A client that writes without reading: its read half, how much it got to write so far, and
/// its writing task (which gives the write half back once all is written).
type Flood = (
    tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<
        tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    >,
);

/// Connects a client with small socket buffers (so what the kernel holds is small next to what
/// it sends, and the backing up shows in how much it got to write) that writes `data` without
/// reading.
async fn flood(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    data: Vec<u8>,
) -> Flood {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    let tcp = within("the stalling client's connect", socket.connect(addr))
        .await
        .unwrap();
    let tls = within(
        "the stalling client's handshake",
        tokio_rustls::TlsConnector::from(config).connect("localhost".try_into().unwrap(), tcp),
    )
    .await
    .unwrap();
    let (reader, mut writer) = tokio::io::split(tls);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = written.clone();
    let task = tokio::spawn(async move {
        for chunk in data.chunks(16 * 1024) {
            writer.write_all(chunk).await.unwrap();
            progress.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        // What rustls still holds goes out too.
        writer.flush().await.unwrap();
        writer
    });
    (reader, written, task)
}

#[test]
fn a_client_that_does_not_read_is_held_back_not_closed_and_the_others_keep_their_rate() {
    let (dir, daemon, echo) = daemon_and_echo();
    let addr = accepting_on(&daemon);
    let sent = pattern(STALLED_BYTES);
    run_clients(async {
        let config = client_config(&[process_cert(dir.path())], &[]);
        let mut good = within(
            "the good client's handshake",
            connect(addr, config.clone(), "localhost"),
        )
        .await
        .unwrap();
        // Warm up (code paths, allocator), then the usual rate.
        echo_rate(&mut good, 20).await;
        let rounds = 100;
        let usual = best_rate(&mut good, rounds).await;
        let rss_before = rss_kib(daemon.pid());

        let (mut reader, written, writing) = flood(addr, config, sent.clone()).await;
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
        let writer = within("the stalled client's last writes", writing)
            .await
            .unwrap();
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

/// A client that connects, waits until the test's consumer turned credits on (what the daemon
/// forwards before counts against the window all the same, but then the window would close at
/// once), and writes `sent`.
async fn upload_once_credits_are_on(
    addr: std::net::SocketAddr,
    roots: &[rustls::pki_types::CertificateDer<'static>],
    sent: &[u8],
    credits_on: &std::sync::mpsc::Receiver<()>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = connect(addr, client_config(roots, &[]), "localhost")
        .await
        .unwrap();
    credits_on.recv().unwrap();
    tls.write_all(sent).await.unwrap();
    tls.flush().await.unwrap();
    tls
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
    // The client on a thread of its own: it writes while this thread plays the consumer.
    let client = std::thread::spawn(move || {
        run_clients(async {
            let mut tls = upload_once_credits_are_on(addr, &roots, &sent, &credits_on).await;
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
    let counters = &ring_stat(&daemon.ring_socket("app"));
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
        assert_eq!(counters[name], value, "{name}: {counters}");
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
        run_clients(async {
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

/// A consumer attached to ring `app` (both rings) that read a connection's OPEN and turned
/// credits on for it (a CREDIT of 0): its rings and the connection's id.
fn consumer_with_credits(
    daemon: &TestDaemon,
) -> (edgegw_ring::Consumer, edgegw_ring::Producer, u64) {
    let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    let (kind, open) = next_record(&mut ingress);
    assert_eq!(kind, edgegw_proto::OPEN);
    let id = u64::from_le_bytes(open[..8].try_into().unwrap());
    credit(&mut reply, id, 0);
    (ingress, reply, id)
}

#[test]
fn a_connection_stalled_on_a_dead_consumers_window_flows_again_with_the_next_consumer() {
    use edgegw_proto::{DATA, INITIAL_WINDOW};
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", ""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let upload = pattern(512 * 1024);
    let addr = daemon.addr("tls");
    let sent = upload.clone();
    let (go, credits_on) = std::sync::mpsc::channel();
    let (done, client_may_close) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run_clients(async {
            let _tls = upload_once_credits_are_on(addr, &roots, &sent, &credits_on).await;
            // Open until the consumers saw everything: the connection must not need its
            // client to close to get unstuck.
            client_may_close.recv().unwrap();
        })
    });

    // The first consumer turns credits on, takes one window and grants nothing back, then
    // goes away (killed, or detached) with the window spent and nothing left in the ring.
    let mut got = Vec::new();
    let id = {
        let (mut ingress, mut reply, id) = consumer_with_credits(&daemon);
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

/// What one connection whose client does not read may hold of its replies in the daemon, with
/// a consumer that keeps to its reply window (as `edgegw ring echo` does): the window, queued or
/// encrypted in the client's outbox, and the TLS records' overhead on what is encrypted (22
/// bytes a record for TLS 1.3, at most one record per 16 KiB or per reply taken): 4 KiB is
/// ample for it. PROTOCOL.md section 4 promises this bound.
const HELD_PER_STALLED_CONNECTION: u64 = edgegw_proto::INITIAL_WINDOW as u64 + 4096;

/// The ring's counters as `edgegw ring stat --json` shows them.
fn ring_stat(socket: &std::path::Path) -> serde_json::Value {
    ring_stat_json(socket)["counters"].clone()
}

/// The value of a metric line `name{ring="app"} VALUE` in `edgegw metrics`' text.
fn ring_metric(text: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{ring=\"app\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn stalled_clients_hold_at_most_one_window_of_replies_each_and_another_client_still_echoes() {
    const STALLED: usize = 3;
    let (dir, daemon, echo) = daemon_and_echo();
    let addr = accepting_on(&daemon);
    let socket = dir.path().join("run/edgegw/rings/app.sock");
    let runtime = dir.path().join("run/edgegw");
    let sent = pattern(STALLED_BYTES);
    run_clients(async {
        let config = client_config(&[process_cert(dir.path())], &[]);
        let mut good = connect(addr, config.clone(), "localhost").await.unwrap();
        echo_rate(&mut good, 20).await;

        // Clients that write without reading, each on its own task.
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            stalled.push(flood(addr, config.clone(), sent.clone()).await);
        }
        // Until none of them gets to write more for a second: they backed up.
        let began = Instant::now();
        let total = |s: &[Flood]| -> usize {
            s.iter()
                .map(|(_, w, _)| w.load(std::sync::atomic::Ordering::Relaxed))
                .sum()
        };
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = total(&stalled);
            if now == last {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "the stalled clients wrote {now} bytes and were still writing after 120 s"
            );
            last = now;
        }

        // Each holds at most its window here; the good client, whose echoes all came, nothing.
        // Checked until the stall reached the daemon (on a slow machine, a second without
        // progress may come before it did): then each holds at least the half window it was
        // not granted back (credit comes in steps of half a window).
        let bound = STALLED as u64 * HELD_PER_STALLED_CONNECTION;
        let reached = tcp_send_buffer_max() + 1024 * 1024 < STALLED_BYTES;
        let least = STALLED as u64 * u64::from(edgegw_proto::INITIAL_WINDOW) / 2;
        let checking = Instant::now();
        let counters = loop {
            let counters = ring_stat(&socket);
            let held = counters["reply_bytes_held"].as_u64().unwrap();
            assert!(
                held <= bound,
                "{STALLED} stalled clients hold {held} reply bytes in the daemon, over \
                 {STALLED} x {HELD_PER_STALLED_CONNECTION}: {counters}"
            );
            if held >= least || !reached {
                eprintln!(
                    "{STALLED} stalled clients wrote {last} bytes; the daemon holds {held} reply \
                     bytes for them (bound {bound})"
                );
                break counters;
            }
            assert!(
                checking.elapsed() < Duration::from_secs(120),
                "the stalled clients hold only {held} reply bytes in the daemon after 120 s \
                 (less than half a window each): their stall did not reach it"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !reached {
            report(
                "stalled_clients_hold_at_most_one_window_of_replies_each_and_another_client_still_echoes",
                &format!(
                    "STALL NOT CHECKED TO REACH THE DAEMON: tcp_wmem's maximum ({} bytes) lets \
                     the kernel hold what the clients send",
                    tcp_send_buffer_max()
                ),
            );
        }
        // The gauges, the same in all three places.
        let connections = STALLED as u64 + 1;
        assert_eq!(counters["credit_connections"], connections, "{counters}");
        let status = edgegw::control::ask(&runtime, "status", Duration::from_secs(30)).unwrap();
        let flow = &status["status"]["rings"]["app"]["flow_control"];
        assert_eq!(flow["credit_connections"], connections, "{flow}");
        assert!(
            flow["reply_bytes_held"].as_u64().unwrap() <= bound,
            "{flow}"
        );
        let metrics = edgegw::control::ask(&runtime, "metrics", Duration::from_secs(30)).unwrap();
        let text = metrics["metrics"].as_str().unwrap();
        assert!(text.contains("# TYPE edgegw_ring_credit_connections gauge\n"));
        assert_eq!(
            ring_metric(text, "edgegw_ring_credit_connections"),
            connections
        );
        assert!(ring_metric(text, "edgegw_ring_reply_bytes_held") <= bound);

        // The good client still gets its echoes, and the stalled ones hold no more for it.
        echo_rate(&mut good, 100).await;
        let held = ring_stat(&socket)["reply_bytes_held"].as_u64().unwrap();
        assert!(
            held <= bound,
            "{held} reply bytes held after the good client's echoes"
        );

        // Now they read: every byte comes back, in order.
        let readers: Vec<_> = stalled
            .into_iter()
            .map(|(mut reader, _, writing)| {
                tokio::spawn(async move {
                    let mut got = vec![0u8; STALLED_BYTES];
                    tokio::time::timeout(Duration::from_secs(600), reader.read_exact(&mut got))
                        .await
                        .expect("the stalled client's echo within 600 s")
                        .expect("the stalled client was not closed");
                    (got, reader, writing)
                })
            })
            .collect();
        let mut clients = Vec::new();
        for reader in readers {
            let (got, reader, writing) = reader.await.unwrap();
            assert_same_bytes(&got, &sent, "a stalled client's echo");
            clients.push(reader.unsplit(writing.await.unwrap()));
        }
        drop(clients);
        drop(good);
    });
    // Their connections end: the gauges go back to nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counters = ring_stat(&socket);
        if counters["credit_connections"] == 0 && counters["reply_bytes_held"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after every client left: {counters}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !echo.log().contains("reason 6"),
        "a connection was closed as a slow client:\n{}",
        echo.log()
    );
}

/// The increment of the next CREDIT in `ring` within `time`, skipping other records.
fn credit_within(ring: &mut edgegw_ring::Consumer, time: Duration) -> Option<u32> {
    let deadline = Instant::now() + time;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (kind, payload) = record_within(ring, left)?;
        if kind == edgegw_proto::CREDIT {
            return Some(edgegw_proto::decode_credit(&payload).unwrap().1);
        }
    }
}

#[test]
fn the_reply_window_the_daemon_grants_starts_over_for_the_next_consumer() {
    use edgegw_proto::{CREDIT, DATA, INITIAL_WINDOW};
    const RECORD: usize = 16 * 1024;
    let daemon = TestDaemon::start(&ring_config("", SELF_SIGNED, "", ""));
    let roots = vec![self_signed_cert(&daemon, "localhost")];
    let addr = daemon.addr("tls");
    let (read, may_read) = std::sync::mpsc::channel::<usize>();
    // A client that does not read until told how much to expect.
    let client = std::thread::spawn(move || {
        run_clients(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(16 * 1024).unwrap();
            let tcp = socket.connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_config(&roots, &[]))
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            let len = may_read.recv().unwrap();
            let mut got = vec![0u8; len];
            tokio::time::timeout(Duration::from_secs(300), tls.read_exact(&mut got))
                .await
                .expect("every reply within 300 s")
                .unwrap();
            got
        })
    });
    let replies = pattern(16 * 1024 * 1024);
    let mut sent = 0;

    // The first consumer turns credits on and sends replies within its window, taking the
    // daemon's credit as it comes, until the client's socket is full and the window spent: the
    // daemon then counts one byte past it as an overrun (so its side of the window is 0 too).
    let id = {
        let (mut ingress, mut reply, id) = consumer_with_credits(&daemon);
        let mut window = edgegw_proto::Window::default();
        let began = Instant::now();
        loop {
            assert!(
                began.elapsed() < Duration::from_secs(300),
                "the client's socket took {sent} bytes of replies and still took more after \
                 300 s"
            );
            while let Some((kind, payload)) = record_within(&mut ingress, Duration::ZERO) {
                if kind == CREDIT {
                    let (to, increment) = edgegw_proto::decode_credit(&payload).unwrap();
                    assert_eq!(to, id);
                    window.grant(increment);
                }
            }
            let n = window.available().min(RECORD);
            if n > 0 {
                reply_data(&mut reply, id, &replies[sent..sent + n]);
                window.sent(n);
                sent += n;
                continue;
            }
            // The window is spent as this consumer knows it. Once the daemon read every reply,
            // either credit comes (the client's socket took more) or, when none came for a
            // while, one byte past the window tells which: the daemon counts it as an overrun
            // only if its side of the window is spent too.
            let read_all = |s: &edgegw::gateway::Snapshot| s.bytes_to_clients == sent as u64;
            daemon.wait_for("the replies read", read_all);
            if let Some(increment) = credit_within(&mut ingress, Duration::from_secs(2)) {
                window.grant(increment);
                continue;
            }
            reply_data(&mut reply, id, &replies[sent..sent + 1]);
            window.sent(1);
            sent += 1;
            let read_all = |s: &edgegw::gateway::Snapshot| s.bytes_to_clients == sent as u64;
            if daemon
                .wait_for("the byte read", read_all)
                .reply_window_overruns
                == 1
            {
                break;
            }
        }
        id
    };

    // The next consumer turns credits on for the connection it finds, and sends one window of
    // replies: within its window, since the window started over at its CREDIT, whatever the
    // old consumer had spent.
    let mut ingress =
        attach_with_retry(|| edgegw_ring::Consumer::attach(daemon.ring_socket("app"))).unwrap();
    let mut reply =
        attach_with_retry(|| edgegw_ring::Producer::attach(daemon.reply_socket("app"))).unwrap();
    credit(&mut reply, id, 0);
    for _ in 0..INITIAL_WINDOW as usize / RECORD {
        reply_data(&mut reply, id, &replies[sent..sent + RECORD]);
        sent += RECORD;
    }
    // A credit for nobody behind them: once the daemon counted it, it read them all.
    credit(&mut reply, 999, 0);
    let stats = daemon.wait_for("the replies read", |s| {
        s.credits_for_unknown_connections == 1
    });
    assert_eq!(
        stats.reply_window_overruns, 1,
        "the next consumer's replies were counted against the old consumer's window"
    );

    // The client reads: every reply arrives, in order, and the next consumer is granted back
    // what it sent as its replies leave (the old consumer's earn it nothing).
    read.send(sent).unwrap();
    let mut granted = 0usize;
    let began = Instant::now();
    while granted < INITIAL_WINDOW as usize / 2 {
        assert!(
            began.elapsed() < Duration::from_secs(300),
            "the next consumer was granted {granted} bytes back in 300 s"
        );
        if let Some((kind, payload)) = record_within(&mut ingress, Duration::from_millis(100)) {
            if kind == CREDIT {
                let (to, increment) = edgegw_proto::decode_credit(&payload).unwrap();
                assert_eq!(to, id);
                granted += increment as usize;
            } else {
                assert_ne!(kind, DATA, "the client sent nothing");
            }
        }
    }
    assert!(granted <= INITIAL_WINDOW as usize, "granted {granted}");
    let got = client.join().unwrap();
    assert_same_bytes(&got, &replies[..sent], "the replies of both consumers");
    assert_eq!(daemon.stats().reply_window_overruns, 1);
}
