//! Consumers supervised through their cgroups: why a ring's consumer went away.
//!
//! A ring may name its consumer's cgroup (`consumer_cgroup`) or systemd unit (`consumer_unit`,
//! whose cgroup is looked up). The cgroup reader watches the parent of each such cgroup for
//! children, so a consumer's cgroup may come and go (systemd removes a service's cgroup when it
//! stops and creates it again when it starts): `cgroup.events` says when it empties (populated
//! 1 -> 0), `memory.events` when the kernel OOM-killed a process in it. Each departure is
//! recorded with its reason (`exit`, or `oom_kill` when an OOM kill came first), logged once,
//! counted, and shown in the status. The ring is not touched: its unread records wait for the
//! next consumer, as after any detach.
//!
//! A unit is looked up with `systemctl show` on the blocking pool (it is a process), never on
//! the control loop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use edgegw_kernel_events::cgroup::CgroupEvent;
use edgegw_kernel_events::{EventKind, KernelEvents};
use tokio::task::JoinHandle;

use edgegw_proto::events::EventKind as EventRecord;
use serde_json::json;

use super::{lock, Feed, WatchHandle, WatchStatus};
use crate::config::{Config, ConsumerCgroup};

/// Why a consumer went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gone {
    /// Its cgroup emptied: every process in it exited (or was killed other than by OOM).
    Exit,
    /// The kernel's OOM killer killed a process in its cgroup.
    OomKill,
}

/// One supervised consumer, as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerStatus {
    /// Its cgroup, relative to the cgroup2 mount, once known.
    pub cgroup: Option<PathBuf>,
    /// Processes run in it now.
    pub populated: bool,
    /// Times it emptied without an OOM kill.
    pub exits: u64,
    /// OOM kills in it.
    pub oom_kills: u64,
    /// Why it went away the last time.
    pub last_gone: Option<Gone>,
    /// Why it is not supervised, if it is not.
    pub error: Option<String>,
}

/// The supervised consumers of a config: (ring, where its consumer runs).
pub(super) type Targets = Vec<(String, ConsumerCgroup)>;

/// The supervised consumers of `config`.
pub(super) fn targets(config: &Config) -> Targets {
    config
        .rings
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.consumer.clone()?)))
        .collect()
}

/// Starts supervising `targets`.
pub(super) fn spawn(targets: Targets, handle: WatchHandle) -> JoinHandle<()> {
    {
        let mut status = lock(&handle.status);
        status.consumers = targets
            .iter()
            .map(|(ring, _)| (ring.clone(), ConsumerStatus::default()))
            .collect();
    }
    tokio::spawn(async move {
        if let Err(e) = supervise(targets, &handle).await {
            log::error!("consumers are not supervised any more: {e}");
            for consumer in lock(&handle.status).consumers.values_mut() {
                consumer.error.get_or_insert_with(|| e.clone());
            }
        }
    })
}

/// A consumer's state between events.
struct Supervised {
    ring: String,
    cgroup: PathBuf,
    populated: bool,
    /// An OOM kill happened since it was last populated: its emptying is that kill's doing.
    oom_killed: bool,
}

