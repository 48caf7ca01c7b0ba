//! The daemon's logger: the backend of the `log` facade (as ripgrep keeps its own), one line per
//! message on stderr, and a rate limit per kind of message.
//!
//! Under systemd (stderr connected to the journal, `$JOURNAL_STREAM` set) each message goes to
//! the journal's native socket (`/run/systemd/journal/socket`) as one entry with structured
//! fields: `PRIORITY`, `MESSAGE`, `SYSLOG_IDENTIFIER=edgegw`, `CODE_FILE`, `CODE_LINE`,
//! `CODE_MODULE`, and one `EDGEGW_<KEY>` field per key-value pair the call site gives
//! (`log::info!(ring = name; "...")`: `EDGEGW_RING`; the keys in use are `conn` (a connection's
//! id), `listener`, `ring` and `peer`), so `journalctl EDGEGW_RING=default` finds a ring's
//! messages. If that socket cannot be reached, or an entry cannot be sent, the line goes to
//! stderr with the sd-daemon priority prefix (`<6>`) instead, so `journalctl -p warning` works
//! either way. Elsewhere each line starts with a UTC timestamp and the level, then the message,
//! then the key-value pairs (`ring=default`). The level is taken from `$EDGEGW_LOG` (error,
//! warn, info, debug, trace; default info). The libraries log through the same facade.
//!
//! **Rate limit.** Anyone who can reach a socket can make the daemon log (a malformed hello, a
//! bad TLS record, a reply for a closed connection), so every kind of message gets at most
//! [`BURST`] lines per [`WINDOW`]; the rest are counted, and when the window ends one line at the
//! same level says how many were suppressed and repeats the last one printed. A kind is a call
//! site (file and line), or an explicit key given as the `target:` of the macro
//! (`log::warn!(target: "edgegw::attach::malformed", ...)`) when one call site logs several
//! kinds. Summaries are written by the next message of that kind or by [`flush`], which the
//! control loop calls every second.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one kind of message may print per window.
pub const BURST: u32 = 10;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(10);

static LOGGER: Logger = Logger {
    journal: AtomicBool::new(false),
    native: Mutex::new(None),
    kinds: Mutex::new(None),
};

/// The journal's native protocol socket (systemd.journal-fields(7), sd_journal_send(3)).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the logger: reads `$EDGEGW_LOG` and `$JOURNAL_STREAM`. Call once at start; later
/// calls only re-read the variables.
pub fn init() {
    let setting = std::env::var("EDGEGW_LOG");
    let level = match setting.as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    let journal = stderr_is_journal();
    LOGGER.journal.store(journal, Ordering::Relaxed);
    let native = journal
        .then(|| {
            let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
            socket.connect(JOURNAL_SOCKET).ok()?;
            Some(socket)
        })
        .flatten();
    *LOGGER.native.lock().unwrap_or_else(|e| e.into_inner()) = native;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    match setting {
        Ok(value)
            if !matches!(
                value.as_str(),
                "error" | "warn" | "info" | "debug" | "trace"
            ) =>
        {
            log::warn!(
                "EDGEGW_LOG={value:?} is not a level (error, warn, info, debug or trace): logging at info"
            );
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            log::warn!("EDGEGW_LOG is not UTF-8: logging at info");
        }
        _ => {}
    }
}

/// Writes the summaries of rate-limit windows that have ended.
pub fn flush() {
    log::logger().flush();
}

/// The `log` backend.
struct Logger {
    journal: AtomicBool,
    /// Connected to the journal's native socket, under systemd.
    native: Mutex<Option<std::os::unix::net::UnixDatagram>>,
    /// Rate-limit state by kind; `None` until the first message.
    kinds: Mutex<Option<Kinds>>,
}

