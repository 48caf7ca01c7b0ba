//! The data path: the TLS thread, its listeners and connections, and the routes they feed.
//!
//! One named OS thread (stack size and CPU affinity from the config) runs a tokio
//! current_thread runtime and owns every listening socket, every TLS connection, the producer
//! end of every ingress ring and the consumer end of every reply ring. Nothing on it is shared
//! with another thread except through [`Command`]s (new plans, shutdown) and the [`Stats`]
//! counters, so it needs no locks: per-connection state is `Rc`/`RefCell`.
//!
//! The control plane (main thread) builds a [`Plan`] — bound sockets, rustls configs, routes,
//! ring endpoints — and hands it over whole; the TLS thread swaps it in between two events.
//! Connections keep the settings they started with (an established connection survives any
//! reload); new connections get the new ones.

mod backend;
mod client;
mod conn;
pub mod framing;
mod relay;
mod ring_pair;
pub mod session;
pub mod stats;
mod x509;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::{Framing, RouteTarget, WhenFull};
use crate::tls::ListenerTls;
pub use ring_pair::RingEndpoints;
pub use stats::{RingCounter, Snapshot, Stats};

/// How the TLS thread is started.
#[derive(Debug, Clone)]
pub struct ThreadSettings {
    /// Stack size in bytes.
    pub stack_size: usize,
    /// CPU to pin it to.
    pub cpu: Option<usize>,
}

/// Everything the TLS thread runs with, built by the control plane.
#[derive(Debug)]
pub struct Plan {
    /// Listeners; a listener absent from a new plan stops accepting (its connections stay).
    pub listeners: Vec<ListenerPlan>,
    /// Rings; a new ring comes with its endpoints, a known one by name only.
    pub rings: Vec<RingPlan>,
}

/// One listener in a plan.
#[derive(Debug)]
pub struct ListenerPlan {
    /// Its name.
    pub name: String,
    /// Its sockets.
    pub sockets: Vec<ListenSocket>,
    /// Its TLS settings.
    pub tls: ListenerTls,
    /// Where its connections go.
    pub route: RoutePlan,
    /// Its limits.
    pub limits: Limits,
}

/// A listening socket in a plan.
#[derive(Debug)]
pub struct ListenSocket {
    /// The address it is bound to (its key on the TLS thread).
    pub addr: SocketAddr,
    /// A newly bound socket, or `None` to keep the one the TLS thread has for this address.
    pub socket: Option<std::net::TcpListener>,
}

/// Per-listener limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Idle deadline of established connections.
    pub idle_timeout: Duration,
    /// Connections beyond this are refused.
    pub max_connections: usize,
    /// Concurrent handshakes beyond this are refused.
    pub max_handshakes: usize,
    /// Concurrent handshakes from one source (IPv4 address, IPv6 /64) beyond this are refused.
    pub max_handshakes_per_source: usize,
}

/// A route in a plan.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// Its name.
    pub name: String,
    /// Its destination.
    pub target: RouteTargetPlan,
    /// Its framing.
    pub framing: Framing,
}

/// A route's destination in a plan.
#[derive(Debug, Clone)]
pub enum RouteTargetPlan {
    /// A ring (by name; the plan or the TLS thread has it).
    Ring(String),
    /// A TCP backend.
    Tcp(SocketAddr),
    /// A unix stream socket backend.
    Unix(PathBuf),
}

/// A ring in a plan.
#[derive(Debug)]
pub struct RingPlan {
    /// Its name.
    pub name: String,
    /// The local ends of a new ring; `None` for a ring the TLS thread already has.
    pub endpoints: Option<RingEndpoints>,
    /// Full-ring policy of the ingress direction.
    pub when_full: WhenFull,
}

enum Command {
    Apply(Plan, oneshot::Sender<Result<(), String>>),
    /// A fresh reply ring for a ring whose reply ring was replaced (boxed: rare, large).
    RenewReply(String, Box<edgegw_ring::Consumer>),
    /// A fresh ingress ring for a ring whose ingress ring was replaced.
    RenewIngress(String, Box<edgegw_ring::Producer>),
    Shutdown,
}

