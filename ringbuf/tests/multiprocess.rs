//! Producer and consumer in different processes: a stress run of millions of packets with a
//! consumer that sleeps between bursts (never a stall), a consumer killed with SIGKILL and
//! replaced without losing a packet, a forked child that consumes with no socket at all, and
//! the README's fork recipe (a parent creates a ring, a producer child and a consumer child
//! use it).
//!
//! Each test re-runs this test binary for its child role (see `common::child_command`).

mod common;

use common::{
    child_command, child_command_of, child_role, fill_payload, payload_byte, scaled, temp_dir,
};
use edgegw_ring::{
    AllowList, Consumer, Error, Producer, Readiness, RingConfig, RingFds, RingServer, ServerEvent,
};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest any wait may take before we call it a stall (a lost wakeup). Generous for qemu.
const STALL: Duration = Duration::from_secs(60);

fn serve_until(server: &mut RingServer, what: &str, f: impl Fn(&ServerEvent) -> bool) {
    let deadline = Instant::now() + STALL;
    while Instant::now() < deadline {
        if server
            .serve_for(Some(Duration::from_millis(50)))
            .unwrap()
            .iter()
            .any(&f)
        {
            return;
        }
    }
    panic!("server saw no {what}");
}

/// Deterministic per-packet length: 0..=200 bytes, a few large ones.
fn len_of(seq: u64) -> usize {
    if seq.is_multiple_of(997) {
        3000
    } else {
        (seq.wrapping_mul(2654435761) % 201) as usize
    }
}

fn stress_consumer() {
    let path = std::env::var("RING_PATH").unwrap();
    let total: u64 = std::env::var("RING_TOTAL").unwrap().parse().unwrap();
    let mut c = Consumer::attach(&path).unwrap();
    c.set_spin(Duration::from_micros(2));
    let mut seq = 0u64;
    let mut waits = 0u64;
    let mut buf = vec![0u8; 4096];
    loop {
        let mut batch = 0;
        while let Some(rec) = c.read().unwrap() {
            assert_eq!(rec.len(), len_of(seq), "length of packet {seq}");
            assert_eq!(rec.flags(), seq as u16);
            let n = rec.payload().copy_to_slice(&mut buf);
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, payload_byte(seq, i), "packet {seq} byte {i}");
            }
            seq += 1;
            batch += 1;
            if batch == 256 {
                break;
            }
        }
        c.release();
        if seq % 20_000 < 256 && batch > 0 {
            // Fall behind: the producer fills the ring and must block for space.
            std::thread::sleep(Duration::from_millis(1));
        }
        if batch == 0 {
            waits += 1;
            let started = Instant::now();
            match c.wait(Some(STALL)).unwrap() {
                Readiness::Ready => {}
                Readiness::Finished => break,
                other => panic!(
                    "consumer: {other:?} after {seq} packets, {:?}",
                    started.elapsed()
                ),
            }
        }
    }
    assert_eq!(seq, total, "every packet arrived");
    println!("RESULT packets={seq} waits={waits}");
}

