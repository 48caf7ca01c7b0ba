//! What the pressure source reports: whose memory pressure, how it is watched, and the PSI
//! averages read.

use std::fmt;
use std::path::PathBuf;

/// Whose memory pressure to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PressureTarget {
    /// The whole system: /proc/pressure/memory.
    System,
    /// One cgroup (path inside the cgroup2 mount, or relative to it): its memory.pressure.
    Cgroup(PathBuf),
}

/// How the reader learns about pressure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "mode", rename_all = "snake_case"))]
pub enum PressureMode {
    /// A kernel trigger is armed.
    Trigger {
        /// Stall threshold, µs.
        stall_us: u64,
        /// Window actually armed, µs (rounded up to 2 s multiples if the asked one was refused).
        window_us: u64,
    },
    /// The averages are polled because the trigger was refused.
    Poll {
        /// Polling period, ms.
        interval_ms: u64,
        /// Why no trigger: the kernel's error.
        reason: String,
    },
}

/// PSI averages (percent) and total stall time (µs) for `some` and `full`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PressureAverages {
    /// `some avg10`.
    pub some_avg10: f64,
    /// `some avg60`.
    pub some_avg60: f64,
    /// `some avg300`.
    pub some_avg300: f64,
    /// `some total`, µs.
    pub some_total_us: u64,
    /// `full avg10`.
    pub full_avg10: f64,
    /// `full avg60`.
    pub full_avg60: f64,
    /// `full avg300`.
    pub full_avg300: f64,
    /// `full total`, µs.
    pub full_total_us: u64,
}

/// A pressure change.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PressureEvent {
    /// The reader's mode (first event of the source).
    Mode {
        /// Whose pressure.
        target: PressureTarget,
        /// Trigger or poll.
        mode: PressureMode,
    },
    /// The stall threshold was exceeded (trigger fired, or the polled average crossed it).
    Stalled {
        /// Whose pressure.
        target: PressureTarget,
        /// The averages read right after.
        averages: PressureAverages,
    },
    /// The polled 10 s average fell back under the threshold.
    Relieved {
        /// Whose pressure.
        target: PressureTarget,
        /// The averages read.
        averages: PressureAverages,
    },
    /// The target cgroup was removed (reported once). Its return is looked for every
    /// `poll_interval`; when it exists again it is armed again and a new `Mode` follows.
    TargetRemoved {
        /// Whose pressure.
        target: PressureTarget,
    },
}

/// `system`, or the cgroup's path.
impl fmt::Display for PressureTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PressureTarget::System => f.write_str("system"),
            PressureTarget::Cgroup(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `system memory mode=trigger stall=150000us window=2000000us`,
/// `system memory STALLED some avg10=12.50 full avg10=4.00`, ...
impl fmt::Display for PressureEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PressureEvent::Mode { target, mode } => match mode {
                PressureMode::Trigger {
                    stall_us,
                    window_us,
                } => write!(
                    f,
                    "{target} memory mode=trigger stall={stall_us}us window={window_us}us"
                ),
                PressureMode::Poll {
                    interval_ms,
                    reason,
                } => write!(
                    f,
                    "{target} memory mode=poll every {interval_ms}ms ({reason})"
                ),
            },
            PressureEvent::Stalled { target, averages } => write!(
                f,
                "{target} memory STALLED some avg10={:.2} full avg10={:.2}",
                averages.some_avg10, averages.full_avg10
            ),
            PressureEvent::TargetRemoved { target } => {
                write!(f, "{target} memory pressure target REMOVED")
            }
            PressureEvent::Relieved { target, averages } => write!(
                f,
                "{target} memory relieved some avg10={:.2}",
                averages.some_avg10
            ),
        }
    }
}
