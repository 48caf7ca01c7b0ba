//! Lines for the person at the terminal, on stderr. A closed stderr is ignored: there is nobody
//! to tell, and a tool must not panic (or change its exit code) for it.

/// Writes a line to stderr, ignoring a closed stderr.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;
