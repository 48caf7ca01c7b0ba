//! Hot reload: a reload builds the new config beside the running one and swaps it in;
//! established connections survive, a failed reload changes nothing and says why, and reloads
//! run one at a time while the control loop goes on.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(extra_listener: &str) -> String {
    let certificate = "cert = \"{dir}/server.pem\"\nkey = \"{dir}/server.key\"";
    format!("{}{extra_listener}", ring_config("", certificate, "", ""))
}

fn install(dir: &std::path::Path, pki: &Pki, serial: u64) {
    let (cert, key, _) = pki.issue(&["gw.example"], false, serial);
    write(dir, "server.pem", &cert);
    write(dir, "server.key", &key);
}

async fn echo_once(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, msg);
}

#[test]
fn reload_swaps_the_certificate_for_new_handshakes_and_keeps_established_connections() {
    let old_ca = Pki::new("old CA");
    let new_ca = Pki::new("new CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &old_ca, 1);
    let mut daemon = TestDaemon::start_in(dir, &config("")).unwrap();
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let trusts_old = client_config(std::slice::from_ref(&old_ca.ca_der), &[]);
    let trusts_new = client_config(std::slice::from_ref(&new_ca.ca_der), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut established = runtime
        .block_on(connect(
            daemon.addr("tls"),
            trusts_old.clone(),
            "gw.example",
        ))
        .unwrap();
    runtime.block_on(echo_once(&mut established, b"before"));

    install(daemon.dir.path(), &new_ca, 2);
    daemon.reload(&config("")).expect("reload succeeds");

    let _ = trusts_old;
    runtime.block_on(async {
        echo_once(&mut established, b"after the reload, same connection").await;
        connect(daemon.addr("tls"), trusts_new, "gw.example")
            .await
            .expect("new certificate served");
        // A client with no session to resume (resumption skips the certificate).
        let fresh = client_config(std::slice::from_ref(&old_ca.ca_der), &[]);
        let err = connect(daemon.addr("tls"), fresh, "gw.example")
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
        echo_once(&mut established, b"still").await;
    });
}

#[test]
fn a_failed_reload_keeps_the_old_config_and_says_why() {
    let ca = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &ca, 1);
    let mut daemon = TestDaemon::start_in(dir, &config("")).unwrap();
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let trusts = client_config(std::slice::from_ref(&ca.ca_der), &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut established = runtime
        .block_on(connect(daemon.addr("tls"), trusts.clone(), "gw.example"))
        .unwrap();

    // A key that belongs to another certificate.
    let (_, other_key, _) = ca.issue(&["other.example"], false, 9);
    let (new_cert, _, _) = ca.issue(&["gw.example"], false, 10);
    write(daemon.dir.path(), "new.pem", &new_cert);
    write(daemon.dir.path(), "other.key", &other_key);
    let bad = config("")
        .replace("server.pem", "new.pem")
        .replace("server.key", "other.key");
    let err = daemon.reload(&bad).unwrap_err();
    assert!(
        err.contains("edgegw.toml:") && err.contains("listener.certificate.key"),
        "{err}"
    );
    assert!(err.contains("does not match the certificate"), "{err}");

    // A syntax error, and a missing file: same story.
    let err = daemon.reload("[[listener]\n").unwrap_err();
    assert!(err.contains("edgegw.toml:"), "{err}");
    let err = daemon
        .reload(&config("").replace("server.pem", "missing.pem"))
        .unwrap_err();
    assert!(
        err.contains("cannot read") && err.contains("missing.pem"),
        "{err}"
    );

    runtime.block_on(async {
        echo_once(&mut established, b"untouched").await;
        connect(daemon.addr("tls"), trusts, "gw.example")
            .await
            .expect("old config still serves");
    });
}

#[test]
fn reload_adds_and_removes_listeners_and_keeps_their_connections() {
    let ca = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &ca, 1);
    let mut daemon = TestDaemon::start_in(dir, &config("")).unwrap();
    let _consumer = TestConsumer::attach(&daemon, "app", Reply::Echo, Duration::ZERO);
    let trusts = client_config(std::slice::from_ref(&ca.ca_der), &[]);
    let first = daemon.addr("tls");
    let second_listener = r#"
[[listener]]
name = "second"
bind = ["127.0.0.1:0"]
route = "app"
  [[listener.certificate]]
  cert = "{dir}/server.pem"
  key = "{dir}/server.key"
"#;
    daemon.reload(&config(second_listener)).unwrap();
    assert_eq!(
        daemon.addr("tls"),
        first,
        "the kept listener keeps its socket"
    );
    let second = daemon.addr("second");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut on_second = runtime
        .block_on(connect(second, trusts.clone(), "gw.example"))
        .unwrap();
    runtime.block_on(echo_once(&mut on_second, b"second listener"));

    daemon.reload(&config("")).unwrap();
    runtime.block_on(async {
        echo_once(
            &mut on_second,
            b"its listener is gone, the connection is not",
        )
        .await;
        assert!(
            connect(second, trusts.clone(), "gw.example").await.is_err(),
            "no longer accepting"
        );
        connect(first, trusts, "gw.example").await.unwrap();
    });
}

#[test]
fn a_reload_that_cannot_bind_changes_nothing() {
    let ca = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &ca, 1);
    let mut daemon = TestDaemon::start_in(dir, &config("")).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!(
        "[[listener]]\nname = \"busy\"\nbind = [\"{}\"]\nroute = \"app\"\n  [[listener.certificate]]\n  cert = \"{{dir}}/server.pem\"\n  key = \"{{dir}}/server.key\"\n",
        taken.local_addr().unwrap()
    );
    let err = daemon.reload(&config(&busy)).unwrap_err();
    assert!(err.contains("cannot bind"), "{err}");
    let bigger = config("").replace(
        "[[ring]]\nname = \"app\"\n",
        "[[ring]]\nname = \"app\"\ncapacity = \"2MiB\"\n",
    );
    let err = daemon.reload(&bigger).unwrap_err();
    assert!(err.contains("capacity cannot change"), "{err}");
    block_on(async {
        connect(
            daemon.addr("tls"),
            client_config(std::slice::from_ref(&ca.ca_der), &[]),
            "gw.example",
        )
        .await
        .unwrap();
    });
}

