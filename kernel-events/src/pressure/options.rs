//! What the pressure reader is asked to watch, and how.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::PressureTarget;

/// Which PSI line the threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StallKind {
    /// Some task stalled on memory.
    Some,
    /// All non-idle tasks stalled at once.
    Full,
}

/// Tuning of the pressure reader.
#[derive(Debug, Clone)]
pub struct PressureOptions {
    /// Whose pressure.
    pub target: PressureTarget,
    /// `some` or `full`.
    pub kind: StallKind,
    /// Stall time within `window` that counts as pressure (default 150 ms).
    pub stall: Duration,
    /// Trigger window (default 2 s, which the kernel accepts without CAP_SYS_RESOURCE).
    pub window: Duration,
    /// Period of the averages poll: the fallback's sampling period, and the safety poll that
    /// notices relief in trigger mode (default 5 s).
    pub poll_interval: Duration,
}

impl Default for PressureOptions {
    fn default() -> Self {
        PressureOptions {
            target: PressureTarget::System,
            kind: StallKind::Some,
            stall: Duration::from_millis(150),
            window: Duration::from_secs(2),
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// Shortest poll period accepted: the averages change every 2 s in the kernel, and the poll
/// also paces the check for a removed target's return.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl PressureOptions {
    /// Checks that the options are consistent (what `build` checks before it opens anything).
    pub fn validate(&self) -> Result<()> {
        if self.stall.is_zero() || self.stall > self.window {
            return Err(Error::InvalidOption(
                "pressure stall must be non-zero and at most the window".into(),
            ));
        }
        if self.poll_interval < MIN_POLL_INTERVAL {
            return Err(Error::InvalidOption(format!(
                "pressure poll_interval must be at least {MIN_POLL_INTERVAL:?}"
            )));
        }
        Ok(())
    }
}
