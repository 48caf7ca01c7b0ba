//! Test harness: a daemon run in-process on its own control thread, certificates made with
//! rcgen, TLS clients from tokio-rustls, and a ring consumer written against the wire format.
#![allow(dead_code)]

pub mod kernel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgegw::config::{Config, ConfigSource};
use edgegw::control::{
    Daemon, Listening, ReloadOutcome, Request, RequestSender, Requests, WatchHandle,
};
use edgegw::gateway::{Snapshot, Stats};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A daemon running in this process: the control plane's own loop (`Daemon::run`) on a thread
/// of its own (as in the real daemon, where the TLS thread is separate from the main thread),
/// fed reload and stop requests through its in-process queue.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    /// Bound addresses, by listener name.
    pub addrs: Vec<(String, SocketAddr)>,
    stats: Arc<Stats>,
    /// The kernel watchers' status and feed.
    pub watch: WatchHandle,
    requests: RequestSender,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    /// Starts a daemon on `config`, where `{dir}` stands for a fresh temporary directory (which
    /// also holds the state and runtime directories).
    pub fn start(config: &str) -> TestDaemon {
        Self::try_start(config).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    pub fn try_start(config: &str) -> Result<TestDaemon, String> {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Result<TestDaemon, String> {
        edgegw::log::init();
        let file = dir.path().join("edgegw.toml");
        std::fs::write(&file, with_dirs(config, dir.path())).unwrap();
        let config = Config::load(&file).map_err(|e| e.to_string())?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests_tx, requests) = Requests::queue();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let daemon = match Daemon::start(config) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let addrs = by_listener(daemon.listening());
                let handles = (daemon.gateway().stats_handle(), daemon.watch());
                let _ = ready_tx.send(Ok((addrs, handles)));
                daemon
                    .run(ConfigSource::File(file), requests)
                    .await
                    .expect("the control loop ends when asked");
            });
        });
        match ready_rx
            .recv()
            .map_err(|_| "control thread died".to_string())?
        {
            Ok((addrs, (stats, watch))) => Ok(TestDaemon {
                dir,
                addrs,
                stats,
                watch,
                requests: requests_tx,
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The address of the (first socket of the) listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
            .1
    }

    /// Reloads with a new config (written to the config file, as an operator would, then a
    /// reload request); on success `addrs` follows the new listeners.
    pub fn reload(&mut self, config: &str) -> Result<(), String> {
        std::fs::write(self.config_file(), with_dirs(config, self.dir.path())).unwrap();
        let outcome = self.request_reload().wait()?;
        self.addrs = by_listener(outcome);
        Ok(())
    }

    /// Asks for a reload of the config file as it is, without waiting for it.
    pub fn request_reload(&self) -> PendingReload {
        let (reply, answer) = tokio::sync::oneshot::channel();
        assert!(
            self.requests.send(Request::Reload(Some(reply))),
            "daemon gone"
        );
        PendingReload(answer)
    }

    /// The config file a reload reads.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("edgegw.toml")
    }

    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Waits (up to 10 s) for a counter condition; returns the last snapshot.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.stats();
            if condition(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ring_socket(&self, ring: &str) -> PathBuf {
        self.dir
            .path()
            .join("run/rings")
            .join(format!("{ring}.sock"))
    }

    pub fn reply_socket(&self, ring: &str) -> PathBuf {
        self.dir
            .path()
            .join("run/rings")
            .join(format!("{ring}.reply.sock"))
    }
}

/// A copy of the binary that uid 65534 can run, wherever the build is, with the daemon's
/// directories opened so that it reaches the ring sockets. Keep the directory while it runs.
pub fn binary_for_nobody(daemon: &TestDaemon) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("edgegw");
    std::fs::copy(env!("CARGO_BIN_EXE_edgegw"), &bin).unwrap();
    for d in [
        daemon.dir.path().to_path_buf(),
        daemon.dir.path().join("run"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin_dir, bin)
}

/// A reload asked for, whose outcome is yet to come.
pub struct PendingReload(tokio::sync::oneshot::Receiver<ReloadOutcome>);

impl PendingReload {
    /// Waits (up to 30 s) for the outcome: the listening sockets, or why it failed.
    pub fn wait(self) -> Result<Vec<Listening>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let answer = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), self.0).await })
            .expect("reload answered within 30 s")
            .expect("daemon answered");
        answer
            .map(|reloaded| reloaded.listening)
            .map_err(|e| e.to_string())
    }
}

