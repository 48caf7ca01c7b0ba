//! `tools::stat`: what the daemon's `edgegw ring stat` prints (the JSON with the `serde`
//! feature, which the workspace's test run enables through the daemon).

mod common;

use common::{me, temp_dir, Running};
use edgegw_ring::tools;
use edgegw_ring::{Consumer, Producer, RingConfig};

#[test]
fn stat_reports_positions_fill_drops_and_generation_without_disturbing_the_consumer() {
    let dir = temp_dir("tools");
    let path = dir.join("r.sock");
    let mut p = Producer::create(RingConfig::with_capacity(8192).generation(3)).unwrap();
    let server = Running::start(&path, p.served_ring().unwrap(), me());
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
    #[cfg(feature = "serde")]
    {
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["producer_pos"], 1120);
        assert_eq!(json["peer_role"], "consumer");
        assert_eq!(json["wrap"], "pad");
        assert_eq!(json["attached"], true);
    }
    // The consumer is still attached and reads on.
    assert!(c.read().unwrap().is_some());
    p.finish();
    assert!(tools::stat(&path).unwrap().finished);
    server.stop();
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