/// Rate-limit windows: by call site, and by explicit key (looked up without allocating, so a
/// flood costs no allocation per message).
#[derive(Debug, Default)]
struct Kinds {
    sites: HashMap<(&'static str, u32), Window>,
    keys: HashMap<String, Window>,
}

/// One kind's window.
#[derive(Debug)]
struct Window {
    level: log::Level,
    started: Instant,
    printed: u32,
    suppressed: u64,
    /// The last line printed, repeated in the summary.
    last: String,
}

impl Window {
    fn new(level: log::Level, now: Instant) -> Self {
        Window {
            level,
            started: now,
            printed: 0,
            suppressed: 0,
            last: String::new(),
        }
    }
}

impl Kinds {
    /// The window of `record`'s kind: its call site, or the explicit key given as `target:`
    /// (or the target, for a site the compiler gave no static file for).
    fn window(&mut self, record: &log::Record<'_>, now: Instant) -> &mut Window {
        let explicit = record.module_path() != Some(record.target());
        let level = record.level();
        match (explicit, record.file_static(), record.line()) {
            (false, Some(file), Some(line)) => self
                .sites
                .entry((file, line))
                .or_insert_with(|| Window::new(level, now)),
            _ => {
                let key = record.target();
                if !self.keys.contains_key(key) {
                    self.keys.insert(key.to_string(), Window::new(level, now));
                }
                self.keys.get_mut(key).expect("just inserted")
            }
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut out = String::new();
        if let Some(message) = self.admit(record, Instant::now(), &mut out) {
            let mut fields = Fields::default();
            let _ = record.key_values().visit(&mut fields);
            if !self.send(record.level(), &message, Some(record), &fields.0) {
                let mut text = message;
                for (key, value) in &fields.0 {
                    let _ = write!(text, " {key}={value}");
                }
                self.line(&mut out, record.level(), format_args!("{text}"));
            }
        }
        self.write(&out);
    }

    fn flush(&self) {
        let mut out = String::new();
        self.summaries(Instant::now(), &mut out);
        self.write(&out);
    }
}

impl Logger {
    /// Counts the message against its kind's window; appends to `out` the summary of a window
    /// that just ended. Returns the message to print, formatted, or `None` if it is suppressed
    /// (then it is not even formatted).
    fn admit(&self, record: &log::Record<'_>, now: Instant, out: &mut String) -> Option<String> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let window = kinds.get_or_insert_with(Kinds::default).window(record, now);
        if now.duration_since(window.started) >= WINDOW {
            self.summary(window, now, out);
            window.started = now;
            window.printed = 0;
        }
        if window.printed >= BURST {
            window.suppressed += 1;
            return None;
        }
        window.printed += 1;
        window.level = record.level();
        window.last.clear();
        let _ = write!(window.last, "{}", record.args());
        Some(window.last.clone())
    }

    /// Appends the summaries of every window that has ended, and forgets kinds that went quiet
    /// (the tables hold only kinds seen in the last window).
    fn summaries(&self, now: Instant, out: &mut String) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kinds) = kinds.as_mut() else {
            return;
        };
        let mut ended = |window: &mut Window| {
            if now.duration_since(window.started) < WINDOW {
                return true;
            }
            self.summary(window, now, out);
            false
        };
        kinds.sites.retain(|_, w| ended(w));
        kinds.keys.retain(|_, w| ended(w));
    }

    fn summary(&self, window: &mut Window, now: Instant, out: &mut String) {
        if window.suppressed == 0 {
            return;
        }
        let n = std::mem::take(&mut window.suppressed);
        let message = format!(
            "{n} more like this in {}s, not shown (at most {BURST} per {}s): {}",
            now.duration_since(window.started).as_secs(),
            WINDOW.as_secs(),
            window.last
        );
        let suppressed = [("suppressed".to_string(), n.to_string())];
        if !self.send(window.level, &message, None, &suppressed) {
            self.line(out, window.level, format_args!("{message}"));
        }
    }

