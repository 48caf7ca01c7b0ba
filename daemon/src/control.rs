//! The control plane: turns configs into running state and swaps it on reload.
//!
//! [`Daemon::start`] validates a config whole, loads its certificates, binds its sockets,
//! creates its rings and their attach servers, and starts the TLS thread with the result.
//! [`Daemon::reload`] does the same for a new config *beside* the running one and only then
//! swaps it in; if anything fails, the old config keeps running and the error says why.
//! Sockets whose address stays are handed over, not rebound; rings whose name stays are kept
//! with their unread records.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use edgegw_ring::{
    AllowList, Consumer, OwnerCounters, Producer, Refusal, RingConfig as RingLayout, RingServer,
    ServerEvent,
};
use tokio::io::unix::AsyncFd;

use crate::config::{Bind, Config, ConfigError, RingConfig, RouteTarget};
use crate::gateway::{
    Gateway, GatewayEvent, Limits, ListenSocket, ListenerPlan, Plan, RingCounter, RingEndpoints,
    RingPlan, RoutePlan, RouteTargetPlan, Stats, ThreadSettings,
};
use crate::paths::Dirs;
use crate::sys::SystemdSockets;
use crate::tls::{SelfSignedMode, TlsBuilder};

/// Why a reload did not happen. The old config is still running.
#[derive(Debug)]
pub enum ReloadError {
    /// The new config (or a certificate it names) is invalid.
    Config(ConfigError),
    /// The new config is valid but cannot be put in place (a port in use, ...).
    Apply(anyhow::Error),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Apply(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// A ring's control-plane side: its config and the two attach servers.
struct RingState {
    config: RingConfig,
    ingress: AttachServer,
    reply: AttachServer,
    /// The ring's counters (`gateway::RingCounter`), shared with the TLS thread and served by
    /// both attach servers.
    counters: Arc<OwnerCounters>,
}

/// A ring attach server and the readiness of its epoll fd.
struct AttachServer {
    server: RingServer,
    ready: AsyncFd<OwnedFd>,
}

impl AttachServer {
    fn new(server: RingServer) -> Result<Self> {
        let fd = server
            .as_fd()
            .try_clone_to_owned()
            .context("duplicate the ring server's epoll fd")?;
        Ok(AttachServer {
            server,
            ready: crate::sys::async_fd(fd).context("register the ring server with the runtime")?,
        })
    }
}

/// The running daemon, as the control plane sees it.
pub struct Daemon {
    config: Config,
    dirs: Dirs,
    tls: TlsBuilder,
    gateway: Gateway,
    /// The sockets the TLS thread has: listener name, configured address and the address
    /// actually bound (they differ for port 0).
    listening: Vec<(String, SocketAddr, SocketAddr)>,
    rings: HashMap<String, RingState>,
    systemd: SystemdSockets,
    /// Events from the TLS thread, taken while waiting, handled by `process_attach`.
    gateway_events: Vec<GatewayEvent>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config", &self.config.file)
            .field("listening", &self.listening)
            .field("rings", &self.rings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a new config needs that the running daemon does not have yet.
struct Prepared {
    plan: Plan,
    new_rings: Vec<(String, RingState)>,
    listening: Vec<(String, SocketAddr, SocketAddr)>,
}

impl Daemon {
    /// Starts the daemon on `config`. Must be called inside a tokio runtime (the attach servers
    /// register with it).
    pub fn start(config: Config) -> Result<Daemon> {
        let dirs = Dirs::resolve(&config.daemon)?;
        dirs.create()?;
        raise_fd_limit();
        let tls = TlsBuilder::new()?;
        let systemd = SystemdSockets::from_env()?;
        let prepared = prepare(&config, &dirs, &tls, &[], &HashMap::new(), &systemd)?;
        let gateway = Gateway::start(
            &ThreadSettings {
                stack_size: config.daemon.tls_stack_size,
                cpu: config.daemon.tls_cpu,
            },
            prepared.plan,
        )?;
        drop_startup_pages();
        log::info!(
            "edgegw {} running with {} ({} crypto, {} first); state in {}, rings in {}",
            env!("CARGO_PKG_VERSION"),
            config.file.display(),
            crate::tls::PROVIDER_NAME,
            if crate::tls::aes_in_hardware() {
                "AES-128-GCM"
            } else {
                "ChaCha20-Poly1305"
            },
            dirs.state.display(),
            dirs.rings().display()
        );
        Ok(Daemon {
            config,
            dirs,
            tls,
            gateway,
            listening: prepared.listening,
            rings: prepared.new_rings.into_iter().collect(),
            systemd,
            gateway_events: Vec::new(),
        })
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The directories in use.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Where each listener accepts: (listener, address as configured, address bound). The bound
    /// address differs from the configured one for port 0.
    pub fn listening(&self) -> &[(String, SocketAddr, SocketAddr)] {
        &self.listening
    }

    /// The gateway's counters.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Every counter the daemon keeps, as one JSON object: the gateway's, and each ring's by
    /// name (what `edgegw ring stat --json` shows of one ring).
    pub fn counters(&self) -> serde_json::Value {
        let rings: serde_json::Map<String, serde_json::Value> = self
            .rings
            .iter()
            .map(|(name, ring)| {
                let named = RingCounter::named(&ring.counters.snapshot());
                (name.clone(), named.into())
            })
            .collect();
        serde_json::json!({ "gateway": self.gateway.stats(), "rings": rings })
    }

    /// Replaces the running config with `config`: everything is built and checked first; on any
    /// error the running config stays and the error says why. Established connections are
    /// untouched either way; new handshakes use the new certificates.
    pub async fn reload(&mut self, config: Config) -> Result<(), ReloadError> {
        if config.daemon != self.config.daemon {
            log::warn!("reload: [daemon] settings changed; they take effect at the next restart");
        }
        for (name, running) in &self.rings {
            if let Some(new) = config.ring(name) {
                if new.capacity != running.config.capacity {
                    return Err(ReloadError::Apply(anyhow::anyhow!(
                        "ring `{name}`: capacity cannot change on reload ({} -> {}); restart the daemon",
                        running.config.capacity,
                        new.capacity
                    )));
                }
            }
        }
        let prepared = prepare(
            &config,
            &self.dirs,
            &self.tls,
            &self.listening,
            &self.rings,
            &self.systemd,
        )
        .map_err(|e| match e.downcast::<ConfigError>() {
            Ok(config_error) => ReloadError::Config(config_error),
            Err(other) => ReloadError::Apply(other),
        })?;
        self.gateway.apply(prepared.plan).await.map_err(|e| {
            ReloadError::Apply(anyhow::anyhow!("the TLS thread refused the new plan: {e}"))
        })?;
        // In force: update our side.
        for (name, ring) in prepared.new_rings {
            self.rings.insert(name, ring);
        }
        for (name, ring) in self.rings.iter_mut() {
            match config.ring(name) {
                Some(new) => {
                    let allow = allow_list(new);
                    ring.ingress.server.set_allow(allow.clone());
                    ring.reply.server.set_allow(allow);
                    for server in [&ring.ingress.server, &ring.reply.server] {
                        if let Err(e) = restrict_socket(server.path(), new) {
                            log::error!("{e:#}");
                        }
                    }
                    ring.config = new.clone();
                }
                None => {
                    log::info!("ring `{name}` is no longer configured; it stays until restart")
                }
            }
        }
        self.listening = prepared.listening;
        self.config = config;
        drop_startup_pages();
        Ok(())
    }

    /// Waits until an attach server has work (a connection, a hello, a hang-up), or the TLS
    /// thread has told us something (a corrupt reply ring).
    pub async fn attach_ready(&mut self) {
        if self.rings.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            let mut any = false;
            while let std::task::Poll::Ready(Some(event)) = self.gateway.poll_event(cx) {
                self.gateway_events.push(event);
                any = true;
            }
            for ring in self.rings.values_mut() {
                for server in [&mut ring.ingress, &mut ring.reply] {
                    if let std::task::Poll::Ready(Ok(mut guard)) = server.ready.poll_read_ready(cx)
                    {
                        // Cleared before processing: process() drains everything, and anything
                        // that arrives after it makes the epoll fd readable again.
                        guard.clear_ready();
                        any = true;
                    }
                }
            }
            if any {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Does whatever work the attach servers have now, and what the TLS thread asked for (a
    /// fresh ring); also expires silent connections, so call it periodically too.
    pub fn process_attach(&mut self) {
        // Taken by `attach_ready`, which an event wakes.
        for event in std::mem::take(&mut self.gateway_events) {
            let (ring, direction, generation, why) = match event {
                GatewayEvent::IngressRingBroken {
                    ring,
                    generation,
                    reason,
                } => (ring, Direction::Ingress, generation, Some(reason)),
                GatewayEvent::ReplyRingBroken {
                    ring,
                    generation,
                    reason,
                } => (ring, Direction::Reply, generation, Some(reason)),
                GatewayEvent::ReplyRingFinished { ring, generation } => {
                    (ring, Direction::Reply, generation, None)
                }
            };
            self.replace_ring(&ring, direction, generation, why);
        }
        let mut broken = Vec::new();
        for (name, ring) in self.rings.iter_mut() {
            for (direction, server) in [
                (Direction::Ingress, &mut ring.ingress),
                (Direction::Reply, &mut ring.reply),
            ] {
                match server.server.process() {
                    Ok(events) => {
                        for event in events {
                            if let ServerEvent::RingBroken { generation, reason } = &event {
                                broken.push((name.clone(), direction, *generation, reason.clone()));
                            } else {
                                log_attach_event(name, direction, &event);
                            }
                        }
                    }
                    Err(e) => log::warn!("ring `{name}` {direction} attach server: {e}"),
                }
            }
        }
        for (ring, direction, generation, reason) in broken {
            self.replace_ring(&ring, direction, generation, Some(reason));
        }
    }

    /// Replaces a ring's ingress or reply ring of `generation` (broken by its consumer:
    /// `broken` says how; or a reply ring its producer finished) with a fresh one of the next
    /// generation: served on the same socket (the consumer is disconnected and attaches again)
    /// and handed to the TLS thread, which moves an ingress ring's unreleased records over. A
    /// ring already replaced is left alone (the TLS thread and the attach server may both
    /// report the same one).
    fn replace_ring(
        &mut self,
        name: &str,
        direction: Direction,
        generation: u64,
        broken: Option<String>,
    ) {
        let Some(state) = self.rings.get_mut(name) else {
            return;
        };
        let server = match direction {
            Direction::Ingress => &mut state.ingress.server,
            Direction::Reply => &mut state.reply.server,
        };
        if server.ring().generation() != generation {
            return;
        }
        let stats = self.gateway.stats_handle();
        if let Some(reason) = &broken {
            let (counter, ring_counter, lost) = match direction {
                Direction::Ingress => (
                    &stats.corrupt_ingress_rings,
                    RingCounter::ReplacedIngressRings,
                    "the records it had not released are delivered again in the fresh ring",
                ),
                Direction::Reply => (
                    &stats.corrupt_reply_rings,
                    RingCounter::ReplacedReplyRings,
                    "the replies it had written there are lost",
                ),
            };
            Stats::bump(counter);
            ring_counter.add(&state.counters, 1);
            log::error!(
                "ring `{name}` {direction}: the consumer broke the ring ({reason}); it is \
                 disconnected and a fresh ring takes its place; {lost}"
            );
        }
        let layout = RingLayout::with_capacity(state.config.capacity).generation(generation + 1);
        let renewed = match direction {
            Direction::Ingress => Producer::create(layout)
                .and_then(|fresh| Ok((fresh.served_ring()?, fresh)))
                .map(|(served, fresh)| {
                    log_replaced(name, direction, server.replace_ring(served));
                    self.gateway.renew_ingress(name, fresh)
                }),
            Direction::Reply => Consumer::create(layout)
                .and_then(|fresh| Ok((fresh.served_ring()?, fresh)))
                .map(|(served, fresh)| {
                    log_replaced(name, direction, server.replace_ring(served));
                    self.gateway.renew_reply(name, fresh)
                }),
        };
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("ring `{name}` {direction}: {e}"),
            Err(e) => log::error!("ring `{name}` {direction}: cannot create a fresh ring: {e}"),
        }
    }
}

/// A ring's two directions, as the logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Reply,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Reply => "reply",
        })
    }
}

fn log_replaced(ring: &str, direction: Direction, detached: Option<ServerEvent>) {
    if let Some(ServerEvent::Detached { pid }) = detached {
        log::info!("ring `{ring}` {direction}: pid {pid} disconnected; it may attach again");
    }
}

fn log_attach_event(ring: &str, direction: Direction, event: &ServerEvent) {
    match event {
        ServerEvent::Attached { pid, uid, gid } => {
            log::info!("ring `{ring}` {direction}: pid {pid} (uid {uid}, gid {gid}) attached")
        }
        ServerEvent::Detached { pid } => {
            log::info!("ring `{ring}` {direction}: pid {pid} detached; unread records are kept")
        }
        ServerEvent::Refused { pid, uid, reason } => {
            let (kind, level, why) = refusal(reason);
            log::log!(target: kind, level, "ring `{ring}` {direction}: refused pid {pid} (uid {uid}): {why}")
        }
        other => log::debug!("ring `{ring}` {direction}: {other:?}"),
    }
}

/// How the daemon words an attach it refused, at which level, and under which rate-limit key (a
/// flood of one kind must not hide the others).
fn refusal(reason: &Refusal) -> (&'static str, log::Level, String) {
    use log::Level::{Info, Warn};
    match reason {
        Refusal::Malformed => (
            "edgegw::attach::malformed",
            Warn,
            "its hello is malformed (not an edgegw ring hello)".into(),
        ),
        Refusal::VersionMismatch { server, client } => (
            "edgegw::attach::version",
            Warn,
            format!("it speaks attach protocol version {client}, this daemon speaks {server}"),
        ),
        Refusal::NotAllowed { uid, gid } => (
            "edgegw::attach::not-allowed",
            Warn,
            format!("neither uid {uid} nor gid {gid} is on the ring's allow list"),
        ),
        Refusal::WrongRole { offered, requested } => (
            "edgegw::attach::role",
            Warn,
            format!("it asked to attach as the {requested}; this socket serves the {offered}"),
        ),
        Refusal::Busy => (
            "edgegw::attach::busy",
            Info,
            "another peer is attached, or the ring is being replaced; it may try again".into(),
        ),
        other => ("edgegw::attach::refused", Warn, other.to_string()),
    }
}

/// Who may connect to a ring socket: the daemon's user and group, and the ring's allow list
/// (mode 0660 and a POSIX ACL entry for each listed user and group), so a stranger cannot even
/// say hello; the allow list is checked again on the hello (SO_PEERCRED). On a filesystem
/// without ACLs, a ring that lists other users keeps its sockets open to everyone (0666) so they
/// can connect, and the log says so once.
fn restrict_socket(path: &Path, ring: &RingConfig) -> Result<()> {
    let listed = crate::sys::restrict_to(path, &ring.allow_uids, &ring.allow_gids)
        .with_context(|| format!("ring `{}`: permissions of {}", ring.name, path.display()))?;
    if !listed {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("ring `{}`: chmod {}", ring.name, path.display()))?;
        log::warn!(
            "ring `{}`: the filesystem of {} has no POSIX ACLs, so the socket is open to every \
             local user (0666) for allow_uids/allow_gids to connect; the allow list still \
             decides who attaches",
            ring.name,
            path.display()
        );
    }
    Ok(())
}

fn allow_list(ring: &RingConfig) -> AllowList {
    let mut allow = AllowList::current_user();
    for uid in &ring.allow_uids {
        allow = allow.uid(*uid);
    }
    for gid in &ring.allow_gids {
        allow = allow.gid(*gid);
    }
    allow
}

/// Builds, beside the running state, everything `config` needs: TLS configs, sockets for new
/// addresses, new rings with their attach servers. Nothing running is touched.
fn prepare(
    config: &Config,
    dirs: &Dirs,
    tls: &TlsBuilder,
    running: &[(String, SocketAddr, SocketAddr)],
    rings: &HashMap<String, RingState>,
    systemd: &SystemdSockets,
) -> Result<Prepared> {
    let bound: Vec<SocketAddr> = running.iter().map(|(_, _, actual)| *actual).collect();
    // A socket is kept when its address stays configured. Port 0 (tests) is matched by listener
    // too, since several listeners may ask for "any port".
    let mut reused: Vec<SocketAddr> = Vec::new();
    let mut running_socket = |listener: &str, configured: &SocketAddr| {
        let found = running
            .iter()
            .find(|(name, c, actual)| {
                c == configured
                    && (configured.port() != 0 || name == listener)
                    && !reused.contains(actual)
            })
            .map(|(_, _, actual)| *actual);
        if let Some(actual) = found {
            reused.push(actual);
        }
        found
    };
    let mut listeners = Vec::new();
    let mut listening = Vec::new();
    for listener in &config.listeners {
        let listener_tls = tls.listener(listener, &dirs.state, SelfSignedMode::Persist)?;
        let mut sockets = Vec::new();
        match &listener.bind {
            Bind::Addresses(addrs) => {
                for addr in addrs {
                    let (socket, actual) = match running_socket(&listener.name, addr) {
                        Some(actual) => (None, actual),
                        None => {
                            let socket = bind_tcp(*addr)?;
                            let actual = socket
                                .local_addr()
                                .with_context(|| format!("address of {addr}"))?;
                            (Some(socket), actual)
                        }
                    };
                    sockets.push(ListenSocket {
                        addr: actual,
                        socket,
                    });
                    listening.push((listener.name.clone(), *addr, actual));
                }
            }
            Bind::Systemd(name) => {
                for (addr, socket) in systemd.take(name, &bound)? {
                    sockets.push(ListenSocket { addr, socket });
                    listening.push((listener.name.clone(), addr, addr));
                }
            }
        }
        let route = config.route(&listener.route);
        listeners.push(ListenerPlan {
            name: listener.name.clone(),
            sockets,
            tls: listener_tls,
            route: RoutePlan {
                name: route.name.clone(),
                target: match &route.target {
                    RouteTarget::Ring(name) => RouteTargetPlan::Ring(name.clone()),
                    RouteTarget::Tcp(addr) => RouteTargetPlan::Tcp(*addr),
                    RouteTarget::Unix(path) => RouteTargetPlan::Unix(path.clone()),
                },
                framing: route.framing,
            },
            limits: Limits {
                handshake_timeout: listener.handshake_timeout,
                idle_timeout: listener.idle_timeout,
                max_connections: listener.max_connections,
                max_handshakes: listener.max_handshakes,
                max_handshakes_per_source: listener.max_handshakes_per_source,
            },
        });
    }

    let mut ring_plans = Vec::new();
    let mut new_rings = Vec::new();
    for ring in &config.rings {
        if rings.contains_key(&ring.name) {
            ring_plans.push(RingPlan {
                name: ring.name.clone(),
                endpoints: None,
                when_full: ring.when_full,
            });
            continue;
        }
        let (endpoints, state) = create_ring(ring, dirs)?;
        ring_plans.push(RingPlan {
            name: ring.name.clone(),
            endpoints: Some(endpoints),
            when_full: ring.when_full,
        });
        new_rings.push((ring.name.clone(), state));
    }
    Ok(Prepared {
        plan: Plan {
            listeners,
            rings: ring_plans,
        },
        new_rings,
        listening,
    })
}

/// Creates a ring pair (ingress: we produce; reply: we consume) and serves both.
fn create_ring(ring: &RingConfig, dirs: &Dirs) -> Result<(RingEndpoints, RingState)> {
    let layout = RingLayout::with_capacity(ring.capacity);
    let ingress =
        Producer::create(layout).with_context(|| format!("ring `{}`: create", ring.name))?;
    let reply = Consumer::create(layout)
        .with_context(|| format!("ring `{}`: create reply ring", ring.name))?;
    let allow = allow_list(ring);
    let mut ingress_server = RingServer::bind(
        dirs.ring_socket(&ring.name),
        ingress.served_ring()?,
        allow.clone(),
    )
    .with_context(|| format!("ring `{}`: serve", ring.name))?;
    let mut reply_server =
        RingServer::bind(dirs.reply_socket(&ring.name), reply.served_ring()?, allow)
            .with_context(|| format!("ring `{}`: serve reply ring", ring.name))?;
    let counters = Arc::new(OwnerCounters::default());
    for server in [&mut ingress_server, &mut reply_server] {
        restrict_socket(server.path(), ring)?;
        server.set_owner_counters(counters.clone());
    }
    log::info!(
        "ring `{}`: {} bytes each way; consumers attach at {}",
        ring.name,
        ring.capacity,
        ingress_server.path().display()
    );
    Ok((
        RingEndpoints {
            ingress,
            reply,
            counters: counters.clone(),
        },
        RingState {
            config: ring.clone(),
            ingress: AttachServer::new(ingress_server)?,
            reply: AttachServer::new(reply_server)?,
            counters,
        },
    ))
}

/// Gives back the executable's pages that start-up (or a reload) touched and the running daemon
/// does not need: config parsing, certificate generation and rustls config building leave most
/// of the binary resident otherwise (about 3 MiB of a 5.7 MiB idle RSS), on devices where every
/// MiB counts. Pages the data path uses come back from the file on first use.
fn drop_startup_pages() {
    match crate::sys::page_out_executable() {
        Ok(bytes) => {
            log::debug!("asked the kernel to reclaim {bytes} bytes of executable mappings")
        }
        // Kernels before 5.4 have no MADV_PAGEOUT: the pages stay, nothing else changes.
        Err(e) => log::debug!("cannot page out start-up code: {e}"),
    }
    // And the heap it freed (parsed configs, certificate generation, rustls builders).
    crate::sys::trim_heap();
}

/// A listening TCP socket: SO_REUSEADDR (restarts do not wait for TIME_WAIT), IPv6 sockets
/// IPv6-only (so `0.0.0.0:443` and `[::]:443` can both be configured), a deep backlog for
/// handshake bursts.
pub fn bind_tcp(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use nix::sys::socket::{
        self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .with_context(|| format!("socket for {addr}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .with_context(|| format!("SO_REUSEADDR on {addr}"))?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .with_context(|| format!("IPV6_V6ONLY on {addr}"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .with_context(|| format!("cannot bind {addr}"))?;
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
        .with_context(|| format!("listen on {addr}"))?;
    Ok(std::net::TcpListener::from(fd))
}

/// Raises the soft fd limit to the hard limit: each connection is an fd (two on socket
/// routes), and the default soft limit of 1024 would cap the daemon far below max_connections.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise the fd limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Loads a config file for `check-config`: syntax, semantics, certificates and keys, client-auth
/// files. Writes nothing (self-signed certificates are generated in memory).
pub fn check_config(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    let tls = TlsBuilder::new()?;
    let scratch = PathBuf::from("/nonexistent");
    for listener in &config.listeners {
        tls.listener(listener, &scratch, SelfSignedMode::InMemory)?;
    }
    if config.listeners.is_empty() {
        bail!("no listeners");
    }
    Ok(config)
}
