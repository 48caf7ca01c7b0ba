//! Memory pressure of the daemon's cgroup, and the load shedding it drives.
//!
//! The reader is a PSI trigger on the cgroup's `memory.pressure` where the kernel accepts one
//! and a poll of its averages where it does not (no write access, an unprivileged window, a
//! kernel without triggers); it reports a stall (`Stalled`) and, from the slow poll that runs in
//! both modes, its end (`Relieved`). [`Shedding`] turns those into two edges: on the first stall
//! the daemon stops taking connections (the TLS thread closes each new one at once) and gives
//! back free heap; once pressure stayed low for `resume_after` (a stall meanwhile starts the
//! wait over) it takes them again. Both edges are logged, and the state is in the status.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use edgegw_kernel_events::pressure::{
    PressureEvent, PressureMode, PressureOptions, PressureTarget, StallKind,
};
use edgegw_kernel_events::{EventKind, KernelEvents};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{lock, Feed, WatchHandle, WatchStatus};
use crate::config::{PressureCgroup, PressureConfig};
use crate::gateway::Stats;

/// The pressure part of the status.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PressureStatus {
    /// Whose pressure is watched (`system` or the cgroup's path), once the reader runs.
    pub target: Option<String>,
    /// How: `trigger`, or `poll` with the kernel's reason for refusing a trigger.
    pub mode: Option<String>,
    /// Why pressure is not watched, if it is not.
    pub error: Option<String>,
    /// New connections are refused now.
    pub shedding: bool,
    /// Stalls reported.
    pub stalls: u64,
    /// Reliefs reported.
    pub reliefs: u64,
    /// Times shedding started.
    pub episodes: u64,
    /// The 10 s `some` average at the last stall or relief, percent.
    pub some_avg10: f64,
}

/// Whether the daemon sheds load, and when it may stop.
#[derive(Debug)]
pub struct Shedding {
    /// `[pressure] shed`: off, events are counted and nothing else.
    enabled: bool,
    resume_after: Duration,
    on: bool,
    /// Set while shedding once pressure was reported low: when to resume.
    resume_at: Option<Instant>,
}

impl Shedding {
    /// Not shedding; resumes `resume_after` after relief.
    pub fn new(resume_after: Duration) -> Shedding {
        Shedding {
            enabled: true,
            resume_after,
            on: false,
            resume_at: None,
        }
    }

    /// A config is in force: shedding on or off, and the wait (a wait under way keeps its
    /// end). Turned off while shedding, the daemon accepts again at once.
    pub fn configure(
        &mut self,
        enabled: bool,
        resume_after: Duration,
        stats: &Stats,
        status: &Mutex<WatchStatus>,
    ) {
        self.enabled = enabled;
        self.resume_after = resume_after;
        if !enabled && self.on {
            self.stop(stats, status);
            log::info!("load shedding turned off: accepting connections again");
        }
    }

    fn stop(&mut self, stats: &Stats, status: &Mutex<WatchStatus>) {
        self.on = false;
        self.resume_at = None;
        stats.shedding.store(0, Ordering::Relaxed);
        lock(status).pressure.shedding = false;
    }

    /// Whether the daemon sheds load now.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// When shedding ends if nothing else happens.
    pub fn resume_at(&self) -> Option<Instant> {
        self.resume_at
    }

    /// Applies a pressure event: a stall starts shedding (or restarts the wait for its end),
    /// relief starts the wait.
    pub fn on_event(
        &mut self,
        event: &PressureEvent,
        now: Instant,
        stats: &Stats,
        status: &Mutex<WatchStatus>,
    ) {
        let mut status = lock(status);
        let status = &mut status.pressure;
        match event {
            PressureEvent::Mode { target, mode } => {
                status.target = Some(target.to_string());
                status.error = None;
                status.mode = Some(match mode {
                    PressureMode::Trigger { .. } => "trigger".to_string(),
                    PressureMode::Poll { reason, .. } => format!("poll ({reason})"),
                });
                log::info!("memory pressure: watching {event}");
            }
            PressureEvent::Stalled { averages, .. } => {
                status.stalls += 1;
                status.some_avg10 = averages.some_avg10;
                self.resume_at = None;
                if self.enabled && !self.on {
                    self.on = true;
                    status.shedding = true;
                    status.episodes += 1;
                    stats.shedding.store(1, Ordering::Relaxed);
                    let trimmed = crate::sys::trim_heap();
                    log::warn!(
                        "memory pressure ({event}): refusing new connections until it stays low \
                         for {:?}; free heap given back: {trimmed}",
                        self.resume_after
                    );
                }
            }
            PressureEvent::Relieved { averages, .. } => {
                status.reliefs += 1;
                status.some_avg10 = averages.some_avg10;
                if self.on && self.resume_at.is_none() {
                    self.resume_at = Some(now + self.resume_after);
                }
            }
            PressureEvent::TargetRemoved { .. } => {
                log::warn!("memory pressure: {event}; looking for it again");
                status.mode = None;
            }
            _ => {}
        }
    }