    /// Sends one entry to the journal's native socket; false if there is none or it failed
    /// (then the caller writes the line to stderr).
    fn send(
        &self,
        level: log::Level,
        message: &str,
        record: Option<&log::Record<'_>>,
        fields: &[(String, String)],
    ) -> bool {
        let native = self.native.lock().unwrap_or_else(|e| e.into_inner());
        let Some(socket) = native.as_ref() else {
            return false;
        };
        let mut entry = Vec::with_capacity(256 + message.len());
        journal_field(&mut entry, "PRIORITY", &priority(level).to_string());
        journal_field(&mut entry, "SYSLOG_IDENTIFIER", "edgegw");
        journal_field(&mut entry, "MESSAGE", message);
        if let Some(record) = record {
            if let Some(file) = record.file() {
                journal_field(&mut entry, "CODE_FILE", file);
            }
            if let Some(line) = record.line() {
                journal_field(&mut entry, "CODE_LINE", &line.to_string());
            }
            if let Some(module) = record.module_path() {
                journal_field(&mut entry, "CODE_MODULE", module);
            }
        }
        for (key, value) in fields {
            journal_field(&mut entry, &journal_name(key), value);
        }
        socket.send(&entry).is_ok()
    }

    fn line(&self, out: &mut String, level: log::Level, message: fmt::Arguments<'_>) {
        if self.journal.load(Ordering::Relaxed) {
            let _ = writeln!(out, "<{}>{message}", priority(level));
        } else {
            let name = match level {
                log::Level::Error => "ERROR",
                log::Level::Warn => "WARN ",
                log::Level::Info => "INFO ",
                log::Level::Debug => "DEBUG",
                log::Level::Trace => "TRACE",
            };
            let _ = writeln!(out, "{} {name} {message}", Timestamp::now());
        }
    }

