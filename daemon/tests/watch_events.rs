//! The events ring: the daemon's kernel events (network changes and resyncs, consumers, reloads,
//! load shedding, watched files) as records a consumer reads without netlink or inotify code of
//! its own, and `edgegw events --ring` reading them from a running daemon.

mod common;

use std::time::{Duration, Instant};

use common::*;
use edgegw::control::Feed;
use edgegw_kernel_events::pressure::{PressureAverages, PressureEvent, PressureTarget};
use edgegw_proto::events::{decode_event, EventKind, EVENT};

#[test]
fn reloads_and_shedding_edges_reach_the_events_ring_and_edgegw_events_reads_it() {
    let config = format!(
        "{}[events]\nring = \"kernel\"\n[pressure]\nshed = true\ncgroup = \"system\"\n\
         resume_after = \"50ms\"\n",
        ring_config("", SELF_SIGNED, "", "")
    );
    let daemon = TestDaemon::start(&config);
    let socket = daemon.ring_socket("kernel");

    // `edgegw events --ring` waits for the first record; a reload makes one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() || daemon.watch.status().events.ring.is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o660,
        "the events ring's socket, as the other rings'"
    );
    let command = edgegw()
        .args([
            "events",
            "--ring",
            socket.to_str().unwrap(),
            "--json",
            "--count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    daemon.request_reload().wait().unwrap();
    let out = command.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(first["seq"], 1, "{first}");
    assert!(first["event"].is_object(), "{first}");
    let reload_printed = first["kind"] == "reload" && first["event"]["ok"] == true;

    // A stall and its relief: shedding starts and ends.
    let stalled = PressureEvent::Stalled {
        target: PressureTarget::System,
        averages: PressureAverages::default(),
    };
    let relieved = PressureEvent::Relieved {
        target: PressureTarget::System,
        averages: PressureAverages::default(),
    };
    assert!(daemon.watch.inject(Feed::Pressure(stalled)));
    assert!(daemon.watch.inject(Feed::Pressure(relieved)));

    // The rest, read as a consumer would (the command above released the first record).
    let mut consumer = attach_with_retry(|| edgegw_ring::Consumer::attach(&socket)).unwrap();
    let mut seen: Vec<(u64, EventKind, serde_json::Value)> = Vec::new();
    let want = |seen: &[(u64, EventKind, serde_json::Value)]| {
        let has = |kind, key: &str, value: serde_json::Value| {
            seen.iter().any(|(_, k, e)| *k == kind && e[key] == value)
        };
        (reload_printed || has(EventKind::Reload, "ok", true.into()))
            && has(EventKind::Pressure, "shedding", true.into())
            && has(EventKind::Pressure, "shedding", false.into())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want(&seen) {
        assert!(
            Instant::now() < deadline,
            "records seen: {seen:?}; {:?}",
            daemon.watch.status()
        );
        let Some(record) = consumer.read().unwrap() else {
            let _ = consumer.wait(Some(Duration::from_millis(100))).unwrap();
            continue;
        };
        let (ty, payload) = (record.record_type(), record.payload().to_vec());
        consumer.release();
        assert_eq!(ty, EVENT);
        let record = decode_event(&payload).expect("a well-formed event record");
        let kind = EventKind::from_code(record.kind).expect("a known kind");
        seen.push((record.seq, kind, serde_json::from_str(record.json).unwrap()));
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _, _)| *s).collect();
    assert!(seqs[0] >= 2, "the first record was the command's: {seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free while the ring had room: {seqs:?}"
    );
    let status = daemon.watch.status().events;
    assert_eq!(status.ring.as_deref(), Some("kernel"));
    assert_eq!(status.dropped, 0);
}
