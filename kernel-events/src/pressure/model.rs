//! What the pressure reader knows between readings: whether it reported a stall that has not
//! been relieved, what a fired trigger or a polled reading means given that, and the stall
//! totals a fired trigger is checked against.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::options::{PressureOptions, StallKind};
use crate::model::PressureAverages;

/// A change to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    Stalled,
    Relieved,
}

/// Whether a stall was reported and not yet relieved.
#[derive(Debug, Default)]
pub(super) struct Stall {
    stalled: bool,
}

impl Stall {
    /// A trigger fired: the kernel saw the threshold exceeded, which is always reported.
    pub(super) fn fired(&mut self) -> Report {
        self.stalled = true;
        Report::Stalled
    }

    /// A poll read `averages`. In poll mode, the 10 s average crossing the threshold is a stall
    /// (a trigger reports its own); in either mode, falling back under it is relief.
    pub(super) fn polled(
        &mut self,
        opts: &PressureOptions,
        averages: &PressureAverages,
        triggered: bool,
    ) -> Option<Report> {
        let current = match opts.kind {
            StallKind::Some => averages.some_avg10,
            StallKind::Full => averages.full_avg10,
        };
        let threshold = opts.stall.as_secs_f64() * 100.0 / opts.window.as_secs_f64();
        let above = current >= threshold;
        if above && !self.stalled && !triggered {
            self.stalled = true;
            Some(Report::Stalled)
        } else if !above && self.stalled {
            self.stalled = false;
            Some(Report::Relieved)
        } else {
            None
        }
    }

    /// The target went away: a stall, if any, ended with it.
    pub(super) fn reset(&mut self) {
        self.stalled = false;
    }
}

/// The stall total (µs, of the kind the trigger watches) at a few past readings, to check a
/// fired trigger against. A kernel may fire a trigger without its threshold being met: on
/// 6.18 a `full 500000 2000000` trigger just armed (on /proc/pressure/memory, and on the root
/// cgroup's memory.pressure) fired within a second of every daemon start while `full total` did
/// not grow at all. Taken as pressure, that made the daemon refuse connections at every start. A fire is real only if the total grew by at
/// least the stall threshold since a reading taken at least one window earlier, or since
/// arming when the trigger is younger than a window: a real fire means that much stall within
/// the window that ends at the fire, and that window starts after either reading.
#[derive(Debug, Default)]
pub(super) struct Totals {
    /// (when, total), oldest first; the first is the newest reading at least a window old, or
    /// the one taken at arming.
    samples: VecDeque<(Instant, u64)>,
}

impl Totals {
    /// A trigger was armed (again): what came before says nothing about it.
    pub(super) fn armed(&mut self, now: Instant, total: Option<u64>) {
        self.samples.clear();
        if let Some(total) = total {
            self.samples.push_back((now, total));
        }
    }

    /// A reading: kept while it may still be a fire's base.
    pub(super) fn record(&mut self, now: Instant, total: u64, window: Duration) {
        self.samples.push_back((now, total));
        // Drop the front while the next one is old enough to be the base: the front stays the
        // newest reading at least a window old.
        while self.samples.len() > 1 && now.saturating_duration_since(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
    }

    /// Whether a fire, with `total` read right after it, shows the threshold was met. Without
    /// any earlier reading (the one at arming failed), the kernel is taken at its word.
    pub(super) fn confirms(
        &self,
        now: Instant,
        total: u64,
        stall: Duration,
        window: Duration,
    ) -> bool {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= window)
            .or(self.samples.front());
        base.is_none_or(|(_, before)| total.saturating_sub(*before) >= stall.as_micros() as u64)
    }
}

/// The stall total the threshold applies to.
pub(super) fn total_of(kind: StallKind, averages: &PressureAverages) -> u64 {
    match kind {
        StallKind::Some => averages.some_total_us,
        StallKind::Full => averages.full_total_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fire_is_real_only_if_the_total_grew_by_the_threshold_within_a_window() {
        let window = Duration::from_secs(2);
        let stall = Duration::from_millis(500);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut totals = Totals::default();
        totals.armed(t0, Some(9_454_671));
        // The spurious fire seen here: 1 s after arming, the total unchanged.
        assert!(!totals.confirms(at(1000), 9_454_671, stall, window));
        // A real one within the first window: 600 ms of stall since arming.
        assert!(totals.confirms(at(1500), 10_054_671, stall, window));
        // Later, the base is the newest reading at least a window old.
        totals.record(at(5000), 10_100_000, window);
        totals.record(at(6000), 10_500_000, window);
        totals.record(at(7500), 10_550_000, window);
        // At 8 s the base is the 6 s reading (10.5 s of stall total): 450 ms since is not enough
        assert!(!totals.confirms(at(8000), 10_950_000, stall, window));
        // ... 500 ms is.
        assert!(totals.confirms(at(8000), 11_000_000, stall, window));
        // Readings that can no longer be a base are dropped.
        totals.record(at(9000), 11_000_000, window);
        assert!(totals.samples.len() <= 3, "{:?}", totals.samples);
        // Re-armed: only the new arming reading counts.
        totals.armed(at(20_000), Some(20_000_000));
        assert!(!totals.confirms(at(20_500), 20_100_000, stall, window));
        // No reading at arming: the kernel is believed.
        totals.armed(at(30_000), None);
        assert!(totals.confirms(at(30_100), 0, stall, window));
    }

    fn some_avg10(value: f64) -> PressureAverages {
        PressureAverages {
            some_avg10: value,
            ..PressureAverages::default()
        }
    }

    #[test]
    fn polling_reports_a_stall_once_and_its_relief_once() {
        // 150 ms in 2 s: the threshold is 7.5 %.
        let opts = PressureOptions::default();
        let mut stall = Stall::default();
        assert_eq!(stall.polled(&opts, &some_avg10(7.0), false), None);
        assert_eq!(
            stall.polled(&opts, &some_avg10(7.5), false),
            Some(Report::Stalled)
        );
        assert_eq!(stall.polled(&opts, &some_avg10(30.0), false), None);
        assert_eq!(
            stall.polled(&opts, &some_avg10(1.0), false),
            Some(Report::Relieved)
        );
        assert_eq!(stall.polled(&opts, &some_avg10(1.0), false), None);
    }

    #[test]
    fn with_a_trigger_the_poll_reports_only_relief_after_a_fire() {
        let opts = PressureOptions::default();
        let mut stall = Stall::default();
        assert_eq!(stall.polled(&opts, &some_avg10(50.0), true), None);
        assert_eq!(stall.fired(), Report::Stalled);
        assert_eq!(stall.polled(&opts, &some_avg10(50.0), true), None);
        assert_eq!(
            stall.polled(&opts, &some_avg10(0.0), true),
            Some(Report::Relieved)
        );
        stall.fired();
        stall.reset();
        assert_eq!(stall.polled(&opts, &some_avg10(0.0), true), None);
    }
}
