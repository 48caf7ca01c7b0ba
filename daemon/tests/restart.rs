//! A restart loses nothing (issue 10, point 3): the daemon puts its rings into systemd's fd store
//! and a restarted daemon takes them back and continues them. systemd is played by the test: a
//! datagram socket as `$NOTIFY_SOCKET` receives `FDSTORE=1` messages with their fds, and the
//! next daemon gets them as systemd passes them (`$LISTEN_FDS`, `$LISTEN_FDNAMES`, fds from 3),
//! through a small Python wrapper that places the fds and execs the daemon
//! (`systemd-socket-activate` passes sockets only). `systemd/test` proves the same under a real
//! systemd.

mod common;

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use edgegw_ring::{Consumer, Reattached};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::AsyncWriteExt;

/// What the fake systemd kept: its fd store, by name.
#[derive(Default)]
struct Store {
    fds: HashMap<String, OwnedFd>,
    messages: Vec<String>,
}

/// A notify socket that keeps what `FDSTORE=1` sends, drops what `FDSTOREREMOVE=1` names.
struct FakeSystemd {
    path: std::path::PathBuf,
    store: Arc<Mutex<Store>>,
}

impl FakeSystemd {
    fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let store = Arc::new(Mutex::new(Store::default()));
        let kept = store.clone();
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; 16]);
            let Ok(msg) = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) else {
                return;
            };
            let mut fds = Vec::new();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: SCM_RIGHTS gave this process new fds that nothing else owns.
                    fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                }
            }
            let len = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..len]).to_string();
            let fields: HashMap<&str, &str> =
                text.lines().filter_map(|l| l.split_once('=')).collect();
            let mut store = kept.lock().unwrap();
            let name = fields.get("FDNAME").map(|n| n.to_string());
            if fields.get("FDSTORE") == Some(&"1") {
                if let (Some(name), Some(fd)) = (name.clone(), fds.pop()) {
                    store.fds.insert(name, fd);
                }
            }
            if fields.get("FDSTOREREMOVE") == Some(&"1") {
                if let Some(name) = &name {
                    store.fds.remove(name);
                }
            }
            store.messages.push(text);
        });
        FakeSystemd { path, store }
    }

    fn wait_for_stored(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.store.lock().unwrap().fds.len() < n {
            assert!(Instant::now() < deadline, "fewer than {n} fds stored");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stored fds, duplicated, with their names.
    fn stored(&self) -> Vec<(String, OwnedFd)> {
        let store = self.store.lock().unwrap();
        let mut all: Vec<_> = store
            .fds
            .iter()
            .map(|(n, fd)| (n.clone(), fd.try_clone().unwrap()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Places the fds at 3.. as systemd does, sets `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`,
/// and execs the daemon.
const HANDOVER: &str = r#"
import fcntl, os, sys
binary, config = sys.argv[1], sys.argv[2]
pairs = [a.split(":", 1) for a in sys.argv[3:]]
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 1000) for fd, _ in pairs]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
env = dict(os.environ)
env["LISTEN_PID"] = str(os.getpid())
env["LISTEN_FDS"] = str(len(pairs))
env["LISTEN_FDNAMES"] = ":".join(name for _, name in pairs)
os.execve(binary, [binary, "run", "--config", config], env)
"#;

fn start(dir: &Path, systemd: &FakeSystemd, stored: &[(String, OwnedFd)], name: &str) -> Process {
    let config = dir.join("edgegw.toml");
    let binary = edgegw().get_program().to_owned();
    let mut command = if stored.is_empty() {
        let mut c = edgegw();
        c.args(["run", "--config"]).arg(&config);
        c
    } else {
        let mut c = std::process::Command::new("python3");
        c.env_remove("EDGEGW_CONFIG").env("EDGEGW_LOG", "info");
        c.args(["-c", HANDOVER]).arg(&binary).arg(&config);
        for (n, fd) in stored {
            nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            c.arg(format!("{}:{n}", fd.as_raw_fd()));
        }
        c
    };
    command.env("NOTIFY_SOCKET", &systemd.path);
    let daemon = Process::spawn(command, dir, name);
    daemon.wait_for_log("accepting on");
    daemon
}

/// Stops a daemon process with SIGTERM (it drains) and waits for it to exit 0.
fn stop(mut daemon: Process) {
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
}

fn numbered(range: std::ops::Range<u64>) -> Vec<u8> {
    range.flat_map(|n| n.to_be_bytes()).collect()
}

/// What a consumer read: bytes and CLOSE reasons per connection, in order.
#[derive(Default, Debug)]
struct Read {
    data: HashMap<u64, Vec<u8>>,
    closes: HashMap<u64, u32>,
    opens: Vec<u64>,
}

impl Read {
    /// Reads what is there now; releases only if `release`.
    fn drain(&mut self, consumer: &mut Consumer, release: bool) {
        while let Some(r) = consumer.read().unwrap() {
            let p = r.payload().to_vec();
            let id = u64::from_le_bytes(p[..8].try_into().unwrap());
            match r.record_type() {
                edgegw_proto::OPEN => self.opens.push(id),
                edgegw_proto::DATA => self.data.entry(id).or_default().extend(&p[8..]),
                edgegw_proto::CLOSE => {
                    self.closes
                        .insert(id, u32::from_le_bytes(p[8..12].try_into().unwrap()));
                }
                _ => {}
            }
        }
        if release {
            consumer.release();
        }
    }

    fn until(&mut self, consumer: &mut Consumer, what: &str, done: impl Fn(&Read) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.drain(consumer, true);
            if done(self) {
                return;
            }
            assert!(Instant::now() < deadline, "never got {what}: {self:?}");
            let _ = consumer.wait(Some(Duration::from_millis(50))).unwrap();
        }
    }
}

fn setup() -> (tempfile::TempDir, FakeSystemd) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "edgegw.toml",
        &ring_config("", SELF_SIGNED, "", ""),
    );
    let systemd = FakeSystemd::bind(dir.path());
    (dir, systemd)
}

