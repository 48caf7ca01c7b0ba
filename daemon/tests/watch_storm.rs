//! Nothing the kernel does blocks the control loop: while an rtnetlink storm runs (thousands of
//! address changes a second, the reader's socket overflowing), reloads still complete and a
//! consumer's exit is still noticed, and the listeners still follow their interface.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kernel::{address_churn, cgroup2_mount, Netns, TestCgroup};
use common::*;
use nix::sys::signal::Signal;

const PORT: u16 = 18543;

/// Sends SIGHUP and waits for the reload it causes to be logged; how long that took.
fn reload(daemon: &Process) -> Duration {
    let before = daemon.log().matches("INFO  reloaded ").count();
    let started = Instant::now();
    daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.log().matches("INFO  reloaded ").count() <= before {
        assert!(
            Instant::now() < deadline,
            "a reload did not finish within 60 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "needs root: a network namespace, a cgroup, and an rtnetlink storm in the namespace"]
fn reloads_and_a_consumers_exit_go_through_during_a_netlink_resync_storm() {
    let ns = Netns::new("storm");
    let mount = cgroup2_mount();
    let cgroup_name = format!("edgegw-test-storm-{}", std::process::id());
    let mut cgroup = TestCgroup::new(&mount, &cgroup_name);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listener]]\nname = \"edge\"\nbind = [\"iface:veth0:{PORT}\"]\nroute = \"app\"\n\
         [[listener.certificate]]\nself_signed = true\nserver_names = [\"localhost\"]\n\
         [[route]]\nname = \"app\"\nring = \"app\"\n\
         [[ring]]\nname = \"app\"\nconsumer_cgroup = \"{cgroup_name}/consumer\"\n\
         [watch]\nnetlink_buffer = \"4KiB\"\n\
         [pressure]\nshed = false\n"
    );
    let path = write(dir.path(), "edgegw.toml", &config);
    // nsenter, not `ip netns exec`: that one also remounts /sys, hiding the cgroup2 mount.
    let mut command = ns.edgegw_keeping_sys();
    command.args(["run", "--config", path.to_str().unwrap()]);
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log("watching the network");
    daemon.wait_for_log("supervising 1 consumer");

    let quiet: Vec<Duration> = (0..3).map(|_| reload(&daemon)).collect();

    // The storm: a thread adding and deleting 2000 addresses on veth1, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        let ns_name = ns.0.clone();
        std::thread::spawn(move || {
            let batch = address_churn("10.90", 2000);
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), batch).unwrap();
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let status = Command::new("ip")
                    .args(["-n", &ns_name, "-batch", file.path().to_str().unwrap()])
                    .status()
                    .unwrap();
                assert!(status.success());
                rounds += 1;
            }
            rounds
        })
    };

    // Once the storm overflows the tiny receive buffer, reloads go on (three: the log shows at
    // most ten `reloaded` lines per 10 s, and the rebinds log them too).
    daemon.wait_for_log("network events lost");
    let stormy: Vec<Duration> = (0..3).map(|_| reload(&daemon)).collect();
    // A consumer runs and is killed during the storm: its exit is recorded.
    let pid = cgroup.run_in("consumer", {
        let mut c = Command::new("sleep");
        c.arg("1000");
        c
    });
    daemon.wait_for_log("its consumer runs in");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    daemon.wait_for_log("its consumer exited");
    // An address comes during the storm; the reader's recovery may be restarted by overflow
    // after overflow for as long as the storm lasts (a 4 KiB buffer), so the listeners are
    // checked once it ends: the address is listened on.
    ns.ip(&["addr", "add", "10.77.5.1/24", "dev", "veth0"]);
    stop.store(true, Ordering::Relaxed);
    let rounds = storm.join().unwrap();
    ns.converges(&daemon, "after the storm", PORT, ("-", 0));
    assert!(ns.listening(&[PORT]).contains(&format!("10.77.5.1:{PORT}")));
    daemon.signal(Signal::SIGUSR1);
    daemon.wait_for_log("counters: ");
    let log = daemon.log();
    let counters = log.lines().find(|l| l.contains("counters: ")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&counters[counters.find('{').unwrap()..]).unwrap();
    let network = &json["watch"]["network"];
    report(
        "reloads_and_a_consumers_exit_go_through_during_a_netlink_resync_storm",
        &format!(
            "reload (SIGHUP to logged) median {:?} quiet, {:?} during the storm ({} reloads, \
             {rounds} rounds of 4000 address changes; the reader saw {} changes and {} resyncs)",
            median(quiet.clone()),
            median(stormy.clone()),
            stormy.len(),
            network["changes"],
            network["resyncs"]
        ),
    );
    assert!(network["resyncs"].as_u64().unwrap() >= 1, "{network}");
    // The loop never waits for the storm to end: a reload is not starved.
    for took in stormy {
        assert!(
            took < Duration::from_secs(10) + 20 * median(quiet.clone()),
            "a reload took {took:?} during the storm (quiet: {quiet:?}):\n{}",
            daemon.log()
        );
    }
}
