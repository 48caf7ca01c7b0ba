//! The data path: the TLS thread, its listeners and connections, and the routes they feed.
//!
//! The two threads show in the files. The control plane (main thread) holds a [`Gateway`]
//! (`handle.rs`): it starts the TLS thread with a first [`Plan`] (`plan.rs`: the validated
//! config, the rustls configs, new rings' endpoints and changes to the listening sockets),
//! hands it later plans and fresh rings, and receives [`GatewayEvent`]s (`event.rs`).
//!
//! The TLS thread (`thread.rs`) is one named OS thread (stack size and CPU affinity from the
//! config) running a tokio current_thread runtime. It owns every listening socket while it
//! accepts on it, every TLS connection, the producer end of every ingress ring and the consumer
//! end of every reply ring. Nothing on it is shared with another thread except through its
//! commands and events and the [`Stats`] counters, so it needs no locks: its state is plain,
//! per-connection state is `Rc`/`RefCell`. It swaps a plan in between two events; connections
//! keep the settings they started with (an established connection survives any reload).
//!
//! On that thread: `listener.rs` accepts and admits (`admission.rs`: limits per listener and
//! per source); `conn.rs` runs a connection's handshake, then opens its route's backend
//! (`backend/`: a ring pair's side, `ring_pair.rs`, or a local socket) and hands both to the
//! relay (`relay.rs`), the one loop between a client (`client.rs`, over `session.rs`) and any
//! backend.

mod admission;
mod backend;
mod client;
mod conn;
mod error;
mod event;
pub mod framing;
mod handle;
mod listener;
mod plan;
mod relay;
mod ring_pair;
pub mod session;
pub mod stats;
mod thread;
mod x509;

pub use error::{GatewayError, PlanError};
pub use event::GatewayEvent;
pub use handle::{Applier, Applying, Gateway, GatewayEvents, ThreadSettings};
pub use plan::{Plan, RingEndpoints, SocketId, SocketOp};
pub use stats::{ListenerSnapshot, RingCounter, Snapshot, Stats};