fn by_listener(listening: Vec<Listening>) -> Vec<(String, SocketAddr)> {
    listening
        .into_iter()
        .map(|l| (l.listener, l.addr))
        .collect()
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The certificate lines of a listener that serves a self-signed certificate.
pub const SELF_SIGNED: &str = "self_signed = true";

/// The usual test config: one listener `tls` on any free port, routed to the ring `app`.
/// `listener`, `route` and `ring` are extra lines for those tables; `certificate` the lines of
/// its one certificate ([`SELF_SIGNED`], or `cert`/`key`).
pub fn ring_config(listener: &str, certificate: &str, route: &str, ring: &str) -> String {
    format!(
        "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n{listener}\n\
         [[listener.certificate]]\n{certificate}\n\
         [[route]]\nname = \"app\"\nring = \"app\"\n{route}\n\
         [[ring]]\nname = \"app\"\n{ring}\n"
    )
}

/// Puts the state and runtime directories under `dir` and expands `{dir}`.
fn with_dirs(config: &str, dir: &Path) -> String {
    let dirs = format!(
        "[daemon]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n",
        d = dir.display()
    );
    format!(
        "{dirs}{}",
        config.replace("{dir}", &dir.display().to_string())
    )
}

/// A CA and certificates it issued, written as PEM files.
pub struct Pki {
    pub ca_cert: rcgen::Certificate,
    pub ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca_der = cert.der().clone();
        Pki {
            ca_cert: cert,
            ca_issuer: rcgen::Issuer::new(params, key),
            ca_der,
        }
    }

    /// Issues a leaf for `names` (server) or with CN `names[0]` (client); returns (cert PEM,
    /// key PEM, serial).
    pub fn issue(
        &self,
        names: &[&str],
        client: bool,
        serial: u64,
    ) -> (String, String, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Edge Test");
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A CRL revoking `serials`.
    pub fn crl_pem(&self, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(5),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.ca_issuer).unwrap().pem().unwrap()
    }
}

