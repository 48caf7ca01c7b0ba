//! `edgegw events`: print the stream, one human line (like `ip monitor` plus `inotifywait`) or
//! one JSON object per event.
//!
//! [`run`] is blocking: it builds its own current_thread tokio runtime, so the CLI can call it
//! from `main` without a runtime. Code that already runs inside a runtime calls [`run_async`].

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::cgroup::CgroupEvent;
use crate::error::{Error, Result};
use crate::files::FileEvent;
use crate::model::{Change, Event, EventKind};
use crate::net::{Address, Link, NetworkState, Route};
use crate::pressure::{PressureEvent, PressureMode, PressureOptions, PressureTarget};
use crate::stream::KernelEvents;

/// What `edgegw events` was asked to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorOptions {
    /// One JSON object per line instead of human lines (`--json`).
    pub json: bool,
    /// Files or trees to watch (`--path P`, repeatable): a directory is watched as a tree.
    pub paths: Vec<PathBuf>,
    /// Links, addresses and routes (`--netlink`).
    pub netlink: bool,
    /// cgroups to watch, with their children (`--cgroup C`, repeatable; inside the cgroup2
    /// mount or relative to it).
    pub cgroups: Vec<PathBuf>,
    /// Also watch memory pressure: of each `--cgroup` and of the system (`--pressure`).
    pub pressure: bool,
    /// Stop after this many events (`--count N`); run until the output closes otherwise.
    pub count: Option<u64>,
}

/// Runs the monitor on a new current_thread runtime until `count` events were printed, the
/// output is closed (a broken pipe is a normal end), or a reader fails.
pub fn run(opts: MonitorOptions, out: impl Write) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start tokio runtime", e))?;
    runtime.block_on(run_async(opts, out))
}

/// [`run`] for callers already inside a tokio runtime.
pub async fn run_async(opts: MonitorOptions, mut out: impl Write) -> Result<()> {
    if opts.paths.is_empty() && !opts.netlink && opts.cgroups.is_empty() && !opts.pressure {
        return Err(Error::InvalidOption(
            "nothing to watch: give --path, --netlink, --cgroup or --pressure".into(),
        ));
    }
    let mut builder = KernelEvents::builder();
    for p in &opts.paths {
        builder = builder.watch_path(p);
    }
    if opts.netlink {
        builder = builder.network(Default::default());
    }
    for cg in &opts.cgroups {
        builder = builder.cgroup(cg).cgroup_children(cg);
    }
    if opts.pressure {
        builder = builder.pressure(PressureOptions::default());
    }
    let mut events = builder.build().await?;
    let mut printed = 0u64;
    while opts.count.is_none_or(|n| printed < n) {
        let event = events.next().await?;
        let line = if opts.json {
            json_line(&event)?
        } else {
            human_line(&event, events.network())
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error::io("write event", e)),
        }
        printed += 1;
    }
    Ok(())
}

/// The event as one JSON object (derived through serde).
pub fn json_line(event: &Event) -> Result<String> {
    serde_json::to_string(event).map_err(|e| Error::io("encode event as JSON", io::Error::other(e)))
}

fn sign(change: Change) -> &'static str {
    match change {
        Change::Added => "+",
        Change::Changed => "~",
        Change::Removed => "-",
    }
}

