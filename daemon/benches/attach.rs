//! What a local connect flood on a ring's attach socket costs the daemon's control thread, and
//! whether real consumers still get through.
//!
//! `cargo bench -p edgegw --bench attach` prints one JSON object per line on stdout. It starts
//! the daemon (this build's binary, or EDGEGW_BENCH_BINARY), then measures the CPU time of its
//! main thread (the control plane, which serves the attach sockets; from
//! /proc/PID/task/PID/stat) over EDGEGW_BENCH_SECONDS (default 5) twice, taking turns for
//! EDGEGW_BENCH_REPS repetitions (default 3): idle (the baseline), and while two threads connect
//! and close as fast as they can and a third keeps 32 silent connections open. Meanwhile a
//! consumer attaches, detaches and asks for `stat` in a loop; every failure is counted. Each
//! line is one repetition; the last line has the medians.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn daemon_binary() -> PathBuf {
    std::env::var_os("EDGEGW_BENCH_BINARY")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgegw")))
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edgegw.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n[[listener]]\nname = \"tls\"\nbind = [\"127.0.0.1:0\"]\nroute = \"app\"\n  [[listener.certificate]]\n  self_signed = true\n[[route]]\nname = \"app\"\nring = \"app\"\n[[ring]]\nname = \"app\"\ncapacity = \"64KiB\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let child = Command::new(daemon_binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("EDGEGW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let socket = dir.path().join("run/rings/app.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while edgegw_ring::tools::stat(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        _dir: dir,
        socket,
    }
}

/// CPU time of the daemon's main thread, in milliseconds.
fn control_cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 * 1000.0 / hz
}

fn connect(path: &Path) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let _ = socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap());
    fd
}

/// Two threads connect and close; one keeps 32 silent connections, renewing one every 5 ms.
fn flood(
    path: &Path,
    stop: &Arc<AtomicBool>,
    made: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (path, stop, made) = (path.to_owned(), stop.clone(), made.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(connect(&path));
                made.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let (path, stop, made) = (path.to_owned(), stop.clone(), made.clone());
    threads.push(std::thread::spawn(move || {
        let mut silent = std::collections::VecDeque::new();
        while !stop.load(Ordering::Relaxed) {
            silent.push_back(connect(&path));
            if silent.len() > 32 {
                silent.pop_front();
            }
            made.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    }));
    threads
}

/// A consumer that attaches and detaches, and asks for stat, until `stop`: (ok, failed).
fn legitimate(path: &Path, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    let (path, stop) = (path.to_owned(), stop.clone());
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match edgegw_ring::tools::stat(&path) {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
            match edgegw_ring::Consumer::attach(&path) {
                Ok(_) => ok += 1,
                Err(edgegw_ring::Error::Refused {
                    reason: edgegw_ring::Refusal::Busy,
                    ..
                }) => {}
                Err(_) => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, failed)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let seconds = env_number("EDGEGW_BENCH_SECONDS", 5);
    let reps = env_number("EDGEGW_BENCH_REPS", 3);
    let binary = daemon_binary();
    let daemon = start_daemon();
    let pid = daemon.child.id();
    let window = Duration::from_secs(seconds);
    let (mut idle, mut flooded, mut per_conn) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let before = control_cpu_ms(pid);
        std::thread::sleep(window);
        let idle_ms = control_cpu_ms(pid) - before;

        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicU64::new(0));
        let before = control_cpu_ms(pid);
        let threads = flood(&daemon.socket, &stop, &made);
        let legit = legitimate(&daemon.socket, &stop);
        std::thread::sleep(window);
        let flood_ms = control_cpu_ms(pid) - before;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let (ok, failed) = legit.join().unwrap();
        let connections = made.load(Ordering::Relaxed);
        let us_per_conn = flood_ms * 1000.0 / connections.max(1) as f64;
        println!(
            "{}",
            json!({
                "bench": "attach_flood",
                "binary": binary.display().to_string(),
                "rep": rep,
                "seconds": seconds,
                "control_cpu_pct_idle": idle_ms / window.as_millis() as f64 * 100.0,
                "control_cpu_pct_flood": flood_ms / window.as_millis() as f64 * 100.0,
                "flood_connections": connections,
                "control_cpu_us_per_flood_connection": us_per_conn,
                "legitimate_ok": ok,
                "legitimate_failed": failed,
            })
        );
        idle.push(idle_ms / window.as_millis() as f64 * 100.0);
        flooded.push(flood_ms / window.as_millis() as f64 * 100.0);
        per_conn.push(us_per_conn);
    }
    println!(
        "{}",
        json!({
            "bench": "attach_flood",
            "binary": binary.display().to_string(),
            "median_control_cpu_pct_idle": median(idle),
            "median_control_cpu_pct_flood": median(flooded),
            "median_control_cpu_us_per_flood_connection": median(per_conn),
        })
    );
}