/// What the TLS thread tells the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayEvent {
    /// A ring's ingress ring is broken: its consumer wrote an impossible position. Nothing is
    /// written to it any more; connections wait. The control plane creates a fresh one, serves
    /// it on the same socket (the consumer is disconnected and attaches again) and hands it over
    /// with [`Gateway::renew_ingress`]; the unreleased records move to it.
    IngressRingBroken {
        /// The ring's name.
        ring: String,
        /// The broken ring's generation.
        generation: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A ring's reply ring is broken (its consumer wrote impossible positions or records):
    /// replies on it have stopped. The control plane creates a fresh one, serves it on the same
    /// socket and hands it over with [`Gateway::renew_reply`].
    ReplyRingBroken {
        /// The ring's name.
        ring: String,
        /// The broken ring's generation.
        generation: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A ring's reply ring was finished by its producer (FORMAT.md section 7) and drained: its
    /// consumer is done replying. The control plane serves a fresh one for the next producer.
    ReplyRingFinished {
        /// The ring's name.
        ring: String,
        /// The finished ring's generation.
        generation: u64,
    },
}

/// The control plane's handle on the TLS thread.
#[derive(Debug)]
pub struct Gateway {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<GatewayEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Apply(..) => "Apply",
            Command::RenewReply(..) => "RenewReply",
            Command::RenewIngress(..) => "RenewIngress",
            Command::Shutdown => "Shutdown",
        })
    }
}

impl Gateway {
    /// Starts the TLS thread with a first plan; returns once the plan is in force.
    pub fn start(settings: &ThreadSettings, plan: Plan) -> anyhow::Result<Gateway> {
        let stats = Arc::new(Stats::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stats = stats.clone();
        let cpu = settings.cpu;
        let thread = std::thread::Builder::new()
            .name("edgegw-tls".into())
            .stack_size(settings.stack_size)
            .spawn(move || tls_thread(cpu, plan, receiver, events_tx, thread_stats, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Gateway {
                commands,
                events,
                thread: Some(thread),
                stats,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(anyhow::anyhow!(e))
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow::anyhow!("the TLS thread died while starting"))
            }
        }
    }

    /// Swaps in a new plan. Established connections keep their settings.
    pub async fn apply(&self, plan: Plan) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Apply(plan, tx))
            .map_err(|_| "the TLS thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the TLS thread has stopped".to_string())?
    }

    /// The next event from the TLS thread, if one is waiting (registers `cx` otherwise).
    pub fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<GatewayEvent>> {
        self.events.poll_recv(cx)
    }

    /// Hands the TLS thread a fresh reply ring for `ring` (see
    /// [`GatewayEvent::ReplyRingBroken`]).
    pub fn renew_reply(&self, ring: &str, reply: edgegw_ring::Consumer) -> Result<(), String> {
        self.commands
            .send(Command::RenewReply(ring.to_string(), Box::new(reply)))
            .map_err(|_| "the TLS thread has stopped".to_string())
    }

    /// Hands the TLS thread a fresh ingress ring for `ring` (see
    /// [`GatewayEvent::IngressRingBroken`]).
    pub fn renew_ingress(&self, ring: &str, ingress: edgegw_ring::Producer) -> Result<(), String> {
        self.commands
            .send(Command::RenewIngress(ring.to_string(), Box::new(ingress)))
            .map_err(|_| "the TLS thread has stopped".to_string())
    }

    /// The counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// The counters, shared.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops the TLS thread: listeners close, connections are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_thread(
    cpu: Option<usize>,
    plan: Plan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<GatewayEvent>,
    stats: Arc<Stats>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Some(cpu) = cpu {
        pin_to_cpu(cpu);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // Few events per poll keep latency fair between connections; the default (1024)
        // costs 12 KiB of memory for nothing on a small device.
        .event_interval(61)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the TLS thread's runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        // Connection ids stay unique across restarts (consumers may outlive the daemon): they
        // start at the start time in microseconds.
        let first_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let shared = Rc::new(Shared {
            stats,
            events,
            next_id: Cell::new(first_id),
            listeners: RefCell::default(),
            sockets: RefCell::default(),
            rings: RefCell::default(),
        });
        let first = shared.apply(plan);
        let ok = first.is_ok();
        let _ = ready.send(first);
        if !ok {
            return;
        }
        let heartbeat = tokio::task::spawn_local(heartbeat(shared.clone()));
        while let Some(command) = commands.recv().await {
            match command {
                Command::Apply(plan, reply) => {
                    let _ = reply.send(shared.apply(plan));
                }
                Command::RenewReply(name, reply) => shared.renew_reply(&name, *reply),
                Command::RenewIngress(name, ingress) => shared.renew_ingress(&name, *ingress),
                Command::Shutdown => break,
            }
        }
        heartbeat.abort();
        shared.close_all();
    });
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    match pinned {
        Ok(()) => log::info!("TLS thread pinned to CPU {cpu}"),
        Err(e) => log::warn!("TLS thread not pinned to CPU {cpu} ({e}): running unpinned"),
    }
}

