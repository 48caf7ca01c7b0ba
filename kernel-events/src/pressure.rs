//! Memory pressure (PSI): a kernel trigger where allowed, a slow poll of the averages otherwise.
//!
//! A trigger is armed by writing "some|full <stall µs> <window µs>" to `memory.pressure` (of a
//! cgroup, or /proc/pressure/memory for the system); the kernel then wakes pollers with EPOLLPRI
//! at most once per window while the stall threshold is exceeded. Without CAP_SYS_RESOURCE the
//! kernel refuses (EINVAL) windows that are not a multiple of 2 s, so a refused window is retried
//! rounded up to the next 2 s multiple; if that is refused too, or PSI is absent, the averages are
//! polled. The mode in force is reported as the reader's first event and by
//! [`crate::KernelEvents::pressure_mode`]. In either mode a slow safety poll of the averages
//! notices the end of a stall (`Relieved`), which triggers do not signal.
//!
//! A target cgroup that is removed (systemd does so on every restart of a service) is reported
//! once (`TargetRemoved`) and its fd closed: the fd of a removed cgroup file reports an error
//! forever. The poll then looks for the cgroup's return and arms it again (a new `Mode`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::cgroupfs;
use crate::error::{Error, Result};
use crate::model::{Batch, EventKind};
pub use crate::model::{PressureAverages, PressureEvent, PressureMode, PressureTarget};
use crate::sys::{self, Errno};

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

pub(crate) struct PressureReader {
    opts: PressureOptions,
    /// The pressure file: /proc/pressure/memory or the cgroup's memory.pressure.
    path: PathBuf,
    /// `None` while the target cgroup is removed (the fd of a removed cgroup file reports an
    /// error forever: keeping it registered would wake us in a loop).
    file: Option<AsyncFd<File>>,
    mode: PressureMode,
    announced: bool,
    stalled: bool,
    /// Reading buffer (grows only if a reading fills it).
    read_buf: Vec<u8>,
    next_poll: Instant,
}

/// Shortest poll period accepted: the averages change every 2 s in the kernel, and the poll
/// also paces the check for a removed target's return.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

impl PressureReader {
    pub(crate) fn new(mut opts: PressureOptions) -> Result<Self> {
        if opts.stall.is_zero() || opts.stall > opts.window {
            return Err(Error::InvalidOption(
                "pressure stall must be non-zero and at most the window".into(),
            ));
        }
        if opts.poll_interval < MIN_POLL_INTERVAL {
            return Err(Error::InvalidOption(format!(
                "pressure poll_interval must be at least {MIN_POLL_INTERVAL:?}"
            )));
        }
        let path = match &opts.target {
            PressureTarget::System => PathBuf::from("/proc/pressure/memory"),
            PressureTarget::Cgroup(cg) => {
                let mount = cgroupfs::cgroup2_mount()?;
                let dir = cgroupfs::resolve(&mount, cg)?;
                opts.target = PressureTarget::Cgroup(dir.clone());
                dir.join("memory.pressure")
            }
        };
        let (file, mode) = arm(&opts, &path)?;
        Ok(PressureReader {
            next_poll: Instant::now() + opts.poll_interval,
            opts,
            path,
            file: Some(file),
            mode,
            announced: false,
            stalled: false,
            read_buf: Vec::new(),
        })
    }

    pub(crate) fn mode(&self) -> &PressureMode {
        &self.mode
    }

