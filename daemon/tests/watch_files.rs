//! Certificates follow their files: the daemon watches the config file and every certificate,
//! key, CA and CRL file it names, and reloads (once per rotation, debounced, through the same
//! one-at-a-time path as SIGHUP) when they change. Each test reads the certificate a fresh
//! client is served after a rotation, and checks that established connections are untouched.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The promise: the next handshake presents the new certificate within 250 ms of the change.
const PROMISE: Duration = Duration::from_millis(250);

fn config(cert: &str, key: &str) -> String {
    ring_config("", &format!("cert = \"{cert}\"\nkey = \"{key}\""), "", "")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The leaf certificate a fresh client (no session to resume) is served.
fn served(
    rt: &tokio::runtime::Runtime,
    daemon: &TestDaemon,
    ca: &Pki,
) -> Option<CertificateDer<'static>> {
    let client = client_config(std::slice::from_ref(&ca.ca_der), &[]);
    let tls = rt
        .block_on(connect(daemon.addr("tls"), client, "gw.example"))
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].clone())
}

/// Polls (a handshake per try) until `want` is served; the time it took, from `since`.
fn wait_served(
    rt: &tokio::runtime::Runtime,
    daemon: &TestDaemon,
    ca: &Pki,
    want: &CertificateDer<'static>,
    since: Instant,
) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if served(rt, daemon, ca).as_ref() == Some(want) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn echo_once(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut got))
        .await
        .expect("the established connection still answers")
        .unwrap();
    assert_eq!(got, msg);
}