/// Proof of life for the control plane's stall detection (the systemd watchdog follows it);
/// and, after a burst of connections, memory given back.
async fn heartbeat(shared: Rc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut burst = BurstWatch::default();
    loop {
        tick.tick().await;
        Stats::bump(&shared.stats.heartbeat);
        let active = shared
            .stats
            .active
            .load(std::sync::atomic::Ordering::Relaxed);
        if burst.ended(active) {
            let trimmed = crate::sys::trim_heap();
            Stats::bump(&shared.stats.heap_trims);
            log::debug!(
                "a burst of connections ended ({active} open now): heap trimmed: {trimmed}"
            );
        }
    }
}

/// Notices the end of a burst of connections: once at least [`BurstWatch::CLOSED`] have closed
/// since the most open (and it has been a while since the last time), the memory they used is
/// free but the allocator keeps it resident (glibc leaves it in its arenas, fragmented, where
/// trimming the top of the heap never reaches). A steady load never triggers it.
#[derive(Debug, Default)]
struct BurstWatch {
    peak: u64,
    ticks_since: u32,
}

impl BurstWatch {
    /// Connections closed since the peak that make a burst.
    const CLOSED: u64 = 64;
    /// Heartbeats (500 ms) between two trims at most.
    const MIN_TICKS: u32 = 4;

    fn ended(&mut self, active: u64) -> bool {
        self.peak = self.peak.max(active);
        self.ticks_since = self.ticks_since.saturating_add(1);
        if self.peak < active + Self::CLOSED || self.ticks_since < Self::MIN_TICKS {
            return false;
        }
        self.peak = active;
        self.ticks_since = 0;
        true
    }
}

/// The TLS thread's state.
struct Shared {
    stats: Arc<Stats>,
    /// To the control plane.
    events: mpsc::UnboundedSender<GatewayEvent>,
    next_id: Cell<u64>,
    /// Listeners by name.
    listeners: RefCell<HashMap<String, Rc<Listener>>>,
    /// Listening sockets by address, with the task accepting on each.
    sockets: RefCell<HashMap<SocketAddr, Accepting>>,
    /// Rings by name.
    rings: RefCell<HashMap<String, Rc<ring_pair::RingPair>>>,
}

struct Accepting {
    socket: Rc<tokio::net::TcpListener>,
    listener: String,
    task: tokio::task::JoinHandle<()>,
}

/// A listener's state on the TLS thread.
struct Listener {
    name: String,
    settings: RefCell<Rc<ListenerSettings>>,
    active: Cell<usize>,
    handshaking: Cell<usize>,
    /// Handshakes in progress by source; only sources with one are kept.
    sources: RefCell<HashMap<conn::Source, usize>>,
}

/// What a connection runs with, fixed for its lifetime.
struct ListenerSettings {
    listener: String,
    tls: ListenerTls,
    limits: Limits,
    route: Route,
}

/// A route, resolved on the TLS thread.
enum Route {
    Ring {
        ring: Rc<ring_pair::RingPair>,
        framing: Framing,
    },
    Socket {
        target: RouteTarget,
        framing: Framing,
    },
}

impl Shared {
    /// Starts reading a ring's fresh reply ring (the old one was replaced).
    fn renew_reply(&self, name: &str, reply: edgegw_ring::Consumer) {
        let ring = self.rings.borrow().get(name).cloned();
        match ring {
            Some(ring) => match ring.restart_replies(reply) {
                Ok(()) => log::info!("ring `{name}`: replies flow again on a fresh reply ring"),
                Err(e) => log::error!("ring `{name}`: cannot use the fresh reply ring: {e}"),
            },
            None => log::warn!("ring `{name}`: a fresh reply ring for a ring we do not have"),
        }
    }

