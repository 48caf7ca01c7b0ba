//! What anyone who can connect can make a real daemon process do stays bounded: log lines, the
//! attach servers' work, memory after a burst of connections.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

const CONFIG: &str = "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \"app\"\n[[ring]]\nname = \"app\"\ncapacity = \"64KiB\"\n";

fn ring_socket(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("run/edgegw/rings/app.sock")
}

/// A `SOCK_SEQPACKET` connection to a ring socket (a failed connect is left to the caller's
/// next call to notice).
fn connect_seqpacket(path: &std::path::Path) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let _ = socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap());
    fd
}

/// Connects to a ring socket, sends `hello` and waits for the answer (or the close).
fn send_hello(path: &std::path::Path, hello: &[u8]) {
    use nix::sys::socket::{self, MsgFlags};
    let fd = connect_seqpacket(path);
    socket::send(fd.as_raw_fd(), hello, MsgFlags::empty()).unwrap();
    let mut answer = [0u8; 256];
    let _ = socket::recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty());
}

#[test]
fn a_flood_of_malformed_hellos_logs_a_few_lines_not_one_per_hello() {
    let (dir, daemon) = spawn_daemon(CONFIG, "accepting on");
    let before = daemon.log().len();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent = 0;
    while Instant::now() < deadline {
        send_hello(&ring_socket(&dir), b"this is not an edgegw ring hello");
        sent += 1;
    }
    assert!(sent > 1000, "the flood is a flood: {sent} hellos");
    // Whatever the daemon still has to say about it, it has said within a second.
    std::thread::sleep(Duration::from_secs(1));
    let log = daemon.log();
    let flood = &log[before..];
    let lines = flood.lines().count();
    assert!(
        lines <= 12,
        "{sent} malformed hellos made {lines} log lines ({} bytes):\n{}",
        flood.len(),
        &flood[..flood.len().min(2000)]
    );
    assert!(
        flood.contains("hello is malformed"),
        "worded from the daemon's side: {flood}"
    );
    // The ring still serves a real consumer.
    edgegw_ring::Consumer::attach(ring_socket(&dir)).expect("a consumer attaches after the flood");
}

/// Connects to `path` and closes at once, over and over, from `threads` threads, until `stop`;
/// one more thread keeps 32 connections open that never say anything, renewing them. Returns
/// the threads (each says how many connections it made).
fn connect_flood(
    path: &std::path::Path,
    threads: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    use std::sync::atomic::Ordering;
    let connect = connect_seqpacket;
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (path, stop) = (path.to_owned(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                drop(connect(&path));
                n += 1;
            }
            n
        }));
    }
    let (path, stop) = (path.to_owned(), stop.clone());
    handles.push(std::thread::spawn(move || {
        let mut silent = std::collections::VecDeque::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            silent.push_back(connect(&path));
            if silent.len() > 32 {
                silent.pop_front();
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        n
    }));
    handles
}

#[test]
fn consumers_and_stat_requests_get_through_a_connect_flood() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (dir, _daemon) = spawn_daemon(CONFIG, "accepting on");
    let path = ring_socket(&dir);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flood = connect_flood(&path, 2, &stop);
    let (mut attaches, mut stats, mut failures) = (0, 0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match edgegw_ring::tools::stat(&path) {
            Ok(_) => stats += 1,
            Err(e) => failures.push(format!("stat: {e}")),
        }
        match edgegw_ring::Consumer::attach(&path) {
            Ok(consumer) => {
                attaches += 1;
                drop(consumer);
            }
            // The daemon has not yet seen the previous consumer go: not the flood's doing.
            Err(edgegw_ring::Error::Refused {
                reason: edgegw_ring::Refusal::Busy,
                ..
            }) => {}
            Err(e) => failures.push(format!("attach: {e}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flooded: u64 = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        failures.is_empty(),
        "{} of {} legitimate requests failed during a flood of {flooded} connections: {:?}",
        failures.len(),
        attaches + stats + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        attaches > 0 && stats > 0,
        "{attaches} attaches, {stats} stats"
    );
}

/// Opens `n` TLS connections to `addr` at once (each says a few bytes and gets them back
/// through the echo consumer), holds them all, then closes them all.
fn burst(
    addr: std::net::SocketAddr,
    roots: &[rustls::pki_types::CertificateDer<'static>],
    n: usize,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    block_on(async {
        let config = client_config(roots, &[]);
        let mut open = Vec::new();
        // In waves of 64 handshakes, to stay within the per-source limit.
        for wave in (0..n).collect::<Vec<_>>().chunks(64) {
            let mut tasks = Vec::new();
            for _ in wave {
                let config = config.clone();
                tasks.push(tokio::spawn(async move {
                    let mut tls = connect(addr, config, "localhost").await.unwrap();
                    tls.write_all(b"burst").await.unwrap();
                    let mut back = [0u8; 5];
                    tls.read_exact(&mut back).await.unwrap();
                    tls
                }));
            }
            for t in tasks {
                open.push(t.await.unwrap());
            }
        }
        drop(open);
    });
}

#[test]
fn memory_comes_back_after_a_burst_of_connections() {
    let config = CONFIG.replace(
        "route = \"app\"\n  [[",
        "route = \"app\"\nmax_handshakes_per_source = 128\n  [[",
    );
    let (dir, daemon) = spawn_daemon(&config, "accepting on");
    let addr = accepting_on(&daemon);
    let mut echo = edgegw();
    echo.args(["ring", "echo"]).arg(ring_socket(&dir));
    let echo = Process::spawn(echo, dir.path(), "echo");
    echo.wait_for_log("echoing");
    let roots = [process_cert(dir.path())];
    // Idle: after a first connection, so the data path's code pages are in (they are the
    // binary's, not the burst's).
    burst(addr, &roots, 1);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(daemon.pid());
    burst(addr, &roots, 1024);
    let after = rss_kib(daemon.pid());
    let ended = Instant::now();
    let deadline = ended + Duration::from_secs(30);
    let mut now = rss_kib(daemon.pid());
    while now > idle + 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = rss_kib(daemon.pid());
    }
    eprintln!(
        "RSS idle {idle} KiB, after 1024 connections {after} KiB, {now} KiB {:.1} s later",
        ended.elapsed().as_secs_f64()
    );
    if let Some(emulator) = emulator() {
        // The 1024 connections were served (burst checks each echo); the figures are not the
        // daemon's to judge.
        report(
            "memory_comes_back_after_a_burst_of_connections",
            &format!(
                "RSS NOT CHECKED under {emulator}: the process's RSS is the emulator's \
                 (read: idle {idle} KiB, after the burst {after} KiB, then {now} KiB)"
            ),
        );
        return;
    }
    assert!(
        now <= idle + 1024,
        "RSS {now} KiB 30 s after the burst (idle {idle} KiB, right after {after} KiB)"
    );
}
