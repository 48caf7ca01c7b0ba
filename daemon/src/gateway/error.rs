//! Why the TLS thread refused a plan, or could not be reached.

use std::io;

use super::plan::SocketId;

/// Why the TLS thread refused a plan. It checks a plan whole before it changes anything, so
/// after a refusal it runs the previous one, unchanged.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A ring the config names is neither in the plan nor running.
    #[error("ring `{0}` is not running on the TLS thread")]
    UnknownRing(String),
    /// A listener has no TLS settings in the plan.
    #[error("listener `{0}` has no TLS settings")]
    NoTls(String),
    /// A socket operation names a socket the TLS thread does not have.
    #[error("listening socket {0} is not open on the TLS thread")]
    UnknownSocket(SocketId),
    /// A socket operation would open a socket under a name already in use.
    #[error("listening socket {0} is open already")]
    SocketExists(SocketId),
    /// A socket would serve a listener the config does not have.
    #[error("listening socket {socket} is for listener `{listener}`, which is not configured")]
    UnknownListener {
        /// The socket.
        socket: SocketId,
        /// Its listener.
        listener: String,
    },
    /// A new listening socket cannot be used.
    #[error("listening socket {socket}: {source}")]
    Socket {
        /// The socket.
        socket: SocketId,
        /// What failed.
        source: io::Error,
    },
    /// A new ring cannot be started.
    #[error("ring `{ring}`: {source}")]
    Ring {
        /// The ring.
        ring: String,
        /// What failed.
        source: io::Error,
    },
}

/// Why the control plane's call to the TLS thread failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The thread could not be started.
    #[error("cannot start the TLS thread: {0}")]
    Spawn(#[source] io::Error),
    /// Its runtime could not be started.
    #[error("cannot start the TLS thread's runtime: {0}")]
    Runtime(#[source] io::Error),
    /// It refused the plan.
    #[error("the TLS thread refused the plan: {0}")]
    Plan(#[from] PlanError),
    /// It is gone (it panicked, or was stopped).
    #[error("the TLS thread has stopped")]
    Stopped,
}
