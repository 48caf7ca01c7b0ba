//! A ring's consumer supervised through its cgroup: an emptied cgroup is an exit, an OOM kill in
//! it is an oom_kill; each is recorded, counted and shown, and the ring is kept. Needs root: the
//! tests make cgroups in the cgroup2 hierarchy and move processes into them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::kernel::{cgroup2_mount, TestCgroup};
use common::*;
use edgegw::control::{ConsumerStatus, Gone};

fn wait_consumer(daemon: &TestDaemon, what: &str, ok: impl Fn(&ConsumerStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = daemon.watch.status();
        if status.consumers.get("app").is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("1000");
    c
}

#[test]
#[ignore = "needs root: makes cgroups in the cgroup2 hierarchy"]
fn a_consumer_whose_cgroup_empties_is_recorded_as_exited_and_its_ring_kept() {
    let mount = cgroup2_mount();
    let name = format!("edgegw-test-consumers-{}", std::process::id());
    let mut cgroup = TestCgroup::new(&mount, &name);
    let config = ring_config(
        "",
        SELF_SIGNED,
        "",
        &format!("consumer_cgroup = \"{name}/consumer\""),
    );
    let daemon = TestDaemon::start(&config);
    wait_consumer(&daemon, "supervision", |c| c.cgroup.is_some());

    // The consumer's cgroup appears with a process in it, which exits.
    let pid = cgroup.run_in("consumer", sleeper());
    wait_consumer(&daemon, "the consumer running", |c| c.populated);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_consumer(&daemon, "its exit", |c| c.exits == 1);
    let c = daemon.watch.status().consumers["app"].clone();
    assert_eq!(
        (c.last_gone, c.oom_kills, c.populated),
        (Some(Gone::Exit), 0, false)
    );

    // systemd removes a stopped service's cgroup and makes it again on start: same again.
    std::fs::remove_dir(cgroup.path.join("consumer")).unwrap();
    let pid = cgroup.run_in("consumer", sleeper());
    wait_consumer(&daemon, "the next consumer running", |c| c.populated);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_consumer(&daemon, "its exit", |c| c.exits == 2);

    // The ring is still served: a consumer attaches and gets what a client sent meanwhile.
    let roots = [self_signed_cert(&daemon, "localhost")];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = client_config(&roots, &[]);
    let mut tls = rt
        .block_on(connect(daemon.addr("tls"), client, "localhost"))
        .unwrap();
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        tls.write_all(b"kept for the next consumer").await.unwrap();
        tls.flush().await.unwrap();
    });
    // Written into the ring before anyone reads it.
    daemon.wait_for("the data in the ring", |s| s.bytes_from_clients >= 26);
    let consumer = TestConsumer::attach(&daemon, "app", Reply::Silent, Duration::ZERO);
    consumer.wait_for("the data sent while no consumer ran", |seen| {
        seen.data
            .iter()
            .any(|(_, d)| d == b"kept for the next consumer")
    });
}

#[test]
#[ignore = "needs root: makes cgroups in the cgroup2 hierarchy and OOM-kills a process in one"]
fn an_oom_kill_in_the_consumers_cgroup_is_recorded_as_the_reason() {
    let mount = cgroup2_mount();
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        report(
            "an_oom_kill_in_the_consumers_cgroup_is_recorded_as_the_reason",
            &format!(
                "SKIPPED: no memory controller in the cgroup2 hierarchy at {} (controllers: \
                 {}), so no OOM kill can be caused there",
                mount.display(),
                controllers.trim()
            ),
        );
        return;
    }
    let name = format!("edgegw-test-oom-{}", std::process::id());
    let mut cgroup = TestCgroup::new(&mount, &name);
    std::fs::write(cgroup.path.join("cgroup.subtree_control"), "+memory").unwrap();
    std::fs::create_dir(cgroup.path.join("consumer")).unwrap();
    std::fs::write(cgroup.path.join("consumer/memory.max"), "16M").unwrap();
    let _ = std::fs::write(cgroup.path.join("consumer/memory.swap.max"), "0");
    let config = ring_config(
        "",
        SELF_SIGNED,
        "",
        &format!("consumer_cgroup = \"{name}/consumer\""),
    );
    let daemon = TestDaemon::start(&config);
    wait_consumer(&daemon, "supervision", |c| c.cgroup.is_some());
    // A process that wants 256 MiB in a 16 MiB cgroup: the OOM killer ends it.
    let mut hog = Command::new("sh");
    hog.args([
        "-c",
        "sleep 0.2; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    cgroup.run_in("consumer", hog);
    wait_consumer(&daemon, "the OOM kill", |c| {
        c.oom_kills >= 1 && !c.populated
    });
    let c = daemon.watch.status().consumers["app"].clone();
    assert_eq!((c.last_gone, c.exits), (Some(Gone::OomKill), 0), "{c:?}");
}
