//! The control socket: `edgegw reload`, `status` and `metrics` ask the running daemon over
//! `<runtime dir>/control.sock` (mode 0660); a client that sends garbage or hangs is answered
//! with an error or dropped, and nobody else notices; a reload whose loading takes longer than
//! its budget is abandoned and the old config keeps running.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

fn runtime(daemon: &TestDaemon) -> PathBuf {
    daemon.path("run")
}

fn ask(daemon: &TestDaemon, request: &str) -> Result<serde_json::Value, String> {
    edgegw::control::ask(&runtime(daemon), request, Duration::from_secs(10))
        .map_err(|e| format!("{e:#}"))
}

/// Sends raw bytes and reads whatever comes back until the daemon closes.
fn raw(daemon: &TestDaemon, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(runtime(daemon).join("control.sock")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn self_signed_config() -> String {
    ring_config("", SELF_SIGNED, "", "")
}

/// For the tests that edit the config file and count reloads: without the file watch, whose own
/// reload of the edited file would count too, before or after the asked one depending on the
/// machine's speed (under qemu-user it came first).
fn without_file_watch() -> String {
    format!("{}[watch]\nfiles = false\n", self_signed_config())
}

#[test]
fn status_and_metrics_are_answered_on_a_socket_only_the_daemons_user_and_group_reach() {
    let daemon = TestDaemon::start(&self_signed_config());
    let socket = runtime(&daemon).join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    let status = ask(&daemon, "status").unwrap();
    let status = &status["status"];
    assert_eq!(status["pid"], std::process::id());
    assert_eq!(status["listening"][0]["listener"], "tls");
    assert_eq!(status["rings"]["app"]["consumer_attached"], false);
    assert_eq!(status["rings"]["app"]["generation"], 1);
    assert_eq!(status["reloads"]["ok"], 0);
    assert!(status["memory"]["resident_bytes"].as_u64().unwrap() > 0);

    let _consumer = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let metrics = ask(&daemon, "metrics").unwrap();
    let text = metrics["metrics"].as_str().unwrap();
    assert!(
        text.contains("# TYPE edgegw_accepted_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("edgegw_ring_consumer_attached{ring=\"app\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("edgegw_reloads_total{result=\"ok\"} 0\n"),
        "{text}"
    );
}

#[test]
fn garbage_overlong_and_silent_clients_get_an_error_and_the_daemon_answers_others_meanwhile() {
    let daemon = TestDaemon::start(&self_signed_config());
    let unknown = raw(&daemon, b"make me a sandwich\n");
    assert!(
        unknown.contains("\"ok\":false") && unknown.contains("unknown request"),
        "{unknown}"
    );
    let binary = raw(&daemon, &[0xff, 0xfe, 0, b'\n']);
    assert!(binary.contains("not UTF-8"), "{binary}");
    // (Exactly the limit: more would be unread when the daemon closes, and the client would
    // see a reset instead of the answer; it is dropped either way.)
    let overlong = raw(&daemon, &[b'a'; 256]);
    assert!(overlong.contains("at most 256 bytes"), "{overlong}");

    // Clients that connect and say nothing: others are answered meanwhile, and the silent ones
    // are told off and closed after 2 s.
    let started = Instant::now();
    let silent: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(runtime(&daemon).join("control.sock")).unwrap())
        .collect();
    ask(&daemon, "status").expect("answered while clients hang");
    assert!(started.elapsed() < Duration::from_secs(1));
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("no request within 2 s"), "{answer}");
    }
    ask(&daemon, "status").expect("still answering");
}

#[test]
fn reload_over_the_control_socket_answers_with_the_outcome_and_a_refused_one_keeps_the_old() {
    let mut daemon = TestDaemon::start(&without_file_watch());
    let before = daemon.addr("tls");
    let answer = ask(&daemon, "reload").expect("the same config reloads");
    assert_eq!(answer["listening"][0]["addr"], before.to_string());

    std::fs::write(daemon.config_file(), "[[listener]]\nname = 1\n").unwrap();
    let refused = ask(&daemon, "reload").expect_err("a broken config is refused");
    assert!(refused.contains("edgegw.toml"), "says where: {refused}");
    let status = ask(&daemon, "status").unwrap();
    assert_eq!(status["status"]["reloads"]["failed"], 1);
    assert_eq!(status["status"]["reloads"]["ok"], 1);
    assert_eq!(status["status"]["listening"][0]["addr"], before.to_string());
    daemon
        .reload(&self_signed_config())
        .expect("a good one again");
}

#[test]
fn the_commands_find_the_daemon_of_a_config_it_refused_and_a_refused_reload_is_the_daemons() {
    let daemon = TestDaemon::start(&without_file_watch());
    // Valid TOML the daemon refuses (an unknown key), as a config mid-edit is: the commands
    // need only its runtime directory.
    let config = std::fs::read_to_string(daemon.config_file()).unwrap();
    std::fs::write(daemon.config_file(), format!("bogus = 1\n{config}")).unwrap();
    let run = |command: &str| {
        edgegw()
            .args([command, "--config"])
            .arg(daemon.config_file())
            .output()
            .unwrap()
    };
    let reload = run("reload");
    assert_eq!(reload.status.code(), Some(1), "a refused reload exits 1");
    let error = String::from_utf8_lossy(&reload.stderr);
    assert!(
        error.contains("reload refused") && error.contains("bogus"),
        "the daemon's refusal: {error}"
    );
    let status = run("status");
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("reloads: 0 ok, 1 failed"), "{text}");
    let metrics = run("metrics");
    assert!(metrics.status.success(), "{metrics:?}");
    assert!(String::from_utf8_lossy(&metrics.stdout)
        .contains("edgegw_reloads_total{result=\"failed\"} 1\n"));
    // TOML that is not TOML says where.
    std::fs::write(daemon.config_file(), "[daemon\n").unwrap();
    let status = run("status");
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stderr).contains("edgegw.toml:1:"));
}

