//! `events [--json] [--path P]... [--netlink] [--cgroup C]... [--pressure] [--count N]`
//!
//! The same flags as `edgegw events`, for use before the daemon wires the monitor in.

use std::path::PathBuf;
use std::process::ExitCode;

use edgegw_kernel_events::monitor::{self, MonitorOptions};

const USAGE: &str =
    "usage: events [--json] [--path P]... [--netlink] [--cgroup C]... [--pressure] [--count N]";

fn parse(args: impl Iterator<Item = String>) -> Result<MonitorOptions, String> {
    let mut opts = MonitorOptions::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--json" => opts.json = true,
            "--netlink" => opts.netlink = true,
            "--pressure" => opts.pressure = true,
            "--path" => opts.paths.push(PathBuf::from(value("--path")?)),
            "--cgroup" => opts.cgroups.push(PathBuf::from(value("--cgroup")?)),
            "--count" => {
                let v = value("--count")?;
                opts.count = Some(
                    v.parse()
                        .map_err(|_| format!("--count: not a number: {v}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match monitor::run(opts, std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("events: {e}");
            ExitCode::FAILURE
        }
    }
}
