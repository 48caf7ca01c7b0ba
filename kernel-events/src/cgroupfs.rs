//! The cgroup2 file system as the cgroup and pressure sources use it: where it is mounted,
//! which paths lie inside it, and how its control files (and the PSI files, which work the same
//! way) are opened and read.
//!
//! A control file is read whole, in one `pread` at offset 0: the kernel renders the file when it
//! is read, so one call is one snapshot, while pieces read at different offsets would be
//! different snapshots. A change is signalled with EPOLLPRI on an open fd, so the files are
//! opened non-blocking and kept open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::{Error, Result};

/// The mount point of the cgroup2 file system, from /proc/self/mountinfo (never hard-coded:
/// it is /sys/fs/cgroup on unified hosts and /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    find_cgroup2(&text).ok_or(Error::NoCgroup2Mount)
}

/// Parses mountinfo: the mount point is field 5; the file system type follows the " - ".
fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as three octal digits.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves a cgroup given as a path inside the mount (absolute) or relative to the mount
/// (e.g. "system.slice/edgegw.service"). It must exist and lie inside the mount.
pub(crate) fn resolve(mount: &Path, cgroup: &Path) -> Result<PathBuf> {
    let joined = if cgroup.is_absolute() {
        cgroup.to_path_buf()
    } else {
        mount.join(cgroup)
    };
    let outside = || Error::OutsideCgroup2 {
        path: cgroup.to_path_buf(),
        mount: mount.to_path_buf(),
    };
    let canonical = std::fs::canonicalize(&joined).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && !joined.starts_with(mount) {
            outside()
        } else {
            Error::io(format!("resolve cgroup {}", joined.display()), e)
        }
    })?;
    let mount = std::fs::canonicalize(mount)
        .map_err(|e| Error::io(format!("resolve cgroup2 mount {}", mount.display()), e))?;
    if !canonical.starts_with(&mount) || !canonical.is_dir() {
        return Err(outside());
    }
    Ok(canonical)
}

/// Opens a control file (or a PSI file) to read and to poll for EPOLLPRI, and to write when
/// `write` (arming a PSI trigger): non-blocking and close-on-exec.
pub(crate) fn open_control_file(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Largest reading accepted. Today's files are under 200 bytes; a file that fills this much is
/// not one we understand, and is skipped rather than read in pieces (pieces read at different
/// offsets are different snapshots).
pub(crate) const MAX_READING: usize = 64 * 1024;

/// The buffer a reader starts with; it grows (doubling) only if a reading fills it.
pub(crate) const FIRST_BUFFER: usize = 1024;

/// Reads the whole file from offset 0 in one call, growing `buf` and starting again while a
/// reading fills it. Returns the reading's length, or `InvalidData` past [`MAX_READING`].
pub(crate) fn read_snapshot(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.is_empty() {
        buf.resize(FIRST_BUFFER, 0);
    }
    loop {
        let n = file.read_at(buf, 0)?;
        if n < buf.len() {
            return Ok(n);
        }
        if buf.len() >= MAX_READING {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_READING} bytes"),
            ));
        }
        let grown = (buf.len() * 2).min(MAX_READING);
        buf.resize(grown, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_is_found_in_a_hybrid_layout() {
        let text = "24 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    31 24 0:27 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            find_cgroup2(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "41 31 0:38 / /mnt/my\\040cgroups rw shared:1 - cgroup2 none rw\n";
        assert_eq!(find_cgroup2(text), Some(PathBuf::from("/mnt/my cgroups")));
    }

    #[test]
    fn no_cgroup2_line_gives_none() {
        let text = "42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(find_cgroup2(text), None);
    }

    #[test]
    fn a_reading_larger_than_the_first_buffer_is_read_whole_in_one_snapshot() {
        let path = std::env::temp_dir().join(format!("edgegw-ke-reading-{}", std::process::id()));
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&format!("counter_{i:03} {}\n", 1_000_000 + i));
        }
        assert!(text.len() > FIRST_BUFFER * 4);
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = Vec::new();
        let n = read_snapshot(&file, &mut buf).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&buf[..n], text.as_bytes());
    }

    #[test]
    fn a_reading_larger_than_the_limit_is_refused_not_cut() {
        let path = std::env::temp_dir().join(format!("edgegw-ke-huge-{}", std::process::id()));
        std::fs::write(&path, vec![b'x'; MAX_READING + 1]).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = Vec::new();
        let err = read_snapshot(&file, &mut buf).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            buf.len(),
            MAX_READING,
            "the buffer stops growing at the limit"
        );
    }
}