fn send(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    daemon: &Process,
    bytes: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let client = client_config(&[process_cert(dir)], &[]);
    let mut tls = runtime
        .block_on(connect(accepting_on(daemon), client, "localhost"))
        .unwrap();
    runtime.block_on(tls.write_all(bytes)).unwrap();
    runtime.block_on(tls.flush()).unwrap();
    tls
}

#[test]
fn a_consumer_that_stays_up_across_a_restart_gets_every_packet_once_in_order() {
    let (dir, systemd) = setup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = start(dir.path(), &systemd, &[], "first");
    // Both directions of the ring: four fds each.
    systemd.wait_for_stored(8);
    let socket = dir.path().join("run/edgegw/rings/app.sock");
    let mut consumer = attach_with_retry(|| Consumer::attach(&socket)).unwrap();
    let before = numbered(0..100);
    let _client = send(&runtime, dir.path(), &first, &before);
    let mut read = Read::default();
    // Read half and release it, read a quarter more and keep it unreleased, leave the rest
    // unread: the restart must neither lose nor repeat any of it.
    read.until(&mut consumer, "half the packets", |r| {
        r.data.values().map(Vec::len).sum::<usize>() >= before.len() / 2
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while edgegw_ring::tools::stat(&socket).unwrap().owner_counters[1] < before.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the daemon never read every packet"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(r) = consumer.read().unwrap() {
        let p = r.payload().to_vec();
        if r.record_type() == edgegw_proto::DATA {
            let id = u64::from_le_bytes(p[..8].try_into().unwrap());
            read.data.entry(id).or_default().extend(&p[8..]);
        }
    }
    stop(first);
    // The consumer stays attached to nothing until the next daemon serves the same ring.
    let second = start(dir.path(), &systemd, &systemd.stored(), "second");
    second.wait_for_log("ring `app` ingress: continues from before the restart");
    let deadline = Instant::now() + Duration::from_secs(20);
    let how = loop {
        match consumer.reattach() {
            Ok(how) => break how,
            Err(e) => {
                assert!(Instant::now() < deadline, "never re-attached: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(how, Reattached::SameRing, "the same ring, continued");
    let after = numbered(100..200);
    let _client2 = send(&runtime, dir.path(), &second, &after);
    read.until(&mut consumer, "the packets sent after the restart", |r| {
        r.opens.len() == 2 && r.data.get(&r.opens[1]).map_or(0, Vec::len) == after.len()
    });
    let (old, new) = (read.opens[0], read.opens[1]);
    assert_same_bytes(&read.data[&old], &before, "the packets before the restart");
    assert_eq!(
        read.closes.get(&old),
        Some(&5),
        "CLOSE reason 5 for the old connection"
    );
    assert_same_bytes(&read.data[&new], &after, "the packets after the restart");
    drop(second);
}

#[test]
fn a_stored_ring_scribbled_on_while_the_daemon_was_down_is_replaced_with_what_passed_the_checks() {
    let (dir, systemd) = setup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = start(dir.path(), &systemd, &[], "first");
    systemd.wait_for_stored(8);
    let socket = dir.path().join("run/edgegw/rings/app.sock");
    let before = numbered(0..10);
    let _client = send(&runtime, dir.path(), &first, &before);
    let deadline = Instant::now() + Duration::from_secs(20);
    while edgegw_ring::tools::stat(&socket).unwrap().owner_counters[1] < before.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the daemon never read every packet"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(first);
    // The ring holds OPEN, DATA..., CLOSE: give the last record a reserved type.
    let stored = systemd.stored();
    let region = &stored
        .iter()
        .find(|(n, _)| n == "ring.app.ingress.region")
        .unwrap()
        .1;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap() as u64;
    let mut pos = 0u64;
    let mut last = 0u64;
    let mut word = [0u8; 8];
    let mut producer_pos = [0u8; 8];
    nix::sys::uio::pread(region, &mut producer_pos, 128).unwrap();
    let producer_pos = u64::from_ne_bytes(producer_pos);
    while pos < producer_pos {
        nix::sys::uio::pread(region, &mut word, (page + pos) as i64).unwrap();
        last = pos;
        pos += (8 + (u64::from_ne_bytes(word) & 0xffff_ffff) + 7) & !7;
    }
    nix::sys::uio::pread(region, &mut word, (page + last) as i64).unwrap();
    let scribbled = (u64::from_ne_bytes(word) & 0xffff_ffff) | (0xff00u64 << 32);
    nix::sys::uio::pwrite(region, &scribbled.to_ne_bytes(), (page + last) as i64).unwrap();
    let second = start(dir.path(), &systemd, &stored, "second");
    second.wait_for_log("ring `app` ingress: the ring kept across the restart is not consistent");
    assert!(second.log().contains("reserved type"), "{}", second.log());
    // A fresh ring, of the next generation, with what came before the scribbled record.
    let mut consumer = attach_with_retry(|| Consumer::attach(&socket)).unwrap();
    assert_eq!(consumer.generation(), 2);
    let mut read = Read::default();
    read.until(&mut consumer, "the salvaged packets", |r| {
        r.data.values().map(Vec::len).sum::<usize>() == before.len()
    });
    assert_same_bytes(&read.data[&read.opens[0]], &before, "the salvaged packets");
    assert!(
        read.closes.is_empty(),
        "the scribbled CLOSE is not delivered"
    );
    let stat = edgegw_ring::tools::stat(&socket).unwrap();
    assert_eq!(
        stat.owner_counters[5], 1,
        "replaced_ingress_rings counts it"
    );
}

#[test]
fn a_version_1_peer_is_refused_on_a_ring_with_fd_protection_with_the_config_key_named() {
    let (dir, daemon) = spawn_daemon(&ring_config("", SELF_SIGNED, "", ""), "accepting on");
    let socket = dir.path().join("run/edgegw/rings/app.sock");
    let (version, status) = v1_hello(&socket);
    assert_eq!(
        (version, status),
        (2, 1),
        "a version mismatch, in version 2"
    );
    daemon.wait_for_log("protection = \"seal\"");
}

#[test]
fn a_ring_with_seal_protection_serves_a_version_1_peer() {
    let config = ring_config("", SELF_SIGNED, "", "protection = \"seal\"");
    let (dir, _daemon) = spawn_daemon(&config, "accepting on");
    let socket = dir.path().join("run/edgegw/rings/app.sock");
    assert_eq!(v1_hello(&socket), (1, 0), "attached, answered in version 1");
}

/// Says hello in version 1 as the consumer; the answer's version and status.
fn v1_hello(socket: &Path) -> (u16, u8) {
    use nix::sys::socket::{
        connect, recv, send, socket as sock, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let fd = sock(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(socket).unwrap()).unwrap();
    let mut hello = [0u8; 32];
    hello[0..4].copy_from_slice(b"EGRH");
    hello[4..6].copy_from_slice(&1u16.to_ne_bytes());
    hello[6] = 1;
    send(fd.as_raw_fd(), &hello, MsgFlags::empty()).unwrap();
    let mut answer = [0u8; 128];
    let n = recv(fd.as_raw_fd(), &mut answer, MsgFlags::MSG_CMSG_CLOEXEC).unwrap();
    assert_eq!(n, 128);
    (u16::from_ne_bytes([answer[4], answer[5]]), answer[6])
}

#[test]
fn a_listening_socket_the_daemon_bound_stays_open_across_a_restart_and_a_client_that_connected_meanwhile_is_served(
) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        ring_config("", SELF_SIGNED, "", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    write(dir.path(), "edgegw.toml", &config);
    let systemd = FakeSystemd::bind(dir.path());
    let first = start(dir.path(), &systemd, &[], "first");
    // Eight ring fds and the listening socket.
    systemd.wait_for_stored(9);
    assert!(systemd
        .stored()
        .iter()
        .any(|(n, _)| *n == format!("tcp.127.0.0.1_{port}")));
    stop(first);
    // The daemon is down; the socket still listens (systemd holds it): the connection waits.
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect while down");
    let second = start(dir.path(), &systemd, &systemd.stored(), "second");
    second.wait_for_log("again with the socket kept across the restart");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = client_config(&[process_cert(dir.path())], &[]);
    runtime.block_on(async {
        tcp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(client).connect(name, tcp),
        )
        .await
        .expect("the handshake completes")
        .expect("the restarted daemon serves the connection made while it was down");
    });
}

#[test]
fn stored_fds_of_a_ring_the_config_no_longer_names_are_released() {
    let (dir, systemd) = setup();
    let first = start(dir.path(), &systemd, &[], "first");
    systemd.wait_for_stored(8);
    stop(first);
    let renamed = ring_config("", SELF_SIGNED, "", "")
        .replace("ring = \"app\"", "ring = \"other\"")
        .replace("name = \"app\"\n\n", "name = \"other\"\n\n");
    assert!(renamed.contains("[[ring]]\nname = \"other\""), "{renamed}");
    write(dir.path(), "edgegw.toml", &renamed);
    let second = start(dir.path(), &systemd, &systemd.stored(), "second");
    second.wait_for_log(
        "systemd kept `ring.app.ingress.region`, which the config no longer names; released",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = systemd.stored().into_iter().map(|(n, _)| n).collect();
        if !names.iter().any(|n| n.starts_with("ring.app."))
            && names.iter().any(|n| n.starts_with("ring.other."))
        {
            break;
        }
        assert!(Instant::now() < deadline, "still stored: {names:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
