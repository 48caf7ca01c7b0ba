//! `tools::stat` and `tools::tail`: what the daemon's `edgegw ring stat|tail` commands print.

mod common;

use common::temp_dir;
use edgegw_ring::tools::{self, TailEnd, TailOptions};
use edgegw_ring::{AllowList, Consumer, Producer, RingConfig, RingServer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn serve(server: RingServer) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let mut server = server;
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            server.serve_for(Some(Duration::from_millis(20))).unwrap();
        }
    });
    (stop, t)
}

#[test]
fn stat_reports_positions_fill_drops_and_generation_without_disturbing_the_consumer() {
    let dir = temp_dir("tools");
    let path = dir.join("r.sock");
    let mut p = Producer::create(RingConfig::with_capacity(8192).generation(3)).unwrap();
    let (stop, t) = serve(
        RingServer::bind(&path, p.served_ring().unwrap(), AllowList::current_user()).unwrap(),
    );
    let before = tools::stat(&path).unwrap();
    assert!(!before.attached);
    let mut c = Consumer::attach(&path).unwrap();
    for _ in 0..10 {
        p.send(1, 0, &[0u8; 100]).unwrap();
    }
    p.record_drops(2);
    for _ in 0..4 {
        c.read().unwrap().unwrap();
    }
    c.release();
    let s = tools::stat(&path).unwrap();
    assert_eq!(s.capacity, 8192);
    assert_eq!(s.generation, 3);
    assert_eq!(s.producer_pos, 10 * 112);
    assert_eq!(s.consumer_pos, 4 * 112);
    assert_eq!(s.fill, 6 * 112);
    assert_eq!(s.drops, 2);
    assert!(s.attached && !s.finished);
    let text = s.to_string();
    for line in [
        "generation  3",
        "capacity    8192 bytes",
        "fill        672 bytes (8.2%)",
        "drops       2",
        "consumer attached",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let json: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(json["producer_pos"], 1120);
    assert_eq!(json["peer_role"], "consumer");
    assert_eq!(json["wrap"], "pad");
    assert_eq!(json["attached"], true);
    // The consumer is still attached and reads on.
    assert!(c.read().unwrap().is_some());
    p.finish();
    assert!(tools::stat(&path).unwrap().finished);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn stat_of_a_missing_ring_names_the_path_and_cause() {
    let dir = temp_dir("tools");
    let err = tools::stat(dir.join("none.sock")).unwrap_err().to_string();
    assert!(
        err.contains("none.sock") && err.contains("no ring socket"),
        "{err}"
    );
}

#[test]
fn tail_prints_each_packet_with_length_type_flags_and_hex_then_stops_at_the_end() {
    let dir = temp_dir("tools");
    let path = dir.join("r.sock");
    let mut p = Producer::create(RingConfig::with_capacity(8192)).unwrap();
    let (stop, t) = serve(
        RingServer::bind(&path, p.served_ring().unwrap(), AllowList::current_user()).unwrap(),
    );
    p.send(0x12, 0x3, b"hello tail").unwrap();
    p.send(0x13, 0, &[0xffu8; 40]).unwrap();
    p.finish();
    let mut out = Vec::new();
    let opts = TailOptions {
        dump_bytes: 32,
        ..TailOptions::default()
    };
    let (n, end) = tools::tail(&path, &mut out, &opts).unwrap();
    assert_eq!((n, end), (2, TailEnd::Finished));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("#0 len=10 type=0x0012 flags=0x0003"),
        "{text}"
    );
    assert!(text.contains("68 65 6c 6c 6f 20 74 61  69 6c"), "{text}");
    assert!(text.contains("|hello tail|"), "{text}");
    assert!(text.contains("#1 len=40 type=0x0013"), "{text}");
    assert!(text.contains("... 8 more bytes"), "{text}");
    // Packets tail printed were released.
    let s = tools::stat(&path).unwrap();
    assert_eq!(s.fill, 0);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn tail_stops_after_the_requested_count_or_when_idle() {
    let dir = temp_dir("tools");
    let path = dir.join("r.sock");
    let mut p = Producer::create(RingConfig::with_capacity(8192)).unwrap();
    let (stop, t) = serve(
        RingServer::bind(&path, p.served_ring().unwrap(), AllowList::current_user()).unwrap(),
    );
    for i in 0..5u8 {
        p.send(1, 0, &[i]).unwrap();
    }
    let opts = TailOptions {
        max_packets: Some(3),
        ..TailOptions::default()
    };
    let (n, end) = tools::tail(&path, std::io::sink(), &opts).unwrap();
    assert_eq!((n, end), (3, TailEnd::Count));
    // The server needs a moment to see the first tail detach.
    let opts = TailOptions {
        idle_timeout: Some(Duration::from_millis(50)),
        ..TailOptions::default()
    };
    let mut res = tools::tail(&path, std::io::sink(), &opts);
    for _ in 0..100 {
        if res.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        res = tools::tail(&path, std::io::sink(), &opts);
    }
    assert_eq!(res.unwrap(), (2, TailEnd::Idle));
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}
