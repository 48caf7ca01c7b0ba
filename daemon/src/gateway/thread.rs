//! The TLS thread: its runtime, the commands it takes from the control plane, and its state
//! (listeners, the sockets they accept on, ring pairs), which it changes only between two
//! events, when a command comes.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::conn::ConnSettings;
use super::error::{GatewayError, PlanError};
use super::event::GatewayEvent;
use super::listener::{self, ConnectionIds, Listener};
use super::plan::{Plan, RingEndpoints, SocketId, SocketOp};
use super::ring_pair::RingPair;
use super::stats::Stats;
use crate::config::Config;
use crate::tls::ListenerTls;

/// What the control plane asks of the TLS thread.
pub enum Command {
    /// Run this plan; the answer says whether it is in force.
    Apply(Plan, oneshot::Sender<Result<(), PlanError>>),
    /// A fresh reply ring for a ring whose reply ring was replaced (boxed: rare, large).
    RenewReply(String, Box<edgegw_ring::Consumer>),
    /// A fresh ingress ring for a ring whose ingress ring was replaced.
    RenewIngress(String, Box<edgegw_ring::Producer>),
    /// A ring's ingress consumer detached or attached: windows of a consumer that is gone
    /// are reset (`RingPair::consumer_changed`).
    ConsumerChanged(String),
    /// Block the thread for this long (how the tests prove the watchdog; debug builds and the
    /// `stall-trigger` feature only).
    #[cfg(any(debug_assertions, feature = "stall-trigger"))]
    Stall(Duration),
    /// Stop gracefully: stop accepting, end every connection (CLOSE reason 5, close_notify)
    /// within the time, then mark the ingress rings FINISHED; the answer is how many connections
    /// were still open at the end of the time.
    Drain(Duration, oneshot::Sender<u64>),
    /// Stop: listeners close, connections are dropped.
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Apply(..) => "Apply",
            Command::RenewReply(..) => "RenewReply",
            Command::RenewIngress(..) => "RenewIngress",
            Command::ConsumerChanged(..) => "ConsumerChanged",
            #[cfg(any(debug_assertions, feature = "stall-trigger"))]
            Command::Stall(..) => "Stall",
            Command::Drain(..) => "Drain",
            Command::Shutdown => "Shutdown",
        })
    }
}

/// The channels between the TLS thread and the control plane.
pub struct Links {
    /// Commands from the control plane.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Events to the control plane.
    pub events: mpsc::UnboundedSender<GatewayEvent>,
    /// The first plan's answer (or why the thread could not start).
    pub started: std::sync::mpsc::Sender<Result<(), GatewayError>>,
}