/// Writes `contents` to `dir/name`.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A rustls client config trusting `roots`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(edgegw::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A rustls client config with a client certificate.
pub fn client_config_with_cert(
    roots: &[CertificateDer<'static>],
    cert_pem: &str,
    key_pem: &str,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(edgegw::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

/// The self-signed certificate the daemon generated in its state directory.
pub fn self_signed_cert(daemon: &TestDaemon, name: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(daemon.path(&format!("state/self-signed/{name}.crt"))).unwrap()
}

/// Connects and completes a handshake.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Unused helper kept for key conversions in tests.
pub fn pkcs8(key: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivatePkcs8KeyDer::from(key.serialize_der()).into()
}

/// What a test consumer saw on a ring.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub opens: Vec<(u64, edgegw_proto::OpenInfo)>,
    pub data: Vec<(u64, Vec<u8>)>,
    pub closes: Vec<(u64, u32)>,
    /// The producer marked the ingress ring FINISHED (and the consumer stopped reading).
    pub finished: bool,
}

impl Seen {
    /// All bytes received for a connection, in order.
    pub fn bytes_of(&self, id: u64) -> Vec<u8> {
        self.data
            .iter()
            .filter(|(i, _)| *i == id)
            .flat_map(|(_, d)| d.clone())
            .collect()
    }
}

/// How a test consumer answers (it always answers CLOSE with CLOSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Echo every DATA packet.
    Echo,
    /// Answer nothing.
    Silent,
    /// Echo, then close the connection from the consumer side.
    EchoThenClose,
}

/// A consumer process stand-in: a thread attached to a ring pair, recording what it sees.
pub struct TestConsumer {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestConsumer {
    /// Attaches to both rings of `ring` and answers as `reply` says; `delay` slows each batch.
    pub fn attach(daemon: &TestDaemon, ring: &str, reply: Reply, delay: Duration) -> TestConsumer {
        use edgegw_proto as proto;
        use edgegw_ring::{Consumer, Producer, Readiness};
        let ingress_path = daemon.ring_socket(ring);
        let reply_path = daemon.reply_socket(ring);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut consumer = Consumer::attach(&ingress_path).expect("attach ingress");
                let mut producer = Producer::attach(&reply_path).expect("attach reply");
                ready_tx.send(()).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    while let Some(record) = consumer.read().expect("ring readable") {
                        let bytes = record.payload().to_vec();
                        let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                        match record.record_type() {
                            proto::OPEN => seen
                                .lock()
                                .unwrap()
                                .opens
                                .push(proto::OpenInfo::decode(&bytes).unwrap()),
                            proto::CLOSE => {
                                let reason = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
                                seen.lock().unwrap().closes.push((id, reason));
                                // Done with it too: the daemon may end the connection.
                                let _ = producer.send(proto::CLOSE, 0, &id.to_le_bytes());
                            }
                            proto::DATA => {
                                seen.lock().unwrap().data.push((id, bytes[8..].to_vec()));
                                if reply != Reply::Silent {
                                    loop {
                                        match producer.send(proto::DATA, 0, &bytes) {
                                            Ok(()) => break,
                                            Err(edgegw_ring::Error::Full { .. }) => {
                                                let _ = producer
                                                    .wait_for_space(
                                                        bytes.len(),
                                                        Some(Duration::from_secs(1)),
                                                    )
                                                    .unwrap();
                                            }
                                            Err(e) => panic!("reply: {e}"),
                                        }
                                    }
                                }
                                if reply == Reply::EchoThenClose {
                                    producer.send(proto::CLOSE, 0, &id.to_le_bytes()).unwrap();
                                }
                            }
                            other => panic!("unexpected record type {other}"),
                        }
                    }
                    consumer.release();
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    match consumer.wait(Some(Duration::from_millis(50))).unwrap() {
                        Readiness::Ready | Readiness::TimedOut => {}
                        Readiness::PeerGone => break,
                        Readiness::Finished => {
                            seen.lock().unwrap().finished = true;
                            break;
                        }
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("consumer attached");
        TestConsumer {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the consumer has seen what `condition` wants.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if condition(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestConsumer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs an async test body on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Asserts two byte strings are equal without printing megabytes: lengths and the first
/// difference.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// The `edgegw` binary (this build's, or `$EDGEGW_TEST_BINARY`: a release or musl build to
/// measure, say), with a clean environment for the variables it reads.
pub fn edgegw() -> std::process::Command {
    edgegw_under(&[])
}

/// [`edgegw`] run by `launcher`, a command line that runs the one after it (`ip netns exec
/// NS`, say; none: the binary itself).
pub fn edgegw_under(launcher: &[&str]) -> std::process::Command {
    let binary = std::env::var_os("EDGEGW_TEST_BINARY")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_edgegw").into());
    let mut command = match launcher.split_first() {
        None => std::process::Command::new(binary),
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    command
        .env_remove("EDGEGW_CONFIG")
        .env("EDGEGW_LOG", "info");
    command
}

/// A daemon (or any edgegw) process with its own directories, its stderr in a log file; killed
/// on drop.
pub struct Process {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(mut command: std::process::Command, dir: &Path, name: &str) -> Process {
        let log = dir.join(format!("{name}.log"));
        let child = command
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` never logged:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from /proc/PID/status, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A daemon process running `config` (with `{dir}` expanded) in a fresh directory: its ring
/// sockets are under `dir/run/edgegw/rings`. Returns it once `ready` was logged.
pub fn spawn_daemon(config: &str, ready: &str) -> (tempfile::TempDir, Process) {
    let dir = tempfile::tempdir().unwrap();
    let text = config.replace("{dir}", &dir.path().display().to_string());
    let path = write(dir.path(), "edgegw.toml", &text);
    let mut command = edgegw();
    command.args(["run", "--config", path.to_str().unwrap()]);
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log(ready);
    (dir, daemon)
}

/// The address a daemon process logged `accepting on ADDR` for.
pub fn accepting_on(daemon: &Process) -> SocketAddr {
    let log = daemon.log();
    let at = log.find("accepting on ").expect("a listener is accepting") + "accepting on ".len();
    let end = log[at..].find(char::is_whitespace).unwrap() + at;
    log[at..end].parse().unwrap()
}

/// Calls `attach` until it succeeds, for up to 10 s: a peer that attaches right after another
/// left, or while the daemon replaces a ring, is told "busy" until the daemon caught up.
pub fn attach_with_retry<T>(attach: impl Fn() -> edgegw_ring::Result<T>) -> edgegw_ring::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attach() {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The next record of a ring, waiting up to 10 s, released at once: (type, payload).
pub fn next_record(ring: &mut edgegw_ring::Consumer) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = ring.read().unwrap() {
            let got = (record.record_type(), record.payload().to_vec());
            ring.release();
            return got;
        }
        assert!(Instant::now() < deadline, "no record came");
        let _ = ring.wait(Some(Duration::from_millis(100))).unwrap();
    }
}

/// The self-signed certificate of a daemon process started in `dir` (XDG directories).
pub fn process_cert(dir: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(dir.join("state/edgegw/self-signed/localhost.crt")).unwrap()
}

/// Writes a reply DATA record for connection `id` and publishes it.
pub fn reply_data(producer: &mut edgegw_ring::Producer, id: u64, bytes: &[u8]) {
    let mut payload = id.to_le_bytes().to_vec();
    payload.extend_from_slice(bytes);
    producer.send(edgegw_proto::DATA, 0, &payload).unwrap();
}

/// Says what CI must show even when the test passes: a part skipped and why, or the path a
/// fallback took. A passing test's stderr is shown to nobody, so the line also goes to
/// `edgegw-test-report.txt` in cargo's target tmp dir, which `.ci/run` and `cross/test` print.
pub fn report(test: &str, line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("edgegw-test-report.txt");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    match file {
        Ok(mut f) => {
            let _ = writeln!(f, "{test}: {line}");
        }
        Err(e) => eprintln!("cannot append to {}: {e}", path.display()),
    }
}

/// The emulator the tests run under (`cross/*.toml` sets `EDGEGW_TEST_EMULATED` for qemu-user
/// runs), if any: a process's RSS there is the emulator's, not the daemon's.
pub fn emulator() -> Option<String> {
    std::env::var("EDGEGW_TEST_EMULATED")
        .ok()
        .filter(|e| !e.is_empty())
}

/// What `edgegw ring stat --json SOCKET` prints, parsed (the command must succeed).
pub fn ring_stat_json(socket: &std::path::Path) -> serde_json::Value {
    let out = edgegw()
        .args(["ring", "stat", "--json"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
