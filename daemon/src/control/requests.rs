//! What the daemon is asked to do, from wherever it is asked: signals, and an in-process queue
//! (the tests' harness; later the control socket, whose `edgegw reload` waits for the answer).

use std::io;

use anyhow::Result;
use tokio::sync::mpsc;

use super::reload::ReloadReply;
use super::signals::{Signal, Signals};

/// A request to the control loop.
#[derive(Debug)]
pub enum Request {
    /// Load the config again and swap it in (SIGHUP); the outcome goes to the reply, if any.
    Reload(Option<ReloadReply>),
    /// Write every counter to the log (SIGUSR1).
    DumpCounters,
    /// Stop (SIGTERM, SIGINT).
    Stop,
}

/// Sends requests to a running daemon from the same process.
#[derive(Debug, Clone)]
pub struct RequestSender(mpsc::UnboundedSender<Request>);

impl RequestSender {
    /// Sends `request`; false if the daemon is gone.
    pub fn send(&self, request: Request) -> bool {
        self.0.send(request).is_ok()
    }
}

/// Where the control loop's requests come from.
#[derive(Debug)]
pub struct Requests {
    signals: Option<Signals>,
    queue: Option<mpsc::UnboundedReceiver<Request>>,
}

impl Requests {
    /// Requests by signal: SIGHUP reloads, SIGTERM and SIGINT stop, SIGUSR1 dumps the
    /// counters. Installs the handlers; inside a tokio runtime.
    pub fn from_signals() -> Result<Requests> {
        Ok(Requests {
            signals: Some(Signals::new()?),
            queue: None,
        })
    }

    /// Requests from an in-process queue only (no signal handler is installed). When every
    /// sender is gone, the daemon stops.
    pub fn queue() -> (RequestSender, Requests) {
        let (sender, queue) = mpsc::unbounded_channel();
        let requests = Requests {
            signals: None,
            queue: Some(queue),
        };
        (RequestSender(sender), requests)
    }

    /// The next request.
    pub async fn next(&mut self) -> io::Result<Request> {
        let signal = async {
            match &mut self.signals {
                Some(signals) => signals.next().await,
                None => std::future::pending().await,
            }
        };
        let queued = async {
            match &mut self.queue {
                Some(queue) => queue.recv().await.unwrap_or(Request::Stop),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signal => Ok(match signal? {
                Signal::Reload => Request::Reload(None),
                Signal::DumpCounters => Request::DumpCounters,
                Signal::Stop => Request::Stop,
            }),
            request = queued => Ok(request),
        }
    }
}
