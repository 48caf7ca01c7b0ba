//! A route to a plain TCP or unix socket on this host: edgegw as a TLS terminator in front of a
//! local service (what stunnel and hitch do).
//!
//! Both directions are bounded without a buffer of the backend's own: the client's plaintext
//! that the socket does not take now stays in the session (which stops reading the client
//! until the socket is writable again), and the socket is read only while the client's outbox
//! has room (the relay's `OUTBOX_LIMIT`). Half-close is relayed: the client's close_notify (or
//! its end of stream) becomes a shutdown of the backend's write side; the backend's end of
//! stream becomes close_notify. Length-prefixed framing is only checked here: the stream goes
//! through as it is.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

use crate::config::{Framing, RouteTarget};
use crate::gateway::framing::FrameChecker;
use crate::gateway::relay::{Backend, BackendError, Event, Interest, Read};
use crate::gateway::stats::Stats;
use edgegw_proto::CloseReason;

/// Bytes read from the backend at a time: one TLS record of plaintext.
const READ_CHUNK: usize = 16 * 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One connection's backend socket.
pub(in crate::gateway) struct SocketBackend {
    stream: Stream,
    /// The frame checker and the route's max_frame, for length-prefixed framing.
    checker: Option<(FrameChecker, u32)>,
    /// Bytes at the start of the next offer that were checked already (the session offers what
    /// the socket did not take again).
    checked_ahead: usize,
    stats: Arc<Stats>,
}

impl SocketBackend {
    /// Connects to `target`, giving up after `limit`.
    pub(in crate::gateway) async fn connect(
        target: &RouteTarget,
        framing: Framing,
        limit: Duration,
        stats: Arc<Stats>,
    ) -> io::Result<SocketBackend> {
        let connect = async {
            Ok(match target {
                RouteTarget::Tcp(addr) => {
                    let stream = TcpStream::connect(addr).await?;
                    let _ = stream.set_nodelay(true);
                    Stream::Tcp(stream)
                }
                RouteTarget::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
                RouteTarget::Ring(name) => {
                    return Err(io::Error::other(format!("ring `{name}` is not a socket")))
                }
            })
        };
        let stream = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(SocketBackend {
            stream,
            checker: match framing {
                Framing::LengthPrefixed { max_frame } => Some((FrameChecker::default(), max_frame)),
                Framing::Stream => None,
            },
            checked_ahead: 0,
            stats,
        })
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match &self.stream {
            Stream::Tcp(s) => s.try_write(bytes),
            Stream::Unix(s) => s.try_write(bytes),
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.stream {
            Stream::Tcp(s) => s.try_read(buf),
            Stream::Unix(s) => s.try_read(buf),
        }
    }
}

impl Backend for SocketBackend {
    fn offer(&mut self, plaintext: &[u8]) -> Result<usize, BackendError> {
        if let Some((checker, max)) = &mut self.checker {
            // Checked before anything of it is written: an oversized frame's header never
            // reaches the backend.
            checker.check(plaintext.get(self.checked_ahead..).unwrap_or(&[]), *max)?;
        }
        let written = match self.try_write(plaintext) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e.into()),
        };
        self.checked_ahead = plaintext.len() - written;
        Stats::add(&self.stats.bytes_from_clients, written as u64);
        Ok(written)
    }

    fn close_write(&mut self, _clean: bool) -> Option<CloseReason> {
        let fd = match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
        None
    }

    async fn ready(&mut self, interest: Interest) -> Event {
        let wanted = match (interest.offer, interest.read) {
            (true, true) => tokio::io::Interest::WRITABLE | tokio::io::Interest::READABLE,
            (true, false) => tokio::io::Interest::WRITABLE,
            (false, true) => tokio::io::Interest::READABLE,
            (false, false) => return std::future::pending().await,
        };
        let ready = match &self.stream {
            Stream::Tcp(s) => s.ready(wanted).await,
            Stream::Unix(s) => s.ready(wanted).await,
        };
        match ready {
            Ok(ready) if interest.read && ready.is_readable() => Event::Read,
            // Not readable (or an error, which shows again when the relay writes or reads):
            // whichever was asked.
            _ if interest.offer => Event::Offer,
            _ => Event::Read,
        }
    }

    fn read(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), rustls::Error>,
    ) -> Result<Read, rustls::Error> {
        with_scratch(|buf| match self.try_read(buf) {
            Ok(0) => Ok(Read::End),
            Ok(n) => {
                sink(&buf[..n])?;
                Stats::add(&self.stats.bytes_to_clients, n as u64);
                Ok(Read::Data(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Nothing),
            // A failed backend ends its side as an end of stream would.
            Err(_) => Ok(Read::End),
        })
    }
}

/// Thread-local scratch space for reading from backends before encryption.
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Box<[u8]>> =
            std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
    }
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}
