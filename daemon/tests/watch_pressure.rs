//! Memory pressure sheds load: under pressure of the daemon's cgroup new connections are closed
//! at once and free heap is given back; once pressure stayed low for `resume_after` the daemon
//! accepts again. The PSI reader runs for real (a trigger, or the poll where the kernel refuses
//! triggers: each test reports which); the pressure itself is injected where the kernel cannot
//! be made to produce it (no memory controller in cgroup2 here), and real where it can.

mod common;

use std::time::{Duration, Instant};

use common::*;
use edgegw::control::Feed;
use edgegw_kernel_events::pressure::{PressureAverages, PressureEvent, PressureTarget};

fn config(extra: &str) -> String {
    format!(
        "{}[pressure]\nshed = true\ncgroup = \"system\"\nresume_after = \"300ms\"\n\
         poll_interval = \"100ms\"\n{extra}",
        ring_config("", SELF_SIGNED, "", "")
    )
}

fn handshake(daemon: &TestDaemon) -> bool {
    let roots = [self_signed_cert(daemon, "localhost")];
    let client = client_config(&roots, &[]);
    block_on(connect(daemon.addr("tls"), client, "localhost")).is_ok()
}

fn wait(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stalled() -> PressureEvent {
    PressureEvent::Stalled {
        target: PressureTarget::System,
        averages: PressureAverages {
            some_avg10: 42.0,
            full_avg10: 30.0,
            ..PressureAverages::default()
        },
    }
}

fn relieved() -> PressureEvent {
    PressureEvent::Relieved {
        target: PressureTarget::System,
        averages: PressureAverages::default(),
    }
}

#[test]
fn a_stall_refuses_new_connections_until_pressure_stays_low_then_accepts_again() {
    let daemon = TestDaemon::start(&config(""));
    // The real reader runs: say which path it took on this kernel.
    wait("the pressure reader's mode", || {
        let p = daemon.watch.status().pressure;
        p.mode.is_some() || p.error.is_some()
    });
    let status = daemon.watch.status().pressure;
    report(
        "a_stall_refuses_new_connections_until_pressure_stays_low_then_accepts_again",
        &format!(
            "PSI reader: mode {:?}, error {:?}; pressure injected (stall, then relief)",
            status.mode, status.error
        ),
    );
    assert!(handshake(&daemon), "accepting before any pressure");

    assert!(daemon.watch.inject(Feed::Pressure(stalled())));
    wait("shedding", || daemon.stats().shedding == 1);
    let status = daemon.watch.status().pressure;
    assert!(status.shedding && status.episodes == 1, "{status:?}");
    assert!(
        !handshake(&daemon),
        "a new connection is refused under pressure"
    );
    assert!(daemon.stats().refused_memory_pressure >= 1);

    // Relief, then a stall before resume_after: still shedding, the wait starts over.
    assert!(daemon.watch.inject(Feed::Pressure(relieved())));
    assert!(daemon.watch.inject(Feed::Pressure(stalled())));
    wait("both events applied", || {
        daemon.watch.status().pressure.stalls >= 2
    });
    assert!(!handshake(&daemon), "still refused: pressure came back");
    assert_eq!(daemon.watch.status().pressure.episodes, 1, "one episode");

    let relief = Instant::now();
    assert!(daemon.watch.inject(Feed::Pressure(relieved())));
    wait("resuming", || daemon.stats().shedding == 0);
    assert!(
        relief.elapsed() >= Duration::from_millis(300),
        "resumed only after resume_after of low pressure"
    );
    assert!(handshake(&daemon), "accepting again");
    let status = daemon.watch.status().pressure;
    assert!(!status.shedding, "{status:?}");
}

#[test]
fn with_shed_off_no_reader_runs_and_a_stall_refuses_nothing() {
    let daemon = TestDaemon::start(&config("").replace("shed = true", "shed = false"));
    assert!(daemon.watch.inject(Feed::Pressure(stalled())));
    // The stall is counted (so the feed was read), and nothing else happens.
    wait("the stall counted", || {
        daemon.watch.status().pressure.stalls == 1
    });
    let status = daemon.watch.status().pressure;
    assert_eq!(status.mode, None, "no reader: {status:?}");
    assert!(!status.shedding);
    assert_eq!(daemon.stats().shedding, 0);
    assert!(handshake(&daemon));
}

#[test]
#[ignore = "needs root: a cgroup with a small memory.high and a process that outgrows it"]
fn real_pressure_in_a_cgroup_over_its_memory_high_sheds_load() {
    use common::kernel::{cgroup2_mount, TestCgroup};
    let test = "real_pressure_in_a_cgroup_over_its_memory_high_sheds_load";
    let mount = cgroup2_mount();
    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        report(
            test,
            &format!(
                "SKIPPED: no memory controller in the cgroup2 hierarchy at {} (controllers: {}): \
                 memory.high cannot be set, so pressure was only injected (see the test above)",
                mount.display(),
                controllers.trim()
            ),
        );
        return;
    }
    let name = format!("edgegw-test-pressure-{}", std::process::id());
    let mut cgroup = TestCgroup::new(&mount, &name);
    std::fs::write(cgroup.path.join("cgroup.subtree_control"), "+memory").unwrap();
    std::fs::create_dir(cgroup.path.join("hog")).unwrap();
    std::fs::write(cgroup.path.join("hog/memory.high"), "16M").unwrap();
    let _ = std::fs::write(cgroup.path.join("hog/memory.swap.max"), "0");
    let daemon = TestDaemon::start(&format!(
        "{}[pressure]\nshed = true\ncgroup = \"{name}/hog\"\nresume_after = \"1s\"\n\
         poll_interval = \"500ms\"\n",
        ring_config("", SELF_SIGNED, "", "")
    ));
    wait("the pressure reader's mode", || {
        daemon.watch.status().pressure.mode.is_some()
    });
    report(
        test,
        &format!("PSI reader: {:?}", daemon.watch.status().pressure.mode),
    );
    // 256 MiB wanted under a 16 MiB memory.high: the kernel throttles it, which is a stall.
    let mut hog = std::process::Command::new("sh");
    hog.args([
        "-c",
        "sleep 0.2; x=$(head -c 268435456 /dev/zero | tr '\\0' a); sleep 1000",
    ]);
    cgroup.run_in("hog", hog);
    let deadline = Instant::now() + Duration::from_secs(120);
    while daemon.stats().shedding == 0 {
        assert!(
            Instant::now() < deadline,
            "no shedding: {:?}",
            daemon.watch.status().pressure
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!handshake(&daemon), "refused under real pressure");
}

/// The system's `full` memory stall total, µs.
fn full_memory_stall_total() -> u64 {
    let text = std::fs::read_to_string("/proc/pressure/memory").unwrap();
    text.lines()
        .find(|l| l.starts_with("full "))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|t| t.parse().ok())
        .expect("a full line with a total in /proc/pressure/memory")
}