    /// The pressure fd, if the target exists (a removed target's fd is closed).
    pub(crate) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.get_ref().as_raw_fd())
    }

    /// Reads the averages afresh.
    fn threshold_percent(&self) -> f64 {
        self.opts.stall.as_secs_f64() * 100.0 / self.opts.window.as_secs_f64()
    }

    fn current(&self, a: &PressureAverages) -> f64 {
        match self.opts.kind {
            StallKind::Some => a.some_avg10,
            StallKind::Full => a.full_avg10,
        }
    }

    /// Waits for the trigger or the poll timer; returns whether the trigger fired. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Result<bool> {
        if !self.announced {
            return Ok(false);
        }
        let triggered = matches!(self.mode, PressureMode::Trigger { .. });
        let fired = match &self.file {
            Some(file) => tokio::select! {
                guard = file.ready(Interest::PRIORITY), if triggered => {
                    let mut guard = guard.map_err(|e| {
                        Error::io(format!("wait for pressure trigger on {}", self.path.display()), e)
                    })?;
                    guard.clear_ready();
                    true
                }
                _ = tokio::time::sleep_until(self.next_poll) => false,
            },
            // The target is gone: only the timer, to look for its return.
            None => {
                tokio::time::sleep_until(self.next_poll).await;
                false
            }
        };
        Ok(fired)
    }

    /// Reports the mode, a fired trigger, what the poll found, or the target's removal and
    /// return.
    pub(crate) fn handle(&mut self, fired: bool, out: &mut Batch) -> Result<()> {
        let target = self.opts.target.clone();
        if !self.announced {
            self.announced = true;
            out.push(EventKind::Pressure(PressureEvent::Mode {
                target,
                mode: self.mode.clone(),
            }));
            return Ok(());
        }
        if !fired && Instant::now() < self.next_poll {
            return Ok(());
        }
        let Some(file) = &self.file else {
            self.next_poll = Instant::now() + self.opts.poll_interval;
            return self.rearm_if_back(out);
        };
        let averages = match read_averages(file.get_ref(), &mut self.read_buf) {
            Ok(a) => a,
            Err(e) if sys::errno(&e) == Some(Errno::ENODEV) => {
                // The cgroup was removed: its trigger went with it.
                self.file = None;
                self.stalled = false;
                self.next_poll = Instant::now() + self.opts.poll_interval;
                out.push(EventKind::Pressure(PressureEvent::TargetRemoved { target }));
                return Ok(());
            }
            Err(e) => {
                return Err(Error::io(format!("read {}", self.path.display()), e));
            }
        };
        let triggered = matches!(self.mode, PressureMode::Trigger { .. });
        if fired {
            self.stalled = true;
            out.push(EventKind::Pressure(PressureEvent::Stalled {
                target,
                averages,
            }));
            return Ok(());
        }
        self.next_poll = Instant::now() + self.opts.poll_interval;
        let above = self.current(&averages) >= self.threshold_percent();
        if above && !self.stalled && !triggered {
            self.stalled = true;
            out.push(EventKind::Pressure(PressureEvent::Stalled {
                target,
                averages,
            }));
        } else if !above && self.stalled {
            self.stalled = false;
            out.push(EventKind::Pressure(PressureEvent::Relieved {
                target,
                averages,
            }));
        }
        Ok(())
    }

    /// The target cgroup was removed: if it exists again, arms it again and reports the mode.
    fn rearm_if_back(&mut self, out: &mut Batch) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        match arm(&self.opts, &self.path) {
            Ok((file, mode)) => {
                self.file = Some(file);
                self.mode = mode.clone();
                out.push(EventKind::Pressure(PressureEvent::Mode {
                    target: self.opts.target.clone(),
                    mode,
                }));
                Ok(())
            }
            // Gone again meanwhile: the next poll looks again.
            Err(Error::Io { source, .. })
                if matches!(sys::errno(&source), Some(Errno::ENOENT | Errno::ENODEV)) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Opens the pressure file and arms a trigger (the asked window, then rounded up to 2 s), or
/// falls back to polling; registers the fd with tokio.
fn arm(opts: &PressureOptions, path: &Path) -> Result<(AsyncFd<File>, PressureMode)> {
    let open = |write: bool| {
        cgroupfs::open_control_file(path, write)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))
    };
    let stall_us = opts.stall.as_micros() as u64;
    let asked_us = opts.window.as_micros() as u64;
    let two_s = 2_000_000;
    let mut windows = vec![asked_us];
    if !asked_us.is_multiple_of(two_s) {
        windows.push(asked_us.div_ceil(two_s) * two_s);
    }
    let mut last_error = String::new();
    let mut armed = None;
    for window_us in windows {
        let mut file = open(true)?;
        let kind = match opts.kind {
            StallKind::Some => "some",
            StallKind::Full => "full",
        };
        match file.write_all(format!("{kind} {stall_us} {window_us}\0").as_bytes()) {
            Ok(()) => {
                armed = Some((file, window_us));
                break;
            }
            Err(e) => last_error = format!("trigger \"{kind} {stall_us} {window_us}\": {e}"),
        }
    }
    let (file, mode) = match armed {
        Some((file, window_us)) => (
            file,
            PressureMode::Trigger {
                stall_us,
                window_us,
            },
        ),
        None => (
            open(false)?,
            PressureMode::Poll {
                interval_ms: opts.poll_interval.as_millis() as u64,
                reason: last_error,
            },
        ),
    };
    let file = crate::sys::register(file, Interest::PRIORITY)
        .map_err(|e| Error::io(format!("register {} with the runtime", path.display()), e))?;
    Ok((file, mode))
}

/// Reads the averages afresh, in one snapshot.
fn read_averages(file: &File, buf: &mut Vec<u8>) -> std::io::Result<PressureAverages> {
    let n = cgroupfs::read_snapshot(file, buf)?;
    Ok(parse_averages(&String::from_utf8_lossy(&buf[..n])))
}

/// Parses "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull ...".
fn parse_averages(text: &str) -> PressureAverages {
    let mut a = PressureAverages::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let which = fields.next();
        for field in fields {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            match (which, k) {
                (Some("some"), "avg10") => a.some_avg10 = v.parse().unwrap_or(0.0),
                (Some("some"), "avg60") => a.some_avg60 = v.parse().unwrap_or(0.0),
                (Some("some"), "avg300") => a.some_avg300 = v.parse().unwrap_or(0.0),
                (Some("some"), "total") => a.some_total_us = v.parse().unwrap_or(0),
                (Some("full"), "avg10") => a.full_avg10 = v.parse().unwrap_or(0.0),
                (Some("full"), "avg60") => a.full_avg60 = v.parse().unwrap_or(0.0),
                (Some("full"), "avg300") => a.full_avg300 = v.parse().unwrap_or(0.0),
                (Some("full"), "total") => a.full_total_us = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_parse_both_lines() {
        let a = parse_averages(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\n\
             full avg10=0.75 avg60=0.00 avg300=0.00 total=99\n",
        );
        assert_eq!(a.some_avg10, 1.5);
        assert_eq!(a.some_total_us, 1234);
        assert_eq!(a.full_avg10, 0.75);
        assert_eq!(a.full_total_us, 99);
    }
}
