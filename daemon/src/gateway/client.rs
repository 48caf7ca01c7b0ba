//! A connection's client side: its socket and its TLS session together, and what the
//! handshake and the relay do with both (read, flush, send an alert, close).
//!
//! [`Session`] stays free of I/O (it only reads and writes through the closures it is given);
//! this is the one place where it meets the socket.

use std::io;
use std::time::Duration;

use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

use super::session::Session;
use super::stats::Stats;

/// A client connection: its socket and its TLS session.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// The TLS state and buffers.
    pub session: Session,
}

impl Client {
    /// A client on `stream` with a fresh `session`.
    pub fn new(stream: TcpStream, session: Session) -> Client {
        Client { stream, session }
    }

    /// Waits until the socket is readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Waits until the socket is readable (if `read`) or writable (if `write`), with one
    /// readiness future (a connection's task keeps it for its whole life: every byte of it is
    /// per connection). Pending forever if neither is asked.
    pub async fn ready(&self, read: bool, write: bool) -> io::Result<Ready> {
        let interest = match (read, write) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            (false, false) => return std::future::pending().await,
        };
        self.stream.ready(interest).await
    }

    /// One non-blocking read into the session. `Ok(0)` is end of stream.
    pub fn read(&mut self) -> io::Result<usize> {
        let stream = &self.stream;
        self.session.read_from(|buf| stream.try_read(buf))
    }

    /// Writes as much of the outbox as the socket takes now. Returns whether it is empty.
    pub fn try_flush(&mut self) -> io::Result<bool> {
        let stream = &self.stream;
        self.session.flush_to(|bytes| stream.try_write(bytes))
    }

    /// Writes the whole outbox, waiting for the socket as needed.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.try_flush()? {
            self.stream.writable().await?;
        }
        Ok(())
    }

    /// Sends `alert`, raw bytes written before any handshake (see `tls::clienthello`), if the
    /// socket takes them now.
    pub fn refuse(&mut self, alert: &[u8]) {
        self.session.queue_raw(alert);
        let _ = self.try_flush();
    }

    /// Ends the connection after a TLS error: counts it, and sends the alert rustls queued if
    /// the socket takes it now.
    pub fn alert(&mut self, stats: &Stats, error: &rustls::Error) {
        stats.count_tls_error(error);
        self.session.queue_alert_after_error();
        let _ = self.try_flush();
    }

    /// Queues close_notify (nothing after a fatal error) and writes what is queued, giving up
    /// after `limit`.
    pub async fn close(&mut self, limit: Duration) {
        self.session.close();
        let _ = tokio::time::timeout(limit, self.flush()).await;
    }

    /// Drops what waits to be written: the client does not read it.
    pub fn discard(&mut self) {
        self.session.discard_outbox();
    }
}
