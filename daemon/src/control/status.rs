//! What the daemon says about itself: the one-line `STATUS=` for systemd, the JSON of
//! `edgegw status --json`, and the Prometheus text of `edgegw metrics`.
//!
//! The Prometheus text format (version 0.0.4) is written here rather than through a metrics
//! crate: the daemon's counters already live in atomics (`gateway::Stats`, each ring's
//! `OwnerCounters`) and are read once per scrape, so all a crate would add is its registry and
//! encoder; the format is a `# HELP`, a `# TYPE` and one `name{labels} value` line per sample.

use std::collections::VecDeque;
use std::fmt::Write;

use crate::gateway::{ListenerSnapshot, RingCounter, Snapshot};

/// Reloads remembered for `edgegw status`.
const HISTORY: usize = 8;

/// One reload, as `edgegw status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// Whether the new config is in force.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last reloads and how many went each way.
#[derive(Debug, Default)]
pub struct ReloadHistory {
    recent: VecDeque<ReloadRecord>,
    /// Reloads that went through.
    pub ok: u64,
    /// Reloads refused (the old config stayed).
    pub failed: u64,
}

impl ReloadHistory {
    /// Remembers a reload that ended now.
    pub fn record(&mut self, error: Option<String>) {
        if error.is_some() {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(ReloadRecord {
            at: crate::log::now_rfc3339(),
            ok: error.is_none(),
            error,
        });
    }

    /// The last reload, if any.
    pub fn last(&self) -> Option<&ReloadRecord> {
        self.recent.back()
    }

    /// The last reloads, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &ReloadRecord> {
        self.recent.iter()
    }
}

/// The one-line status systemd shows (`systemctl status`).
pub fn status_line(
    connections: u64,
    rings: usize,
    attached: usize,
    history: &ReloadHistory,
) -> String {
    let mut line =
        format!("{connections} connections, {attached} of {rings} rings with a consumer");
    match history.last() {
        None => line.push_str(", no reload yet"),
        Some(r) if r.ok => {
            let _ = write!(line, ", last reload {} ok", r.at);
        }
        Some(r) => {
            let error = r.error.as_deref().unwrap_or("");
            // systemctl status shows one line: the reason's first, cut short.
            let first: String = error
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect();
            let _ = write!(
                line,
                ", last reload {} FAILED (old config kept): {first}",
                r.at
            );
        }
    }
    line
}

/// The resident memory of this process in bytes (`/proc/self/statm`), if it can be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::sys::page_size() as u64)
}

/// Gauges among the gateway's counters (everything else only grows): connections open, and 1
/// while the daemon sheds load (a counter that falls back to 0 would read as a reset).
const GAUGES: &[&str] = &["active", "shedding"];

/// One listener's samples for `edgegw status` and [`metrics`].
#[derive(Debug)]
pub struct ListenerSamples {
    /// Its name.
    pub name: String,
    /// The addresses it accepts on now.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Its counters.
    pub counters: ListenerSnapshot,
}

/// One ring's samples for [`metrics`].
#[derive(Debug)]
pub struct RingSamples<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its counters by name.
    pub counters: Vec<(&'static str, u64)>,
    /// A consumer is attached to its ingress side.
    pub attached: bool,
    /// For how long, if it is.
    pub attached_for: Option<std::time::Duration>,
    /// A producer is attached to its reply side.
    pub reply_attached: bool,
    /// For how long, if it is.
    pub reply_attached_for: Option<std::time::Duration>,
}

