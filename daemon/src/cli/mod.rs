#![doc = concat!(
    "The command line, shaped like ripgrep's: `args.rs` parses it, one file per command runs it\n",
    "(`run.rs`, `check_config.rs`, `ring.rs`, `events.rs`, `control.rs`), and [`main`] turns the outcome into\n",
    "an exit code: 0, 1 for a failure, 2 for a usage error; a closed output (`| head`) is not a\n",
    "failure, and nothing here panics when stdout or stderr is closed.\n\n",
    "```text\n",
    include_str!("usage.txt"),
    "```"
)]

mod args;
mod check_config;
mod control;
mod events;
mod note;
mod ring;
mod run;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};

pub use args::{parse, Command, EventsOptions, RingAction, USAGE};
use note::note;

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    crate::log::init();
    let command = match parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            note!("edgegw: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match execute(command) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note!("edgegw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn execute(command: Command) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    let code = match command {
        Command::Help => write!(out, "{USAGE}").map(|()| ExitCode::SUCCESS)?,
        Command::Version => writeln!(
            out,
            "edgegw {} ({} crypto)",
            env!("CARGO_PKG_VERSION"),
            crate::tls::PROVIDER_NAME
        )
        .map(|()| ExitCode::SUCCESS)?,
        Command::PrintDefaultConfig => {
            write!(out, "{}", crate::config::BUILTIN_DEFAULT).map(|()| ExitCode::SUCCESS)?
        }
        Command::CheckConfig { file } => check_config::run(&file, &mut out)?,
        Command::Run { config } => run::run(config)?,
        Command::Ring {
            action,
            ring,
            config,
        } => ring::run(action, &ring, config.as_deref(), &mut out)?,
        Command::Events(options) => events::run(options)?,
        Command::Ask { question, config } => control::run(question, config.as_deref(), &mut out)?,
    };
    out.flush().context("write to stdout")?;
    Ok(code)
}
