//! What the daemon tells systemd (`sd_notify(3)`, through the `sd-notify` crate): `READY=1` once
//! its listeners and rings are up, `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts and
//! `READY=1` when it ends, `STOPPING=1`, a one-line `STATUS=`, and `WATCHDOG=1` while the data
//! path answers (see [`Watchdog`]). Without `$NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to systemd, if it listens.
#[derive(Debug)]
pub struct Notifier {
    /// `$NOTIFY_SOCKET` was set at start-up.
    listening: bool,
    /// A failed send was logged already (logged once: the journal must not fill with it).
    failed: bool,
}

impl Notifier {
    /// Whether systemd listens is read once, here.
    pub fn from_env() -> Notifier {
        Notifier {
            listening: std::env::var_os("NOTIFY_SOCKET").is_some(),
            failed: false,
        }
    }

    /// The listeners and rings are up (at start-up, and at the end of each reload).
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts: systemd counts the service as reloading until the next `READY=1`.
    pub fn reloading(&mut self) {
        let Ok(now) = NotifyState::monotonic_usec_now() else {
            return;
        };
        self.send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading"),
        ]);
    }

    /// The daemon is stopping.
    pub fn stopping(&mut self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// A new status line.
    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Pets the watchdog.
    pub fn watchdog(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&mut self, states: &[NotifyState]) {
        if !self.listening {
            return;
        }
        match sd_notify::notify(states) {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                log::warn!("cannot notify systemd: {e}");
            }
            Err(_) => {}
        }
    }
}

/// systemd's watchdog, fed only while the data path works: the control loop checks every half
/// interval that the TLS thread's heartbeat counter (it ticks every 500 ms on that thread's own
/// runtime) moved since the last check, and only then sends `WATCHDOG=1`. A stalled control
/// loop sends nothing either. So a TLS thread stuck in a loop or a blocking call gets the unit
/// restarted by `WatchdogSec=` (and `Restart=`).
#[derive(Debug)]
pub struct Watchdog {
    /// Half of `$WATCHDOG_USEC`: how often to check and pet.
    pub period: Duration,
    last_heartbeat: u64,
    stalled: bool,
}

impl Watchdog {
    /// The watchdog systemd asked for (`$WATCHDOG_USEC`, for this pid), if any.
    pub fn from_env() -> Option<Watchdog> {
        let interval = sd_notify::watchdog_enabled()?;
        Some(Watchdog::new(interval))
    }

    fn new(interval: Duration) -> Watchdog {
        Watchdog {
            // The TLS thread's heartbeat ticks every 500 ms: a period shorter than that would
            // see it still now and then; WatchdogSec= below 2 s is refused by the unit's docs.
            period: (interval / 2).max(Duration::from_millis(1000)),
            last_heartbeat: 0,
            stalled: false,
        }
    }

    /// Whether the data path answered since the last check (`heartbeat`: the TLS thread's
    /// counter now). Logs a stall once, and its end.
    pub fn check(&mut self, heartbeat: u64) -> bool {
        let moved = heartbeat != self.last_heartbeat;
        self.last_heartbeat = heartbeat;
        if !moved && !self.stalled {
            log::error!(
                "the TLS thread has not answered for {:?}: not petting the watchdog",
                self.period
            );
        } else if moved && self.stalled {
            log::warn!("the TLS thread answers again");
        }
        self.stalled = !moved;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_petted_only_while_the_heartbeat_moves() {
        let mut watchdog = Watchdog::new(Duration::from_secs(10));
        assert_eq!(watchdog.period, Duration::from_secs(5));
        assert!(watchdog.check(3));
        assert!(watchdog.check(7));
        assert!(!watchdog.check(7), "the TLS thread did not tick: no pet");
        assert!(!watchdog.check(7));
        assert!(watchdog.check(8), "it answers again");
    }

    #[test]
    fn a_short_interval_still_leaves_the_heartbeat_time_to_tick() {
        assert_eq!(
            Watchdog::new(Duration::from_millis(500)).period,
            Duration::from_secs(1)
        );
    }
}
