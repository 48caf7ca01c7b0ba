//! The pressure reader's IO: arming a PSI trigger (or falling back to polling), and reading the
//! averages.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::options::{PressureOptions, StallKind};
use crate::cgroupfs;
use crate::error::{Error, Result};
use crate::model::{PressureAverages, PressureMode};

/// Opens the pressure file and arms a trigger (the asked window, then rounded up to 2 s), or
/// falls back to polling; registers the fd with tokio.
pub(super) fn arm(opts: &PressureOptions, path: &Path) -> Result<(AsyncFd<File>, PressureMode)> {
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
        // A pressure file we may read but not write (a read-only cgroup2 mount, a delegated
        // cgroup whose file is not ours, EROFS/EACCES/EPERM) takes no trigger: poll it.
        let mut file = match cgroupfs::open_control_file(path, true) {
            Ok(file) => file,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                last_error = format!("open {} for writing: {e}", path.display());
                break;
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
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
pub(super) fn read_averages(file: &File, buf: &mut Vec<u8>) -> std::io::Result<PressureAverages> {
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

    /// Unmounts a test mount, also when the test fails.
    struct Unmount(std::path::PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    #[ignore = "needs root: mounts cgroup2 read-only"]
    fn a_pressure_file_that_cannot_be_opened_for_writing_is_polled() {
        let dir = std::env::temp_dir().join(format!("psi-ro-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mount = |args: &[&str]| {
            let status = std::process::Command::new("mount")
                .args(args)
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "mount {args:?} failed");
        };
        mount(&["-t", "cgroup2", "none"]);
        let _unmount = Unmount(dir.clone());
        // Read-only for this mount only: the file opens for reading, EROFS for writing.
        mount(&["-o", "remount,bind,ro"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let file = dir.join("memory.pressure");
        let (fd, mode) = arm(&PressureOptions::default(), &file).expect("falls back to polling");
        match mode {
            PressureMode::Poll { reason, .. } => {
                assert!(reason.contains("for writing"), "reason: {reason}")
            }
            other => panic!("a read-only file armed a trigger: {other:?}"),
        }
        read_averages(fd.get_ref(), &mut Vec::new()).expect("the averages can be read");
    }

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