#[test]
fn a_reload_past_its_time_budget_is_abandoned_and_the_old_config_keeps_running() {
    let config = format!("reload_timeout = \"300ms\"\n{}", without_file_watch());
    let daemon = TestDaemon::start(&config);
    let file = daemon.config_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    // A config behind a named pipe nobody writes: loading it hangs.
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let started = Instant::now();
    let refused = ask(&daemon, "reload").expect_err("the hung reload is refused");
    let took = started.elapsed();
    assert!(refused.contains("longer than 300ms"), "{refused}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let status = ask(&daemon, "status").expect("the daemon serves on");
    assert_eq!(status["status"]["reloads"]["failed"], 1);
    // Let the abandoned build end (it is stuck opening the pipe), then reload for real.
    std::fs::write(&file, &text).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, &text).unwrap();
    ask(&daemon, "reload").expect("a reload after the abandoned one works");
}

/// The listener named `name` in a status answer.
fn listener_status(daemon: &TestDaemon, name: &str) -> serde_json::Value {
    let status = ask(daemon, "status").unwrap();
    status["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no listener `{name}` in {status}"))
}

/// Waits until listener `name`'s status satisfies `condition`.
fn wait_for_listener(
    daemon: &TestDaemon,
    name: &str,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = listener_status(daemon, name);
        if condition(&l) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {l}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn each_listener_shows_its_addresses_connections_handshakes_and_refusals_by_reason() {
    let config = ring_config(
        "max_connections = 1\nhandshake_timeout = \"300ms\"",
        SELF_SIGNED,
        "",
        "",
    );
    let mut daemon = TestDaemon::start(&config);
    let addr = daemon.addr("tls");
    let l = listener_status(&daemon, "tls");
    assert_eq!(l["addrs"], serde_json::json!([addr.to_string()]));
    assert_eq!(l["accepted"], 0);

    // A silent client takes the one slot; the next is refused at the connection limit; the
    // silent one is dropped at the handshake timeout.
    let silent = std::net::TcpStream::connect(addr).unwrap();
    wait_for_listener(&daemon, "tls", "the silent client", |l| l["active"] == 1);
    let mut refused = std::net::TcpStream::connect(addr).unwrap();
    let mut rest = Vec::new();
    let _ = refused.read_to_end(&mut rest);
    wait_for_listener(&daemon, "tls", "the refusal", |l| {
        l["refused_connection_limit"] == 1
    });
    let l = wait_for_listener(&daemon, "tls", "the timeout", |l| {
        l["handshake_timeouts"] == 1 && l["active"] == 0
    });
    assert_eq!(l["accepted"], 2);
    drop(silent);

    // Bytes that are not TLS: a TLS error of this listener.
    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = garbage.read_to_end(&mut rest);
    wait_for_listener(&daemon, "tls", "the TLS error", |l| l["tls_errors"] == 1);

    // A real handshake.
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let roots = [self_signed_cert(&daemon, "localhost")];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = runtime
        .block_on(connect(addr, client_config(&roots, &[]), "localhost"))
        .unwrap();
    let l = wait_for_listener(&daemon, "tls", "the handshake", |l| {
        l["handshakes"] == 1 && l["active"] == 1
    });
    assert_eq!(l["refused_handshake_limit"], 0);
    assert_eq!(l["refused_source_limit"], 0);
    assert_eq!(l["refused_memory_pressure"], 0);

    let metrics = ask(&daemon, "metrics").unwrap();
    let text = metrics["metrics"].as_str().unwrap();
    for line in [
        "edgegw_listener_handshakes_total{listener=\"tls\"} 1\n",
        "edgegw_listener_refused_connection_limit_total{listener=\"tls\"} 1\n",
        "edgegw_listener_handshake_timeouts_total{listener=\"tls\"} 1\n",
        "edgegw_listener_tls_errors_total{listener=\"tls\"} 1\n",
        "edgegw_listener_active{listener=\"tls\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    drop(tls);

    // A reload keeps the counters of a listener that stays.
    daemon.reload(&config).expect("the same config reloads");
    let l = listener_status(&daemon, "tls");
    assert_eq!(l["handshakes"], 1);
    assert_eq!(l["refused_connection_limit"], 1);

    // `edgegw status` (text) shows the listener's line.
    let out = edgegw()
        .args(["status", "--config"])
        .arg(daemon.config_file())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("listener tls on {addr}: "))
            && text.contains("1 handshakes; refused: 1 connection limit"),
        "{text}"
    );
}

