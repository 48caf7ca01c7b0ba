//! Routes to a plain TCP or unix socket on this host: edgegw as a TLS terminator in front of a
//! local service (what stunnel and hitch do).
//!
//! Both directions are relayed with bounded buffers: at most one read's worth of plaintext
//! waits for the backend (and while it waits the client is not read), and at most
//! [`OUTBOX_LIMIT`] of ciphertext waits for the client (and while it does the backend is not
//! read). Half-close is relayed: the client's close_notify becomes a shutdown of the backend's
//! write side; the backend's end of stream becomes close_notify.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::conn::{flush, send_alert, with_scratch};
use super::framing::FrameChecker;
use super::session::{PooledBuf, Progress, Session};
use super::stats::Stats;
use super::Limits;
use crate::config::Framing;

/// Ciphertext allowed to wait for a slow client before the backend is no longer read.
const OUTBOX_LIMIT: usize = 64 * 1024;

/// A socket route's destination.
#[derive(Debug, Clone)]
pub enum Target {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix stream socket.
    Unix(PathBuf),
}

enum Backend {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Backend {
    async fn connect(target: &Target) -> io::Result<Backend> {
        Ok(match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                Backend::Tcp(stream)
            }
            Target::Unix(path) => Backend::Unix(UnixStream::connect(path).await?),
        })
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Backend::Tcp(s) => s.readable().await,
            Backend::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Backend::Tcp(s) => s.writable().await,
            Backend::Unix(s) => s.writable().await,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Backend::Tcp(s) => s.try_read(buf),
            Backend::Unix(s) => s.try_read(buf),
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Backend::Tcp(s) => s.try_write(buf),
            Backend::Unix(s) => s.try_write(buf),
        }
    }

    fn shutdown_write(&self) {
        let fd = match self {
            Backend::Tcp(s) => s.as_raw_fd(),
            Backend::Unix(s) => s.as_raw_fd(),
        };
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write);
    }
}

/// Relays one established connection to its backend until either side ends it.
pub async fn serve(
    target: &Target,
    stream: TcpStream,
    mut session: Session,
    limits: &Limits,
    framing: Framing,
    stats: &Stats,
) {
    let backend = match tokio::time::timeout(limits.handshake_timeout, Backend::connect(target))
        .await
    {
        Ok(Ok(backend)) => backend,
        Ok(Err(e)) => return backend_failed(target, &e.to_string(), &stream, session, stats).await,
        Err(_) => {
            return backend_failed(target, "connect timed out", &stream, session, stats).await
        }
    };
    let mut to_backend = PooledBuf::default();
    let mut checker = match framing {
        Framing::LengthPrefixed { max_frame } => Some((FrameChecker::default(), max_frame)),
        Framing::Stream => None,
    };
    let mut client_done = false;
    let mut backend_done = false;
    let mut deadline = Instant::now() + limits.idle_timeout;

    loop {
        // Client plaintext to the backend: straight through when the backend takes it.
        if !client_done && to_backend.is_empty() {
            let mut bad_frame = None;
            let progress = session.process(&mut |data| {
                if let Some((checker, max)) = checker.as_mut() {
                    if let Err(e) = checker.check(data, *max) {
                        bad_frame = Some(e);
                        return data.len();
                    }
                }
                Stats::add(&stats.bytes_from_clients, data.len() as u64);
                // Whatever the backend does not take now waits in `to_backend`; a failed
                // write shows again, as an error, when that is flushed.
                let written = backend.try_write(data).unwrap_or_default();
                to_backend.extend_from_slice(&data[written..]);
                data.len()
            });
            if let Some(e) = bad_frame {
                Stats::bump(&stats.oversized_frames);
                log::debug!("closing: {e}");
                break;
            }
            match progress {
                Ok(Progress::NeedInput | Progress::SinkFull) => {}
                Ok(Progress::PeerClosed | Progress::Closed) => {
                    client_done = true;
                }
                Err(e) => {
                    send_alert(&stream, &mut session, stats, &e);
                    return;
                }
            }
        }
        if client_done && to_backend.is_empty() {
            backend.shutdown_write();
        }
        match session.flush_to(|b| stream.try_write(b)) {
            Ok(_) => {}
            Err(_) => return,
        }
        if backend_done && !session.wants_write() {
            return;
        }
        if client_done && backend_done {
            break;
        }

        let read_client = !client_done && to_backend.is_empty() && !session.has_pending();
        let read_backend = !backend_done && session.outbox_len() < OUTBOX_LIMIT;
        tokio::select! {
            r = stream.readable(), if read_client => {
                if r.is_err() { return; }
                match session.read_from(|b| stream.try_read(b)) {
                    Ok(0) => {
                        // End of stream without close_notify: a truncation, not a clean close.
                        client_done = true;
                        to_backend.consume(usize::MAX);
                        backend.shutdown_write();
                    }
                    Ok(_) => deadline = Instant::now() + limits.idle_timeout,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            r = stream.writable(), if session.wants_write() => {
                if r.is_err() { return; }
            }
            r = backend.writable(), if !to_backend.is_empty() => {
                if r.is_err() { return; }
                match backend.try_write(to_backend.as_slice()) {
                    Ok(n) => to_backend.consume(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            r = backend.readable(), if read_backend => {
                if r.is_err() { return; }
                let result = with_scratch(|buf| match backend.try_read(buf) {
                    Ok(0) => Ok(0),
                    Ok(n) => session.write(&buf[..n]).map(|()| n).map_err(|e| io::Error::other(e.to_string())),
                    Err(e) => Err(e),
                });
                match result {
                    Ok(0) => {
                        backend_done = true;
                        session.close();
                    }
                    Ok(n) => {
                        Stats::add(&stats.bytes_to_clients, n as u64);
                        deadline = Instant::now() + limits.idle_timeout;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        backend_done = true;
                        session.close();
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                Stats::bump(&stats.idle_timeouts);
                break;
            }
        }
    }
    session.close();
    let _ = tokio::time::timeout(limits.handshake_timeout, flush(&stream, &mut session)).await;
}

async fn backend_failed(
    target: &Target,
    why: &str,
    stream: &TcpStream,
    mut session: Session,
    stats: &Stats,
) {
    Stats::bump(&stats.backend_errors);
    log::warn!("backend {target:?}: {why}");
    session.close();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        flush(stream, &mut session),
    )
    .await;
}