    /// Starts producing into a ring's fresh ingress ring, with the records the old one's
    /// consumer had not released moved over first.
    fn renew_ingress(&self, name: &str, ingress: edgegw_ring::Producer) {
        let ring = self.rings.borrow().get(name).cloned();
        match ring {
            Some(ring) => match ring.restart_ingress(ingress) {
                Ok(moved) => log::info!(
                    "ring `{name}`: a fresh ingress ring is in use; the {} record(s) ({} bytes) \
                     its consumer had not released are delivered again",
                    moved.records,
                    moved.bytes
                ),
                Err(e) => log::error!("ring `{name}`: cannot use the fresh ingress ring: {e}"),
            },
            None => log::warn!("ring `{name}`: a fresh ingress ring for a ring we do not have"),
        }
    }

    /// Swaps in a plan. Checks everything before changing anything, so a failure leaves the
    /// running state as it was.
    fn apply(self: &Rc<Self>, plan: Plan) -> Result<(), String> {
        // Rings first: routes refer to them.
        let mut new_rings = Vec::new();
        let mut policies = Vec::new();
        for ring in plan.rings {
            match ring.endpoints {
                Some(endpoints) => new_rings.push((
                    ring.name.clone(),
                    ring_pair::RingPair::start(
                        &ring.name,
                        endpoints,
                        ring.when_full,
                        self.stats.clone(),
                        self.events.clone(),
                    )
                    .map_err(|e| format!("ring `{}`: {e}", ring.name))?,
                )),
                None => match self.rings.borrow().get(&ring.name) {
                    Some(running) => policies.push((running.clone(), ring.when_full)),
                    None => {
                        return Err(format!(
                            "ring `{}` is not running on the TLS thread",
                            ring.name
                        ))
                    }
                },
            }
        }
        let ring_named = |name: &str| {
            new_rings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.clone())
                .or_else(|| self.rings.borrow().get(name).cloned())
        };

        let mut listeners = Vec::new();
        let mut sockets = Vec::new();
        for plan in plan.listeners {
            let route = match &plan.route.target {
                RouteTargetPlan::Ring(name) => Route::Ring {
                    ring: ring_named(name)
                        .ok_or_else(|| format!("route `{}`: no ring `{name}`", plan.route.name))?,
                    framing: plan.route.framing,
                },
                RouteTargetPlan::Tcp(addr) => Route::Socket {
                    target: RouteTarget::Tcp(*addr),
                    framing: plan.route.framing,
                },
                RouteTargetPlan::Unix(path) => Route::Socket {
                    target: RouteTarget::Unix(path.clone()),
                    framing: plan.route.framing,
                },
            };
            for listen in plan.sockets {
                let socket = match listen.socket {
                    Some(std) => {
                        std.set_nonblocking(true)
                            .map_err(|e| format!("{}: {e}", listen.addr))?;
                        Some(Rc::new(
                            tokio::net::TcpListener::from_std(std)
                                .map_err(|e| format!("{}: {e}", listen.addr))?,
                        ))
                    }
                    None if self.sockets.borrow().contains_key(&listen.addr) => None,
                    None => return Err(format!("{}: no socket for this address", listen.addr)),
                };
                sockets.push((listen.addr, socket, plan.name.clone()));
            }
            let settings = Rc::new(ListenerSettings {
                listener: plan.name.clone(),
                tls: plan.tls,
                limits: plan.limits,
                route,
            });
            listeners.push((plan.name, settings));
        }

        // Nothing can fail from here on. Policies are read per packet: they apply at once.
        for (ring, when_full) in policies {
            ring.set_when_full(when_full);
        }
        let mut rings = self.rings.borrow_mut();
        for (name, ring) in new_rings {
            rings.insert(name, ring);
        }
        drop(rings);

        let mut current = self.listeners.borrow_mut();
        let mut next = HashMap::new();
        for (name, settings) in listeners {
            let listener = match current.remove(&name) {
                Some(existing) => {
                    *existing.settings.borrow_mut() = settings;
                    existing
                }
                None => Rc::new(Listener {
                    name: name.clone(),
                    settings: RefCell::new(settings),
                    active: Cell::new(0),
                    handshaking: Cell::new(0),
                    sources: RefCell::default(),
                }),
            };
            next.insert(name, listener);
        }
        *current = next;