#[test]
#[ignore = "needs root: runs a consumer as another user (uid 65534) to check the allow list"]
fn reload_changes_who_may_attach_to_a_ring() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it runs the consumer as uid 65534"
    );
    let ca = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &ca, 1);
    let mut daemon = TestDaemon::start_in(dir, &config("")).unwrap();
    let (_bin_dir, bin) = binary_for_nobody(&daemon);
    let socket = daemon.ring_socket("app");
    let tail_as_nobody = || {
        std::process::Command::new(&bin)
            .args(["ring", "tail", "--count", "1"])
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // The socket admits the daemon's user and group only: a stranger cannot even connect, so
    // it cannot make the daemon parse (or log) anything.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "ring socket mode {mode:o}");
    let refused = tail_as_nobody().wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "uid 65534 attached before being allowed"
    );
    assert!(
        message.contains("no permission on the socket file"),
        "{message}"
    );

    let allowed = config("").replace(
        "[[ring]]\nname = \"app\"\n",
        "[[ring]]\nname = \"app\"\nallow_uids = [65534]\n",
    );
    daemon.reload(&allowed).unwrap();
    let tail = tail_as_nobody();
    // One connection makes one OPEN record: the tail prints it and exits.
    block_on(async {
        let _tls = connect(
            daemon.addr("tls"),
            client_config(std::slice::from_ref(&ca.ca_der), &[]),
            "gw.example",
        )
        .await
        .unwrap();
        let output = tokio::task::spawn_blocking(move || tail.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "tail as uid 65534 after the reload: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("type=0x0001"));
    });
}

/// Opens the named pipe `path` for writing (waiting for its reader) and writes `text` into it.
fn feed(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("a reload reads the config pipe");
}

#[test]
fn a_reload_in_flight_leaves_the_loop_serving_and_requests_meanwhile_make_exactly_one_more() {
    use std::os::unix::fs::OpenOptionsExt;
    let ca = Pki::new("CA");
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &ca, 1);
    // The test counts reloads by hand: the file watcher would see the pipe replace the file.
    // The build waits on the test: a budget far beyond what the test takes.
    let daemon = TestDaemon::start_in(
        dir,
        &format!(
            "reload_timeout = \"60s\"\n{}",
            config("[watch]\nfiles = false\n")
        ),
    )
    .unwrap();
    // The config file becomes a named pipe: a reload's build waits on it until the test writes
    // the config, so the test decides how long a build takes.
    let file = daemon.config_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();

    let first = daemon.request_reload();
    // While it builds, the control loop serves the attach sockets: a stat is answered and a
    // consumer attaches (and detaches).
    std::thread::sleep(Duration::from_millis(100));
    let stat = edgegw_ring::tools::stat(daemon.ring_socket("app")).expect("stat during a reload");
    assert!(!stat.attached);
    drop(edgegw_ring::Consumer::attach(daemon.ring_socket("app")).expect("attach during a reload"));
    let storm: Vec<_> = (0..50).map(|_| daemon.request_reload()).collect();
    // The loop takes one request at a time, and the first reload may end as soon as it is fed:
    // a storm not yet taken by then would make a third reload (which waits on the pipe forever).
    // A status asked over the control socket goes into the same queue behind the storm, so its
    // answer says every request of the storm was taken, queued behind the first.
    edgegw::control::ask(&daemon.path("run"), "status", Duration::from_secs(10))
        .expect("status during a reload");

    feed(&file, &text);
    first.wait().expect("the first reload");
    // The storm made one more reload, which reads the config again.
    feed(&file, &text);
    for queued in storm {
        queued.wait().expect("the queued reload");
    }
    // And no third: nobody opens the pipe for reading any more.
    std::thread::sleep(Duration::from_millis(300));
    let third = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&file);
    assert_eq!(
        third.unwrap_err().raw_os_error(),
        Some(libc::ENXIO),
        "a third reload is reading the config"
    );
}
