//! Listeners follow the network: `iface:NAME:PORT` binds every usable address of the interface
//! while it is up, `when-present:ADDR:PORT` the address while it is there. In a network
//! namespace with a veth pair: addresses added and removed, renumbered, the link down and up,
//! IPv6 duplicate address detection finishing, and an rtnetlink flood into ENOBUFS while the
//! daemon is stopped: the listening sockets (`ss -ltn` in the namespace) always converge to
//! what the kernel's addresses say they should be.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const IFACE_PORT: u16 = 18443;
const PRESENT_PORT: u16 = 18444;
const PRESENT: &str = "10.77.1.9";

/// A network namespace with veth0 <-> veth1 (both in it, both up, lo up); removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("edgegw-net-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ns = Netns(name);
        ns.run(&["netns", "add", &ns.0]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ns.ip(&["link", "set", "veth0", "up"]);
        ns.ip(&["link", "set", "veth1", "up"]);
        ns
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        self.run(&all);
    }

    /// `ip -n NS -batch FILE`.
    fn batch(&self, commands: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), commands).unwrap();
        self.ip(&["-batch", file.path().to_str().unwrap()]);
    }

    /// The truth: what the configured binds should have open, from `ip -j addr`.
    fn expected(&self) -> BTreeSet<String> {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-j", "addr", "show"])
            .output()
            .unwrap();
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut want = BTreeSet::new();
        for link in links.as_array().unwrap() {
            let up = link["flags"].as_array().unwrap().iter().any(|f| f == "UP");
            if !up {
                continue;
            }
            let name = link["ifname"].as_str().unwrap();
            for a in link["addr_info"].as_array().unwrap() {
                if a.get("tentative").is_some() || a.get("dadfailed").is_some() {
                    continue;
                }
                let local = a["local"].as_str().unwrap();
                if name == "veth0" {
                    want.insert(format!("{local}:{IFACE_PORT}"));
                }
                if local == PRESENT {
                    want.insert(format!("{local}:{PRESENT_PORT}"));
                }
            }
        }
        want
    }

    /// What is listening on the test's ports, from `ss -ltn` in the namespace.
    fn listening(&self) -> BTreeSet<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ss", "-ltnH"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let local = line.split_whitespace().nth(3)?;
                let (ip, port) = local.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                if port != IFACE_PORT && port != PRESENT_PORT {
                    return None;
                }
                // `[fe80::1%veth0]` and `[2001:db8::1]` as `ip -j` writes them.
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = ip.split('%').next().unwrap().trim_end_matches(']');
                Some(format!("{ip}:{port}"))
            })
            .collect()
    }

    /// Waits until the sockets are what the addresses say (up to 60 s: qemu, DAD).
    fn converges(&self, daemon: &Process, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (want, got) = (self.expected(), self.listening());
            if want == got {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: listening {got:?}, the addresses say {want:?}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[ignore = "needs root: makes a network namespace with a veth pair"]
fn listeners_follow_addresses_links_and_an_enobufs_resync_in_a_namespace() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listener]]\nname = \"edge\"\n\
         bind = [\"iface:veth0:{IFACE_PORT}\", \"when-present:{PRESENT}:{PRESENT_PORT}\"]\n\
         route = \"sink\"\n\
         [[listener.certificate]]\nself_signed = true\nserver_names = [\"localhost\"]\n\
         [[route]]\nname = \"sink\"\ntcp = \"127.0.0.1:9\"\n\
         [pressure]\nshed = false\n"
    );
    let path = write(dir.path(), "edgegw.toml", &config);
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &ns.0]);
    command.arg(
        std::env::var_os("EDGEGW_TEST_BINARY")
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_edgegw").into()),
    );
    command
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("EDGEGW_CONFIG")
        .env("EDGEGW_LOG", "info");
    let daemon = Process::spawn(command, dir.path(), "daemon");
    daemon.wait_for_log("watching the network");
    // veth0 has its IPv6 link-local address (once DAD finishes): listened on with its scope.
    ns.converges(&daemon, "start");

    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "veth0"]);
    ns.ip(&["addr", "add", "2001:db8:77::1/64", "dev", "veth0"]);
    ns.converges(&daemon, "IPv4 and IPv6 (after DAD) added");
    assert!(ns.listening().contains(&format!("10.77.0.1:{IFACE_PORT}")));

    ns.ip(&["addr", "add", &format!("{PRESENT}/32"), "dev", "veth1"]);
    ns.converges(&daemon, "the when-present address appeared");
    assert!(ns
        .listening()
        .contains(&format!("{PRESENT}:{PRESENT_PORT}")));

    // DHCP renumbering: the old address goes, a new one comes.
    ns.ip(&["addr", "del", "10.77.0.1/24", "dev", "veth0"]);
    ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth0"]);
    ns.converges(&daemon, "renumbered");

    ns.ip(&["link", "set", "veth0", "down"]);
    ns.converges(&daemon, "veth0 down");
    assert!(
        !ns.listening()
            .iter()
            .any(|a| a.ends_with(&IFACE_PORT.to_string())),
        "nothing of veth0 while it is down"
    );
    ns.ip(&["link", "set", "veth0", "up"]);
    ns.converges(&daemon, "veth0 up again");

    ns.ip(&["addr", "del", &format!("{PRESENT}/32"), "dev", "veth1"]);
    ns.converges(&daemon, "the when-present address removed");

    // A flood while the daemon reads nothing: thousands of notifications overflow its socket
    // (ENOBUFS); the end state differs from the start in what the binds resolve to.
    daemon.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut flood = String::new();
    for i in 0..4000u32 {
        flood.push_str(&format!(
            "addr add 10.78.{}.{}/32 dev veth1\n",
            i / 250,
            i % 250 + 1
        ));
    }
    for i in 0..4000u32 {
        flood.push_str(&format!(
            "addr del 10.78.{}.{}/32 dev veth1\n",
            i / 250,
            i % 250 + 1
        ));
    }
    flood.push_str("addr add 10.77.0.3/24 dev veth0\n");
    flood.push_str(&format!("addr add {PRESENT}/32 dev veth1\n"));
    ns.batch(&flood);
    daemon.signal(nix::sys::signal::Signal::SIGCONT);
    daemon.wait_for_log("network events lost");
    ns.converges(&daemon, "after the ENOBUFS resync");
    assert!(ns.listening().contains(&format!("10.77.0.3:{IFACE_PORT}")));
    assert!(ns
        .listening()
        .contains(&format!("{PRESENT}:{PRESENT_PORT}")));
}
