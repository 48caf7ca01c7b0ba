//! The `edgegw` binary as an operator uses it: check-config, the README's first run, signals,
//! systemd socket activation.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(args: &[&str]) -> Output {
    edgegw().args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_builtin_default() {
    let dir = tempfile::tempdir().unwrap();
    let default = run(&["print-default-config"]);
    assert!(default.status.success());
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, &default.stdout).unwrap();
    let check = run(&["check-config", path.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains(": ok (1 listener(s), 1 route(s), 1 ring(s))"));
    assert!(
        !dir.path().join("state").exists(),
        "check-config writes nothing"
    );
}

#[test]
fn check_config_names_file_line_and_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[[listener]]\nname = \"a\"\nbind = [\"127.0.0.1:8443\"]\nroute = \"r\"\nmax_conections = 5\n",
    );
    let check = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let message = stderr(&check);
    assert!(
        message.contains(&format!(
            "{}:5:1: listener.max_conections: unknown field",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn check_config_loads_certificates_and_refuses_a_mismatched_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("CA");
    let (cert, _, _) = ca.issue(&["gw.example"], false, 1);
    let (_, other_key, _) = ca.issue(&["other.example"], false, 2);
    write(dir.path(), "gw.pem", &cert);
    write(dir.path(), "other.key", &other_key);
    let text = "[[listener]]\nname = \"a\"\nbind = [\"127.0.0.1:8443\"]\nroute = \"r\"\n  [[listener.certificate]]\n  cert = \"gw.pem\"\n  key = \"other.key\"\n[[route]]\nname = \"r\"\ntcp = \"127.0.0.1:9\"\n";
    let path = write(dir.path(), "gw.toml", text);
    let check = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let message = stderr(&check);
    assert!(
        message.contains("gw.toml:7:9: listener.certificate.key"),
        "{message}"
    );
    assert!(
        message.contains("does not match the certificate"),
        "{message}"
    );

    let missing = write(
        dir.path(),
        "missing.toml",
        &text.replace("gw.pem", "nope.pem"),
    );
    let check = run(&["check-config", missing.to_str().unwrap()]);
    let message = stderr(&check);
    assert!(
        message.contains("missing.toml:6:10: listener.certificate.cert: cannot read"),
        "{message}"
    );
    assert!(message.contains("nope.pem"), "{message}");
}

#[test]
fn usage_errors_exit_2_with_usage() {
    let output = run(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown command `frobnicate`"));
    assert!(stderr(&output).contains("usage:"));
}

#[test]
fn usage_errors_exit_2_even_when_stderr_is_closed() {
    // A pipe whose reader is gone: every write to it fails (EPIPE). Printing the usage must
    // not panic (exit 101); the exit code still says "usage error".
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = edgegw().arg("frobnicate").stderr(writer).status().unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn a_closed_stdout_ends_a_command_successfully() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [&["print-default-config"][..], &["--help"], &["--version"]] {
        let status = edgegw()
            .args(args)
            .stdout(writer.try_clone().unwrap())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0), "edgegw {args:?} | (closed)");
    }
}

#[test]
#[ignore = "needs root: runs the ring tools as uid 65534, who has no home directory"]
fn ring_tools_need_no_state_directory() {
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it runs the tools as uid 65534"
    );
    let daemon = TestDaemon::start(&ring_config(
        "",
        "self_signed = true",
        "",
        "allow_uids = [65534]",
    ));
    let (_bin_dir, bin) = binary_for_nobody(&daemon);
    // As a DynamicUser= service runs: no $HOME, no XDG directories.
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let output = Command::new(&bin)
            .args(args)
            .env_clear()
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "edgegw {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let socket = daemon.ring_socket("app");
    let by_path = as_nobody(&["ring".as_ref(), "stat".as_ref(), socket.as_os_str()]);
    assert!(by_path.contains("generation  1"), "{by_path}");
    // By name, the runtime directory from $RUNTIME_DIRECTORY (RuntimeDirectory=).
    let output = Command::new(&bin)
        .args(["ring", "stat", "app", "--json"])
        .env_clear()
        .env("RUNTIME_DIRECTORY", daemon.dir.path().join("run"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["generation"], 1, "{json}");
}

/// Serves a ring at `path` on a thread until the returned flag is set.
fn serve_ring(
    path: &std::path::Path,
) -> (
    edgegw_ring::Producer,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let producer =
        edgegw_ring::Producer::create(edgegw_ring::RingConfig::with_capacity(8192)).unwrap();
    let mut server = edgegw_ring::RingServer::bind(
        path,
        producer.served_ring().unwrap(),
        edgegw_ring::AllowList::current_user(),
    )
    .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            server.serve_for(Some(Duration::from_millis(20))).unwrap();
        }
    });
    (producer, stop, thread)
}