async fn supervise(
    targets: Vec<(String, ConsumerCgroup)>,
    handle: &WatchHandle,
) -> Result<(), String> {
    let mut supervised = Vec::new();
    for (ring, target) in targets {
        let cgroup = match target {
            ConsumerCgroup::Path(path) => Ok(relative(&path)),
            ConsumerCgroup::Unit(unit) => tokio::task::spawn_blocking(move || unit_cgroup(&unit))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
        };
        let mut status = lock(&handle.status);
        let entry = status.consumers.entry(ring.clone()).or_default();
        match cgroup {
            Ok(cgroup) => {
                entry.cgroup = Some(cgroup.clone());
                supervised.push(Supervised {
                    ring,
                    cgroup,
                    populated: false,
                    oom_killed: false,
                });
            }
            Err(e) => {
                log::warn!("ring `{ring}`: its consumer is not supervised: {e}");
                entry.error = Some(e);
            }
        }
    }
    if supervised.is_empty() {
        return Ok(());
    }
    let parents: BTreeSet<PathBuf> = supervised
        .iter()
        .map(|s| s.cgroup.parent().unwrap_or(Path::new("")).to_path_buf())
        .collect();
    let mut builder = KernelEvents::builder();
    for parent in &parents {
        builder = builder.cgroup_children(parent);
    }
    let mut events = builder.build().await.map_err(|e| e.to_string())?;
    // The state now: a consumer already running.
    for (path, state) in events.cgroups() {
        if let Some(s) = supervised.iter_mut().find(|s| path.ends_with(&s.cgroup)) {
            s.populated = state.populated;
            lock(&handle.status)
                .consumers
                .entry(s.ring.clone())
                .or_default()
                .populated = state.populated;
        }
    }
    log::info!(
        "supervising {} consumer cgroups ({})",
        supervised.len(),
        supervised
            .iter()
            .map(|s| format!("ring `{}`: {}", s.ring, s.cgroup.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    loop {
        let first = events.next().await.map_err(|e| e.to_string())?;
        let mut batch: Vec<CgroupEvent> = std::iter::once(first)
            .chain(std::iter::from_fn(|| events.try_next()))
            .filter_map(|e| match e.kind {
                EventKind::Cgroup(event) => Some(event),
                _ => None,
            })
            .collect();
        // An OOM kill and the emptying it caused often come together: the kill first.
        batch.sort_by_key(|e| !matches!(e, CgroupEvent::Memory { .. }));
        let records: Vec<serde_json::Value> = {
            let mut status = lock(&handle.status);
            batch
                .iter()
                .filter_map(|event| apply(event, &mut supervised, &mut status))
                .collect()
        };
        for record in records {
            if !handle.inject(Feed::Record(EventRecord::Consumer, record)) {
                return Ok(());
            }
        }
    }
}

/// Applies one cgroup event to the consumer it is about, if any; what the events ring says
/// of it, if anything.
fn apply(
    event: &CgroupEvent,
    supervised: &mut [Supervised],
    status: &mut WatchStatus,
) -> Option<serde_json::Value> {
    let path = match event {
        CgroupEvent::Populated { path, .. }
        | CgroupEvent::Memory { path, .. }
        | CgroupEvent::Removed { path } => path,
        CgroupEvent::ChildRemoved { child, .. } => child,
        _ => return None,
    };
    let s = supervised.iter_mut().find(|s| path.ends_with(&s.cgroup))?;
    let consumer = status.consumers.entry(s.ring.clone()).or_default();
    match event {
        CgroupEvent::Populated {
            populated: true, ..
        } if !s.populated => {
            s.populated = true;
            s.oom_killed = false;
            consumer.populated = true;
            log::info!(
                "ring `{}`: its consumer runs in {}",
                s.ring,
                s.cgroup.display()
            );
            record(s, "started")
        }
        CgroupEvent::Memory { deltas, .. } => {
            let kills = deltas.get("oom_kill").copied().unwrap_or(0);
            if kills > 0 {
                s.oom_killed = true;
                consumer.oom_kills += kills;
                consumer.last_gone = Some(Gone::OomKill);
                log::warn!(
                    "ring `{}`: its consumer was OOM-killed in {} ({kills} kill(s)); the ring \
                     and its unread records are kept for the next consumer",
                    s.ring,
                    s.cgroup.display()
                );
                return record(s, "oom_kill");
            }
            None
        }
        CgroupEvent::Populated {
            populated: false, ..
        }
        | CgroupEvent::Removed { .. }
        | CgroupEvent::ChildRemoved { .. }
            if s.populated =>
        {
            s.populated = false;
            consumer.populated = false;
            if s.oom_killed {
                // Counted and logged with the kill.
                return None;
            }
            consumer.exits += 1;
            consumer.last_gone = Some(Gone::Exit);
            log::warn!(
                "ring `{}`: its consumer exited ({} emptied); the ring and its unread records are \
                 kept for the next consumer",
                s.ring,
                s.cgroup.display()
            );
            record(s, "exit")
        }
        _ => None,
    }
}

/// What the events ring says of a consumer's `event`.
fn record(s: &Supervised, event: &str) -> Option<serde_json::Value> {
    Some(json!({ "ring": s.ring, "cgroup": s.cgroup, "event": event }))
}

/// A configured cgroup path relative to the cgroup2 mount (an absolute one is taken as inside
/// it, as /proc/PID/cgroup writes them).
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

/// The cgroup of a systemd unit: where it runs now, or where it will run (its slice) while it
/// does not.
fn unit_cgroup(unit: &str) -> Result<PathBuf, String> {
    let output = std::process::Command::new("systemctl")
        .args(["show", "--property=ControlGroup,Slice", "--", unit])
        .output()
        .map_err(|e| format!("look up unit {unit}: systemctl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "look up unit {unit}: systemctl: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let property = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let cgroup = property("ControlGroup");
    if !cgroup.is_empty() {
        return Ok(relative(Path::new(&cgroup)));
    }
    let slice = property("Slice");
    let slice = if slice.is_empty() {
        "system.slice".to_string()
    } else {
        slice
    };
    Ok(slice_path(&slice).join(unit))
}

/// Where systemd puts a slice: `a-b.slice` is `a.slice/a-b.slice`; `-.slice` is the root.
fn slice_path(slice: &str) -> PathBuf {
    let Some(name) = slice.strip_suffix(".slice") else {
        return PathBuf::from(slice);
    };
    let mut path = PathBuf::new();
    if name == "-" {
        return path;
    }
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    path
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn slices_nest_by_their_dashes() {
        assert_eq!(slice_path("system.slice"), PathBuf::from("system.slice"));
        assert_eq!(
            slice_path("apps-edge.slice"),
            PathBuf::from("apps.slice/apps-edge.slice")
        );
        assert_eq!(slice_path("-.slice"), PathBuf::new());
    }

    fn consumer(ring: &str) -> Vec<Supervised> {
        vec![Supervised {
            ring: ring.into(),
            cgroup: PathBuf::from("apps/consumer"),
            populated: false,
            oom_killed: false,
        }]
    }

    fn populated(on: bool) -> CgroupEvent {
        CgroupEvent::Populated {
            path: PathBuf::from("/sys/fs/cgroup/apps/consumer"),
            populated: on,
        }
    }

    #[test]
    fn an_emptied_cgroup_is_an_exit_and_an_oom_kill_before_it_is_the_reason() {
        let mut supervised = consumer("app");
        let mut status = WatchStatus::default();
        apply(&populated(true), &mut supervised, &mut status);
        apply(&populated(false), &mut supervised, &mut status);
        let c = &status.consumers["app"];
        assert_eq!(
            (c.exits, c.oom_kills, c.last_gone),
            (1, 0, Some(Gone::Exit))
        );

        apply(&populated(true), &mut supervised, &mut status);
        let kill = CgroupEvent::Memory {
            path: PathBuf::from("/sys/fs/cgroup/apps/consumer"),
            deltas: [("oom_kill".to_string(), 1)].into(),
            totals: BTreeMap::new(),
            resets: BTreeSet::new(),
        };
        apply(&kill, &mut supervised, &mut status);
        apply(&populated(false), &mut supervised, &mut status);
        // Removed after it emptied: not a second departure.
        apply(
            &CgroupEvent::Removed {
                path: PathBuf::from("/sys/fs/cgroup/apps/consumer"),
            },
            &mut supervised,
            &mut status,
        );
        let c = &status.consumers["app"];
        assert_eq!(
            (c.exits, c.oom_kills, c.last_gone),
            (1, 1, Some(Gone::OomKill))
        );
        assert!(!c.populated);
    }

    #[test]
    fn events_of_other_cgroups_are_not_a_consumers() {
        let mut supervised = consumer("app");
        let mut status = WatchStatus::default();
        let other = CgroupEvent::Populated {
            path: PathBuf::from("/sys/fs/cgroup/apps/other"),
            populated: true,
        };
        apply(&other, &mut supervised, &mut status);
        assert!(status.consumers.is_empty());
    }
}