        let mut by_addr = self.sockets.borrow_mut();
        let mut kept = HashMap::new();
        for (addr, socket, listener_name) in sockets {
            let socket = match socket {
                Some(new) => {
                    if let Some(old) = by_addr.remove(&addr) {
                        old.task.abort();
                    }
                    new
                }
                None => {
                    let old = by_addr.remove(&addr).expect("checked above");
                    if old.listener == listener_name {
                        kept.insert(addr, old);
                        continue;
                    }
                    old.task.abort();
                    old.socket
                }
            };
            let listener = current.get(&listener_name).expect("just inserted").clone();
            let task =
                tokio::task::spawn_local(accept_loop(self.clone(), listener, socket.clone()));
            kept.insert(
                addr,
                Accepting {
                    socket,
                    listener: listener_name,
                    task,
                },
            );
        }
        // Addresses no longer configured: stop accepting and close the socket.
        for (addr, old) in by_addr.drain() {
            old.task.abort();
            log::info!("closed listening socket {addr}");
        }
        *by_addr = kept;
        Ok(())
    }

    fn close_all(&self) {
        for (_, accepting) in self.sockets.borrow_mut().drain() {
            accepting.task.abort();
        }
        self.listeners.borrow_mut().clear();
        for (_, ring) in self.rings.borrow_mut().drain() {
            ring.stop();
        }
    }

    fn next_connection_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }
}

async fn accept_loop(
    shared: Rc<Shared>,
    listener: Rc<Listener>,
    socket: Rc<tokio::net::TcpListener>,
) {
    if let Ok(addr) = socket.local_addr() {
        log::info!("listener `{}` accepting on {addr}", listener.name);
    }
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of fds or memory: back off instead of spinning; the backlog holds the
                // clients meanwhile.
                log::warn!("listener `{}`: accept failed: {e}", listener.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        Stats::bump(&shared.stats.accepted);
        let settings = listener.settings.borrow().clone();
        let source = conn::Source::of(peer.ip());
        let admission =
            match conn::Admission::take(&listener, &settings.limits, source, &shared.stats) {
                Ok(admission) => admission,
                Err(refused) => {
                    refuse(
                        &shared.stats,
                        &listener.name,
                        &settings.limits,
                        peer,
                        source,
                        refused,
                    );
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        let id = shared.next_connection_id();
        tokio::task::spawn_local(conn::run(
            shared.clone(),
            admission,
            settings,
            stream,
            peer,
            id,
        ));
    }
}

/// Counts and logs (rate-limited, one key per limit) a connection refused at once; the socket
/// is closed by the caller dropping it.
fn refuse(
    stats: &Stats,
    listener: &str,
    limits: &Limits,
    peer: SocketAddr,
    source: conn::Source,
    refused: conn::Refused,
) {
    let (counter, key, limit, what) = match refused {
        conn::Refused::Connections => (
            &stats.refused_connection_limit,
            "edgegw::listener::max-connections",
            limits.max_connections,
            "connections open (max_connections)".to_string(),
        ),
        conn::Refused::Handshakes => (
            &stats.refused_handshake_limit,
            "edgegw::listener::max-handshakes",
            limits.max_handshakes,
            "handshakes in progress (max_handshakes)".to_string(),
        ),
        conn::Refused::Source => (
            &stats.refused_source_limit,
            "edgegw::listener::max-handshakes-per-source",
            limits.max_handshakes_per_source,
            format!("handshakes from {source} in progress (max_handshakes_per_source)"),
        ),
    };
    Stats::bump(counter);
    log::info!(target: key, "listener `{listener}`: refused {peer}: {limit} {what}");
}

#[cfg(test)]
mod tests {
    use super::BurstWatch;

    #[test]
    fn a_burst_is_over_when_many_connections_closed_since_the_peak_and_not_more_often() {
        let mut watch = BurstWatch::default();
        // Steady load, up and down a little: never.
        for active in [10, 40, 20, 60, 30, 50].repeat(5) {
            assert!(!watch.ended(active));
        }
        // 1024 open, then closed.
        assert!(!watch.ended(1024));
        assert!(watch.ended(0));
        // Not again at once, even after another burst...
        assert!(!watch.ended(500));
        assert!(!watch.ended(0));
        assert!(!watch.ended(0));
        // ...but two seconds after the last one.
        assert!(watch.ended(0));
        assert!(!watch.ended(0));
    }
}
