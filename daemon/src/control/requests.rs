//! What the daemon is asked to do, from wherever it is asked: signals, the control socket
//! (`server.rs`: `edgegw reload`, `status`, `metrics`, which wait for the answer), and an
//! in-process queue (the tests' harness).

use std::io;

use anyhow::Result;
use tokio::sync::{mpsc, oneshot};

use super::reload::ReloadReply;
use super::signals::{Signal, Signals};

/// A request to the control loop.
#[derive(Debug)]
pub enum Request {
    /// Load the config again and swap it in (SIGHUP); the outcome goes to the reply, if any.
    Reload(Option<ReloadReply>),
    /// Write every counter to the log (SIGUSR1).
    DumpCounters,
    /// The daemon's state as `edgegw status --json` prints it.
    Status(oneshot::Sender<serde_json::Value>),
    /// Every counter in Prometheus' text format.
    Metrics(oneshot::Sender<String>),
    /// Stall the TLS thread for this long (debug builds and the `stall-trigger` feature only:
    /// how the tests prove the watchdog).
    #[cfg(any(debug_assertions, feature = "stall-trigger"))]
    StallTlsThread(std::time::Duration),
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
    /// The control socket's requests: never closes (the loop holds a sender).
    control: mpsc::UnboundedReceiver<Request>,
    control_sender: mpsc::UnboundedSender<Request>,
}

impl Requests {
    /// Requests by signal: SIGHUP reloads, SIGTERM and SIGINT stop, SIGUSR1 dumps the
    /// counters. Installs the handlers; inside a tokio runtime.
    pub fn from_signals() -> Result<Requests> {
        let (control_sender, control) = mpsc::unbounded_channel();
        Ok(Requests {
            signals: Some(Signals::new()?),
            queue: None,
            control,
            control_sender,
        })
    }

    /// A sender for the control socket's clients. The queue it feeds never closes.
    pub fn control_sender(&self) -> RequestSender {
        RequestSender(self.control_sender.clone())
    }

    /// Requests from an in-process queue only (no signal handler is installed). When every
    /// sender is gone, the daemon stops.
    pub fn queue() -> (RequestSender, Requests) {
        let (sender, queue) = mpsc::unbounded_channel();
        let (control_sender, control) = mpsc::unbounded_channel();
        let requests = Requests {
            signals: None,
            queue: Some(queue),
            control,
            control_sender,
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
            Some(request) = self.control.recv() => Ok(request),
        }
    }
}