#[test]
fn ring_tail_prints_each_packet_with_length_type_flags_and_hex_then_stops_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let (mut producer, stop, server) = serve_ring(&path);
    producer.send(0x12, 0x3, b"hello tail").unwrap();
    producer.send(0x13, 0, &[0xffu8; 300]).unwrap();
    producer.finish();
    let output = run(&["ring", "tail", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "#0 len=10 type=0x0012 flags=0x0003",
        "68 65 6c 6c 6f 20 74 61  69 6c",
        "|hello tail|",
        "#1 len=300 type=0x0013 flags=0x0000",
        "  ... 44 more bytes",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(stderr(&output).contains("2 packet(s); stopped: Finished"));
    // The packets it printed were released.
    assert_eq!(edgegw_ring::tools::stat(&path).unwrap().fill, 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn ring_tail_stops_after_the_count_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let (mut producer, stop, server) = serve_ring(&path);
    for i in 0..5u8 {
        producer.send(1, 0, &[i]).unwrap();
    }
    let output = run(&["ring", "tail", path.to_str().unwrap(), "--count", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("3 packet(s); stopped: Count"));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("len=1 ")
            .count(),
        3
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
}

/// Sends a line through `openssl s_client` and returns the first line that comes back.
fn openssl_round_trip(addr: &str, servername: &str, line: &str) -> String {
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            addr,
            "-servername",
            servername,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    let _ = client.kill();
    let _ = client.wait();
    answer
}

#[test]
fn the_readme_first_run_echoes_through_the_default_ring() {
    // What the README tells a newcomer: `edgegw run`, `edgegw ring echo default`, openssl.
    let dir = tempfile::tempdir().unwrap();
    let mut run_command = edgegw();
    run_command.arg("run");
    let daemon = Process::spawn(run_command, dir.path(), "daemon");
    daemon.wait_for_log("accepting on 127.0.0.1:8443");
    let mut echo_command = edgegw();
    echo_command.args(["ring", "echo", "default"]);
    let echo = Process::spawn(echo_command, dir.path(), "echo");
    echo.wait_for_log("echoing");
    assert_eq!(
        openssl_round_trip("127.0.0.1:8443", "localhost", "hello edgegw"),
        "hello edgegw\n"
    );
    assert!(dir
        .path()
        .join("state/edgegw/self-signed/localhost.crt")
        .exists());
    echo.wait_for_log(" closed (reason");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let mut daemon = daemon;
    let status = daemon.child.wait().unwrap();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{}",
        daemon.log()
    );
    // The echo consumer notices and waits for the daemon to come back.
    echo.wait_for_log("the daemon went away");
}

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_old_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = format!(
        "[[listener]]\nname = \"tls\"\nbind = [\"{port}\"]\nroute = \"r\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"r\"\nring = \"r\"\n[[ring]]\nname = \"r\"\n"
    );
    let config = write(dir.path(), "edgegw.toml", &good);
    let mut command = edgegw();
    command.args(["run", "--config", config.to_str().unwrap()]);
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log(&format!("accepting on {port}"));

    std::fs::write(
        &config,
        good.replace("route = \"r\"\n  [[", "route = \"missing\"\n  [["),
    )
    .unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("reload failed, still running the previous config");
    assert!(
        daemon.log().contains("route `missing` is not defined"),
        "{}",
        daemon.log()
    );
    assert!(std::net::TcpStream::connect(port).is_ok(), "still serving");

    std::fs::write(&config, &good).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log(&format!("reloaded {}", config.display()));
}

#[test]
fn systemd_socket_activation_hands_over_the_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // systemd-socket-activate gives the daemon a clean environment: directories in the config.
    let config = write(
        dir.path(),
        "edgegw.toml",
        &format!(
            "[daemon]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n[[listener]]\nname = \"tls\"\nsystemd_socket = \"edgegw-tls\"\nroute = \"r\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"r\"\nring = \"r\"\n[[ring]]\nname = \"r\"\n",
            d = dir.path().display()
        ),
    );
    let mut command = Command::new("systemd-socket-activate");
    command
        .args([
            "-l",
            &port.to_string(),
            "--fdname=edgegw-tls",
            "-E",
            "EDGEGW_LOG=info",
        ])
        .arg(env!("CARGO_BIN_EXE_edgegw"))
        .args(["run", "--config", config.to_str().unwrap()]);
    let activator = Process::spawn(command, dir.path(), "activated");
    // systemd-socket-activate starts the daemon on the first connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match std::net::TcpStream::connect(port) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no listener: {e}\n{}",
                    activator.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    activator.wait_for_log(&format!("accepting on {port}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let roots = [{
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(
            dir.path().join("state/self-signed/localhost.crt"),
        )
        .unwrap()
    }];
    runtime.block_on(async {
        // The first connection, made before the daemon ran, is served too.
        let tcp = tokio::net::TcpStream::from_std({
            client.set_nonblocking(true).unwrap();
            client
        })
        .unwrap();
        tokio_rustls::TlsConnector::from(client_config(&roots, &[]))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .expect("handshake on the activated socket");
    });
}

#[test]
fn sigusr1_writes_every_counter_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "edgegw.toml",
        "[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"r\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"r\"\nring = \"r\"\n[[ring]]\nname = \"r\"\n",
    );
    let mut command = edgegw();
    command.args(["run", "--config", config.to_str().unwrap()]);
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log("accepting on");
    // One connection that never says anything, so a counter moves.
    let _silent = std::net::TcpStream::connect(accepting_on(&daemon)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    daemon.wait_for_log("counters: ");
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("counters: ")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&line[line.find("counters: ").unwrap() + 10..]).unwrap();
    assert_eq!(json["gateway"]["accepted"], 1, "{json}");
    assert!(
        json["gateway"].get("refused_source_limit").is_some(),
        "{json}"
    );
    assert_eq!(json["rings"]["r"]["connections"], 0, "{json}");
}

#[test]
fn an_unknown_log_level_is_said_and_info_is_used() {
    let output = edgegw()
        .env("EDGEGW_LOG", "verbose")
        .args(["print-default-config"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        stderr(&output).contains(
            "EDGEGW_LOG=\"verbose\" is not a level (error, warn, info, debug or trace): logging at info"
        ),
        "{}",
        stderr(&output)
    );
    let fine = edgegw()
        .env("EDGEGW_LOG", "debug")
        .args(["print-default-config"])
        .output()
        .unwrap();
    assert!(
        !stderr(&fine).contains("is not a level"),
        "{}",
        stderr(&fine)
    );
}
