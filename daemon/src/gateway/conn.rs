//! A connection's life: limits, handshake under a deadline, refusal of unknown server names
//! with the right alert, then its route's backend and the relay.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::admission::Admission;
use super::backend::ring::RingBackend;
use super::backend::socket::SocketBackend;
use super::client::Client;
use super::relay::{self, Context};
use super::ring_pair::RingPair;
use super::session::Session;
use super::stats::Stats;
use crate::config::{ListenerConfig, RouteConfig};
use crate::tls::clienthello::{self, Peek};
use crate::tls::ListenerTls;
use edgegw_proto::OpenInfo;

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

/// What a connection runs with, fixed for its lifetime (a reload changes what new connections
/// get).
#[derive(Debug)]
pub struct ConnSettings {
    /// Its listener's config: name and limits.
    pub listener: ListenerConfig,
    /// Its listener's TLS.
    pub tls: ListenerTls,
    /// Where its plaintext goes.
    pub route: RouteConfig,
    /// The ring pair of a route to a ring.
    pub ring: Option<Rc<RingPair>>,
    /// True once the daemon drains (stops).
    pub drain: tokio::sync::watch::Receiver<bool>,
}

/// A connection just accepted, with its places in the listener's load.
#[derive(Debug)]
pub struct Accepted {
    /// Its socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its id, unique across the daemon's restarts.
    pub id: u64,
    /// Its places in the listener's load, given back when it ends.
    pub admission: Admission,
}

/// Runs one accepted connection to its end.
pub async fn run(accepted: Accepted, settings: Rc<ConnSettings>, stats: Arc<Stats>) {
    let Accepted {
        stream,
        peer,
        id,
        mut admission,
    } = accepted;
    let limits = &settings.listener;
    let mut client = match Session::new(settings.tls.config.clone()) {
        Ok(session) => Client::new(stream, session),
        Err(e) => {
            log::warn!("connection {id} from {peer}: cannot start TLS: {e}");
            return;
        }
    };
    let mut drain = settings.drain.clone();
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(
            limits.handshake_timeout,
            handshake(&mut client, &settings, &stats),
        ) => handshake,
        // The daemon stops: a handshake in progress is dropped (nothing was relayed yet).
        Ok(_) = drain.wait_for(|stopping| *stopping) => return,
    };
    let sni = match handshake {
        Ok(Ok(sni)) => sni,
        Err(_elapsed) => {
            Stats::bump(&stats.handshake_timeouts);
            Stats::bump(&admission.counters().handshake_timeouts);
            log::debug!(conn = id, listener = limits.name.as_str(), peer:% = peer; "connection {id} from {peer}: handshake timeout");
            return;
        }
        Ok(Err(e)) => {
            if matches!(e, HandshakeError::Tls(_) | HandshakeError::UnknownSni(_)) {
                Stats::bump(&admission.counters().tls_errors);
            }
            log::debug!(conn = id, listener = limits.name.as_str(), peer:% = peer; "connection {id} from {peer}: handshake failed: {e}");
            return;
        }
    };
    admission.handshake_done();
    Stats::bump(&stats.handshakes);
    Stats::bump(&admission.counters().handshakes);

    let cx = Context {
        id,
        stats: &stats,
        listener: limits,
        drain: &settings.drain,
    };
    let route = &settings.route;
    if let Some(ring) = &settings.ring {
        let info = open_info(&client, &settings, peer, sni);
        let wait = limits.idle_timeout;
        if let Some(mut backend) = RingBackend::open(ring, id, &info, route.framing, wait).await {
            drop(info);
            relay::run(&mut client, &mut backend, &cx).await;
        }
        return;
    }
    let limit = limits.handshake_timeout;
    match SocketBackend::connect(&route.target, route.framing, limit, stats.clone()).await {
        Ok(mut backend) => relay::run(&mut client, &mut backend, &cx).await,
        Err(e) => {
            Stats::bump(&stats.backend_errors);
            log::warn!("route `{}` to {:?}: {e}", route.name, route.target);
            client.close(Duration::from_secs(1)).await;
        }
    }
}

/// What the consumer learns of a connection in its OPEN record.
fn open_info(
    client: &Client,
    settings: &ConnSettings,
    peer: SocketAddr,
    sni: Option<String>,
) -> OpenInfo {
    let conn = client.session.conn();
    OpenInfo {
        peer: peer.to_string(),
        listener: settings.listener.name.clone(),
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
    settings: &ConnSettings,
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
    settings: &ConnSettings,
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
