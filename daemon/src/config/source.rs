//! Where in a config file something is: line, column and the dotted key that holds it.
//!
//! Both kinds of config error point into the file: TOML/serde errors come with a byte span from
//! the toml crate, and semantic errors (a missing certificate, a route to an unknown ring) come
//! from values we kept as `toml::Spanned`. This module turns such a span into something an
//! operator can act on: `edgegw.toml:14:1: listener.certificate.key: ...`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A place in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as the operator named it.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted key path, e.g. `listener.certificate.key`, when it could be worked out.
    pub key: Option<String>,
}

impl Location {
    /// Locates byte offset `span.start` of `source` (the text of `file`).
    pub fn of_span(file: &Path, source: &str, span: Range<usize>) -> Location {
        let start = span.start.min(source.len());
        let before = &source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..start].chars().count() + 1;
        Location {
            file: file.to_path_buf(),
            line,
            column,
            key: key_path_at(source, line_start),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        Ok(())
    }
}

/// The dotted path of the key defined on the line that starts at `line_start`: the nearest
/// `[table]` or `[[array]]` header above it, plus the key before `=` on that line. Exact for the
/// layout configs are written in (one key per line); best effort for inline tables.
fn key_path_at(source: &str, line_start: usize) -> Option<String> {
    let line = source[line_start..].lines().next().unwrap_or("");
    let trimmed = line.trim();
    if let Some(header) = table_header(trimmed) {
        return Some(header.to_string());
    }
    let key = trimmed
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty());
    let table = source[..line_start]
        .lines()
        .rev()
        .find_map(|l| table_header(l.trim()));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t.to_string()),
        (None, None) => None,
    }
}

fn table_header(line: &str) -> Option<&str> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[daemon]
runtime_dir = \"/run/x\"

[[listener]]
name = \"a\"
  [[listener.certificate]]
  cert = \"c.pem\"
";

    #[test]
    fn location_names_line_column_and_dotted_key() {
        let at = TEXT.find("\"c.pem\"").unwrap();
        let loc = Location::of_span(Path::new("gw.toml"), TEXT, at..at + 7);
        assert_eq!(loc.line, 7);
        assert_eq!(loc.column, 10);
        assert_eq!(loc.key.as_deref(), Some("listener.certificate.cert"));
        assert_eq!(loc.to_string(), "gw.toml:7:10: listener.certificate.cert");
    }

    #[test]
    fn location_of_a_header_is_the_table() {
        let at = TEXT.find("[[listener]]").unwrap();
        let loc = Location::of_span(Path::new("gw.toml"), TEXT, at..at + 1);
        assert_eq!(loc.key.as_deref(), Some("listener"));
        let at = TEXT.find("runtime_dir").unwrap();
        let loc = Location::of_span(Path::new("gw.toml"), TEXT, at..at + 1);
        assert_eq!(loc.key.as_deref(), Some("daemon.runtime_dir"));
    }
}
