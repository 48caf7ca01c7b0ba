//! The command line, parsed: what each command was asked, and the usage text (`usage.txt`,
//! written once: `--help`, usage errors, the module's doc and the README's Commands section all
//! show it, and a test keeps the README's copy in step).

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

/// The usage text.
pub const USAGE: &str = include_str!("usage.txt");

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Config file; `None`: the built-in default.
        config: Option<PathBuf>,
    },
    /// Validate a config.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Print the built-in default config.
    PrintDefaultConfig,
    /// A ring tool.
    Ring {
        /// Which.
        action: RingAction,
        /// Ring name or socket path.
        ring: String,
        /// Config file (for the runtime directory).
        config: Option<PathBuf>,
    },
    /// Print kernel events.
    Events(EventsOptions),
    /// Ask the running daemon (reload, status, metrics).
    Ask {
        /// What.
        question: super::control::Question,
        /// Config file (for the runtime directory).
        config: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Print usage.
    Help,
}

/// What to do with a ring.
#[derive(Debug, PartialEq, Eq)]
pub enum RingAction {
    /// Print its state.
    Stat {
        /// As JSON.
        json: bool,
    },
    /// Attach and print packets.
    Tail {
        /// Stop after this many.
        count: Option<u64>,
    },
    /// Attach and echo packets back on the reply ring.
    Echo,
}

/// What `edgegw events` was asked to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsOptions {
    /// One JSON object per line instead of human lines (`--json`).
    pub json: bool,
    /// Files or trees to watch (`--path P`, repeatable): a directory is watched as a tree, and
    /// anything else as a single file, decided again whenever the path appears or changes type.
    pub paths: Vec<PathBuf>,
    /// Links, addresses and routes (`--netlink`).
    pub netlink: bool,
    /// cgroups to watch, with their children (`--cgroup C`, repeatable; inside the cgroup2
    /// mount or relative to it).
    pub cgroups: Vec<PathBuf>,
    /// The system's memory pressure (`--pressure`).
    pub pressure: bool,
    /// Stop after this many events (`--count N`); run until the output closes otherwise.
    pub count: Option<u64>,
    /// Read a running daemon's events ring instead (`--ring NAME`, a name or a socket path).
    pub ring: Option<String>,
    /// Config file, for the events ring's runtime directory (`--config`).
    pub config: Option<PathBuf>,
}

impl EventsOptions {
    /// Whether the options name any source to watch.
    pub fn watches_something(&self) -> bool {
        !self.paths.is_empty()
            || self.netlink
            || !self.cgroups.is_empty()
            || self.pressure
            || self.ring.is_some()
    }
}

/// Parses arguments (without the program name).
pub fn parse(args: Vec<OsString>) -> Result<Command, lexopt::Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let default_config = std::env::var_os("EDGEGW_CONFIG").map(PathBuf::from);
    let Some(arg) = parser.next()? else {
        return Ok(Command::Help);
    };
    let command = match arg {
        Long("version") | Short('V') => return Ok(Command::Version),
        Long("help") | Short('h') => return Ok(Command::Help),
        Value(v) => v.string()?,
        other => return Err(other.unexpected()),
    };
    match command.as_str() {
        "run" => {
            let mut config = default_config;
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("config") | Short('c') => config = Some(parser.value()?.into()),
                    other => return Err(other.unexpected()),
                }
            }
            Ok(Command::Run { config })
        }
        "check-config" => {
            let mut file = None;
            while let Some(arg) = parser.next()? {
                match arg {
                    Value(v) if file.is_none() => file = Some(PathBuf::from(v)),
                    other => return Err(other.unexpected()),
                }
            }
            let file = file.or(default_config).ok_or("check-config needs a FILE")?;
            Ok(Command::CheckConfig { file })
        }
        "print-default-config" => {
            if let Some(arg) = parser.next()? {
                return Err(arg.unexpected());
            }
            Ok(Command::PrintDefaultConfig)
        }
        "ring" => ring(&mut parser, default_config),
        "events" => events(&mut parser).map(Command::Events),
        "reload" | "status" | "metrics" => {
            let (mut json, mut config) = (false, default_config);
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("json") if command == "status" => json = true,
                    Long("config") | Short('c') => config = Some(parser.value()?.into()),
                    other => return Err(other.unexpected()),
                }
            }
            let question = match command.as_str() {
                "reload" => super::control::Question::Reload,
                "status" => super::control::Question::Status { json },
                _ => super::control::Question::Metrics,
            };
            Ok(Command::Ask { question, config })
        }
        other => Err(format!("unknown command `{other}`").into()),
    }
}