#[test]
fn multi_process_stress_with_a_sleepy_consumer_never_stalls() {
    if child_role().as_deref() == Some("stress-consumer") {
        return stress_consumer();
    }
    let total = scaled(2_000_000);
    let dir = temp_dir("mp");
    let path = dir.join("stress.sock");
    let mut p = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let mut server =
        RingServer::bind(&path, p.served_ring().unwrap(), AllowList::current_user()).unwrap();
    let child = child_command(
        "multi_process_stress_with_a_sleepy_consumer_never_stalls",
        "stress-consumer",
    )
    .env("RING_PATH", &path)
    .env("RING_TOTAL", total.to_string())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    serve_until(&mut server, "attach", |e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    p.set_spin(Duration::from_micros(2));
    let mut seq = 0u64;
    let mut full_waits = 0u64;
    while seq < total {
        // Bursts of 1..300 packets, published as one batch, with pauses so the consumer sleeps.
        let burst = (1 + seq % 300).min(total - seq);
        for _ in 0..burst {
            let len = len_of(seq);
            loop {
                match p.reserve(len, 1, seq as u16) {
                    Ok(buf) => {
                        fill_payload(seq, buf);
                        break;
                    }
                    Err(Error::Full { .. }) => {
                        p.publish();
                        full_waits += 1;
                        match p.wait_for_space(len, Some(STALL)).unwrap() {
                            Readiness::Ready => {}
                            other => panic!("producer: {other:?} at packet {seq}"),
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            seq += 1;
        }
        p.publish();
        if seq % 50_000 < burst {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    p.finish();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "consumer failed: {stdout}");
    assert!(
        stdout.contains(&format!("RESULT packets={total} ")),
        "{stdout}"
    );
    let waits: u64 = stdout
        .split("waits=")
        .nth(1)
        .and_then(|w| w.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        waits > 0,
        "the consumer never slept, so the wakeup path was not exercised"
    );
    println!("stress: {total} packets, consumer slept {waits} times, producer blocked {full_waits} times");
}

fn killed_consumer(stop_after: u64, release_upto: u64) {
    let path = std::env::var("RING_PATH").unwrap();
    let mut c = Consumer::attach(&path).unwrap();
    let mut seq = 0u64;
    while seq < stop_after {
        match c.read().unwrap() {
            Some(rec) => {
                assert_eq!(rec.payload().read_u64_le(0), Some(seq));
                seq += 1;
                if seq == release_upto {
                    c.release();
                }
            }
            None => {
                let _ = c.wait(Some(STALL)).unwrap();
            }
        }
    }
    println!("READY");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    // Wait to be killed, holding read-but-unreleased packets.
    std::thread::sleep(Duration::from_secs(600));
}

fn replacement_consumer() {
    let path = std::env::var("RING_PATH").unwrap();
    let first: u64 = std::env::var("RING_FIRST").unwrap().parse().unwrap();
    let end: u64 = std::env::var("RING_END").unwrap().parse().unwrap();
    let mut c = Consumer::attach(&path).unwrap();
    let mut seq = first;
    while seq < end {
        match c.read().unwrap() {
            Some(rec) => {
                assert_eq!(
                    rec.payload().read_u64_le(0),
                    Some(seq),
                    "no loss, no gap, no reorder"
                );
                seq += 1;
            }
            None => {
                c.release();
                assert_eq!(c.wait(Some(STALL)).unwrap(), Readiness::Ready);
            }
        }
    }
    c.release();
    println!("RESULT last={}", seq - 1);
}

#[test]
fn a_consumer_killed_with_sigkill_is_replaced_and_no_packet_is_lost() {
    match child_role().as_deref() {
        Some("killed") => return killed_consumer(600, 500),
        Some("replacement") => return replacement_consumer(),
        _ => {}
    }
    let dir = temp_dir("mp");
    let path = dir.join("kill.sock");
    let mut p = Producer::create(RingConfig::with_capacity(64 * 1024)).unwrap();
    let mut server =
        RingServer::bind(&path, p.served_ring().unwrap(), AllowList::current_user()).unwrap();
    let mut seq = 0u64;
    for _ in 0..1000 {
        p.send(1, 0, &seq.to_le_bytes()).unwrap();
        seq += 1;
    }
    let mut first = child_command(
        "a_consumer_killed_with_sigkill_is_replaced_and_no_packet_is_lost",
        "killed",
    )
    .env("RING_PATH", &path)
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    serve_until(&mut server, "attach", |e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("READY")),
        "first consumer did not get ready"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    serve_until(&mut server, "detach", |e| {
        matches!(e, ServerEvent::Detached { .. })
    });
    assert!(!p.peer_status().unwrap().attached);
    // The producer keeps going while nobody is attached; the ring has room for all of it.
    for _ in 0..1000 {
        p.send(1, 0, &seq.to_le_bytes()).unwrap();
        seq += 1;
    }
    let second = child_command(
        "a_consumer_killed_with_sigkill_is_replaced_and_no_packet_is_lost",
        "replacement",
    )
    .env("RING_PATH", &path)
    .env("RING_FIRST", "500")
    .env("RING_END", seq.to_string())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    serve_until(&mut server, "second attach", |e| {
        matches!(e, ServerEvent::Attached { .. })
    });
    let out = second.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replacement consumer failed: {stdout}"
    );
    assert!(
        stdout.contains(&format!("RESULT last={}", seq - 1)),
        "{stdout}"
    );
}

fn inherited_consumer() {
    let total: u64 = std::env::var("RING_TOTAL").unwrap().parse().unwrap();
    let mut c = Consumer::from_fds(RingFds::from_env().unwrap()).unwrap();
    let mut seq = 0;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(rec) = c.read().unwrap() {
            let n = rec.payload().copy_to_slice(&mut buf);
            assert_eq!(n, (seq % 2000) as usize);
            assert!(buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == payload_byte(seq, i)));
            seq += 1;
        }
        c.release();
        match c.wait(Some(STALL)).unwrap() {
            Readiness::Ready => {}
            Readiness::Finished => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seq, total);
    println!("RESULT packets={seq}");
}

#[test]
fn a_child_process_consumes_inherited_fds_without_any_socket() {
    if child_role().as_deref() == Some("inherited") {
        return inherited_consumer();
    }
    let total = scaled(20_000);
    let mut p = Producer::create(RingConfig::with_capacity(16 * 1024)).unwrap();
    let fds = p.served_ring().unwrap().into_fds();
    let child = child_command(
        "a_child_process_consumes_inherited_fds_without_any_socket",
        "inherited",
    )
    .env(RingFds::ENV, fds.export_for_child().unwrap())
    .env("RING_TOTAL", total.to_string())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    drop(fds);
    for seq in 0..total {
        let len = (seq % 2000) as usize;
        loop {
            match p.reserve(len, 1, 0) {
                Ok(buf) => {
                    fill_payload(seq, buf);
                    break;
                }
                Err(Error::Full { .. }) => {
                    p.publish();
                    assert_eq!(
                        p.wait_for_space(len, Some(STALL)).unwrap(),
                        Readiness::Ready
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        p.publish();
    }
    p.finish();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(
        stdout.contains(&format!("RESULT packets={total}")),
        "{stdout}"
    );
}

/// The fork recipe's producer child: `total` packets through the `Producer` the parent created
/// (its writable mapping came with the fork), then `finish`.
fn fork_recipe_producer(producer: &mut Producer, total: u64) {
    for seq in 0..total {
        let len = (seq % 1500) as usize;
        loop {
            match producer.reserve(len, 1, seq as u16) {
                Ok(buf) => {
                    fill_payload(seq, buf);
                    break;
                }
                Err(Error::Full { .. }) => {
                    producer.publish();
                    let ready = producer.wait_for_space(len, Some(STALL)).unwrap();
                    assert_eq!(ready, Readiness::Ready, "space within {STALL:?}");
                }
                Err(e) => panic!("{e}"),
            }
        }
        producer.publish();
    }
    producer.finish();
}

/// The fork recipe's consumer child: every packet, in order, read in place as a byte slice (its
/// producer is a sibling of the same program, so it declares it trusted), until `Finished`.
fn fork_recipe_consumer(fds: RingFds, total: u64) {
    let mut consumer = Consumer::from_fds(fds).unwrap();
    // SAFETY: the producer is this program's own producer child, which publishes through the
    // ring's API and so never writes a record it published.
    unsafe { consumer.trust_producer() };
    let mut seq = 0u64;
    loop {
        let mut batch = 0;
        while let Some(rec) = consumer.read().unwrap() {
            let bytes = rec.bytes().expect("trusted");
            assert_eq!(bytes.len(), (seq % 1500) as usize, "length of packet {seq}");
            assert_eq!(rec.flags(), seq as u16);
            assert!(bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| b == payload_byte(seq, i)));
            seq += 1;
            batch += 1;
            if batch == 64 {
                break;
            }
        }
        consumer.release();
        if batch == 64 {
            continue;
        }
        match consumer.wait(Some(STALL)).unwrap() {
            Readiness::Ready => {}
            Readiness::Finished => break,
            other => panic!("{other:?} after {seq} packets"),
        }
    }
    assert_eq!(seq, total, "every packet");
}

/// Run `f` in a forked child and exit with 0 if it returned, 101 if it panicked.
fn in_child(f: impl FnOnce()) -> ! {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
    std::process::exit(if ok { 0 } else { 101 })
}

/// The parent of the fork recipe, in a fresh copy of this test binary running this one test.
fn fork_recipe_parent() {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let total: u64 = std::env::var("RING_TOTAL").unwrap().parse().unwrap();
    let mut producer = Producer::create(RingConfig::with_capacity(16 * 1024)).unwrap();
    let consumer_fds = producer.served_ring().unwrap().into_fds();
    // SAFETY: this process runs only this test and starts no thread: the one other thread is
    // libtest's main thread, blocked waiting for this test's result and holding no lock the
    // child takes (glibc's fork leaves malloc usable in the child). So the child may allocate.
    let producer_child = match unsafe { fork() }.unwrap() {
        ForkResult::Child => in_child(|| fork_recipe_producer(&mut producer, total)),
        ForkResult::Parent { child } => child,
    };
    // The parent keeps no producer: the child's is the only one.
    drop(producer);
    // SAFETY: as above (the producer child is another process, not a thread).
    let consumer_child = match unsafe { fork() }.unwrap() {
        ForkResult::Child => in_child(|| fork_recipe_consumer(consumer_fds, total)),
        ForkResult::Parent { child } => child,
    };
    drop(consumer_fds);
    for (who, pid) in [("producer", producer_child), ("consumer", consumer_child)] {
        assert_eq!(
            waitpid(pid, None).unwrap(),
            WaitStatus::Exited(pid, 0),
            "the {who} child"
        );
    }
    println!("RESULT children ok");
}

#[test]
fn a_ring_created_before_fork_carries_every_packet_from_a_producer_child_to_a_consumer_child() {
    const NAME: &str =
        "a_ring_created_before_fork_carries_every_packet_from_a_producer_child_to_a_consumer_child";
    if child_role().as_deref() == Some("fork-parent") {
        return fork_recipe_parent();
    }
    if child_role().is_some() {
        return;
    }
    let out = child_command(NAME, "fork-parent")
        .env("RING_TOTAL", scaled(20_000).to_string())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fork recipe failed: {stdout}");
    assert!(stdout.contains("RESULT children ok"), "{stdout}");
}

#[test]
fn taking_ring_fds_from_a_missing_or_bad_environment_is_a_clear_error() {
    if child_role().is_some() {
        return;
    }
    // Runs in a child so the environment of the test process is untouched.
    let out = child_command(
        "taking_ring_fds_from_a_missing_or_bad_environment_is_a_clear_error_child",
        "env",
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn taking_ring_fds_from_a_missing_or_bad_environment_is_a_clear_error_child() {
    if child_role().as_deref() != Some("env") {
        // Only meaningful in its own process (it edits the environment): the parent test above
        // runs it there.
        return;
    }
    std::env::remove_var(RingFds::ENV);
    let e = RingFds::from_env().unwrap_err().to_string();
    assert!(e.contains("is not set"), "{e}");
    std::env::set_var(RingFds::ENV, "1,2,3");
    let e = RingFds::from_env().unwrap_err().to_string();
    assert!(e.contains("not four fd numbers"), "{e}");
    std::env::set_var(RingFds::ENV, "100,100,101,102");
    let e = RingFds::from_env().unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
    std::env::set_var(RingFds::ENV, "900,901,902,903");
    let e = RingFds::from_env().unwrap_err().to_string();
    assert!(e.contains("not open"), "{e}");
}

/// The child of the tests that start a peer under uid 65534. `RING_EXPECT`: `allowed` or
/// `refused`.
fn other_user_child() {
    let path = std::env::var("RING_PATH").unwrap();
    let expect_allowed = std::env::var("RING_EXPECT").unwrap() == "allowed";
    match edgegw_ring::tools::attach_raw(&path, edgegw_ring::Role::Consumer) {
        Ok(raw) => {
            assert!(expect_allowed, "uid {} was let in", nix::unistd::geteuid());
            // Fd protection: the region came as a read-only description, and the memfd's mode
            // (0600, the owner's uid) keeps a peer of another uid from opening it again for
            // writing through /proc (FORMAT.md section 6).
            let region = format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&raw.fds.region)
            );
            let err = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&region)
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
            let mut c = Consumer::from_fds(raw.fds).unwrap();
            assert_eq!(c.read().unwrap().unwrap().payload().to_vec(), b"for nobody");
            drop(raw.link);
            println!("RESULT attached");
        }
        Err(e) => {
            assert!(!expect_allowed, "refused although allowed: {e}");
            assert!(
                e.to_string().contains("credentials not allowed (uid 65534"),
                "{e}"
            );
            println!("RESULT refused");
        }
    }
}

#[test]
#[ignore = "needs root: starts the peer under another uid (65534) to exercise SO_PEERCRED"]
fn a_peer_of_another_user_is_refused_unless_allowed_and_cannot_reopen_the_region_for_writing() {
    if child_role().as_deref() == Some("other-user") {
        return other_user_child();
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it switches the child to uid 65534); run it as root or leave it ignored"
    );
    use std::os::unix::process::CommandExt;
    let dir = temp_dir("mp");
    // The child (uid 65534) must reach the socket and run the test binary, wherever the build
    // directory is (it may sit under a private home): run a world-readable copy.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (allow, expect) in [
        (AllowList::current_user(), "refused"),
        (AllowList::current_user().uid(65534), "allowed"),
    ] {
        let path = dir.join(format!("{expect}.sock"));
        let mut p = Producer::create(RingConfig::with_capacity(4096)).unwrap();
        p.send(1, 0, b"for nobody").unwrap();
        let mut server = RingServer::bind(&path, p.served_ring().unwrap(), allow).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let child = child_command_of(
            &exe,
            "a_peer_of_another_user_is_refused_unless_allowed_and_cannot_reopen_the_region_for_writing",
            "other-user",
        )
        .env("RING_PATH", &path)
        .env("RING_EXPECT", expect)
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let want = if expect == "allowed" {
            "attach"
        } else {
            "refusal"
        };
        serve_until(&mut server, want, |e| match e {
            ServerEvent::Attached { uid, .. } => *uid == 65534,
            ServerEvent::Refused { uid, .. } => *uid == 65534,
            _ => false,
        });
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        assert!(
            stdout.contains(&format!(
                "RESULT {}",
                if expect == "allowed" {
                    "attached"
                } else {
                    "refused"
                }
            )),
            "{stdout}"
        );
    }
}

/// The supplementary group the next test gives its child (no such group need exist).
const CHILD_GROUP: u32 = 4242;

#[test]
#[ignore = "needs root: starts the peer under uid 65534 with a supplementary group (setpriv) to exercise SO_PEERGROUPS"]
fn a_peer_whose_supplementary_group_is_on_the_allow_list_attaches_and_another_group_does_not() {
    const NAME: &str =
        "a_peer_whose_supplementary_group_is_on_the_allow_list_attaches_and_another_group_does_not";
    if child_role().as_deref() == Some("other-user") {
        return other_user_child();
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it switches the child to uid 65534 with a supplementary group); \
         run it as root or leave it ignored"
    );
    // std cannot set a child's supplementary groups yet (`CommandExt::groups` is unstable):
    // util-linux's setpriv does, then runs the child (and its emulator, under qemu-user).
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("this test needs setpriv (util-linux) to give its child supplementary groups");
    let dir = temp_dir("mp");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Only the group is listed: not uid 65534, not its primary gid 65534.
    let allow = AllowList::current_user().gid(CHILD_GROUP);
    // qemu-user passes SO_PEERGROUPS on as well: this holds under cross/test too.
    for (groups, expect) in [(CHILD_GROUP + 1, "refused"), (CHILD_GROUP, "allowed")] {
        let path = dir.join(format!("group-{groups}.sock"));
        let mut p = Producer::create(RingConfig::with_capacity(4096)).unwrap();
        p.send(1, 0, b"for nobody").unwrap();
        let mut server = RingServer::bind(&path, p.served_ring().unwrap(), allow.clone()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let inner = child_command_of(&exe, NAME, "other-user");
        let mut cmd = std::process::Command::new(setpriv);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={groups}"),
            "--",
        ])
        .arg(inner.get_program())
        .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .env("RING_PATH", &path)
            .env("RING_EXPECT", expect)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        serve_until(&mut server, "attach or refusal of uid 65534", |e| match e {
            ServerEvent::Attached { uid, .. } | ServerEvent::Refused { uid, .. } => *uid == 65534,
            _ => false,
        });
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let seen = if stdout.contains("RESULT attached") {
            "allowed"
        } else {
            assert!(stdout.contains("RESULT refused"), "{stdout}");
            "refused"
        };
        assert_eq!(seen, expect, "supplementary group {groups}: {stdout}");
    }
}
