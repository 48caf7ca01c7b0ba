//! A connection's life: limits, handshake under a deadline, refusal of unknown server names
//! with the right alert, then its route's backend and the relay.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::backend::ring::RingBackend;
use super::backend::socket::SocketBackend;
use super::client::Client;
use super::relay::{self, Context};
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
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("client closed the connection")]
    Eof,
    #[error("no certificate for server name `{0}`")]
    UnknownSni(String),
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
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
    let mut client = match Session::new(settings.tls.config.clone()) {
        Ok(session) => Client::new(stream, session),
        Err(e) => {
            log::warn!("connection {id} from {peer}: cannot start TLS: {e}");
            return;
        }
    };
    let handshake = tokio::time::timeout(
        settings.limits.handshake_timeout,
        handshake(&mut client, &settings, stats),
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

    let cx = Context {
        id,
        stats,
        handshake_timeout: settings.limits.handshake_timeout,
        idle_timeout: settings.limits.idle_timeout,
    };
    match &settings.route {
        Route::Ring { ring, framing } => {
            let info = open_info(&client, &settings, peer, sni);
            let wait = settings.limits.idle_timeout;
            if let Some(mut backend) = RingBackend::open(ring, id, &info, *framing, wait).await {
                drop(info);
                relay::run(&mut client, &mut backend, &cx).await;
            }
        }
        Route::Socket { target, framing } => {
            let limit = settings.limits.handshake_timeout;
            match SocketBackend::connect(target, *framing, limit, shared.stats.clone()).await {
                Ok(mut backend) => relay::run(&mut client, &mut backend, &cx).await,
                Err(e) => {
                    Stats::bump(&stats.backend_errors);
                    log::warn!("backend {target:?}: {e}");
                    client.close(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// What the consumer learns of a connection in its OPEN record.
fn open_info(
    client: &Client,
    settings: &ListenerSettings,
    peer: SocketAddr,
    sni: Option<String>,
) -> OpenInfo {
    let conn = client.session.conn();
    OpenInfo {
        peer: peer.to_string(),
        listener: settings.listener.clone(),
        sni: sni.unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default(),
        client_subject: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| super::x509::subject(leaf))
            .unwrap_or_default(),
    }
}

/// Reads and answers handshake messages until the handshake is complete. Returns the client's
/// server name. Application data that arrives with the client's last flight stays in the
/// session for the relay.
async fn handshake(
    client: &mut Client,
    settings: &ListenerSettings,
    stats: &Stats,
) -> Result<Option<String>, HandshakeError> {
    let mut server_name: Option<Option<String>> = None;
    loop {
        client.readable().await?;
        match client.read() {
            Ok(0) => return Err(HandshakeError::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        if server_name.is_none() {
            match peek_hello(client, settings, stats)? {
                Some(name) => server_name = Some(name),
                None => continue,
            }
        }
        if let Err(e) = client.session.process(&mut |_| 0) {
            // Best effort: the alert goes out if the socket takes it now.
            client.alert(stats, &e);
            return Err(e.into());
        }
        client.flush().await?;
        if !client.session.is_handshaking() {
            return Ok(server_name.flatten());
        }
    }
}

/// Looks at the ClientHello before rustls does: refuses an oversized record or an unknown
/// server name with the right alert, and picks the config for the client's cipher preference.
/// `None` while the ClientHello is incomplete; then the server name it asked for.
fn peek_hello(
    client: &mut Client,
    settings: &ListenerSettings,
    stats: &Stats,
) -> Result<Option<Option<String>>, HandshakeError> {
    if clienthello::oversized_plaintext_record(client.session.incoming()) {
        Stats::bump(&stats.oversized_records);
        client.refuse(&clienthello::ALERT_RECORD_OVERFLOW);
        return Err(rustls::Error::PeerSentOversizedRecord.into());
    }
    let hello = match clienthello::peek(client.session.incoming()) {
        Peek::Incomplete => return Ok(None),
        Peek::NotUnderstood => return Ok(Some(None)),
        Peek::Hello(hello) => hello,
    };
    let config = settings.tls.config_for(&hello);
    if !Arc::ptr_eq(config, &settings.tls.config) {
        // rustls has not seen a byte yet: start it over with this config.
        client.session.restart(config.clone())?;
    }
    let name = hello.server_name;
    if settings.tls.resolver.lookup(name.as_deref()).is_none() {
        Stats::bump(&stats.unknown_sni);
        client.refuse(&clienthello::ALERT_UNRECOGNIZED_NAME);
        return Err(HandshakeError::UnknownSni(name.unwrap_or_default()));
    }
    Ok(Some(name))
}

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
