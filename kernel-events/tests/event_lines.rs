//! What an event looks like to a person (one line, as `edgegw events` prints it) and to a
//! program (one JSON object, as `edgegw events --json` prints it): every kind, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use edgegw_kernel_events::cgroup::CgroupEvent;
use edgegw_kernel_events::files::{FileEvent, FileKind, Identity};
use edgegw_kernel_events::net::{Address, Family, Link, NetworkState, NextHop, Route};
use edgegw_kernel_events::pressure::{
    PressureAverages, PressureEvent, PressureMode, PressureTarget,
};
use edgegw_kernel_events::{Change, Event, EventKind, ResyncReason, Source};

fn event(seq: u64, source: Source, kind: EventKind) -> Event {
    Event { seq, source, kind }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn lo() -> Link {
    Link {
        index: 1,
        name: "lo".into(),
        kind: None,
        flags: 0x9,
        mtu: Some(65536),
        mac: Some("00:00:00:00:00:00".into()),
        oper_state: Some(0),
        master: None,
    }
}

fn veth() -> Link {
    Link {
        index: 4,
        name: "veth0".into(),
        kind: Some("veth".into()),
        flags: 0x1002,
        mtu: None,
        mac: None,
        oper_state: Some(2),
        master: None,
    }
}

fn network() -> NetworkState {
    let mut state = NetworkState::default();
    state.links.insert(1, lo());
    state
}

fn address(index: u32, peer: Option<&str>, label: Option<&str>) -> Address {
    Address {
        index,
        family: Family::Inet,
        address: ip("10.9.0.1"),
        prefix_len: 24,
        peer: peer.map(ip),
        scope: 0,
        flags: 0x80,
        label: label.map(str::to_string),
    }
}

fn route(dst: Option<&str>, hops: &[(Option<&str>, Option<u32>)], prefsrc: Option<&str>) -> Route {
    Route {
        family: Family::Inet,
        table: 254,
        dst: dst.map(ip),
        dst_len: if dst.is_some() { 24 } else { 0 },
        src: None,
        src_len: 0,
        tos: 0,
        priority: 100,
        route_type: 1,
        protocol: 4,
        scope: 0,
        prefsrc: prefsrc.map(ip),
        next_hops: hops
            .iter()
            .map(|(gw, oif)| NextHop {
                gateway: gw.map(ip),
                oif: *oif,
            })
            .collect(),
    }
}

fn identity(hash: Option<u64>) -> Identity {
    Identity {
        kind: FileKind::File,
        dev: 65024,
        ino: 10010642,
        size: 2,
        mtime_ns: 1_700_000_000_123_456_789,
        hash,
    }
}

fn averages() -> PressureAverages {
    PressureAverages {
        some_avg10: 12.5,
        some_avg60: 3.25,
        some_avg300: 0.5,
        some_total_us: 123456,
        full_avg10: 4.0,
        full_avg60: 1.0,
        full_avg300: 0.0,
        full_total_us: 789,
    }
}

fn cgroup(name: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup/smoke").join(name)
}

/// One event of every kind, with the human line each must print.
fn every_kind() -> Vec<(Event, &'static str)> {
    let kid = cgroup("kid");
    let memory = CgroupEvent::Memory {
        path: kid.clone(),
        deltas: BTreeMap::from([("high".to_string(), 3), ("oom_kill".to_string(), 1)]),
        totals: BTreeMap::from([("high".to_string(), 15), ("oom_kill".to_string(), 1)]),
        resets: BTreeSet::from(["max".to_string()]),
    };
    let system = PressureTarget::System;
    let in_cgroup = PressureTarget::Cgroup(kid.clone());
    vec![
        (
            event(
                14,
                Source::Network,
                EventKind::Resync {
                    source: Source::Network,
                    reason: ResyncReason::NoBuffers,
                },
            ),
            "    14 net      RESYNC reason=NoBuffers",
        ),
        (
            event(
                40,
                Source::Network,
                EventKind::ResyncDone {
                    source: Source::Network,
                },
            ),
            "    40 net      RESYNC-DONE",
        ),
        (
            event(
                5,
                Source::Files,
                EventKind::File(FileEvent::Entry {
                    change: Change::Changed,
                    path: "/tmp/smoke/f.txt".into(),
                    identity: Some(identity(None)),
                }),
            ),
            "     5 files    CHANGED /tmp/smoke/f.txt kind=File dev=65024 ino=10010642 size=2 \
             mtime_ns=1700000000123456789",
        ),
        (
            event(
                6,
                Source::Files,
                EventKind::File(FileEvent::Entry {
                    change: Change::Added,
                    path: "/tmp/smoke/g.txt".into(),
                    identity: Some(identity(Some(0xabc))),
                }),
            ),
            "     6 files    CREATED /tmp/smoke/g.txt kind=File dev=65024 ino=10010642 size=2 \
             mtime_ns=1700000000123456789 fnv64=0000000000000abc",
        ),
        (
            event(
                7,
                Source::Files,
                EventKind::File(FileEvent::Entry {
                    change: Change::Removed,
                    path: "/tmp/smoke/g.txt".into(),
                    identity: None,
                }),
            ),
            "     7 files    REMOVED /tmp/smoke/g.txt",
        ),
        (
            event(
                8,
                Source::Files,
                EventKind::File(FileEvent::Degraded {
                    path: "/tmp/smoke".into(),
                    reason: "cannot add inotify watch".into(),
                }),
            ),
            "     8 files    DEGRADED /tmp/smoke (cannot add inotify watch)",
        ),
        (
            event(
                9,
                Source::Files,
                EventKind::File(FileEvent::Restored {
                    path: "/tmp/smoke".into(),
                }),
            ),
            "     9 files    RESTORED /tmp/smoke",
        ),
        (
            event(
                10,
                Source::Network,
                EventKind::Link {
                    change: Change::Added,
                    link: lo(),
                },
            ),
            "    10 net      +link 1: lo UP mtu 65536 link 00:00:00:00:00:00",
        ),
        (
            event(
                11,
                Source::Network,
                EventKind::Link {
                    change: Change::Changed,
                    link: veth(),
                },
            ),
            "    11 net      ~link 4: veth0 type veth DOWN",
        ),
        (
            event(
                12,
                Source::Network,
                EventKind::Address {
                    change: Change::Added,
                    address: address(1, None, Some("lo")),
                },
            ),
            "    12 net      +addr 10.9.0.1/24 dev lo scope 0 label lo",
        ),
        (
            event(
                13,
                Source::Network,
                EventKind::Address {
                    change: Change::Removed,
                    address: address(7, Some("10.9.0.2"), None),
                },
            ),
            "    13 net      -addr 10.9.0.1/24 dev #7 peer 10.9.0.2 scope 0",
        ),
        (
            event(
                15,
                Source::Network,
                EventKind::Route {
                    change: Change::Added,
                    route: route(Some("10.9.0.0"), &[(None, Some(1))], Some("10.9.0.1")),
                },
            ),
            "    15 net      +route 10.9.0.0/24 dev lo table 254 metric 100 type 1 proto 4 \
             src 10.9.0.1",
        ),
        (
            event(
                16,
                Source::Network,
                EventKind::Route {
                    change: Change::Changed,
                    route: route(
                        None,
                        &[(Some("10.9.0.254"), Some(1)), (Some("10.9.0.253"), Some(9))],
                        None,
                    ),
                },
            ),
            "    16 net      ~route default via 10.9.0.254 dev lo via 10.9.0.253 dev #9 \
             table 254 metric 100 type 1 proto 4",
        ),
        (
            event(
                17,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::Populated {
                    path: kid.clone(),
                    populated: true,
                }),
            ),
            "    17 cgroup   /sys/fs/cgroup/smoke/kid populated=1",
        ),
        (
            event(
                18,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::Frozen {
                    path: kid.clone(),
                    frozen: false,
                }),
            ),
            "    18 cgroup   /sys/fs/cgroup/smoke/kid frozen=0",
        ),
        (
            event(19, Source::Cgroup, EventKind::Cgroup(memory)),
            "    19 cgroup   /sys/fs/cgroup/smoke/kid memory.events max=reset high+=3 oom_kill+=1",
        ),
        (
            event(
                20,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::Removed { path: kid.clone() }),
            ),
            "    20 cgroup   /sys/fs/cgroup/smoke/kid REMOVED",
        ),
        (
            event(
                21,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::Reappeared { path: kid.clone() }),
            ),
            "    21 cgroup   /sys/fs/cgroup/smoke/kid REAPPEARED",
        ),
        (
            event(
                22,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::ChildAdded {
                    parent: cgroup(""),
                    child: kid.clone(),
                }),
            ),
            "    22 cgroup   +child /sys/fs/cgroup/smoke/kid",
        ),
        (
            event(
                23,
                Source::Cgroup,
                EventKind::Cgroup(CgroupEvent::ChildRemoved {
                    parent: cgroup(""),
                    child: kid.clone(),
                }),
            ),
            "    23 cgroup   -child /sys/fs/cgroup/smoke/kid",
        ),
        (
            event(
                1,
                Source::Pressure,
                EventKind::Pressure(PressureEvent::Mode {
                    target: system.clone(),
                    mode: PressureMode::Trigger {
                        stall_us: 150000,
                        window_us: 2000000,
                    },
                }),
            ),
            "     1 pressure system memory mode=trigger stall=150000us window=2000000us",
        ),
        (
            event(
                2,
                Source::Pressure,
                EventKind::Pressure(PressureEvent::Mode {
                    target: in_cgroup.clone(),
                    mode: PressureMode::Poll {
                        interval_ms: 5000,
                        reason: "trigger refused".into(),
                    },
                }),
            ),
            "     2 pressure /sys/fs/cgroup/smoke/kid memory mode=poll every 5000ms (trigger refused)",
        ),
        (
            event(
                3,
                Source::Pressure,
                EventKind::Pressure(PressureEvent::Stalled {
                    target: system.clone(),
                    averages: averages(),
                }),
            ),
            "     3 pressure system memory STALLED some avg10=12.50 full avg10=4.00",
        ),
        (
            event(
                4,
                Source::Pressure,
                EventKind::Pressure(PressureEvent::Relieved {
                    target: system,
                    averages: averages(),
                }),
            ),
            "     4 pressure system memory relieved some avg10=12.50",
        ),
        (
            event(
                1234567,
                Source::Pressure,
                EventKind::Pressure(PressureEvent::TargetRemoved { target: in_cgroup }),
            ),
            "1234567 pressure /sys/fs/cgroup/smoke/kid memory pressure target REMOVED",
        ),
    ]
}