fn ring(
    parser: &mut lexopt::Parser,
    default_config: Option<PathBuf>,
) -> Result<Command, lexopt::Error> {
    let action = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(other) => return Err(other.unexpected()),
        None => return Err("ring needs an action: stat, tail or echo".into()),
    };
    let (mut json, mut count, mut ring, mut config) = (false, None, None, default_config);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("json") if action == "stat" => json = true,
            Long("count") | Short('n') if action == "tail" => {
                count = Some(parser.value()?.parse()?)
            }
            Long("config") | Short('c') => config = Some(parser.value()?.into()),
            Value(v) if ring.is_none() => ring = Some(v.string()?),
            other => return Err(other.unexpected()),
        }
    }
    let action = match action.as_str() {
        "stat" => RingAction::Stat { json },
        "tail" => RingAction::Tail { count },
        "echo" => RingAction::Echo,
        other => return Err(format!("unknown ring action `{other}` (stat, tail or echo)").into()),
    };
    let ring = ring.ok_or("ring needs a RING (a ring name or a socket path)")?;
    Ok(Command::Ring {
        action,
        ring,
        config,
    })
}

fn events(parser: &mut lexopt::Parser) -> Result<EventsOptions, lexopt::Error> {
    let mut options = EventsOptions::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("json") => options.json = true,
            Long("netlink") => options.netlink = true,
            Long("pressure") => options.pressure = true,
            Long("path") => options.paths.push(parser.value()?.into()),
            Long("cgroup") => options.cgroups.push(parser.value()?.into()),
            Long("count") | Short('n') => options.count = Some(parser.value()?.parse()?),
            Long("ring") => options.ring = Some(parser.value()?.string()?),
            Long("config") | Short('c') => options.config = Some(parser.value()?.into()),
            other => return Err(other.unexpected()),
        }
    }
    if !options.watches_something() {
        return Err(
            "events needs at least one of --path, --netlink, --cgroup, --pressure, --ring".into(),
        );
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse(args(&["run"])).unwrap(),
            Command::Run { config: None }
        );
        assert_eq!(
            parse(args(&["run", "--config", "/etc/edgegw/edgegw.toml"])).unwrap(),
            Command::Run {
                config: Some("/etc/edgegw/edgegw.toml".into())
            }
        );
        assert_eq!(
            parse(args(&["check-config", "gw.toml"])).unwrap(),
            Command::CheckConfig {
                file: "gw.toml".into()
            }
        );
        assert_eq!(
            parse(args(&["ring", "stat", "default", "--json"])).unwrap(),
            Command::Ring {
                action: RingAction::Stat { json: true },
                ring: "default".into(),
                config: None
            }
        );
        assert_eq!(
            parse(args(&["ring", "tail", "/run/x.sock", "-n", "5"])).unwrap(),
            Command::Ring {
                action: RingAction::Tail { count: Some(5) },
                ring: "/run/x.sock".into(),
                config: None
            }
        );
        assert_eq!(
            parse(args(&["events", "--netlink", "--path", "/etc", "-n", "3"])).unwrap(),
            Command::Events(EventsOptions {
                netlink: true,
                paths: vec!["/etc".into()],
                count: Some(3),
                ..EventsOptions::default()
            })
        );
        assert_eq!(parse(args(&[])).unwrap(), Command::Help);
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_reason() {
        assert!(parse(args(&["fly"]))
            .unwrap_err()
            .to_string()
            .contains("unknown command `fly`"));
        assert!(parse(args(&["ring", "stat"]))
            .unwrap_err()
            .to_string()
            .contains("needs a RING"));
        assert!(parse(args(&["ring", "echo", "x", "--json"])).is_err());
        assert!(parse(args(&["events"]))
            .unwrap_err()
            .to_string()
            .contains("at least one"));
        assert!(parse(args(&["run", "--bogus"])).is_err());
    }

    #[test]
    fn the_usage_names_every_command_and_the_readme_shows_it_as_it_is() {
        for command in [
            "edgegw run",
            "edgegw check-config",
            "edgegw print-default-config",
            "edgegw ring stat",
            "edgegw ring tail",
            "edgegw ring echo",
            "edgegw events",
            "edgegw --version",
        ] {
            assert!(USAGE.contains(command), "{command} missing from usage.txt");
        }
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&format!("```text\n{USAGE}```")),
            "README.md's Commands block is not daemon/src/cli/usage.txt: copy it over"
        );
    }
}
