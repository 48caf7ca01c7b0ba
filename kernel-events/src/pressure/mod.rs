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
//!
//! A fired trigger is checked against the stall totals before it is reported: a kernel may
//! fire a trigger whose threshold was not met (`model::Totals` says when, and how it is told).
//!
//! The parts: `psi` (IO: arming the trigger, reading the averages) and `model` (whether a stall
//! is reported, and what a reading changes). This file drives them.

mod model;
mod options;
mod psi;

use std::fs::File;
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::cgroupfs;
use crate::error::{Error, Result};
use crate::model::{Batch, EventKind};
pub use crate::model::{PressureAverages, PressureEvent, PressureMode, PressureTarget};
use crate::sys::{self, Errno};
use model::{total_of, Report, Stall, Totals};
pub use options::{PressureOptions, StallKind};
use psi::{arm, read_averages};

pub(crate) struct PressureReader {
    opts: PressureOptions,
    /// The pressure file: /proc/pressure/memory or the cgroup's memory.pressure.
    path: PathBuf,
    /// `None` while the target cgroup is removed (the fd of a removed cgroup file reports an
    /// error forever: keeping it registered would wake us in a loop).
    file: Option<AsyncFd<File>>,
    mode: PressureMode,
    announced: bool,
    stall: Stall,
    /// Stall totals at past readings, to check a fired trigger against.
    totals: Totals,
    /// Reading buffer (grows only if a reading fills it).
    read_buf: Vec<u8>,
    next_poll: Instant,
}

impl PressureReader {
    pub(crate) fn new(mut opts: PressureOptions) -> Result<Self> {
        opts.validate()?;
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
        let mut reader = PressureReader {
            next_poll: Instant::now() + opts.poll_interval,
            opts,
            path,
            file: Some(file),
            mode,
            announced: false,
            stall: Stall::default(),
            totals: Totals::default(),
            read_buf: Vec::new(),
        };
        reader.note_armed();
        Ok(reader)
    }

    /// A trigger was armed (or polling started): the total now is what a fire is checked
    /// against until a reading a window old exists.
    fn note_armed(&mut self) {
        let total = self.file.as_ref().and_then(|file| {
            read_averages(file.get_ref(), &mut self.read_buf)
                .ok()
                .map(|a| total_of(self.opts.kind, &a))
        });
        self.totals.armed(Instant::now(), total);
    }

    /// The window a fire is checked over: the trigger's (rounded up by the kernel's rules), or
    /// the asked one when polling.
    fn window(&self) -> std::time::Duration {
        match self.mode {
            PressureMode::Trigger { window_us, .. } => std::time::Duration::from_micros(window_us),
            PressureMode::Poll { .. } => self.opts.window,
        }
    }

    pub(crate) fn mode(&self) -> &PressureMode {
        &self.mode
    }

    /// The pressure fd, if the target exists (a removed target's fd is closed).
    pub(crate) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.file.as_ref().map(|f| f.get_ref().as_raw_fd())
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
                self.stall.reset();
                self.next_poll = Instant::now() + self.opts.poll_interval;
                out.push(EventKind::Pressure(PressureEvent::TargetRemoved { target }));
                return Ok(());
            }
            Err(e) => {
                return Err(Error::io(format!("read {}", self.path.display()), e));
            }
        };
        let now = Instant::now();
        let total = total_of(self.opts.kind, &averages);
        let window = self.window();
        let real = !fired || self.totals.confirms(now, total, self.opts.stall, window);
        self.totals.record(now, total, window);
        let report = if fired {
            // A fire the totals do not bear out is the kernel's, not pressure: not reported.
            real.then(|| self.stall.fired())
        } else {
            self.next_poll = Instant::now() + self.opts.poll_interval;
            let triggered = matches!(self.mode, PressureMode::Trigger { .. });
            self.stall.polled(&self.opts, &averages, triggered)
        };
        match report {
            Some(Report::Stalled) => out.push(EventKind::Pressure(PressureEvent::Stalled {
                target,
                averages,
            })),
            Some(Report::Relieved) => out.push(EventKind::Pressure(PressureEvent::Relieved {
                target,
                averages,
            })),
            None => {}
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
                self.note_armed();
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
