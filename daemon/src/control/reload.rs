//! Reloads, one at a time, without stopping the control loop.
//!
//! A reload is a future the loop polls beside everything else: the new state is built on the
//! blocking pool (reading files, parsing certificates, binding sockets) and handed to the TLS
//! thread, while the loop goes on serving attach sockets, the TLS thread's events and other
//! requests. A request that comes while a reload is in flight is queued, once: however many
//! come, one more reload runs after the one in flight, and everyone who asked meanwhile gets
//! its answer. Nothing is lost (the queued reload reads the files after the last request) and
//! nothing is done twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::sockets::Listening;
use crate::config::ConfigError;
use crate::gateway::GatewayError;

/// Why a reload did not happen. The old config is still running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config (or a certificate it names) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new config is valid but cannot be put in place (a port in use, a ring's capacity
    /// changed, ...).
    #[error("{0:#}")]
    Apply(anyhow::Error),
    /// The TLS thread refused the new plan, or is gone.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Loading and validating the new config took longer than `daemon.reload_timeout`.
    #[error("loading and validating the new config took longer than {0:?} (daemon.reload_timeout); abandoned")]
    TimedOut(std::time::Duration),
}

/// A reload that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The listening sockets now.
    pub listening: Vec<Listening>,
}

/// How a reload went, as its requesters learn it.
pub type ReloadOutcome = Result<Reloaded, Arc<ReloadError>>;

/// Where a requester waits for its reload's outcome.
pub type ReloadReply = oneshot::Sender<ReloadOutcome>;

type InFlight<T> = Pin<Box<dyn Future<Output = Result<T, ReloadError>>>>;

/// The reload in flight, if any, and the one queued behind it. `T` is what a reload that went
/// through leaves for the loop to put in place.
pub struct Reloads<T> {
    in_flight: Option<InFlight<T>>,
    /// Who waits for the reload in flight.
    waiting: Vec<ReloadReply>,
    /// Who asked while it was in flight: they get the next one.
    queued: Option<Vec<ReloadReply>>,
}

impl<T> std::fmt::Debug for Reloads<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloads")
            .field("in_flight", &self.in_flight.is_some())
            .field("queued", &self.queued.is_some())
            .finish()
    }
}

impl<T> Default for Reloads<T> {
    fn default() -> Self {
        Reloads {
            in_flight: None,
            waiting: Vec::new(),
            queued: None,
        }
    }
}

impl<T> Reloads<T> {
    /// Someone asks for a reload (`reply`: where to answer, if anywhere). Returns whether one
    /// should start now; if one is in flight, the request is queued behind it.
    pub fn request(&mut self, reply: Option<ReloadReply>) -> bool {
        if self.in_flight.is_none() {
            self.waiting.extend(reply);
            return true;
        }
        self.queued.get_or_insert_with(Vec::new).extend(reply);
        false
    }

    /// Starts a reload (after [`Reloads::request`] or [`Reloads::finish`] said so).
    pub fn start(&mut self, reload: impl Future<Output = Result<T, ReloadError>> + 'static) {
        debug_assert!(self.in_flight.is_none(), "one reload at a time");
        self.in_flight = Some(Box::pin(reload));
    }

    /// Waits for the reload in flight to be built and handed over (pending if none is).
    pub async fn finished(&mut self) -> Result<T, ReloadError> {
        match &mut self.in_flight {
            Some(reload) => {
                let result = reload.await;
                self.in_flight = None;
                result
            }
            None => std::future::pending().await,
        }
    }

    /// The reload in flight is over: its requesters get `outcome`. Returns whether a queued
    /// reload should start now (its requesters wait for that one).
    pub fn finish(&mut self, outcome: &ReloadOutcome) -> bool {
        for reply in self.waiting.drain(..) {
            let _ = reply.send(outcome.clone());
        }
        match self.queued.take() {
            Some(queued) => {
                self.waiting = queued;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> (ReloadReply, oneshot::Receiver<ReloadOutcome>) {
        oneshot::channel()
    }

    fn done() -> ReloadOutcome {
        Ok(Reloaded {
            listening: Vec::new(),
        })
    }

    /// Runs the reload in flight to its end, as the control loop does.
    fn finish_in_flight(reloads: &mut Reloads<()>) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(reloads.finished())
            .unwrap();
    }

    #[test]
    fn requests_during_a_reload_make_exactly_one_more_and_everyone_gets_an_answer() {
        let mut reloads = Reloads::<()>::default();
        let (first, mut first_rx) = reply();
        assert!(reloads.request(Some(first)), "nothing in flight: start");
        reloads.start(async { Ok(()) });
        // A storm of requests while it is in flight: queued once.
        let mut storm = Vec::new();
        for _ in 0..100 {
            let (tx, rx) = reply();
            assert!(!reloads.request(Some(tx)), "one in flight: queued");
            storm.push(rx);
        }
        assert!(!reloads.request(None), "a signal (no reply) is queued too");

        finish_in_flight(&mut reloads);
        assert!(reloads.finish(&done()), "the queued one starts now");
        assert!(first_rx.try_recv().unwrap().is_ok());
        assert!(
            storm.iter_mut().all(|rx| rx.try_recv().is_err()),
            "not theirs yet"
        );
        reloads.start(async { Ok(()) });
        assert!(!reloads.request(None), "in flight again: queued");
        finish_in_flight(&mut reloads);

        let failed: ReloadOutcome = Err(Arc::new(ReloadError::Apply(anyhow::anyhow!("port"))));
        assert!(
            reloads.finish(&failed),
            "the request made during the second runs"
        );
        for mut rx in storm {
            assert!(
                rx.try_recv().unwrap().is_err(),
                "each gets the second's outcome"
            );
        }
        reloads.start(async { Ok(()) });
        finish_in_flight(&mut reloads);
        assert!(!reloads.finish(&done()), "nothing queued behind the third");
    }

    #[test]
    fn a_request_after_a_reload_ended_starts_a_new_one() {
        let mut reloads = Reloads::<()>::default();
        assert!(reloads.request(None));
        reloads.start(async { Ok(()) });
        finish_in_flight(&mut reloads);
        assert!(!reloads.finish(&done()));
        assert!(
            reloads.request(None),
            "nothing in flight, nothing queued: start"
        );
    }
}
