//! The gateway's benchmark: handshakes per second, bulk throughput, memory per connection.
//!
//! `cargo bench -p edgegw --bench tls` prints one JSON object per line on stdout and nothing
//! else (progress goes to stderr). Every figure comes with a baseline measured in the same run,
//! on the same machine, because these machines are shared and noisy:
//!
//! - handshakes: full TLS 1.3 handshakes (ECDSA P-256 certificate, X25519, no resumption) from
//!   16 concurrent clients on CPU 1 against the server on CPU 0: edgegw (TLS thread pinned),
//!   a minimal tokio-rustls server with the same certificate and provider, and nginx if it is
//!   installed (one process, pinned). The servers take turns, 5 repetitions each; each line is
//!   the median, with the samples, and the server's CPU time per handshake (from /proc): the
//!   client core saturates too, so the CPU cost is the steadier comparison.
//! - throughput: one connection sending 128 MiB through edgegw into a ring, through edgegw to a
//!   TCP backend, and through a plain TCP relay (no TLS) to the same backend; 5 interleaved
//!   repetitions, medians.
//! - memory: the daemon's idle RSS, then (after a warm-up of 20 connections per route, which
//!   brings in the code pages of the data path) its growth over 1000 idle connections that each
//!   exchanged a few bytes, through a ring route and through a TCP route.
//!
//! Environment: EDGEGW_BENCH_SECONDS (handshake time per server, default 5, split over the
//! repetitions), EDGEGW_BENCH_MIB (throughput volume per repetition, default 128), EDGEGW_BENCH_CONNECTIONS (default 1000),
//! EDGEGW_BENCH_ONLY (`handshake`, `throughput` or `memory`), EDGEGW_BENCH_BINARY (another
//! edgegw binary to measure instead of this build's, e.g. one built with `--features ring`
//! or for musl; its provider is then reported as "external").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn emit(value: serde_json::Value) {
    println!("{value}");
    let _ = std::io::stdout().flush();
}

fn progress(what: &str) {
    eprintln!("[bench tls] {what}");
}

/// The server side's provider: the one edgegw is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    edgegw::tls::provider()
}

/// The load generator's provider: this build's. Compare server providers by building one and
/// measuring the other through EDGEGW_BENCH_BINARY: the client then stays the same.
fn client_provider() -> Arc<rustls::crypto::CryptoProvider> {
    edgegw::tls::provider()
}

