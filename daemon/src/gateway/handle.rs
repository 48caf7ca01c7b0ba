//! The control plane's handle on the TLS thread: start it with a first plan, hand it new plans
//! and fresh rings, take its events, read its counters, stop it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::error::{GatewayError, PlanError};
use super::event::GatewayEvent;
use super::plan::Plan;
use super::stats::{Snapshot, Stats};
use super::thread::{self, Command, Links};

/// How the TLS thread is started.
#[derive(Debug, Clone)]
pub struct ThreadSettings {
    /// Stack size in bytes.
    pub stack_size: usize,
    /// CPU to pin it to.
    pub cpu: Option<usize>,
}

/// The control plane's handle on the TLS thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct Gateway {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// What the TLS thread tells the control plane, in order.
#[derive(Debug)]
pub struct GatewayEvents(mpsc::UnboundedReceiver<GatewayEvent>);

impl GatewayEvents {
    /// The next event; pending forever once the thread is gone.
    pub async fn next(&mut self) -> GatewayEvent {
        match self.0.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }
}

/// The TLS thread's answer to a plan, to be awaited.
#[derive(Debug)]
pub struct Applying(oneshot::Receiver<Result<(), PlanError>>);

impl Applying {
    /// Waits for the answer: `Ok` once the plan is in force.
    pub async fn answer(self) -> Result<(), GatewayError> {
        match self.0.await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(GatewayError::Stopped),
        }
    }
}

/// Hands plans to the TLS thread.
#[derive(Debug, Clone)]
pub struct Applier(mpsc::UnboundedSender<Command>);

impl Applier {
    /// Hands over a new plan; the TLS thread swaps it in between two events and answers.
    /// Established connections keep their settings.
    pub fn apply(&self, plan: Plan) -> Applying {
        let (answer, answered) = oneshot::channel();
        // If the thread is gone, the answer's sender is dropped with the command: `Stopped`.
        let _ = self.0.send(Command::Apply(plan, answer));
        Applying(answered)
    }
}

impl Gateway {
    /// Starts the TLS thread with a first plan; returns once the plan is in force.
    pub fn start(
        settings: &ThreadSettings,
        plan: Plan,
    ) -> Result<(Gateway, GatewayEvents), GatewayError> {
        let stats = Arc::new(Stats::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (started, started_rx) = std::sync::mpsc::channel();
        let links = Links {
            commands: receiver,
            events: events_tx,
            started,
        };
        let thread_stats = stats.clone();
        let cpu = settings.cpu;
        let thread = std::thread::Builder::new()
            .name("edgegw-tls".into())
            .stack_size(settings.stack_size)
            .spawn(move || thread::run(cpu, plan, thread_stats, links))
            .map_err(GatewayError::Spawn)?;
        let started = started_rx.recv().unwrap_or(Err(GatewayError::Stopped));
        if let Err(e) = started {
            let _ = thread.join();
            return Err(e);
        }
        let gateway = Gateway {
            commands,
            thread: Some(thread),
            stats,
        };
        Ok((gateway, GatewayEvents(events)))
    }

    /// A handle that hands plans to the TLS thread (a reload in flight holds one).
    pub fn applier(&self) -> Applier {
        Applier(self.commands.clone())
    }

    /// Hands the TLS thread a fresh reply ring for `ring` (see
    /// [`GatewayEvent::ReplyRingBroken`]).
    pub fn renew_reply(
        &self,
        ring: &str,
        reply: edgegw_ring::Consumer,
    ) -> Result<(), GatewayError> {
        self.send(Command::RenewReply(ring.to_string(), Box::new(reply)))
    }

    /// Hands the TLS thread a fresh ingress ring for `ring` (see
    /// [`GatewayEvent::IngressRingBroken`]).
    pub fn renew_ingress(
        &self,
        ring: &str,
        ingress: edgegw_ring::Producer,
    ) -> Result<(), GatewayError> {
        self.send(Command::RenewIngress(ring.to_string(), Box::new(ingress)))
    }

    /// Tells the TLS thread that `ring`'s ingress consumer detached or attached, so that the
    /// windows of one that is gone are reset.
    pub fn consumer_changed(&self, ring: &str) {
        let _ = self.send(Command::ConsumerChanged(ring.to_string()));
    }

    fn send(&self, command: Command) -> Result<(), GatewayError> {
        self.commands
            .send(command)
            .map_err(|_| GatewayError::Stopped)
    }

    /// Blocks the TLS thread for `time` (the watchdog's test; debug builds and the
    /// `stall-trigger` feature only).
    #[cfg(any(debug_assertions, feature = "stall-trigger"))]
    pub fn stall(&self, time: std::time::Duration) {
        let _ = self.send(Command::Stall(time));
    }

    /// The counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Each listener's counters now, by name (the listeners the config names).
    pub fn listener_stats(&self) -> Vec<(String, super::ListenerSnapshot)> {
        self.stats.listeners.snapshot()
    }

    /// The counters, shared.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops the TLS thread gracefully (see `Command::Drain`): returns how many connections were
    /// still open after `time`, `None` if the thread did not answer within `time` and a second.
    pub async fn drain(&mut self, time: std::time::Duration) -> Option<u64> {
        let (answer, answered) = oneshot::channel();
        self.send(Command::Drain(time, answer)).ok()?;
        let left = tokio::time::timeout(time + std::time::Duration::from_secs(1), answered)
            .await
            .ok()?
            .ok()?;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Some(left)
    }

    /// Stops the TLS thread: listeners close, connections are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}
