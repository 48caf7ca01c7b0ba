//! The relay: one established connection's life between its client and its backend.
//!
//! A route's destination is a [`Backend`]: a ring pair (`backend::ring`), a TCP or unix socket
//! (`backend::socket`), later an upstream TLS server or a PROXY-protocol socket, each in a file
//! of its own. The relay is the one loop over any of them: it decrypts the client's bytes and
//! offers them to the backend, encrypts what the backend has for the client, and keeps the
//! rules every route shares: the idle deadline, the alert after a TLS error, half-close, the
//! bound on what waits for a slow client, and the last flush within the handshake timeout.
//!
//! Backpressure both ways is "not now", never a spin: a backend that takes fewer bytes than
//! offered keeps the rest in the session (which then stops reading the client) until its
//! [`Backend::ready`] says [`Event::Offer`]; and the relay asks for the backend's bytes only
//! while fewer than [`OUTBOX_LIMIT`] bytes wait for the client, and only when the backend says
//! [`Event::Read`]. Flow-control windows (a backend that says "not now" until its peer grants
//! more) fit the same two answers.

use std::io;

use tokio::time::Instant;

use super::client::Client;
use super::framing::FrameTooLarge;
use super::session::Progress;
use super::stats::Stats;
use crate::config::ListenerConfig;
use edgegw_proto::CloseReason;

/// Ciphertext allowed to wait for a slow client before the relay stops asking the backend for
/// more.
pub const OUTBOX_LIMIT: usize = 64 * 1024;

/// What a connection runs with, besides its client and its backend.
#[derive(Debug)]
pub struct Context<'a> {
    /// The connection's id (the ring records carry it).
    pub id: u64,
    /// The gateway's counters.
    pub stats: &'a Stats,
    /// Its listener's settings: the idle timeout, and the handshake timeout, which also bounds
    /// the last flush.
    pub listener: &'a ListenerConfig,
    /// Becomes true when the daemon stops: the connection ends with CLOSE reason 5
    /// (`Shutdown`) and close_notify.
    pub drain: &'a tokio::sync::watch::Receiver<bool>,
}

/// What the relay waits for from a backend, besides the end of the connection (always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// The backend took fewer bytes than offered: wait until it takes more.
    pub offer: bool,
    /// The client has room: wait until the backend has bytes for it.
    pub read: bool,
}

/// What [`Backend::ready`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Offer again: the backend may take more.
    Offer,
    /// Read: the backend may have bytes for the client (or its end).
    Read,
    /// The backend ends the connection now.
    Close(CloseReason),
}

/// What [`Backend::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many bytes went to the client.
    Data(usize),
    /// Nothing now.
    Nothing,
    /// The backend has sent all it will: close_notify follows the bytes already given.
    End,
}

/// Why a backend refused an offer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A length-prefixed frame is longer than the route allows.
    #[error(transparent)]
    Frame(#[from] FrameTooLarge),
    /// The backend's socket failed.
    #[error("backend: {0}")]
    Io(#[from] io::Error),
}

/// A route's destination, as the relay sees it.
///
/// Everything but `offer`, `close_write`, `ready` and `read` has a default that does nothing.
pub(super) trait Backend {
    /// Takes a prefix of the client's plaintext and says how long it is. Taking less than
    /// offered (zero included) means "not now": the rest is offered again, first and unchanged,
    /// once [`Backend::ready`] says [`Event::Offer`].
    fn offer(&mut self, plaintext: &[u8]) -> Result<usize, BackendError>;

    /// Makes the offers since the last call visible to the backend's reader (a ring publishes
    /// them with one store). Called once per batch.
    fn flush(&mut self) {}

    /// The client sends nothing more: `clean` after its close_notify, not after an end of
    /// stream without one. Returns the reason to end the connection now, or `None` to go on
    /// with the backend's side.
    fn close_write(&mut self, clean: bool) -> Option<CloseReason>;

    /// Waits for what `interest` asks for, or for the backend to end the connection. Must be
    /// cancel-safe: the relay drops it whenever something else happens first.
    async fn ready(&mut self, interest: Interest) -> Event;

    /// Hands the bytes the backend has for the client to `sink`, which encrypts them.
    fn read(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), rustls::Error>,
    ) -> Result<Read, rustls::Error>;

    /// `bytes` of the backend's wait in the client's outbox (for budgets and windows).
    fn unsent(&mut self, _bytes: usize) {}

    /// The connection ends for `reason`; called once, before the client's last flush.
    fn finish(&mut self, _reason: CloseReason) {}
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// close_notify after what is queued, within the handshake timeout.
    Close(CloseReason),
    /// What waits for the client is dropped, without close_notify: the client is too slow, or
    /// the backend failed mid-stream (a clean close would say nothing was lost).
    Drop(CloseReason),
}

/// Relays one established connection until either side ends it, then closes it.
pub(super) async fn run<B: Backend>(client: &mut Client, backend: &mut B, cx: &Context<'_>) {
    let ending = relay(client, backend, cx).await;
    match ending {
        Ending::Close(reason) => {
            backend.finish(reason);
            client.close(cx.listener.handshake_timeout).await;
        }
        Ending::Drop(reason) => {
            backend.finish(reason);
            client.discard();
        }
    }
}