    fn write(&self, out: &str) {
        if !out.is_empty() {
            // One write call per batch of lines, so lines from the two threads do not interleave.
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
    }
}

/// A call site's key-value pairs, as text.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

/// `EDGEGW_` and the key in upper case, anything but letters and digits as `_`, at most 64
/// bytes (the journal's rules for a field name).
fn journal_name(key: &str) -> String {
    let mut name = String::from("EDGEGW_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name.truncate(64);
    name
}

/// Appends one field in the native protocol: `NAME=value\n`, or, for a value with a newline,
/// `NAME\n`, its length as 64-bit little-endian, the bytes, `\n`.
fn journal_field(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

/// The syslog priority of a level (sd-daemon(3) prefixes).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// `$JOURNAL_STREAM` is `device:inode` of the journal socket; it names our stderr only if the
/// inode matches (a child that inherited the variable but not the fd must not use prefixes).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino),
        Err(_) => false,
    }
}

/// The time now, as the log prints it (RFC 3339, UTC, milliseconds).
pub fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

/// `at` as the log prints a time (RFC 3339, UTC, milliseconds).
pub fn rfc3339(at: std::time::SystemTime) -> String {
    Timestamp(time::OffsetDateTime::from(at)).to_string()
}

/// UTC wall-clock time, printed as RFC 3339 with milliseconds.
struct Timestamp(time::OffsetDateTime);

impl Timestamp {
    fn now() -> Self {
        Timestamp(time::OffsetDateTime::now_utc())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_formats_known_instants() {
        let at = |ms: i128| {
            Timestamp(time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap())
        };
        assert_eq!(at(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z, a leap day.
        assert_eq!(
            at(1_709_210_096_789).to_string(),
            "2024-02-29T12:34:56.789Z"
        );
    }

    fn logger() -> Logger {
        Logger {
            journal: AtomicBool::new(true),
            native: Mutex::new(None),
            kinds: Mutex::new(None),
        }
    }

    #[test]
    fn journal_fields_are_name_equals_value_or_length_prefixed_with_a_newline() {
        let mut entry = Vec::new();
        journal_field(&mut entry, "MESSAGE", "one line");
        journal_field(&mut entry, "MESSAGE", "two\nlines");
        let mut want = b"MESSAGE=one line\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, want);
        assert_eq!(journal_name("conn"), "EDGEGW_CONN");
        assert_eq!(journal_name("peer.addr-1"), "EDGEGW_PEER_ADDR_1");
        assert_eq!(journal_name(&"k".repeat(100)).len(), 64);
    }

    #[test]
    fn entries_reach_a_native_journal_socket_with_the_call_sites_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let journal = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        socket.connect(&path).unwrap();
        journal
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let logger = logger();
        *logger.native.lock().unwrap() = Some(socket);
        // The level filter is global (`init` sets it from $EDGEGW_LOG): warnings must pass.
        if log::max_level() < log::LevelFilter::Warn {
            log::set_max_level(log::LevelFilter::Warn);
        }
        log::Log::log(
            &logger,
            &log::Record::builder()
                .args(format_args!("ring full"))
                .level(log::Level::Warn)
                .target("edgegw::control::rings")
                .module_path_static(Some("edgegw::control::rings"))
                .file_static(Some("daemon/src/control/rings.rs"))
                .line(Some(7))
                .key_values(&[("ring", "default"), ("conn", "42")])
                .build(),
        );
        let mut buf = vec![0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        let entry = String::from_utf8(buf[..n].to_vec()).unwrap();
        for field in [
            "PRIORITY=4\n",
            "SYSLOG_IDENTIFIER=edgegw\n",
            "MESSAGE=ring full\n",
            "CODE_FILE=daemon/src/control/rings.rs\n",
            "CODE_LINE=7\n",
            "EDGEGW_RING=default\n",
            "EDGEGW_CONN=42\n",
        ] {
            assert!(entry.contains(field), "{field:?} missing from {entry:?}");
        }
    }

    fn record<'a>(args: fmt::Arguments<'a>, line: u32, target: &'a str) -> log::Record<'a> {
        log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target(target)
            .module_path_static(Some("edgegw::control"))
            .file_static(Some("daemon/src/control.rs"))
            .line(Some(line))
            .build()
    }

    /// Feeds `n` messages of one kind at `now`; returns how many were printed and the output.
    fn feed(logger: &Logger, n: u32, line: u32, target: &str, now: Instant) -> (u32, String) {
        let mut printed = 0;
        let mut out = String::new();
        for i in 0..n {
            let admitted = logger.admit(
                &record(format_args!("refused pid {i}"), line, target),
                now,
                &mut out,
            );
            if admitted.is_some() {
                printed += 1;
            }
        }
        (printed, out)
    }

    #[test]
    fn a_flood_from_one_call_site_prints_a_burst_then_one_summary_per_window() {
        let logger = logger();
        let t0 = Instant::now();
        let (printed, out) = feed(&logger, 1000, 10, "edgegw::control", t0);
        assert_eq!(printed, BURST);
        assert!(out.is_empty(), "no summary before the window ends: {out}");
        // Another call site is not held back by the first one's flood.
        assert_eq!(feed(&logger, 3, 11, "edgegw::control", t0).0, 3);
        // An explicit key is its own kind, even from the same line.
        assert_eq!(feed(&logger, 3, 10, "edgegw::attach::malformed", t0).0, 3);

        // The window ends: the next message brings the summary, then a new burst.
        let later = t0 + WINDOW;
        let (printed, out) = feed(&logger, 1, 10, "edgegw::control", later);
        assert_eq!(printed, 1);
        assert!(
            out.starts_with("<4>990 more like this in ") && out.ends_with(": refused pid 9\n"),
            "{out}"
        );
        // A quiet kind's summary comes from the periodic flush.
        feed(&logger, 20, 12, "edgegw::control", later);
        let mut out = String::new();
        logger.summaries(later + WINDOW, &mut out);
        assert!(out.contains("<4>10 more like this"), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        // And then the table is empty again: memory follows the kinds seen lately.
        let kinds = logger.kinds.lock().unwrap();
        let kinds = kinds.as_ref().unwrap();
        assert!(kinds.sites.is_empty() && kinds.keys.is_empty());
    }
}