/// Every counter in the Prometheus text format.
pub fn metrics(
    gateway: &Snapshot,
    listeners: &[ListenerSamples],
    rings: &[RingSamples<'_>],
    history: &ReloadHistory,
    watch: &super::watch::WatchStatus,
) -> String {
    let mut out = String::with_capacity(4096);
    let gateway = serde_json::to_value(gateway).unwrap_or_default();
    if let serde_json::Value::Object(fields) = gateway {
        for (name, value) in fields {
            let Some(value) = value.as_u64() else {
                continue;
            };
            let gauge = GAUGES.contains(&name.as_str());
            let metric = if gauge {
                format!("edgegw_{name}")
            } else {
                format!("edgegw_{name}_total")
            };
            let kind = if gauge { "gauge" } else { "counter" };
            let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {value}");
        }
    }
    let per_listener: Vec<(&str, serde_json::Value)> = listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                serde_json::to_value(l.counters).unwrap_or_default(),
            )
        })
        .collect();
    if let Some((_, serde_json::Value::Object(first))) = per_listener.first() {
        for name in first.keys() {
            let gauge = GAUGES.contains(&name.as_str());
            let (metric, kind) = if gauge {
                (format!("edgegw_listener_{name}"), "gauge")
            } else {
                (format!("edgegw_listener_{name}_total"), "counter")
            };
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for (listener, values) in &per_listener {
                let value = values[name].as_u64().unwrap_or(0);
                let _ = writeln!(out, "{metric}{{listener=\"{}\"}} {value}", label(listener));
            }
        }
    }
    if let Some(first) = rings.first() {
        for (i, (counter, _)) in first.counters.iter().enumerate() {
            let gauge = RingCounter::ALL
                .iter()
                .any(|c| c.is_gauge() && c.name() == *counter);
            let (metric, kind) = if gauge {
                (format!("edgegw_ring_{counter}"), "gauge")
            } else {
                (format!("edgegw_ring_{counter}_total"), "counter")
            };
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for ring in rings {
                if let Some((_, value)) = ring.counters.get(i) {
                    let _ = writeln!(out, "{metric}{{ring=\"{}\"}} {value}", label(ring.name));
                }
            }
        }
        // The two peers of each ring: whether one is attached, and for how long.
        type Peer = fn(&RingSamples) -> (bool, Option<std::time::Duration>);
        let peers: [(&str, Peer); 2] = [
            ("consumer", |r| (r.attached, r.attached_for)),
            ("reply_producer", |r| {
                (r.reply_attached, r.reply_attached_for)
            }),
        ];
        for (peer, of) in peers {
            let _ = writeln!(out, "# TYPE edgegw_ring_{peer}_attached gauge");
            for ring in rings {
                let _ = writeln!(
                    out,
                    "edgegw_ring_{peer}_attached{{ring=\"{}\"}} {}",
                    label(ring.name),
                    u8::from(of(ring).0)
                );
            }
            let _ = writeln!(out, "# TYPE edgegw_ring_{peer}_attached_seconds gauge");
            for ring in rings {
                if let Some(age) = of(ring).1 {
                    let _ = writeln!(
                        out,
                        "edgegw_ring_{peer}_attached_seconds{{ring=\"{}\"}} {}",
                        label(ring.name),
                        age.as_secs()
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "# TYPE edgegw_reloads_total counter\nedgegw_reloads_total{{result=\"ok\"}} {}\nedgegw_reloads_total{{result=\"failed\"}} {}",
        history.ok, history.failed
    );
    watch_metrics(&mut out, watch);
    if let Some(rss) = resident_bytes() {
        let _ = writeln!(
            out,
            "# TYPE edgegw_resident_memory_bytes gauge\nedgegw_resident_memory_bytes {rss}"
        );
    }
    out
}

/// The kernel watchers' counters (`WatchStatus`): files, network, memory pressure, supervised
/// consumers by ring, the events ring.
fn watch_metrics(out: &mut String, watch: &super::watch::WatchStatus) {
    let (files, network, pressure, events) =
        (&watch.files, &watch.network, &watch.pressure, &watch.events);
    let unlabelled: [(&str, &str, u64); 14] = [
        ("edgegw_files_watched", "gauge", files.watched as u64),
        ("edgegw_files_changes_total", "counter", files.changes),
        ("edgegw_files_resyncs_total", "counter", files.resyncs),
        (
            "edgegw_files_reloads_requested_total",
            "counter",
            files.reloads_requested,
        ),
        ("edgegw_network_changes_total", "counter", network.changes),
        ("edgegw_network_resyncs_total", "counter", network.resyncs),
        ("edgegw_network_rebinds_total", "counter", network.rebinds),
        (
            "edgegw_network_addresses",
            "gauge",
            network.addresses as u64,
        ),
        ("edgegw_pressure_stalls_total", "counter", pressure.stalls),
        ("edgegw_pressure_reliefs_total", "counter", pressure.reliefs),
        (
            "edgegw_pressure_shedding_episodes_total",
            "counter",
            pressure.episodes,
        ),
        (
            "edgegw_pressure_shedding",
            "gauge",
            u64::from(pressure.shedding),
        ),
        ("edgegw_events_written_total", "counter", events.written),
        ("edgegw_events_dropped_total", "counter", events.dropped),
    ];
    for (metric, kind, value) in unlabelled {
        let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {value}");
    }
    if watch.consumers.is_empty() {
        return;
    }
    type Figure = fn(&super::watch::ConsumerStatus) -> u64;
    let per_ring: [(&str, &str, Figure); 3] = [
        ("edgegw_consumer_exits_total", "counter", |c| c.exits),
        ("edgegw_consumer_oom_kills_total", "counter", |c| {
            c.oom_kills
        }),
        ("edgegw_consumer_populated", "gauge", |c| {
            u64::from(c.populated)
        }),
    ];
    for (metric, kind, figure) in per_ring {
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for (ring, consumer) in &watch.consumers {
            let _ = writeln!(
                out,
                "{metric}{{ring=\"{}\"}} {}",
                label(ring),
                figure(consumer)
            );
        }
    }
}

/// A label value, escaped as the text format asks (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_connections_rings_and_the_last_reload() {
        let mut history = ReloadHistory::default();
        assert_eq!(
            status_line(3, 2, 1, &history),
            "3 connections, 1 of 2 rings with a consumer, no reload yet"
        );
        history.record(Some("edgegw.toml:3:1: listener: bad\nmore".into()));
        let line = status_line(0, 1, 0, &history);
        assert!(line.contains("FAILED (old config kept): edgegw.toml:3:1: listener: bad"));
        assert!(!line.contains('\n'), "{line}");
        history.record(None);
        assert!(status_line(0, 1, 0, &history).ends_with(" ok"));
        assert_eq!((history.ok, history.failed), (1, 1));
    }

    #[test]
    fn the_history_keeps_the_last_eight() {
        let mut history = ReloadHistory::default();
        for i in 0..20 {
            history.record((i % 2 == 0).then(|| format!("error {i}")));
        }
        assert_eq!(history.recent().count(), HISTORY);
        assert_eq!(
            history.recent().next().unwrap().error.as_deref(),
            Some("error 12")
        );
        assert_eq!((history.ok, history.failed), (10, 10));
    }

    #[test]
    fn metrics_are_prometheus_text_with_escaped_ring_labels() {
        let snapshot = Snapshot {
            accepted: 5,
            active: 2,
            shedding: 1,
            ..Snapshot::default()
        };
        let rings = [RingSamples {
            name: "a\"b",
            counters: vec![("drops", 7), ("credit_connections", 3)],
            attached: true,
            attached_for: Some(std::time::Duration::from_millis(3500)),
            reply_attached: false,
            reply_attached_for: None,
        }];
        let listeners = [ListenerSamples {
            name: "web".into(),
            addrs: vec![],
            counters: ListenerSnapshot {
                handshakes: 4,
                active: 1,
                ..ListenerSnapshot::default()
            },
        }];
        let mut watch = crate::control::watch::WatchStatus::default();
        watch.files.changes = 3;
        watch.consumers.insert(
            "app".into(),
            crate::control::watch::ConsumerStatus {
                oom_kills: 2,
                ..Default::default()
            },
        );
        let text = metrics(
            &snapshot,
            &listeners,
            &rings,
            &ReloadHistory::default(),
            &watch,
        );
        assert!(text
            .contains("# TYPE edgegw_files_changes_total counter\nedgegw_files_changes_total 3\n"));
        assert!(text.contains("edgegw_consumer_oom_kills_total{ring=\"app\"} 2\n"));
        assert!(text.contains("# TYPE edgegw_accepted_total counter\nedgegw_accepted_total 5\n"));
        assert!(text.contains("# TYPE edgegw_active gauge\nedgegw_active 2\n"));
        assert!(text.contains("# TYPE edgegw_shedding gauge\nedgegw_shedding 1\n"));
        assert!(
            !text.contains("edgegw_shedding_total"),
            "shedding is a state, not a count"
        );
        assert!(text.contains("edgegw_ring_drops_total{ring=\"a\\\"b\"} 7\n"));
        assert!(text.contains(
            "# TYPE edgegw_ring_credit_connections gauge\nedgegw_ring_credit_connections{ring=\"a\\\"b\"} 3\n"
        ));
        assert!(text.contains("edgegw_ring_consumer_attached{ring=\"a\\\"b\"} 1\n"));
        assert!(text.contains("edgegw_ring_consumer_attached_seconds{ring=\"a\\\"b\"} 3\n"));
        assert!(text.contains("edgegw_ring_reply_producer_attached{ring=\"a\\\"b\"} 0\n"));
        assert!(!text.contains("edgegw_ring_reply_producer_attached_seconds{"));
        assert!(text.contains("edgegw_reloads_total{result=\"failed\"} 0\n"));
        assert!(text.contains(
            "# TYPE edgegw_listener_handshakes_total counter\nedgegw_listener_handshakes_total{listener=\"web\"} 4\n"
        ));
        assert!(text.contains(
            "# TYPE edgegw_listener_active gauge\nedgegw_listener_active{listener=\"web\"} 1\n"
        ));
        for line in text.lines() {
            assert!(
                line.starts_with("# TYPE ") || line.starts_with("edgegw_"),
                "{line}"
            );
        }
    }
}
