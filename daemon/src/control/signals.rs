//! Signals for the control loop: SIGTERM and SIGINT stop, SIGHUP reloads, SIGUSR1 writes every
//! counter to the log.
//!
//! signal-hook's self-pipe: the handler only writes a byte to a socket (async-signal-safe);
//! the loop reads it through tokio. No thread, no signal mask games.

use std::io;
use std::os::unix::net::UnixStream;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// A signal the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
    /// SIGUSR1.
    DumpCounters,
}

/// Registered handlers and the read ends of their pipes.
#[derive(Debug)]
pub struct Signals {
    stop: tokio::net::UnixStream,
    reload: tokio::net::UnixStream,
    dump: tokio::net::UnixStream,
}

impl Signals {
    /// Installs the handlers. Inside a tokio runtime.
    pub fn new() -> Result<Signals> {
        let stop = pipe(&[SIGTERM, SIGINT])?;
        let reload = pipe(&[SIGHUP])?;
        let dump = pipe(&[SIGUSR1])?;
        Ok(Signals { stop, reload, dump })
    }

    /// The next signal.
    pub async fn next(&mut self) -> io::Result<Signal> {
        loop {
            tokio::select! {
                r = self.stop.readable() => {
                    r?;
                    if drain(&self.stop)? {
                        return Ok(Signal::Stop);
                    }
                }
                r = self.reload.readable() => {
                    r?;
                    if drain(&self.reload)? {
                        return Ok(Signal::Reload);
                    }
                }
                r = self.dump.readable() => {
                    r?;
                    if drain(&self.dump)? {
                        return Ok(Signal::DumpCounters);
                    }
                }
            }
        }
    }
}

fn pipe(signals: &[i32]) -> Result<tokio::net::UnixStream> {
    let (read, write) = UnixStream::pair().context("signal pipe")?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write.try_clone().context("signal pipe")?)
            .with_context(|| format!("install handler for signal {signal}"))?;
    }
    read.set_nonblocking(true).context("signal pipe")?;
    tokio::net::UnixStream::from_std(read).context("signal pipe")
}

/// Reads every pending byte; true if there was at least one.
fn drain(read: &tokio::net::UnixStream) -> io::Result<bool> {
    let mut buf = [0u8; 16];
    let mut any = false;
    loop {
        match read.try_read(&mut buf) {
            Ok(0) => return Ok(any),
            Ok(_) => any = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
            Err(e) => return Err(e),
        }
    }
}
