//! Where a route's connections go: the relay's [`Backend`](super::relay::Backend)s, one file
//! each. A new kind of destination (an upstream TLS server, a PROXY-protocol socket) is a new
//! file here and one arm where `conn` opens a connection's backend.

pub mod ring;
pub mod socket;
