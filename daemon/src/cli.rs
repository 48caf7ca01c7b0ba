//! The command line.
//!
//! ```text
//! edgegw run [--config FILE]                 run the daemon (built-in default config without --config)
//! edgegw check-config FILE                   validate a config, its certificates and keys
//! edgegw print-default-config                print the built-in default config
//! edgegw ring stat RING [--json]             positions, fill, drops, generation of a ring
//! edgegw ring tail RING [--count N]          attach as the consumer and print packets
//! edgegw ring echo RING                      example consumer: echo every packet back
//! edgegw events [--json] [--path P]... [--netlink] [--cgroup C]... [--pressure] [--count N]
//! ```
//!
//! RING is a ring name from the config (its socket is found in the runtime directory) or a
//! socket path. Commands that name a ring accept `--config FILE` to find the runtime directory.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use lexopt::prelude::*;

use crate::config::{Config, BUILTIN_DEFAULT};

// `edgegw events`; the file sits beside this one until the CLI gets its own folder.
#[path = "events_cmd.rs"]
mod events_cmd;
pub use events_cmd::EventsOptions;

const USAGE: &str = "\
usage:
  edgegw run [--config FILE]
  edgegw check-config FILE
  edgegw print-default-config
  edgegw ring stat RING [--json] [--config FILE]
  edgegw ring tail RING [--count N] [--config FILE]
  edgegw ring echo RING [--config FILE]
  edgegw events [--json] [--path P]... [--netlink] [--cgroup C]... [--pressure] [--count N]
  edgegw --version

RING is a ring name from the config, or the path of a ring's attach socket.
Without --config, `run` uses the built-in default (see print-default-config).
Environment: EDGEGW_LOG=error|warn|info|debug|trace, EDGEGW_CONFIG=FILE (default for --config).";

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
        "ring" => {
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
                other => {
                    return Err(
                        format!("unknown ring action `{other}` (stat, tail or echo)").into(),
                    )
                }
            };
            let ring = ring.ok_or("ring needs a RING (a ring name or a socket path)")?;
            Ok(Command::Ring {
                action,
                ring,
                config,
            })
        }
        "events" => {
            let mut args = EventsOptions::default();
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("json") => args.json = true,
                    Long("netlink") => args.netlink = true,
                    Long("pressure") => args.pressure = true,
                    Long("path") => args.paths.push(parser.value()?.into()),
                    Long("cgroup") => args.cgroups.push(parser.value()?.into()),
                    Long("count") | Short('n') => args.count = Some(parser.value()?.parse()?),
                    other => return Err(other.unexpected()),
                }
            }
            if !args.watches_something() {
                return Err(
                    "events needs at least one of --path, --netlink, --cgroup, --pressure".into(),
                );
            }
            Ok(Command::Events(args))
        }
        other => Err(format!("unknown command `{other}`").into()),
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    crate::log::init();
    let command = match parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgegw: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match execute(command) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgegw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Help => println!("{USAGE}"),
        Command::Version => println!(
            "edgegw {} ({} crypto)",
            env!("CARGO_PKG_VERSION"),
            crate::tls::PROVIDER_NAME
        ),
        Command::PrintDefaultConfig => print!("{BUILTIN_DEFAULT}"),
        Command::CheckConfig { file } => match crate::control::check_config(&file) {
            Ok(config) => println!(
                "{}: ok ({} listener(s), {} route(s), {} ring(s))",
                file.display(),
                config.listeners.len(),
                config.routes.len(),
                config.rings.len()
            ),
            Err(e) => {
                eprintln!("edgegw: {e:#}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Run { config } => run(config)?,
        Command::Ring {
            action,
            ring,
            config,
        } => {
            let config = load(config.as_deref())?;
            crate::ringcmd::ring(action, &ring, &config)?;
        }
        Command::Events(args) => events(args)?,
    }
    std::io::stdout().flush().context("write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn load(file: Option<&std::path::Path>) -> Result<Config> {
    Ok(match file {
        Some(file) => Config::load(file)?,
        None => Config::builtin(),
    })
}

fn events(options: EventsOptions) -> Result<()> {
    events_cmd::run(options)
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config.
fn run(file: Option<PathBuf>) -> Result<()> {
    if file.is_none() {
        log::info!(
            "no --config: running the built-in default (edgegw print-default-config shows it)"
        );
    }
    crate::control::main(crate::config::ConfigSource::from_option(file))
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
}