/// The event as one human line: `seq source what details`. With the network model, interface
/// indexes are shown as names.
pub fn human_line(event: &Event, network: Option<&NetworkState>) -> String {
    let dev = |index: u32| -> String {
        network
            .and_then(|n| n.links.get(&index))
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    };
    let mut s = format!("{:>6} {:<8} ", event.seq, event.source.name());
    match &event.kind {
        EventKind::Resync { reason, .. } => {
            let _ = write!(s, "RESYNC reason={reason:?}");
        }
        EventKind::ResyncDone { .. } => s.push_str("RESYNC-DONE"),
        EventKind::File(FileEvent::Entry {
            change,
            path,
            identity,
        }) => {
            let word = match change {
                Change::Added => "CREATED",
                Change::Changed => "CHANGED",
                Change::Removed => "REMOVED",
            };
            let _ = write!(s, "{word} {}", path.display());
            if let Some(id) = identity {
                let _ = write!(
                    s,
                    " kind={:?} dev={} ino={} size={} mtime_ns={}",
                    id.kind, id.dev, id.ino, id.size, id.mtime_ns
                );
                if let Some(h) = id.hash {
                    let _ = write!(s, " fnv64={h:016x}");
                }
            }
        }
        EventKind::File(FileEvent::Degraded { path, reason }) => {
            let _ = write!(s, "DEGRADED {} ({reason})", path.display());
        }
        EventKind::File(FileEvent::Restored { path }) => {
            let _ = write!(s, "RESTORED {}", path.display());
        }
        EventKind::Link { change, link } => {
            let _ = write!(s, "{}link {}", sign(*change), link_text(link));
        }
        EventKind::Address { change, address } => {
            let _ = write!(s, "{}addr {}", sign(*change), address_text(address, &dev));
        }
        EventKind::Route { change, route } => {
            let _ = write!(s, "{}route {}", sign(*change), route_text(route, &dev));
        }
        EventKind::Cgroup(c) => match c {
            CgroupEvent::Populated { path, populated } => {
                let _ = write!(s, "{} populated={}", path.display(), u8::from(*populated));
            }
            CgroupEvent::Frozen { path, frozen } => {
                let _ = write!(s, "{} frozen={}", path.display(), u8::from(*frozen));
            }
            CgroupEvent::Memory {
                path,
                deltas,
                resets,
                ..
            } => {
                let _ = write!(s, "{} memory.events", path.display());
                for k in resets {
                    let _ = write!(s, " {k}=reset");
                }
                for (k, v) in deltas {
                    let _ = write!(s, " {k}+={v}");
                }
            }
            CgroupEvent::Removed { path } => {
                let _ = write!(s, "{} REMOVED", path.display());
            }
            CgroupEvent::Reappeared { path } => {
                let _ = write!(s, "{} REAPPEARED", path.display());
            }
            CgroupEvent::ChildAdded { child, .. } => {
                let _ = write!(s, "+child {}", child.display());
            }
            CgroupEvent::ChildRemoved { child, .. } => {
                let _ = write!(s, "-child {}", child.display());
            }
        },
        EventKind::Pressure(p) => {
            let target = |t: &PressureTarget| match t {
                PressureTarget::System => "system".to_string(),
                PressureTarget::Cgroup(p) => p.display().to_string(),
            };
            match p {
                PressureEvent::Mode { target: t, mode } => match mode {
                    PressureMode::Trigger {
                        stall_us,
                        window_us,
                    } => {
                        let _ = write!(
                            s,
                            "{} memory mode=trigger stall={stall_us}us window={window_us}us",
                            target(t)
                        );
                    }
                    PressureMode::Poll {
                        interval_ms,
                        reason,
                    } => {
                        let _ = write!(
                            s,
                            "{} memory mode=poll every {interval_ms}ms ({reason})",
                            target(t)
                        );
                    }
                },
                PressureEvent::Stalled {
                    target: t,
                    averages,
                } => {
                    let _ = write!(
                        s,
                        "{} memory STALLED some avg10={:.2} full avg10={:.2}",
                        target(t),
                        averages.some_avg10,
                        averages.full_avg10
                    );
                }
                PressureEvent::TargetRemoved { target: t } => {
                    let _ = write!(s, "{} memory pressure target REMOVED", target(t));
                }
                PressureEvent::Relieved {
                    target: t,
                    averages,
                } => {
                    let _ = write!(
                        s,
                        "{} memory relieved some avg10={:.2}",
                        target(t),
                        averages.some_avg10
                    );
                }
            }
        }
    }
    s
}

fn link_text(l: &Link) -> String {
    let mut s = format!("{}: {}", l.index, l.name);
    if let Some(kind) = &l.kind {
        let _ = write!(s, " type {kind}");
    }
    let _ = write!(s, " {}", if l.is_up() { "UP" } else { "DOWN" });
    if let Some(mtu) = l.mtu {
        let _ = write!(s, " mtu {mtu}");
    }
    if let Some(mac) = &l.mac {
        let _ = write!(s, " link {mac}");
    }
    s
}

fn address_text(a: &Address, dev: &dyn Fn(u32) -> String) -> String {
    let mut s = format!("{}/{} dev {}", a.address, a.prefix_len, dev(a.index));
    if let Some(peer) = a.peer {
        let _ = write!(s, " peer {peer}");
    }
    let _ = write!(s, " scope {}", a.scope);
    if let Some(label) = &a.label {
        let _ = write!(s, " label {label}");
    }
    s
}

fn route_text(r: &Route, dev: &dyn Fn(u32) -> String) -> String {
    let mut s = match r.dst {
        Some(dst) => format!("{dst}/{}", r.dst_len),
        None => "default".to_string(),
    };
    for hop in &r.next_hops {
        if let Some(gw) = hop.gateway {
            let _ = write!(s, " via {gw}");
        }
        if let Some(oif) = hop.oif {
            let _ = write!(s, " dev {}", dev(oif));
        }
    }
    let _ = write!(
        s,
        " table {} metric {} type {} proto {}",
        r.table, r.priority, r.route_type, r.protocol
    );
    if let Some(src) = r.prefsrc {
        let _ = write!(s, " src {src}");
    }
    s
}
