//! What the control plane hands the TLS thread: a [`Plan`], the resolved config itself plus
//! what only the control plane can make (rustls configs, rings, bound sockets).
//!
//! Listening sockets belong to the control plane's socket table; the TLS thread only accepts
//! on them. A plan carries the changes to that table as [`SocketOp`]s ("accept on this new
//! socket for listener X", "close socket N"), so the same operations serve a reload and, later,
//! a listener that opens and closes sockets as its addresses come and go.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use edgegw_ring::{Consumer, OwnerCounters, Producer};

use crate::config::Config;
use crate::tls::ListenerTls;

/// Everything the TLS thread runs with. Listeners, routes and rings come from `config`;
/// connections keep the settings they started with (an established connection survives any
/// plan), new ones get the new settings.
#[derive(Debug)]
pub struct Plan {
    /// The validated config: listeners, their routes (targets, framing) and rings (full-ring
    /// policy).
    pub config: Arc<Config>,
    /// Each listener's TLS settings, by listener name.
    pub tls: HashMap<String, ListenerTls>,
    /// The local ends of the rings the TLS thread does not have yet, by ring name. A ring it
    /// has keeps running (with its unread records) under the new config's settings.
    pub new_rings: HashMap<String, RingEndpoints>,
    /// Changes to the listening sockets.
    pub sockets: Vec<SocketOp>,
}

/// A listening socket's name in the control plane's socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A change to the listening sockets the TLS thread accepts on.
#[derive(Debug)]
pub enum SocketOp {
    /// Accept on a newly opened socket for a listener.
    Open {
        /// Its name in the table.
        id: SocketId,
        /// The listener its connections belong to.
        listener: String,
        /// The socket, bound and listening.
        socket: std::net::TcpListener,
    },
    /// Accept on a socket the TLS thread has for another listener (one renamed, keeping its
    /// address).
    Move {
        /// The socket.
        id: SocketId,
        /// The listener it serves from now on.
        listener: String,
    },
    /// Stop accepting on a socket and close it (its connections stay).
    Close {
        /// The socket.
        id: SocketId,
    },
}

impl SocketOp {
    /// The socket it is about.
    pub fn id(&self) -> SocketId {
        match self {
            SocketOp::Open { id, .. } | SocketOp::Move { id, .. } | SocketOp::Close { id } => *id,
        }
    }
}

/// The local ends of a ring pair, built by the control plane and moved to the TLS thread.
#[derive(Debug)]
pub struct RingEndpoints {
    /// We produce into it; the consumer process reads.
    pub ingress: Producer,
    /// The consumer process produces into it; we read.
    pub reply: Consumer,
    /// The ring's counters (see `RingCounter`), also served by its attach servers.
    pub counters: Arc<OwnerCounters>,
}
