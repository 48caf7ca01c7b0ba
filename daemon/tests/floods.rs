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

/// Connects to a ring socket, sends `hello` and waits for the answer (or the close).
fn send_hello(path: &std::path::Path, hello: &[u8]) {
    use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
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
