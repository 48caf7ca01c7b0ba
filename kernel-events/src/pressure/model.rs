//! What the pressure reader knows between readings: whether it reported a stall that has not
//! been relieved, and what a fired trigger or a polled reading means given that.

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

#[cfg(test)]
mod tests {
    use super::*;

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