/// The TLS thread's body: a current_thread runtime, the first plan, then commands until
/// `Shutdown` (or until the control plane's handle is gone).
pub fn run(cpu: Option<usize>, plan: Plan, stats: Arc<Stats>, links: Links) {
    let Links {
        mut commands,
        events,
        started,
    } = links;
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
            let _ = started.send(Err(GatewayError::Runtime(e)));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let mut thread = TlsThread::new(stats.clone(), events);
        let first = thread.apply(plan).map_err(GatewayError::Plan);
        let ok = first.is_ok();
        let _ = started.send(first);
        if !ok {
            return;
        }
        let heartbeat = tokio::task::spawn_local(heartbeat(stats));
        while let Some(command) = commands.recv().await {
            match command {
                Command::Apply(plan, answer) => {
                    let _ = answer.send(thread.apply(plan));
                }
                Command::RenewReply(name, reply) => thread.renew_reply(&name, *reply),
                Command::RenewIngress(name, ingress) => thread.renew_ingress(&name, *ingress),
                Command::ConsumerChanged(name) => {
                    if let Some(ring) = thread.rings.get(&name) {
                        ring.consumer_changed();
                    }
                }
                #[cfg(any(debug_assertions, feature = "stall-trigger"))]
                Command::Stall(time) => std::thread::sleep(time),
                Command::Drain(time, answer) => {
                    let left = thread.drain(time).await;
                    let _ = answer.send(left);
                    break;
                }
                Command::Shutdown => break,
            }
        }
        heartbeat.abort();
        thread.close_all();
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
async fn heartbeat(stats: Arc<Stats>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut burst = BurstWatch::default();
    loop {
        tick.tick().await;
        Stats::bump(&stats.heartbeat);
        let active = stats.active.load(std::sync::atomic::Ordering::Relaxed);
        if burst.ended(active) {
            let trimmed = crate::sys::trim_heap();
            Stats::bump(&stats.heap_trims);
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

/// A listening socket and the task accepting on it.
struct Accepting {
    socket: Rc<tokio::net::TcpListener>,
    listener: String,
    task: tokio::task::JoinHandle<()>,
}

/// A socket operation checked and ready to apply.
enum Ready {
    Open(SocketId, String, Rc<tokio::net::TcpListener>),
    Move(SocketId, String),
    Close(SocketId),
}

/// The TLS thread's state: owned by its command loop, changed only by commands.
struct TlsThread {
    stats: Arc<Stats>,
    /// To the control plane.
    events: mpsc::UnboundedSender<GatewayEvent>,
    ids: Rc<ConnectionIds>,
    /// Listeners by name.
    listeners: HashMap<String, Rc<Listener>>,
    /// Listening sockets, by their name in the control plane's table.
    sockets: HashMap<SocketId, Accepting>,
    /// Ring pairs by name. A ring the config no longer names keeps running until restart.
    rings: HashMap<String, Rc<RingPair>>,
    /// Set when the daemon stops; every connection watches it.
    drain: tokio::sync::watch::Sender<bool>,
}

impl TlsThread {
    fn new(stats: Arc<Stats>, events: mpsc::UnboundedSender<GatewayEvent>) -> TlsThread {
        TlsThread {
            stats,
            events,
            ids: Rc::new(ConnectionIds::starting_now()),
            listeners: HashMap::new(),
            sockets: HashMap::new(),
            rings: HashMap::new(),
            drain: tokio::sync::watch::channel(false).0,
        }
    }

    /// Swaps in a plan. Checks everything before changing anything, so a failure leaves the
    /// running state as it was.
    fn apply(&mut self, plan: Plan) -> Result<(), PlanError> {
        let Plan {
            config,
            mut tls,
            new_rings,
            sockets,
        } = plan;
        self.check(&config, &tls, &new_rings, &sockets)?;
        let ops = ready_sockets(sockets)?;
        let started = self.start_rings(&config, new_rings)?;
        // Nothing can fail from here on.
        for ring in &config.rings {
            if let Some(running) = self.rings.get(&ring.name) {
                // Policies are read per packet: they apply at once.
                running.set_when_full(ring.when_full);
            }
        }
        self.rings.extend(started);
        let mut listeners = HashMap::new();
        for listener in &config.listeners {
            let route = config.route(&listener.route).clone();
            let settings = Rc::new(ConnSettings {
                listener: listener.clone(),
                tls: tls
                    .remove(&listener.name)
                    .expect("checked: every listener has TLS"),
                ring: route.target.ring().map(|name| self.rings[name].clone()),
                route,
                drain: self.drain.subscribe(),
            });
            let running = match self.listeners.remove(&listener.name) {
                Some(running) => {
                    running.update(settings);
                    running
                }
                None => {
                    let counters = self.stats.listeners.of(&listener.name);
                    Rc::new(Listener::new(settings, counters))
                }
            };
            listeners.insert(listener.name.clone(), running);
        }
        // Listeners no longer configured: their sockets are closed by the plan; their open
        // connections keep what they need, and their counters go from the status.
        self.listeners = listeners;
        self.stats
            .listeners
            .retain(|name| self.listeners.contains_key(name));
        for op in ops {
            self.change_socket(op);
        }
        Ok(())
    }

    /// Checks a plan against the running state: every ring is new or running, every listener
    /// has its TLS, every socket operation names a socket that exists (or, to open, one that
    /// does not) and leaves every socket serving a configured listener.
    fn check(
        &self,
        config: &Config,
        tls: &HashMap<String, ListenerTls>,
        new_rings: &HashMap<String, RingEndpoints>,
        sockets: &[SocketOp],
    ) -> Result<(), PlanError> {
        // Routes name configured rings (the config is validated): each must be new or running.
        for ring in &config.rings {
            if !new_rings.contains_key(&ring.name) && !self.rings.contains_key(&ring.name) {
                return Err(PlanError::UnknownRing(ring.name.clone()));
            }
        }
        if let Some(listener) = config.listeners.iter().find(|l| !tls.contains_key(&l.name)) {
            return Err(PlanError::NoTls(listener.name.clone()));
        }
        let mut serving: HashMap<SocketId, &str> = self
            .sockets
            .iter()
            .map(|(id, accepting)| (*id, accepting.listener.as_str()))
            .collect();
        for op in sockets {
            let known = match op {
                SocketOp::Open { id, listener, .. } => {
                    if serving.insert(*id, listener).is_some() {
                        return Err(PlanError::SocketExists(*id));
                    }
                    true
                }
                SocketOp::Move { id, listener } => serving.insert(*id, listener).is_some(),
                SocketOp::Close { id } => serving.remove(id).is_some(),
            };
            if !known {
                return Err(PlanError::UnknownSocket(op.id()));
            }
        }
        for (socket, listener) in serving {
            if !config.listeners.iter().any(|l| l.name == listener) {
                return Err(PlanError::UnknownListener {
                    socket,
                    listener: listener.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Starts the new rings; stops those it started if one fails.
    fn start_rings(
        &self,
        config: &Config,
        mut new_rings: HashMap<String, RingEndpoints>,
    ) -> Result<Vec<(String, Rc<RingPair>)>, PlanError> {
        let mut started: Vec<(String, Rc<RingPair>)> = Vec::new();
        for ring in &config.rings {
            let Some(endpoints) = new_rings.remove(&ring.name) else {
                continue;
            };
            let pair = RingPair::start(
                &ring.name,
                endpoints,
                ring.when_full,
                self.stats.clone(),
                self.events.clone(),
            );
            match pair {
                Ok(pair) => started.push((ring.name.clone(), pair)),
                Err(source) => {
                    for (_, pair) in started {
                        pair.stop();
                    }
                    return Err(PlanError::Ring {
                        ring: ring.name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(started)
    }

    fn change_socket(&mut self, op: Ready) {
        match op {
            Ready::Open(id, listener, socket) => self.accept(id, listener, socket),
            Ready::Move(id, listener) => {
                let old = self
                    .sockets
                    .remove(&id)
                    .expect("checked: the socket exists");
                old.task.abort();
                self.accept(id, listener, old.socket);
            }
            Ready::Close(id) => {
                let old = self
                    .sockets
                    .remove(&id)
                    .expect("checked: the socket exists");
                old.task.abort();
                match old.socket.local_addr() {
                    Ok(addr) => log::info!("closed listening socket {addr}"),
                    Err(_) => log::info!("closed listening socket {id}"),
                }
            }
        }
    }

    fn accept(&mut self, id: SocketId, listener: String, socket: Rc<tokio::net::TcpListener>) {
        let serving = self.listeners[&listener].clone();
        let task = tokio::task::spawn_local(listener::accept_loop(
            serving,
            socket.clone(),
            self.stats.clone(),
            self.ids.clone(),
        ));
        self.sockets.insert(
            id,
            Accepting {
                socket,
                listener,
                task,
            },
        );
    }

    /// Starts reading a ring's fresh reply ring (the old one was replaced).
    fn renew_reply(&self, name: &str, reply: edgegw_ring::Consumer) {
        match self.rings.get(name) {
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
        match self.rings.get(name) {
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

    /// Stops accepting, asks every connection to end (CLOSE reason 5 to its consumer after what
    /// it read, close_notify to its client) and waits up to `time` for them; then publishes what
    /// is pending in each ingress ring and marks it FINISHED, which wakes its consumer
    /// (FORMAT.md section 7). Returns the connections still open at the end.
    async fn drain(&mut self, time: Duration) -> u64 {
        for (_, accepting) in self.sockets.drain() {
            accepting.task.abort();
        }
        self.drain.send_replace(true);
        let deadline = tokio::time::Instant::now() + time;
        let active = || self.stats.active.load(std::sync::atomic::Ordering::Relaxed);
        while active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for ring in self.rings.values() {
            ring.finish();
        }
        active()
    }

    fn close_all(&mut self) {
        for (_, accepting) in self.sockets.drain() {
            accepting.task.abort();
        }
        self.listeners.clear();
        for (_, ring) in self.rings.drain() {
            ring.stop();
        }
    }
}

/// Turns the plan's new sockets into the runtime's.
fn ready_sockets(ops: Vec<SocketOp>) -> Result<Vec<Ready>, PlanError> {
    ops.into_iter()
        .map(|op| match op {
            SocketOp::Open {
                id,
                listener,
                socket,
            } => {
                let socket = socket
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(socket))
                    .map_err(|source| PlanError::Socket { socket: id, source })?;
                Ok(Ready::Open(id, listener, Rc::new(socket)))
            }
            SocketOp::Move { id, listener } => Ok(Ready::Move(id, listener)),
            SocketOp::Close { id } => Ok(Ready::Close(id)),
        })
        .collect()
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
