//! A connection's life up to its route: limits, handshake under a deadline, refusal of unknown
//! server names with the right alert, then the route's own loop.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::session::Session;
use super::stats::Stats;
use super::wire::OpenInfo;
use super::{Listener, ListenerSettings, Route, Shared};
use crate::tls::clienthello::{self, Peek};

/// Counts one unit in a cell (and optionally a shared gauge) for as long as it lives.
pub struct Counted<'a> {
    cell: &'a Cell<usize>,
    gauge: Option<&'a AtomicU64>,
}

impl<'a> Counted<'a> {
    pub fn new(cell: &'a Cell<usize>, gauge: Option<&'a AtomicU64>) -> Self {
        cell.set(cell.get() + 1);
        if let Some(g) = gauge {
            Stats::bump(g);
        }
        Counted { cell, gauge }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.cell.set(self.cell.get() - 1);
        if let Some(g) = self.gauge {
            g.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Why a handshake did not complete.
#[derive(Debug)]
enum HandshakeError {
    Io(io::Error),
    Eof,
    UnknownSni(String),
    Tls(rustls::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "socket error: {e}"),
            HandshakeError::Eof => f.write_str("client closed the connection"),
            HandshakeError::UnknownSni(name) => {
                write!(f, "no certificate for server name `{name}`")
            }
            HandshakeError::Tls(e) => write!(f, "TLS error: {e}"),
        }
    }
}

/// Runs one accepted connection to its end.
pub async fn run(
    shared: Rc<Shared>,
    listener: Rc<Listener>,
    settings: Rc<ListenerSettings>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    let stats = &shared.stats;
    let _active = Counted::new(&listener.active, Some(&stats.active));
    let handshaking = Counted::new(&listener.handshaking, None);
    let mut session = match Session::new(settings.tls.config.clone()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("connection {id} from {peer}: cannot start TLS: {e}");
            return;
        }
    };

    let handshake = tokio::time::timeout(
        settings.limits.handshake_timeout,
        handshake(&stream, &mut session, &settings, stats),
    )
    .await;
    let sni = match handshake {
        Ok(Ok(sni)) => sni,
        Err(_elapsed) => {
            Stats::bump(&stats.handshake_timeouts);
            log::debug!("connection {id} from {peer}: handshake timeout");
            return;
        }
        Ok(Err(e)) => {
            log::debug!("connection {id} from {peer}: handshake failed: {e}");
            return;
        }
    };
    drop(handshaking);
    Stats::bump(&stats.handshakes);

    let info = OpenInfo {
        peer: peer.to_string(),
        listener: settings.listener.clone(),
        sni: sni.unwrap_or_default(),
        alpn: session
            .conn()
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        client_subject: session
            .conn()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| super::x509::subject(leaf))
            .unwrap_or_default(),
    };
    match &settings.route {
        Route::Ring { ring, framing } => {
            super::ring_route::serve(
                ring,
                id,
                info,
                stream,
                session,
                &settings.limits,
                *framing,
                stats,
            )
            .await
        }
        Route::Socket { target, framing } => {
            super::socket_route::serve(target, stream, session, &settings.limits, *framing, stats)
                .await
        }
    }
}

/// Reads and answers handshake messages until the handshake is complete. Returns the client's
/// server name. Application data that arrives with the client's last flight stays in the
/// session for the route.
async fn handshake(
    stream: &TcpStream,
    session: &mut Session,
    settings: &ListenerSettings,
    stats: &Stats,
) -> Result<Option<String>, HandshakeError> {
    let mut server_name: Option<Option<String>> = None;
    loop {
        stream.readable().await.map_err(HandshakeError::Io)?;
        match session.read_from(|buf| stream.try_read(buf)) {
            Ok(0) => return Err(HandshakeError::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HandshakeError::Io(e)),
        }
        if server_name.is_none() {
            if clienthello::oversized_plaintext_record(session.incoming()) {
                Stats::bump(&stats.oversized_records);
                session.queue_raw(&clienthello::ALERT_RECORD_OVERFLOW);
                let _ = session.flush_to(|b| stream.try_write(b));
                return Err(HandshakeError::Tls(rustls::Error::PeerSentOversizedRecord));
            }
            match clienthello::peek(session.incoming()) {
                Peek::Incomplete => continue,
                Peek::NotUnderstood => server_name = Some(None),
                Peek::Hello(hello) => {
                    let config = settings.tls.config_for(&hello);
                    if !Arc::ptr_eq(config, &settings.tls.config) {
                        // rustls has not seen a byte yet: start it over with this config.
                        session
                            .restart(config.clone())
                            .map_err(HandshakeError::Tls)?;
                    }
                    let name = hello.server_name;
                    if settings.tls.resolver.lookup(name.as_deref()).is_none() {
                        Stats::bump(&stats.unknown_sni);
                        session.queue_raw(&clienthello::ALERT_UNRECOGNIZED_NAME);
                        let _ = session.flush_to(|b| stream.try_write(b));
                        return Err(HandshakeError::UnknownSni(name.unwrap_or_default()));
                    }
                    server_name = Some(name);
                }
            }
        }
        if let Err(e) = session.process(&mut |_| 0) {
            stats.count_tls_error(&e);
            session.queue_alert_after_error();
            // Best effort: the alert goes out if the socket takes it now.
            let _ = session.flush_to(|b| stream.try_write(b));
            return Err(HandshakeError::Tls(e));
        }
        flush(stream, session).await.map_err(HandshakeError::Io)?;
        if !session.is_handshaking() {
            return Ok(server_name.flatten());
        }
    }
}

/// Writes the whole outbox, waiting for the socket as needed.
pub async fn flush(stream: &TcpStream, session: &mut Session) -> io::Result<()> {
    while !session.flush_to(|b| stream.try_write(b))? {
        stream.writable().await?;
    }
    Ok(())
}

/// Ends a connection after a TLS error: the alert rustls queued goes out, best effort.
pub fn send_alert(stream: &TcpStream, session: &mut Session, stats: &Stats, error: &rustls::Error) {
    stats.count_tls_error(error);
    session.queue_alert_after_error();
    let _ = session.flush_to(|b| stream.try_write(b));
}

/// Thread-local scratch space for reading from backends and reply rings before encryption.
pub fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Box<[u8]>> =
            std::cell::RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
    }
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Size of [`with_scratch`]'s buffer: one TLS record of plaintext.
pub const SCRATCH_LEN: usize = 16 * 1024;
