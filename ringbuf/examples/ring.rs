//! A test ring without the daemon: serve one and produce packets into it, and look at a
//! ring's state. To read the packets, `edgegw ring tail PATH` (the daemon's binary).
//!
//! ```text
//! ring stat PATH                                positions, capacity, fill, drops, generation
//! ring serve PATH [--capacity N] [--packets N] [--size N] [--interval-ms N]
//!                                               serve a test ring and produce packets into it
//! ```

use edgegw_ring::tools;
use edgegw_ring::{AllowList, Error, Producer, RingConfig, RingServer};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  ring stat PATH\n  ring serve PATH [--capacity N] [--packets N] [--size N] [--interval-ms N]"
    );
    ExitCode::from(2)
}

/// `--name value` options after the path.
fn option(args: &[String], name: &str) -> Result<Option<u64>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}: not a number")),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, path, rest) = match args {
        [cmd, path, rest @ ..] => (cmd.as_str(), path, rest),
        _ => return Err("missing command or path".into()),
    };
    match cmd {
        "stat" => {
            println!("{}", tools::stat(path).map_err(|e| e.to_string())?);
            Ok(())
        }
        "serve" => serve(path, rest),
        _ => Err(format!("unknown command {cmd:?}")),
    }
}

fn serve(path: &str, rest: &[String]) -> Result<(), String> {
    let capacity = option(rest, "--capacity")?.unwrap_or(64 * 1024) as usize;
    let packets = option(rest, "--packets")?.unwrap_or(u64::MAX);
    let size = option(rest, "--size")?.unwrap_or(64) as usize;
    let interval = Duration::from_millis(option(rest, "--interval-ms")?.unwrap_or(100));
    let mut producer =
        Producer::create(RingConfig::with_capacity(capacity)).map_err(|e| e.to_string())?;
    let mut server = RingServer::bind(
        path,
        producer.served_ring().map_err(|e| e.to_string())?,
        AllowList::current_user(),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("serving a {capacity}-byte ring at {path}");
    let mut seq = 0u64;
    let mut next = Instant::now();
    while seq < packets {
        for event in server
            .serve_for(Some(interval.min(Duration::from_millis(50))))
            .map_err(|e| e.to_string())?
        {
            eprintln!("{event:?}");
        }
        if Instant::now() >= next {
            next += interval;
            match producer.reserve(size, 1, seq as u16) {
                Ok(buf) => {
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = (seq as usize + i) as u8;
                    }
                    producer.publish();
                    seq += 1;
                }
                Err(Error::Full { .. }) => producer.record_drops(1),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    producer.finish();
    eprintln!("{seq} packets sent; ring finished; serving until interrupted");
    loop {
        for event in server.serve_for(None).map_err(|e| e.to_string())? {
            eprintln!("{event:?}");
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        return usage();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring: {e}");
            ExitCode::FAILURE
        }
    }
}