#[test]
fn a_ring_shows_since_when_its_peers_are_attached_and_its_flow_control_counters() {
    let daemon = TestDaemon::start(&self_signed_config());
    let before = std::time::SystemTime::now();
    let mut ingress = edgegw_ring::Consumer::attach(daemon.ring_socket("app")).unwrap();
    let mut reply = edgegw_ring::Producer::attach(daemon.reply_socket("app")).unwrap();
    // A connection with credits on, and a CREDIT for a connection that does not exist.
    let roots = [self_signed_cert(&daemon, "localhost")];
    let addr = daemon.addr("tls");
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        block_on(async {
            let _tls = connect(addr, client_config(&roots, &[]), "localhost")
                .await
                .unwrap();
            let _ = finished.recv();
        })
    });
    let (kind, open) = next_record(&mut ingress);
    assert_eq!(kind, edgegw_proto::OPEN);
    let id = u64::from_le_bytes(open[..8].try_into().unwrap());
    let mut payload = [0; edgegw_proto::CREDIT_LEN];
    edgegw_proto::encode_credit(&mut payload, id, 0);
    reply.send(edgegw_proto::CREDIT, 0, &payload).unwrap();
    edgegw_proto::encode_credit(&mut payload, 999, 4096);
    reply.send(edgegw_proto::CREDIT, 0, &payload).unwrap();
    let stats = daemon.wait_for("the credits read", |s| {
        s.credits_for_unknown_connections == 1
    });
    let status = ask(&daemon, "status").unwrap();
    let flow = &status["status"]["rings"]["app"]["flow_control"];
    assert_eq!(flow["credits_for_unknown_connections"], 1, "{flow}");
    assert_eq!(flow["credit_stalls"], stats.credit_stalls, "{flow}");
    assert_eq!(flow["excess_credits"], 0, "{flow}");
    done.send(()).unwrap();
    client.join().unwrap();

    std::thread::sleep(Duration::from_millis(1100));
    let status = ask(&daemon, "status").unwrap();
    let ring = &status["status"]["rings"]["app"];
    for peer in ["consumer", "reply_producer"] {
        assert_eq!(ring[format!("{peer}_attached")], true, "{ring}");
        assert!(ring[format!("{peer}_attached_seconds")].as_u64().unwrap() >= 1);
        // Same fixed-width format: later times sort later.
        let since = ring[format!("{peer}_attached_since")].as_str().unwrap();
        let earliest = edgegw::log::rfc3339(before - Duration::from_millis(1));
        assert!(since >= earliest.as_str(), "{since} before {earliest}");
    }
    let metrics = ask(&daemon, "metrics").unwrap();
    let text = metrics["metrics"].as_str().unwrap();
    assert!(
        text.contains("edgegw_ring_consumer_attached_seconds{ring=\"app\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("edgegw_ring_reply_producer_attached{ring=\"app\"} 1\n"),
        "{text}"
    );
    let reply_age = text
        .lines()
        .find_map(|l| l.strip_prefix("edgegw_ring_reply_producer_attached_seconds{ring=\"app\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(reply_age.is_some_and(|age| age >= 1), "{text}");
}

/// The value of the unlabelled series `metric` in `edgegw metrics`.
fn metric(daemon: &TestDaemon, metric: &str) -> Option<u64> {
    let metrics = ask(daemon, "metrics").unwrap();
    let text = metrics["metrics"].as_str().unwrap().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_carry_the_kernel_watchers_counters() {
    let daemon = TestDaemon::start(&self_signed_config());
    assert_eq!(metric(&daemon, "edgegw_files_watched"), Some(1));
    assert_eq!(
        metric(&daemon, "edgegw_files_reloads_requested_total"),
        Some(0)
    );
    assert_eq!(metric(&daemon, "edgegw_pressure_stalls_total"), Some(0));
    assert_eq!(metric(&daemon, "edgegw_network_rebinds_total"), Some(0));
    assert_eq!(metric(&daemon, "edgegw_events_dropped_total"), Some(0));
    // The config rewritten: the files watcher sees it and asks for a reload.
    let text = std::fs::read_to_string(daemon.config_file()).unwrap();
    std::fs::write(daemon.config_file(), format!("{text}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&daemon, "edgegw_files_reloads_requested_total") != Some(1) {
        assert!(Instant::now() < deadline, "no reload requested");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(metric(&daemon, "edgegw_files_changes_total").unwrap() >= 1);
}

#[test]
fn the_metrics_endpoint_answers_a_real_http_client_and_drops_garbage_and_silence() {
    let config = format!(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
        self_signed_config()
    );
    let daemon = TestDaemon::start(&config);
    let status = ask(&daemon, "status").unwrap();
    let addr: std::net::SocketAddr = status["status"]["metrics_endpoint"]
        .as_str()
        .expect("the endpoint's address in the status")
        .parse()
        .unwrap();
    let curl = |path: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "-D", "-"])
            .arg(format!("http://{addr}{path}"))
            .output()
            .expect("curl runs")
    };
    let out = curl("/metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(
        text.contains("\r\n\r\n# TYPE edgegw_accepted_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("edgegw_listener_accepted_total{listener=\"tls\"} 0\n"),
        "{text}"
    );
    assert!(curl("/").stdout.starts_with(b"HTTP/1.1 404 "));

    // Garbage gets a 400, an endless head is dropped unanswered.
    let mut garbage = std::net::TcpStream::connect(addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut endless = std::net::TcpStream::connect(addr).unwrap();
    endless
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = endless.write_all(&[b'a'; 4096]);
    let mut answer = Vec::new();
    let _ = endless.read_to_end(&mut answer);
    assert!(answer.is_empty(), "an overlong head is dropped unanswered");

    // Silent clients, more than are served at once: the control socket answers meanwhile, and
    // the endpoint again once they are dropped at the head timeout (2 s).
    let started = Instant::now();
    let _silent: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    ask(&daemon, "status").expect("the control socket answers meanwhile");
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(started.elapsed()));
    let out = curl("/metrics");
    assert!(
        out.stdout.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "answers again"
    );
}

#[test]
fn a_metrics_endpoint_off_loopback_is_refused_unless_allowed() {
    let config = format!(
        "[metrics]\nlisten = \"0.0.0.0:9464\"\n{}",
        self_signed_config()
    );
    let Err(error) = TestDaemon::try_start(&config) else {
        panic!("a remote metrics endpoint without allow_remote started");
    };
    assert!(error.contains("not a loopback address"), "{error}");
}
