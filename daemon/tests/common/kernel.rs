//! Kernel fixtures for the tests of the daemon's reactions: a network namespace with a veth
//! pair, and cgroups in the cgroup2 hierarchy. Both need root and are removed on drop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Process;

/// A network namespace with veth0 <-> veth1 (both in it, both up, lo up); removed on drop.
/// `tag` keeps the namespaces of tests running at once apart.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("edgegw-{tag}-{}", std::process::id());
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

    pub fn run(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        self.run(&all);
    }

    /// `ip -n NS -batch FILE`.
    pub fn batch(&self, commands: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), commands).unwrap();
        self.ip(&["-batch", file.path().to_str().unwrap()]);
    }

    /// The truth: what the configured binds should have open, from `ip -j addr`.
    pub fn expected(&self, iface_port: u16, present: (&str, u16)) -> BTreeSet<String> {
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
                    want.insert(format!("{local}:{iface_port}"));
                }
                if local == present.0 {
                    want.insert(format!("{local}:{}", present.1));
                }
            }
        }
        want
    }

    /// What is listening on the test's ports, from `ss -ltn` in the namespace.
    pub fn listening(&self, ports: &[u16]) -> BTreeSet<String> {
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
                if !ports.contains(&port) {
                    return None;
                }
                // `[fe80::1%veth0]` and `[2001:db8::1]` as `ip -j` writes them.
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = ip.split('%').next().unwrap().trim_end_matches(']');
                Some(format!("{ip}:{port}"))
            })
            .collect()
    }

    /// `edgegw` in the namespace, run by `ip netns exec` (which also mounts the namespace's own
    /// /sys).
    pub fn edgegw(&self) -> Command {
        super::edgegw_under(&["ip", "netns", "exec", &self.0])
    }

    /// `edgegw` in the namespace, run by `nsenter`, which keeps the host's /sys: `ip netns exec`
    /// remounts it, hiding the cgroup2 mount.
    pub fn edgegw_keeping_sys(&self) -> Command {
        super::edgegw_under(&["nsenter", &format!("--net=/run/netns/{}", self.0), "--"])
    }

    /// Waits until the sockets are what the addresses say (up to 60 s: qemu, DAD).
    pub fn converges(&self, daemon: &Process, step: &str, iface_port: u16, present: (&str, u16)) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let want = self.expected(iface_port, present);
            let got = self.listening(&[iface_port, present.1]);
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

/// An `ip -batch` script that adds `n` addresses `NET.X.Y/32` to veth1, then deletes them all:
/// `2 * n` rtnetlink notifications.
pub fn address_churn(net: &str, n: u32) -> String {
    let mut batch = String::new();
    for verb in ["add", "del"] {
        for i in 0..n {
            batch.push_str(&format!(
                "addr {verb} {net}.{}.{}/32 dev veth1\n",
                i / 250,
                i % 250 + 1
            ));
        }
    }
    batch
}

/// The cgroup2 mount, from /proc/self/mountinfo (hybrid hosts have it at
/// /sys/fs/cgroup/unified, unified ones at /sys/fs/cgroup).
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup made for the test, removed (its processes killed) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    children: Vec<Child>,
}

impl TestCgroup {
    pub fn new(mount: &Path, name: &str) -> TestCgroup {
        let path = mount.join(name);
        std::fs::create_dir_all(&path).unwrap();
        TestCgroup {
            path,
            children: Vec::new(),
        }
    }

    /// Runs `command` inside `child` (made if missing).
    pub fn run_in(&mut self, child: &str, mut command: Command) -> u32 {
        let dir = self.path.join(child);
        let _ = std::fs::create_dir(&dir);
        let process = command.spawn().unwrap();
        let pid = process.id();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        self.children.push(process);
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