/// The loop: client plaintext to the backend, the backend's bytes to the client.
async fn relay<B: Backend>(client: &mut Client, backend: &mut B, cx: &Context<'_>) -> Ending {
    let mut deadline = Instant::now() + cx.listener.idle_timeout;
    let mut client_done = false;
    let mut drain = cx.drain.clone();
    loop {
        let mut blocked = false;
        if !client_done {
            match offer(client, backend, cx) {
                Ok(Progress::NeedInput) => {}
                Ok(Progress::SinkFull) => blocked = true,
                Ok(Progress::PeerClosed | Progress::Closed) => {
                    // The client is done sending; the backend may still answer.
                    client_done = true;
                    if let Some(reason) = backend.close_write(true) {
                        return Ending::Close(reason);
                    }
                }
                Err(ending) => return ending,
            }
        }
        if client.try_flush().is_err() {
            return Ending::Close(CloseReason::ClientAborted);
        }
        let unsent = client.session.outbox_len();
        backend.unsent(unsent);

        let interest = Interest {
            offer: blocked,
            read: unsent < OUTBOX_LIMIT,
        };
        let read_client = !client_done && !blocked;
        tokio::select! {
            ready = client.ready(read_client, unsent > 0), if read_client || unsent > 0 => {
                let Ok(ready) = ready else {
                    return Ending::Close(CloseReason::ClientAborted);
                };
                if ready.is_writable() && unsent > 0 {
                    if client.try_flush().is_err() {
                        return Ending::Close(CloseReason::ClientAborted);
                    }
                    if client.session.outbox_len() < unsent {
                        // The client reads: it is not idle.
                        deadline = Instant::now() + cx.listener.idle_timeout;
                    }
                }
                if ready.is_readable() && read_client {
                    match client.read() {
                        Ok(0) => {
                            // End of stream without close_notify: a truncation, not a clean
                            // close.
                            client_done = true;
                            if let Some(reason) = backend.close_write(false) {
                                return Ending::Close(reason);
                            }
                        }
                        Ok(_) => deadline = Instant::now() + cx.listener.idle_timeout,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Ending::Close(CloseReason::ClientAborted),
                    }
                }
            }
            event = backend.ready(interest) => match event {
                Event::Offer => {}
                Event::Read => {
                    let session = &mut client.session;
                    match backend.read(&mut |bytes| session.write(bytes)) {
                        Ok(Read::Data(_)) => deadline = Instant::now() + cx.listener.idle_timeout,
                        Ok(Read::Nothing) => {}
                        Ok(Read::End) => return Ending::Close(CloseReason::ConsumerClosed),
                        Err(e) => {
                            log::debug!("connection {}: cannot encrypt for the client: {e}", cx.id);
                            return Ending::Close(CloseReason::ProtocolError);
                        }
                    }
                }
                Event::Close(CloseReason::SlowClient) => {
                    return Ending::Drop(CloseReason::SlowClient)
                }
                Event::Close(reason) => return Ending::Close(reason),
            },
            () = tokio::time::sleep_until(deadline) => {
                Stats::bump(&cx.stats.idle_timeouts);
                return Ending::Close(CloseReason::Idle);
            }
            Ok(_) = drain.wait_for(|stopping| *stopping) => {
                // What the client sent and the session decrypted goes to the backend first.
                if !client_done {
                    if let Err(ending) = offer(client, backend, cx) {
                        return ending;
                    }
                }
                return Ending::Close(CloseReason::Shutdown);
            }
        }
    }
}

/// Runs the session over what the client sent, offering the plaintext to the backend.
fn offer<B: Backend>(
    client: &mut Client,
    backend: &mut B,
    cx: &Context<'_>,
) -> Result<Progress, Ending> {
    let mut refused = None;
    let progress = client.session.process(&mut |data| {
        if refused.is_some() {
            // Nothing after a refusal reaches the backend: the connection ends.
            return data.len();
        }
        match backend.offer(data) {
            Ok(taken) => taken,
            Err(e) => {
                refused = Some(e);
                data.len()
            }
        }
    });
    backend.flush();
    match refused {
        Some(BackendError::Frame(e)) => {
            Stats::bump(&cx.stats.oversized_frames);
            log::debug!("connection {}: {e}", cx.id);
            return Err(Ending::Close(CloseReason::ProtocolError));
        }
        Some(BackendError::Io(e)) => {
            log::debug!("connection {}: backend write failed: {e}", cx.id);
            return Err(Ending::Drop(CloseReason::ConsumerClosed));
        }
        None => {}
    }
    progress.map_err(|e| {
        log::debug!(
            "connection {}: TLS error after the handshake, closed with an alert: {e}",
            cx.id
        );
        client.alert(cx.stats, &e);
        Ending::Close(CloseReason::ProtocolError)
    })
}