/// Waits (event-driven, by polling the status, up to 30 s) until `reloads_requested` is `n`.
fn wait_reloads(daemon: &TestDaemon, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.watch.status().files.reloads_requested < n {
        assert!(Instant::now() < deadline, "{:?}", daemon.watch.status());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_active(daemon: &TestDaemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.watch.status().files.active {
        assert!(Instant::now() < deadline, "{:?}", daemon.watch.status());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How files are replaced.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    /// Write beside, rename over.
    AtomicRename,
    /// Truncate and write the same files.
    InPlace,
    /// certbot: `live/gw/*.pem` are links into `archive/gw/*N.pem`, re-pointed on renewal.
    Certbot,
    /// Kubernetes: `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`, `..data` swapped.
    KubernetesData,
}

impl Rotation {
    /// The cert and key paths the config names; installs generation 1.
    fn install(self, dir: &Path, pair: &(String, String)) -> (String, String) {
        let d = dir.display();
        match self {
            Rotation::AtomicRename | Rotation::InPlace => {
                write(dir, "server.pem", &pair.0);
                write(dir, "server.key", &pair.1);
                (format!("{d}/server.pem"), format!("{d}/server.key"))
            }
            Rotation::Certbot => {
                std::fs::create_dir_all(dir.join("archive/gw")).unwrap();
                std::fs::create_dir_all(dir.join("live/gw")).unwrap();
                self.rotate(dir, pair, 1);
                (
                    format!("{d}/live/gw/fullchain.pem"),
                    format!("{d}/live/gw/privkey.pem"),
                )
            }
            Rotation::KubernetesData => {
                let secret = dir.join("secret");
                std::fs::create_dir_all(&secret).unwrap();
                self.rotate(dir, pair, 1);
                std::os::unix::fs::symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
                std::os::unix::fs::symlink("..data/tls.key", secret.join("tls.key")).unwrap();
                (format!("{d}/secret/tls.crt"), format!("{d}/secret/tls.key"))
            }
        }
    }

    /// Puts generation `n` in place, as the tool does.
    fn rotate(self, dir: &Path, pair: &(String, String), n: u32) {
        match self {
            Rotation::AtomicRename => {
                write(dir, ".server.pem.tmp", &pair.0);
                write(dir, ".server.key.tmp", &pair.1);
                std::fs::rename(dir.join(".server.key.tmp"), dir.join("server.key")).unwrap();
                std::fs::rename(dir.join(".server.pem.tmp"), dir.join("server.pem")).unwrap();
            }
            Rotation::InPlace => {
                std::fs::write(dir.join("server.key"), &pair.1).unwrap();
                std::fs::write(dir.join("server.pem"), &pair.0).unwrap();
            }
            Rotation::Certbot => {
                let archive = dir.join("archive/gw");
                write(&archive, &format!("fullchain{n}.pem"), &pair.0);
                write(&archive, &format!("privkey{n}.pem"), &pair.1);
                for (link, target) in [
                    ("privkey.pem", format!("privkey{n}.pem")),
                    ("fullchain.pem", format!("fullchain{n}.pem")),
                ] {
                    // certbot makes the new link beside and renames it over the old one.
                    let live = dir.join("live/gw");
                    let tmp = live.join(format!("{link}.new"));
                    std::os::unix::fs::symlink(format!("../../archive/gw/{target}"), &tmp).unwrap();
                    std::fs::rename(&tmp, live.join(link)).unwrap();
                }
            }
            Rotation::KubernetesData => {
                let secret = dir.join("secret");
                let version = format!("..2026_11_30_{n:02}");
                std::fs::create_dir(secret.join(&version)).unwrap();
                write(&secret.join(&version), "tls.crt", &pair.0);
                write(&secret.join(&version), "tls.key", &pair.1);
                std::os::unix::fs::symlink(&version, secret.join("..data_tmp")).unwrap();
                std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
                if n > 1 {
                    let old = format!("..2026_11_30_{:02}", n - 1);
                    std::fs::remove_dir_all(secret.join(old)).unwrap();
                }
            }
        }
    }
}

/// Installs generation 1, starts the daemon, opens a connection, rotates to generation 2 and
/// checks: the new certificate within the promise (scaled by this machine's speed, measured in
/// the same run), exactly one reload, the established connection untouched.
fn rotation_serves_the_new_certificate(rotation: Rotation) {
    let ca = Pki::new("rotation CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1, der1) = ca.issue(&["gw.example"], false, 1);
    let (cert2, key2, der2) = ca.issue(&["gw.example"], false, 2);
    let (cert, key) = rotation.install(dir.path(), &(cert1, key1));
    let daemon = TestDaemon::start_in(dir, &config(&cert, &key)).unwrap();
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    wait_active(&daemon);
    let rt = runtime();
    assert_eq!(served(&rt, &daemon, &ca), Some(der1.clone()));
    let trusting = client_config(std::slice::from_ref(&ca.ca_der), &[]);
    let mut established = rt
        .block_on(connect(daemon.addr("tls"), trusting, "gw.example"))
        .unwrap();
    rt.block_on(echo_once(&mut established, b"before"));

    // This machine's speed, in the same run: an explicit reload and a handshake (under qemu
    // user emulation both are 5-20x slower, and so is everything the watcher does).
    let started = Instant::now();
    daemon.request_reload().wait().unwrap();
    assert_eq!(served(&rt, &daemon, &ca), Some(der1.clone()));
    let baseline = started.elapsed();
    let before = daemon.watch.status().files.reloads_requested;

    let changed = Instant::now();
    rotation.rotate(daemon.dir.path(), &(cert2, key2), 2);
    let took = wait_served(&rt, &daemon, &ca, &der2, changed);
    eprintln!("{rotation:?}: new certificate served after {took:?} (explicit reload and handshake: {baseline:?})");
    assert!(
        took <= PROMISE + 4 * baseline,
        "{rotation:?}: {took:?} after the change (promise {PROMISE:?}, explicit reload here {baseline:?})"
    );
    rt.block_on(echo_once(
        &mut established,
        b"after the rotation, same connection",
    ));

    // Exactly one reload for the rotation: a later change of the config file (a marker) is
    // the next one, and nothing of the rotation came after it.
    wait_reloads(&daemon, before + 1);
    let config_file = daemon.config_file();
    let text = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(&config_file, text).unwrap();
    wait_reloads(&daemon, before + 2);
    let status = daemon.watch.status();
    assert_eq!(status.files.reloads_requested, before + 2, "{status:?}");
    assert_eq!(status.reload_error, None);
    assert_eq!(served(&rt, &daemon, &ca), Some(der2));
}

#[test]
fn an_atomic_rename_rotation_is_served_at_once_with_one_reload() {
    rotation_serves_the_new_certificate(Rotation::AtomicRename);
}

#[test]
fn an_in_place_rewrite_is_served_at_once_with_one_reload() {
    rotation_serves_the_new_certificate(Rotation::InPlace);
}

#[test]
fn a_certbot_renewal_through_live_symlinks_is_served_at_once_with_one_reload() {
    rotation_serves_the_new_certificate(Rotation::Certbot);
}

#[test]
fn a_kubernetes_data_swap_is_served_at_once_with_one_reload() {
    rotation_serves_the_new_certificate(Rotation::KubernetesData);
}

#[test]
fn a_mismatched_or_half_written_pair_is_refused_and_the_old_certificate_kept_until_consistent() {
    let ca = Pki::new("pair CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1, der1) = ca.issue(&["gw.example"], false, 1);
    let (cert2, key2, der2) = ca.issue(&["gw.example"], false, 2);
    let (cert, key) = Rotation::InPlace.install(dir.path(), &(cert1, key1));
    let daemon = TestDaemon::start_in(dir, &config(&cert, &key)).unwrap();
    wait_active(&daemon);
    let rt = runtime();
    let cert_file = daemon.dir.path().join("server.pem");
    let key_file = daemon.dir.path().join("server.key");

    // The new certificate lands first: it does not match the old key.
    std::fs::write(&cert_file, &cert2).unwrap();
    wait_reloads(&daemon, 1);
    let refused = wait_error(&daemon);
    assert!(refused.contains("does not match"), "{refused}");
    assert_eq!(
        served(&rt, &daemon, &ca),
        Some(der1.clone()),
        "the old pair is kept"
    );

    // Half of the new key: still refused, still the old pair.
    std::fs::write(&key_file, &key2[..key2.len() / 2]).unwrap();
    wait_reloads(&daemon, 2);
    let half = wait_error(&daemon);
    assert_ne!(half, refused, "a new error: {half}");
    assert_eq!(served(&rt, &daemon, &ca), Some(der1));

    // The rest of the key: consistent, served.
    std::fs::write(&key_file, &key2).unwrap();
    wait_served(&rt, &daemon, &ca, &der2, Instant::now());
    wait_reloads(&daemon, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.watch.status().reload_error.is_some() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The reload error once the reload asked for has ended.
fn wait_error(daemon: &TestDaemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The reload the watcher asked for runs after it asked: its end is an explicit
        // reload's answer (requests are served in order, one at a time).
        if let Err(e) = daemon.request_reload().wait() {
            let status = daemon.watch.status();
            assert_eq!(
                status.reload_error.as_deref(),
                Some(e.as_str()),
                "{status:?}"
            );
            return e;
        }
        assert!(Instant::now() < deadline, "the reload never failed");
    }
}

/// Serializes changes of the inotify sysctls with every other test on the machine that makes
/// them (the same lock file as kernel-events' tests).
fn sysctl_lock() -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("edgegw-kernel-events-inotify-sysctl.lock"))
        .expect("open the sysctl lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the sysctl lock file")
}

/// Sets a sysctl and puts the old value back when dropped (also on panic).
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).expect("read the sysctl");
        std::fs::write(path, value).expect("write the sysctl");
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        std::fs::write(self.0, self.1.trim()).expect("restore the sysctl");
    }
}

#[test]
#[ignore = "needs root: lowers fs.inotify.max_queued_events while the daemon starts"]
fn an_inotify_overflow_during_a_rotation_still_ends_with_the_new_certificate() {
    let ca = Pki::new("overflow CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1, der1) = ca.issue(&["gw.example"], false, 1);
    let (cert2, key2, der2) = ca.issue(&["gw.example"], false, 2);
    let (cert, key) = Rotation::AtomicRename.install(dir.path(), &(cert1, key1));
    let text = format!(
        "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"sink\"\n\
         [[listener.certificate]]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [[route]]\nname = \"sink\"\ntcp = \"127.0.0.1:9\"\n\
         [pressure]\nshed = false\n"
    );
    let config = write(dir.path(), "edgegw.toml", &text);
    // The queue limit is copied into an inotify instance when it is created: lowered while
    // the daemon starts its file watcher only.
    let daemon = {
        let _lock = sysctl_lock();
        let _small = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "16");
        let mut command = edgegw();
        command.args(["run", "--config", config.to_str().unwrap()]);
        let daemon = Process::spawn(command, dir.path(), "daemon");
        daemon.wait_for_log("files for changes");
        daemon
    };
    let addr = accepting_on(&daemon);
    let rt = runtime();
    let served = || {
        let client = client_config(std::slice::from_ref(&ca.ca_der), &[]);
        rt.block_on(connect(addr, client, "gw.example"))
            .ok()
            .and_then(|tls| Some(tls.get_ref().1.peer_certificates()?[0].clone()))
    };
    assert_eq!(served(), Some(der1));

    // The daemon reads nothing while 200 events and the rotation happen.
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    for i in 0..200 {
        write(dir.path(), &format!("noise-{i:03}"), "x");
    }
    Rotation::AtomicRename.rotate(dir.path(), &(cert2, key2), 2);
    for i in 0..50 {
        std::fs::remove_file(dir.path().join(format!("noise-{i:03}"))).unwrap();
    }
    daemon.signal(nix::sys::signal::Signal::SIGCONT);

    daemon.wait_for_log("lost events");
    let deadline = Instant::now() + Duration::from_secs(30);
    while served().as_ref() != Some(&der2) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
