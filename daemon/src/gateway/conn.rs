//! A connection's life up to its route: limits, handshake under a deadline, refusal of unknown
//! server names with the right alert, then the route's own loop.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::session::Session;
use super::stats::Stats;
use super::{Limits, Listener, ListenerSettings, Route, Shared};
use crate::proto::OpenInfo;
use crate::tls::clienthello::{self, Peek};

/// Where handshakes are counted together: an IPv4 address, or an IPv6 /64 (the prefix one
/// host, or one customer line, gets: anyone holding a /64 can pick any address in it, so a
/// per-address count would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (also an IPv4-mapped IPv6 one).
    V4(Ipv4Addr),
    /// The high 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The source a client address counts under.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections`.
    Connections,
    /// `max_handshakes`.
    Handshakes,
    /// `max_handshakes_per_source`.
    Source,
}

/// A connection's places in its listener's counts (connections, handshakes, handshakes from
/// its source), taken when it is accepted, so a burst of accepts sees every earlier one, and
/// given back as each ends.
pub struct Admission {
    listener: Rc<Listener>,
    stats: Arc<Stats>,
    source: Source,
    handshaking: bool,
}

impl Admission {
    /// Takes the places, or says which limit is reached.
    pub fn take(
        listener: &Rc<Listener>,
        limits: &Limits,
        source: Source,
        stats: &Arc<Stats>,
    ) -> Result<Admission, Refused> {
        if listener.active.get() >= limits.max_connections {
            return Err(Refused::Connections);
        }
        if listener.handshaking.get() >= limits.max_handshakes {
            return Err(Refused::Handshakes);
        }
        let mut sources = listener.sources.borrow_mut();
        let from_source = sources.entry(source).or_insert(0);
        if *from_source >= limits.max_handshakes_per_source {
            return Err(Refused::Source);
        }
        *from_source += 1;
        listener.active.set(listener.active.get() + 1);
        listener.handshaking.set(listener.handshaking.get() + 1);
        Stats::bump(&stats.active);
        Ok(Admission {
            listener: listener.clone(),
            stats: stats.clone(),
            source,
            handshaking: true,
        })
    }

    /// The handshake is over: its places go back.
    pub fn handshake_done(&mut self) {
        if !std::mem::take(&mut self.handshaking) {
            return;
        }
        let listener = &self.listener;
        listener.handshaking.set(listener.handshaking.get() - 1);
        let mut sources = listener.sources.borrow_mut();
        if let Some(n) = sources.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                // Memory follows the sources handshaking now, not every source ever seen.
                sources.remove(&self.source);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.handshake_done();
        self.listener.active.set(self.listener.active.get() - 1);
        self.stats
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
    mut admission: Admission,
    settings: Rc<ListenerSettings>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    let stats = &shared.stats;
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
    admission.handshake_done();
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
    if let Ok(peer) = stream.peer_addr() {
        log::debug!("client {peer}: TLS error after the handshake, closed with an alert: {error}");
    }
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

#[cfg(test)]
mod tests {
    use super::Source;

    #[test]
    fn ipv4_counts_by_address_and_ipv6_by_its_64_bit_prefix() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(
            of("192.0.2.1"),
            of("::ffff:192.0.2.1"),
            "mapped IPv4 is IPv4"
        );
        assert_ne!(of("192.0.2.1"), of("192.0.2.2"));
        assert_eq!(
            of("2001:db8:1:2::1"),
            of("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(of("192.0.2.1").to_string(), "192.0.2.1");
    }
}