/// A load generator's verifier: it accepts the server's certificate and signature without
/// checking, so the client core spends its time on the handshake itself and the server, not
/// the client, is what is measured. Never use outside a benchmark.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS 1.3 only, X25519 only, no resumption: every handshake is a full one. The suites in
/// the browsers' order (AES-128-GCM first): nginx follows the client's order and edgegw its
/// own, and with this order every server negotiates the same suite (each line says which).
fn client_config() -> Arc<rustls::ClientConfig> {
    let mut provider = (*client_provider()).clone();
    provider
        .kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A current-thread runtime, as every server and client here uses (one thread, pinned).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon started from the real binary, with its own state and runtime directories.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[daemon]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n  [daemon.tls_thread]\n  cpu = {SERVER_CPU}\n{config}",
            d = dir.path().display()
        );
        let path = dir.path().join("edgegw.toml");
        std::fs::write(&path, text).unwrap();
        let child = Command::new(daemon_binary())
            .args(["run", "--config"])
            .arg(&path)
            .env("EDGEGW_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start edgegw");
        Daemon { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rings(&self) -> PathBuf {
        self.dir.path().join("run/rings")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("state/self-signed/localhost.crt")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon binary measured: this build's, or EDGEGW_BENCH_BINARY.
fn daemon_binary() -> PathBuf {
    std::env::var_os("EDGEGW_BENCH_BINARY")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgegw")))
}

/// The provider of the binary measured, as reported in the JSON lines.
fn daemon_provider() -> &'static str {
    if std::env::var_os("EDGEGW_BENCH_BINARY").is_some_and(|b| !b.is_empty()) {
        "external"
    } else {
        edgegw::tls::PROVIDER_NAME
    }
}

fn main() {
    raise_fd_limit();
    let seconds = env_number("EDGEGW_BENCH_SECONDS", 5);
    let mib = env_number("EDGEGW_BENCH_MIB", 128);
    let connections = env_number("EDGEGW_BENCH_CONNECTIONS", 1000) as usize;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        progress("fewer than 2 CPUs: server and clients share one; figures are not comparable");
    }
    let only = std::env::var("EDGEGW_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("handshake") {
        handshakes(Duration::from_secs(seconds));
    }
    if run("throughput") {
        throughput(mib << 20);
    }
    if run("memory") {
        memory(connections);
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes

const HANDSHAKE_CLIENTS: usize = 16;

/// CPU time used by a server: a process (all its threads) or one thread of this process.
#[derive(Debug, Clone)]
enum CpuMeter {
    Process(u32),
    Thread(Arc<std::sync::atomic::AtomicI32>),
}

impl CpuMeter {
    /// User + system CPU seconds so far, from /proc (clock-tick resolution).
    fn seconds(&self) -> f64 {
        let path = match self {
            CpuMeter::Process(pid) => format!("/proc/{pid}/stat"),
            CpuMeter::Thread(tid) => {
                format!("/proc/self/task/{}/stat", tid.load(Ordering::Relaxed))
            }
        };
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the command name (which may contain spaces) in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        ticks as f64 / hz
    }
}

/// Repetitions of each measurement, interleaved between the servers (or paths) compared, so a
/// noisy phase of the shared host hits all of them alike; each line reports the median.
const REPS: usize = 5;

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn handshakes(duration: Duration) {
    let port = free_port();
    let daemon = Daemon::start(&format!(
        "[[listener]]\nname = \"hs\"\nbind = [\"{port}\"]\nroute = \"r\"\nmax_handshakes = 1024\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"r\"\nring = \"r\"\n[[ring]]\nname = \"r\"\n"
    ));
    wait_for_port(port);
    let cert_path = daemon.cert();
    let key_path = cert_path.with_extension("key");

    let baseline_port = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let minimal_tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let minimal = {
        let (cert, key) = (cert_path.clone(), key_path.clone());
        let (stop, tid) = (stop.clone(), minimal_tid.clone());
        std::thread::spawn(move || {
            minimal_tokio_rustls_server(baseline_port, &cert, &key, stop, tid)
        })
    };
    wait_for_port(baseline_port);
    let nginx = Nginx::start(&cert_path, &key_path);
    let mut servers = vec![
        ("edgegw", port, CpuMeter::Process(daemon.pid())),
        (
            "tokio-rustls-minimal",
            baseline_port,
            CpuMeter::Thread(minimal_tid),
        ),
    ];
    match &nginx {
        Some(nginx) => {
            wait_for_port(nginx.port);
            servers.push(("nginx", nginx.port, CpuMeter::Process(nginx.child.id())));
        }
        None => emit(
            json!({"bench": "handshake", "server": "nginx", "skipped": "nginx is not installed"}),
        ),
    }

    let suites: Vec<String> = servers
        .iter()
        .map(|(_, addr, _)| negotiated_suite(*addr))
        .collect();
    let slice = duration / REPS as u32;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for rep in 0..REPS {
        for (i, (name, addr, meter)) in servers.iter().enumerate() {
            progress(&format!(
                "handshakes: {name}, repetition {}/{REPS}",
                rep + 1
            ));
            let (rate, cpu_per_handshake) = handshake_rate(*addr, slice, meter);
            samples[i].push(rate);
            cpu[i].push(cpu_per_handshake * 1e6);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(baseline_port);
    let _ = minimal.join();

    let edgegw = median(&samples[0]);
    let edgegw_cpu = median(&cpu[0]);
    for (i, (name, _, _)) in servers.iter().enumerate() {
        let rate = median(&samples[i]);
        let cpu_us = median(&cpu[i]);
        let provider = match *name {
            "edgegw" => daemon_provider(),
            "tokio-rustls-minimal" => edgegw::tls::PROVIDER_NAME,
            _ => "openssl",
        };
        let mut line = json!({
            "bench": "handshake", "server": name, "provider": provider,
            "suite": suites[i],
            "clients": HANDSHAKE_CLIENTS, "kx": "X25519", "cert": "ECDSA-P256", "tls": "1.3",
            "reps": REPS, "seconds_per_rep": slice.as_secs_f64(),
            "handshakes_per_s": rate.round(),
            "samples": samples[i].iter().map(|r| r.round()).collect::<Vec<_>>(),
            "server_cpu_us_per_handshake": cpu_us.round(),
        });
        if i > 0 {
            line["edgegw_ratio"] = json!(round2(edgegw / rate));
            // Both cores are saturated (the clients' share is as heavy as the server's), so the
            // rate ratio understates the difference; CPU per handshake does not depend on it.
            line["edgegw_cpu_ratio"] = json!(round2(cpu_us / edgegw_cpu));
        }
        emit(line);
    }
}

/// The suite one handshake with the load generator's config negotiates.
fn negotiated_suite(addr: SocketAddr) -> String {
    runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        format!("{suite:?}")
    })
}

/// Full handshakes per second from 16 concurrent clients on the client CPU.
fn handshake_rate(addr: SocketAddr, duration: Duration, server_cpu: &CpuMeter) -> (f64, f64) {
    let config = client_config();
    let server_cpu = server_cpu.clone();
    std::thread::spawn(move || {
        pin(CLIENT_CPU);
        let runtime = runtime();
        runtime.block_on(async move {
            let count = Arc::new(AtomicU64::new(0));
            let counting = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for _ in 0..HANDSHAKE_CLIENTS {
                let (config, count, counting, stop) = (
                    config.clone(),
                    count.clone(),
                    counting.clone(),
                    stop.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let name = ServerName::try_from("localhost").unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                            continue;
                        };
                        // Reset instead of TIME_WAIT: tens of thousands of short connections
                        // would otherwise run out of ephemeral ports.
                        let _ = nix::sys::socket::setsockopt(
                            &tcp,
                            nix::sys::socket::sockopt::Linger,
                            &libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            },
                        );
                        if connector.connect(name.clone(), tcp).await.is_ok()
                            && counting.load(Ordering::Relaxed)
                        {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(300)).await; // warm-up
            counting.store(true, Ordering::Relaxed);
            let start = Instant::now();
            let cpu_before = server_cpu.seconds();
            tokio::time::sleep(duration).await;
            let done = count.load(Ordering::Relaxed);
            let cpu = server_cpu.seconds() - cpu_before;
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
            (
                done as f64 / elapsed.as_secs_f64(),
                cpu / done.max(1) as f64,
            )
        })
    })
    .join()
    .unwrap()
}

/// The baseline: the least a tokio-rustls server does per handshake.
fn minimal_tokio_rustls_server(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    stop: Arc<AtomicBool>,
    tid: Arc<std::sync::atomic::AtomicI32>,
) {
    use rustls::pki_types::pem::PemObject;
    pin(SERVER_CPU);
    tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    let chain = vec![CertificateDer::from_pem_file(cert).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = runtime();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        while !stop.load(Ordering::Relaxed) {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
}

/// nginx as one process (no master, so killing it leaves nothing behind) pinned to the server
/// CPU, if nginx is installed.
struct Nginx {
    child: Child,
    port: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(cert: &Path, key: &Path) -> Option<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let port = free_port();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log crit;
             events {{ worker_connections 4096; }}
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
               server {{ listen {port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
                 ssl_protocols TLSv1.3; ssl_ecdh_curve X25519; ssl_session_tickets on; ssl_session_cache off;
                 location / {{ return 200; }} }} }}",
            d = dir.path().display(),
            cert = cert.display(),
            key = key.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).ok()?;
        let child = Command::new("taskset")
            .args(["-c", &SERVER_CPU.to_string(), binary])
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Nginx {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput

const CHUNK: usize = 64 * 1024;

fn throughput(bytes: u64) {
    // The sink every path ends in: counts bytes, answers one byte when all have arrived.
    let sink = free_port();
    std::thread::spawn(move || tcp_sink(sink, bytes));
    wait_for_port(sink);

    let tls_port = free_port();
    let ring_port = free_port();
    let daemon = Daemon::start(&format!(
        "[[listener]]\nname = \"tcp\"\nbind = [\"{tls_port}\"]\nroute = \"tcp\"\n  [[listener.certificate]]\n  self_signed = true\n\
         [[listener]]\nname = \"ring\"\nbind = [\"{ring_port}\"]\nroute = \"ring\"\n  [[listener.certificate]]\n  self_signed = true\n\
         [[route]]\nname = \"tcp\"\ntcp = \"{sink}\"\n[[route]]\nname = \"ring\"\nring = \"bulk\"\n\
         [[ring]]\nname = \"bulk\"\ncapacity = \"1MiB\"\n"
    ));
    wait_for_port(tls_port);
    let rings = daemon.rings();
    std::thread::spawn(move || {
        ring_sink(
            &rings.join("bulk.sock"),
            &rings.join("bulk.reply.sock"),
            bytes,
        )
    });

    let relay = free_port();
    std::thread::spawn(move || plain_tcp_relay(relay, sink));
    wait_for_port(relay);

    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for rep in 0..REPS {
        progress(&format!("throughput: repetition {}/{REPS}", rep + 1));
        samples[0].push(send_plain(relay, bytes));
        samples[1].push(send_tls(tls_port, bytes));
        samples[2].push(send_tls(ring_port, bytes));
    }
    let relay_rate = median(&samples[0]);
    for (i, path) in ["tcp-relay", "tls-tcp", "tls-ring"].into_iter().enumerate() {
        let rate = median(&samples[i]);
        emit(json!({
            "bench": "throughput", "path": path, "bytes": bytes, "reps": REPS,
            "mb_per_s": (rate / 1e6).round(),
            "samples_mb_per_s": samples[i].iter().map(|r| (r / 1e6).round()).collect::<Vec<_>>(),
            "ratio_to_tcp_relay": (rate / relay_rate * 1000.0).round() / 1000.0,
            "provider": daemon_provider(),
        }));
    }
}

/// Bytes per second from the client CPU over TLS; the clock stops at the sink's answer.
fn send_tls(addr: SocketAddr, bytes: u64) -> f64 {
    let config = client_config();
    std::thread::spawn(move || {
        pin(CLIENT_CPU);
        let runtime = runtime();
        runtime.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let chunk = vec![0x5au8; CHUNK];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < bytes {
                let n = (bytes - sent).min(CHUNK as u64) as usize;
                tls.write_all(&chunk[..n]).await.unwrap();
                sent += n as u64;
            }
            tls.flush().await.unwrap();
            let mut ack = [0u8; 1];
            tls.read_exact(&mut ack).await.unwrap();
            bytes as f64 / start.elapsed().as_secs_f64()
        })
    })
    .join()
    .unwrap()
}

fn send_plain(addr: SocketAddr, bytes: u64) -> f64 {
    std::thread::spawn(move || {
        pin(CLIENT_CPU);
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        let chunk = vec![0x5au8; CHUNK];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(CHUNK as u64) as usize;
            tcp.write_all(&chunk[..n]).unwrap();
            sent += n as u64;
        }
        let mut ack = [0u8; 1];
        tcp.read_exact(&mut ack).unwrap();
        bytes as f64 / start.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

/// Reads `bytes` from each connection (one at a time) and answers one byte.
fn tcp_sink(addr: SocketAddr, bytes: u64) {
    pin(CLIENT_CPU);
    let listener = TcpListener::bind(addr).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut got = 0u64;
        while got < bytes {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        let _ = conn.write_all(b"!");
    }
}

/// The ring's consumer: counts DATA bytes per connection, answers one byte when all arrived.
fn ring_sink(ingress: &Path, reply: &Path, bytes: u64) {
    use edgegw_proto as wire;
    pin(CLIENT_CPU);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut consumer = loop {
        match edgegw_ring::Consumer::attach(ingress) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("attach to the bench ring: {e}"),
        }
    };
    let mut producer = edgegw_ring::Producer::attach(reply).unwrap();
    let mut counts = std::collections::HashMap::<u64, u64>::new();
    loop {
        while let Some(record) = consumer.read().unwrap() {
            if record.record_type() != wire::DATA {
                continue;
            }
            let payload = record.payload();
            let id = payload.read_u64_le(0).unwrap();
            let total = counts.entry(id).or_default();
            *total += (payload.len() - wire::DATA_HEADER_LEN) as u64;
            if *total == bytes {
                let mut answer = id.to_le_bytes().to_vec();
                answer.push(b'!');
                producer.send(wire::DATA, 0, &answer).unwrap();
            }
        }
        consumer.release();
        match consumer.wait(None).unwrap() {
            edgegw_ring::Readiness::Ready => {}
            _ => return,
        }
    }
}

/// The plain relay baseline: what a TCP proxy without TLS does, on the server CPU.
fn plain_tcp_relay(listen: SocketAddr, backend: SocketAddr) {
    pin(SERVER_CPU);
    let runtime = runtime();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut server,
                    CHUNK,
                    CHUNK,
                )
                .await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Memory

#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

fn rss(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    }
}

fn memory(connections: usize) {
    let echo_backend = free_port();
    std::thread::spawn(move || tcp_echo(echo_backend));
    wait_for_port(echo_backend);
    let ring_port = free_port();
    let tcp_port = free_port();
    let daemon = Daemon::start(&format!(
        "[[listener]]\nname = \"ring\"\nbind = [\"{ring_port}\"]\nroute = \"ring\"\nmax_connections = 5000\n  [[listener.certificate]]\n  self_signed = true\n\
         [[listener]]\nname = \"tcp\"\nbind = [\"{tcp_port}\"]\nroute = \"tcp\"\nmax_connections = 5000\n  [[listener.certificate]]\n  self_signed = true\n\
         [[route]]\nname = \"ring\"\nring = \"default\"\n[[route]]\nname = \"tcp\"\ntcp = \"{echo_backend}\"\n\
         [[ring]]\nname = \"default\"\n"
    ));
    wait_for_port(ring_port);
    let mut echo = Command::new(daemon_binary())
        .args(["ring", "echo"])
        .arg(daemon.rings().join("default.sock"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start the echo consumer");
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss(daemon.pid());
    emit(json!({
        "bench": "memory", "what": "idle", "rss_kib": idle.total, "anon_kib": idle.anon,
        "file_kib": idle.file, "shmem_kib": idle.shmem, "provider": daemon_provider(),
    }));

    let runtime = runtime();
    let open = |port: SocketAddr, n: usize| {
        let config = client_config();
        runtime.block_on(async {
            let mut streams = Vec::with_capacity(n);
            for i in 0..n {
                let tcp = tokio::net::TcpStream::connect(port).await.unwrap();
                let mut tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                    .unwrap();
                let msg = format!("hello {i:>10}");
                tls.write_all(msg.as_bytes()).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                tls.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg.as_bytes());
                streams.push(tls);
            }
            streams
        })
    };
    // Warm-up: the code pages of handshakes and of each route come in once; what the idle
    // connections add after that is their own memory.
    drop(open(ring_port, 20));
    drop(open(tcp_port, 20));
    std::thread::sleep(Duration::from_secs(1));
    let mut before = rss(daemon.pid());
    emit(json!({
        "bench": "memory", "what": "after-warm-up", "rss_kib": before.total, "anon_kib": before.anon,
        "file_kib": before.file, "shmem_kib": before.shmem, "provider": daemon_provider(),
    }));
    let mut held = Vec::new();
    for (route, port) in [("ring", ring_port), ("tcp", tcp_port)] {
        progress(&format!(
            "memory: {connections} idle connections through the {route} route"
        ));
        let streams = open(port, connections);
        std::thread::sleep(Duration::from_secs(1));
        let after = rss(daemon.pid());
        let per =
            |a: u64, b: u64| ((a as f64 - b as f64) / connections as f64 * 100.0).round() / 100.0;
        emit(json!({
            "bench": "memory", "what": "per-idle-connection", "route": route, "connections": connections,
            "rss_kib_per_connection": per(after.total, before.total),
            "anon_kib_per_connection": per(after.anon, before.anon),
            "rss_kib_before": before.total, "rss_kib_after": after.total,
            "provider": daemon_provider(),
        }));
        before = after;
        held.push(streams);
    }
    drop(held);
    let _ = echo.kill();
    let _ = echo.wait();
}

fn tcp_echo(addr: SocketAddr) {
    pin(CLIENT_CPU);
    let runtime = runtime();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