    /// Ends shedding if pressure stayed low long enough.
    pub fn resume_if_due(&mut self, now: Instant, stats: &Stats, status: &Mutex<WatchStatus>) {
        if !self.on || self.resume_at.is_none_or(|at| now < at) {
            return;
        }
        self.stop(stats, status);
        log::info!(
            "memory pressure stayed low for {:?}: accepting connections again",
            self.resume_after
        );
    }
}

/// The PSI target `config` names: the daemon's own cgroup is read from /proc/self/cgroup.
fn target(config: &PressureConfig) -> std::io::Result<PressureTarget> {
    Ok(match &config.cgroup {
        PressureCgroup::System => PressureTarget::System,
        PressureCgroup::Path(path) => PressureTarget::Cgroup(path.clone()),
        PressureCgroup::Own => PressureTarget::Cgroup(own_cgroup()?),
    })
}

/// The daemon's cgroup in the cgroup2 hierarchy (the `0::` line), relative to its mount.
fn own_cgroup() -> std::io::Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_start_matches('/')))
        .ok_or_else(|| std::io::Error::other("/proc/self/cgroup has no cgroup2 (0::) line"))
}

/// Starts the pressure reader; its events go to the feed.
pub(super) fn spawn(config: &PressureConfig, handle: WatchHandle) -> JoinHandle<()> {
    let config = config.clone();
    tokio::spawn(async move {
        if let Err(e) = watch(&config, &handle).await {
            log::warn!("memory pressure is not watched, no load shedding: {e}");
            lock(&handle.status).pressure.error = Some(e);
        }
    })
}

async fn watch(config: &PressureConfig, handle: &WatchHandle) -> Result<(), String> {
    let options = PressureOptions {
        target: target(config).map_err(|e| format!("find the daemon's cgroup: {e}"))?,
        kind: if config.full {
            StallKind::Full
        } else {
            StallKind::Some
        },
        stall: config.stall,
        window: config.window,
        poll_interval: config.poll_interval,
    };
    let mut events = KernelEvents::builder()
        .pressure(options)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let event = events.next().await.map_err(|e| e.to_string())?;
        if let EventKind::Pressure(event) = event.kind {
            if !handle.inject(Feed::Pressure(event)) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use edgegw_kernel_events::pressure::PressureAverages;

    use super::*;

    fn stalled() -> PressureEvent {
        PressureEvent::Stalled {
            target: PressureTarget::System,
            averages: PressureAverages {
                some_avg10: 40.0,
                ..PressureAverages::default()
            },
        }
    }

    fn relieved() -> PressureEvent {
        PressureEvent::Relieved {
            target: PressureTarget::System,
            averages: PressureAverages::default(),
        }
    }

    #[test]
    fn a_stall_sheds_until_pressure_stays_low_for_resume_after() {
        let stats = Stats::default();
        let status = Mutex::new(WatchStatus::default());
        let mut shedding = Shedding::new(Duration::from_secs(10));
        let mut now = Instant::now();
        shedding.on_event(&stalled(), now, &stats, &status);
        assert_eq!(stats.shedding.load(Ordering::Relaxed), 1);
        assert!(lock(&status).pressure.shedding);
        assert_eq!(shedding.resume_at(), None, "no end while pressure lasts");

        shedding.on_event(&relieved(), now, &stats, &status);
        let first_end = shedding.resume_at().expect("relief starts the wait");
        now += Duration::from_secs(5);
        shedding.resume_if_due(now, &stats, &status);
        assert_eq!(
            stats.shedding.load(Ordering::Relaxed),
            1,
            "not low long enough"
        );

        // A stall during the wait starts it over.
        shedding.on_event(&stalled(), now, &stats, &status);
        assert_eq!(shedding.resume_at(), None);
        shedding.on_event(&relieved(), now, &stats, &status);
        assert!(shedding.resume_at().unwrap() > first_end);
        now += Duration::from_secs(10);
        shedding.resume_if_due(now, &stats, &status);
        assert_eq!(stats.shedding.load(Ordering::Relaxed), 0);
        let status = lock(&status).pressure.clone();
        assert!(!status.shedding);
        assert_eq!((status.stalls, status.reliefs, status.episodes), (2, 2, 1));
    }

    #[test]
    fn relief_without_a_stall_changes_nothing() {
        let stats = Stats::default();
        let status = Mutex::new(WatchStatus::default());
        let mut shedding = Shedding::new(Duration::from_secs(1));
        let now = Instant::now();
        shedding.on_event(&relieved(), now, &stats, &status);
        assert_eq!(shedding.resume_at(), None);
        assert_eq!(stats.shedding.load(Ordering::Relaxed), 0);
    }
}