#[test]
fn a_start_sheds_nothing_for_a_trigger_fire_the_stall_totals_do_not_bear_out() {
    // Seen on 6.18: a trigger armed at the daemon's start fired within a second while the
    // stall total did not grow at all; taken at its word, every start refused connections
    // until pressure had stayed low for `resume_after`.
    const TEST: &str = "a_start_sheds_nothing_for_a_trigger_fire_the_stall_totals_do_not_bear_out";
    if !std::path::Path::new("/proc/pressure/memory").exists() {
        report(TEST, "SKIPPED: PSI is not enabled in this kernel");
        return;
    }
    let before = full_memory_stall_total();
    let daemon = TestDaemon::start(&config(""));
    wait("the pressure reader's mode", || {
        let p = daemon.watch.status().pressure;
        p.mode.is_some() || p.error.is_some()
    });
    // A window and a half (2 s windows): a fire of the trigger armed at start comes within it.
    std::thread::sleep(Duration::from_secs(3));
    let grew = full_memory_stall_total() - before;
    let status = daemon.watch.status().pressure;
    report(
        TEST,
        &format!(
            "PSI reader: mode {:?}; {} stall(s) reported in the first 3 s while the full stall \
             total grew {grew} µs (the threshold is 500000)",
            status.mode, status.stalls
        ),
    );
    let real = grew >= 500_000;
    assert!(
        status.stalls == 0 || real,
        "a stall reported while the total grew by {grew} µs: {status:?}"
    );
    assert!(
        real || handshake(&daemon),
        "a connection refused at start with no pressure"
    );
}
