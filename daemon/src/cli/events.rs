//! `edgegw events`: the kernel-event stream on stdout, one human line per event (like
//! `ip monitor` plus `inotifywait`) or one JSON object per event (`--json`).
//!
//! The lines and the objects are the library's (`Event::display`, `Event`'s `Serialize`); this
//! command only chooses the sources from its options, runs the stream on its own
//! current_thread runtime, and prints until `--count` events or a closed output.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use edgegw_kernel_events::net::NetOptions;
use edgegw_kernel_events::pressure::PressureOptions;
use edgegw_kernel_events::{KernelEvents, KernelEventsBuilder};

use super::args::EventsOptions;

/// The sources the options name.
fn sources(options: &EventsOptions) -> KernelEventsBuilder {
    let mut builder = KernelEvents::builder();
    for path in &options.paths {
        builder = builder.watch_path(path);
    }
    if options.netlink {
        builder = builder.network(NetOptions::default());
    }
    for cgroup in &options.cgroups {
        builder = builder.cgroup(cgroup).cgroup_children(cgroup);
    }
    if options.pressure {
        builder = builder.pressure(PressureOptions::default());
    }
    builder
}

/// Runs `edgegw events` on a new current_thread runtime until `count` events were printed, the
/// output is closed (a broken pipe is a normal end), or a reader fails.
pub fn run(options: EventsOptions) -> Result<ExitCode> {
    if let Some(ring) = &options.ring {
        let (socket, _) = super::ring::sockets(ring, options.config.as_deref())?;
        print_ring(&socket, &options, &mut io::stdout().lock())?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(print_events(options, io::stdout().lock()))?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the sources and prints their events to `out`.
async fn print_events(options: EventsOptions, mut out: impl Write) -> Result<()> {
    let mut events = sources(&options).build().await?;
    let mut printed = 0u64;
    while options.count.is_none_or(|n| printed < n) {
        let event = events.next().await?;
        let line = if options.json {
            serde_json::to_string(&event).context("encode event as JSON")?
        } else {
            event.display(events.network()).to_string()
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("write event"),
        }
        printed += 1;
    }
    Ok(())
}

/// Attaches to a running daemon's events ring (as its consumer: one reader at a time) and
/// prints its records: `SEQ KIND JSON` lines, or (`--json`) one object per record with `seq`,
/// `kind`, `lost_before` and `event`. Ends at `--count`, a closed output, or when the daemon
/// goes away.
fn print_ring(
    socket: &std::path::Path,
    options: &EventsOptions,
    out: &mut impl Write,
) -> Result<()> {
    use edgegw_proto::events::{decode_event, EventKind, EVENT, LOST_BEFORE};
    use edgegw_ring::{Consumer, Readiness};
    let mut consumer = Consumer::attach(socket)
        .with_context(|| format!("attach to the events ring at {}", socket.display()))?;
    let mut printed = 0u64;
    let mut payload = Vec::new();
    loop {
        while let Some(record) = consumer.read()? {
            if record.record_type() != EVENT {
                continue;
            }
            payload.clear();
            payload.resize(record.len(), 0);
            record.payload().copy_to_slice(&mut payload);
            let Some(event) = decode_event(&payload) else {
                continue;
            };
            let kind = EventKind::from_code(event.kind).map_or("unknown", |k| k.name());
            let lost = event.flags & LOST_BEFORE != 0;
            let line = if options.json {
                let object: serde_json::Value =
                    serde_json::from_str(event.json).unwrap_or(serde_json::Value::Null);
                serde_json::json!({
                    "seq": event.seq, "kind": kind, "lost_before": lost, "event": object
                })
                .to_string()
            } else {
                format!(
                    "{:>6} {kind:<11} {}{}",
                    event.seq,
                    if lost { "(events lost before) " } else { "" },
                    event.json
                )
            };
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                consumer.release();
                return match e.kind() {
                    io::ErrorKind::BrokenPipe => Ok(()),
                    _ => Err(e).context("write event"),
                };
            }
            printed += 1;
            if options.count.is_some_and(|n| printed >= n) {
                consumer.release();
                return Ok(());
            }
        }
        consumer.release();
        match consumer.wait(None)? {
            Readiness::Ready | Readiness::TimedOut => {}
            Readiness::Finished | Readiness::PeerGone => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;

    /// A current_thread runtime like the command's.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn path_that_appears_as_a_directory_reports_the_files_created_inside_it() {
        // The reproduction from the bug report: `edgegw events --path /tmp/x` with x missing,
        // then `mkdir /tmp/x; echo hi > /tmp/x/a` printed only `CREATED /tmp/x`.
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x");
        let options = EventsOptions {
            paths: vec![x.clone()],
            count: Some(3),
            ..EventsOptions::default()
        };
        let mut printed = Vec::new();
        runtime().block_on(async {
            let command = print_events(options, &mut printed);
            let act = async {
                // The command builds its readers in its first poll, before this sleep ends.
                tokio::time::sleep(Duration::from_millis(100)).await;
                fs::create_dir(&x).unwrap();
                fs::write(x.join("a"), "hi\n").unwrap();
                // Well past the default 50 ms debounce: the appearance has been handled.
                tokio::time::sleep(Duration::from_secs(1)).await;
                fs::write(x.join("b"), "later\n").unwrap();
            };
            let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async {
                tokio::join!(command, act)
            })
            .await
            .expect("the command printed three events within 20 s");
            result.expect("events");
        });
        let text = String::from_utf8(printed).unwrap();
        let created: Vec<&str> = text
            .lines()
            .map(|l| {
                let rest = l.split_once("CREATED ").expect(l).1;
                rest.split(' ').next().unwrap()
            })
            .collect();
        let expect = [x.clone(), x.join("a"), x.join("b")];
        let expect: Vec<String> = expect.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(created, expect, "{text}");
    }

    #[test]
    fn json_prints_one_object_per_event_and_a_closed_output_ends_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "1").unwrap();
        let options = EventsOptions {
            json: true,
            paths: vec![file.clone()],
            ..EventsOptions::default()
        };
        /// Takes one line, then reports a closed pipe.
        struct OneLine(Vec<u8>);
        impl Write for OneLine {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0.ends_with(b"\n") {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = OneLine(Vec::new());
        runtime().block_on(async {
            let command = print_events(options, &mut out);
            let act = async {
                for i in 0..40 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    fs::write(&file, format!("{i}{i}")).unwrap();
                }
            };
            let result = tokio::time::timeout(Duration::from_secs(20), async {
                tokio::select! {
                    result = command => result,
                    () = act => panic!("the command did not end on the closed output"),
                }
            })
            .await
            .expect("the command ended within 20 s");
            result.expect("a closed output is a normal end");
        });
        let line = String::from_utf8(out.0).unwrap();
        let object: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(object["seq"], 1);
        assert_eq!(object["source"], "files");
        assert_eq!(object["kind"]["change"], "changed");
        assert_eq!(object["kind"]["path"], file.display().to_string());
    }
}