#[test]
fn every_event_kind_prints_its_human_line() {
    let network = network();
    for (event, line) in every_kind() {
        assert_eq!(event.display(Some(&network)).to_string(), line, "{event:?}");
    }
}

#[test]
fn without_the_network_model_interface_indexes_print_as_numbers() {
    // `Display` of an event is its line without names.
    let (event, _) = every_kind()
        .into_iter()
        .find(|(e, _)| matches!(e.kind, EventKind::Address { .. }))
        .unwrap();
    assert_eq!(
        event.to_string(),
        "    12 net      +addr 10.9.0.1/24 dev #1 scope 0 label lo"
    );
}

#[cfg(feature = "serde")]
#[test]
fn every_event_kind_is_one_json_object_with_its_type_tag() {
    let expect = [
        r#"{"seq":14,"source":"network","kind":{"type":"resync","source":"network","reason":"no_buffers"}}"#,
        r#"{"seq":40,"source":"network","kind":{"type":"resync_done","source":"network"}}"#,
        r#"{"seq":5,"source":"files","kind":{"type":"file","event":"entry","change":"changed","path":"/tmp/smoke/f.txt","identity":{"kind":"file","dev":65024,"ino":10010642,"size":2,"mtime_ns":1700000000123456789,"hash":null}}}"#,
        r#"{"seq":6,"source":"files","kind":{"type":"file","event":"entry","change":"added","path":"/tmp/smoke/g.txt","identity":{"kind":"file","dev":65024,"ino":10010642,"size":2,"mtime_ns":1700000000123456789,"hash":2748}}}"#,
        r#"{"seq":7,"source":"files","kind":{"type":"file","event":"entry","change":"removed","path":"/tmp/smoke/g.txt","identity":null}}"#,
        r#"{"seq":8,"source":"files","kind":{"type":"file","event":"degraded","path":"/tmp/smoke","reason":"cannot add inotify watch"}}"#,
        r#"{"seq":9,"source":"files","kind":{"type":"file","event":"restored","path":"/tmp/smoke"}}"#,
        r#"{"seq":10,"source":"network","kind":{"type":"link","change":"added","link":{"index":1,"name":"lo","kind":null,"flags":9,"mtu":65536,"mac":"00:00:00:00:00:00","oper_state":0,"master":null}}}"#,
        r#"{"seq":11,"source":"network","kind":{"type":"link","change":"changed","link":{"index":4,"name":"veth0","kind":"veth","flags":4098,"mtu":null,"mac":null,"oper_state":2,"master":null}}}"#,
        r#"{"seq":12,"source":"network","kind":{"type":"address","change":"added","address":{"index":1,"family":"inet","address":"10.9.0.1","prefix_len":24,"peer":null,"scope":0,"flags":128,"label":"lo"}}}"#,
        r#"{"seq":13,"source":"network","kind":{"type":"address","change":"removed","address":{"index":7,"family":"inet","address":"10.9.0.1","prefix_len":24,"peer":"10.9.0.2","scope":0,"flags":128,"label":null}}}"#,
        r#"{"seq":15,"source":"network","kind":{"type":"route","change":"added","route":{"family":"inet","table":254,"dst":"10.9.0.0","dst_len":24,"src":null,"src_len":0,"tos":0,"priority":100,"route_type":1,"protocol":4,"scope":0,"prefsrc":"10.9.0.1","next_hops":[{"oif":1,"gateway":null}]}}}"#,
        r#"{"seq":16,"source":"network","kind":{"type":"route","change":"changed","route":{"family":"inet","table":254,"dst":null,"dst_len":0,"src":null,"src_len":0,"tos":0,"priority":100,"route_type":1,"protocol":4,"scope":0,"prefsrc":null,"next_hops":[{"oif":1,"gateway":"10.9.0.254"},{"oif":9,"gateway":"10.9.0.253"}]}}}"#,
        r#"{"seq":17,"source":"cgroup","kind":{"type":"cgroup","event":"populated","path":"/sys/fs/cgroup/smoke/kid","populated":true}}"#,
        r#"{"seq":18,"source":"cgroup","kind":{"type":"cgroup","event":"frozen","path":"/sys/fs/cgroup/smoke/kid","frozen":false}}"#,
        r#"{"seq":19,"source":"cgroup","kind":{"type":"cgroup","event":"memory","path":"/sys/fs/cgroup/smoke/kid","deltas":{"high":3,"oom_kill":1},"totals":{"high":15,"oom_kill":1},"resets":["max"]}}"#,
        r#"{"seq":20,"source":"cgroup","kind":{"type":"cgroup","event":"removed","path":"/sys/fs/cgroup/smoke/kid"}}"#,
        r#"{"seq":21,"source":"cgroup","kind":{"type":"cgroup","event":"reappeared","path":"/sys/fs/cgroup/smoke/kid"}}"#,
        r#"{"seq":22,"source":"cgroup","kind":{"type":"cgroup","event":"child_added","parent":"/sys/fs/cgroup/smoke/","child":"/sys/fs/cgroup/smoke/kid"}}"#,
        r#"{"seq":23,"source":"cgroup","kind":{"type":"cgroup","event":"child_removed","parent":"/sys/fs/cgroup/smoke/","child":"/sys/fs/cgroup/smoke/kid"}}"#,
        r#"{"seq":1,"source":"pressure","kind":{"type":"pressure","event":"mode","target":"system","mode":{"mode":"trigger","stall_us":150000,"window_us":2000000}}}"#,
        r#"{"seq":2,"source":"pressure","kind":{"type":"pressure","event":"mode","target":{"cgroup":"/sys/fs/cgroup/smoke/kid"},"mode":{"mode":"poll","interval_ms":5000,"reason":"trigger refused"}}}"#,
        r#"{"seq":3,"source":"pressure","kind":{"type":"pressure","event":"stalled","target":"system","averages":{"some_avg10":12.5,"some_avg60":3.25,"some_avg300":0.5,"some_total_us":123456,"full_avg10":4.0,"full_avg60":1.0,"full_avg300":0.0,"full_total_us":789}}}"#,
        r#"{"seq":4,"source":"pressure","kind":{"type":"pressure","event":"relieved","target":"system","averages":{"some_avg10":12.5,"some_avg60":3.25,"some_avg300":0.5,"some_total_us":123456,"full_avg10":4.0,"full_avg60":1.0,"full_avg300":0.0,"full_total_us":789}}}"#,
        r#"{"seq":1234567,"source":"pressure","kind":{"type":"pressure","event":"target_removed","target":{"cgroup":"/sys/fs/cgroup/smoke/kid"}}}"#,
    ];
    let events = every_kind();
    assert_eq!(events.len(), expect.len());
    for ((event, _), json) in events.iter().zip(expect) {
        assert_eq!(serde_json::to_string(event).unwrap(), json, "{event:?}");
    }
}
