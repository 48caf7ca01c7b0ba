//! A listener on the TLS thread: its settings, its load, and the loop that accepts on each of
//! its sockets and admits (or refuses) each connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::admission::{Admission, Load, Source};
use super::conn::{self, Accepted, ConnSettings};
use super::stats::{ListenerStats, Stats};

/// A listener's state on the TLS thread.
#[derive(Debug)]
pub struct Listener {
    name: String,
    /// What its next connections run with.
    settings: RefCell<Rc<ConnSettings>>,
    /// Its open connections and handshakes, against its limits.
    load: Rc<Load>,
}

impl Listener {
    /// A listener with no connections yet, counting into `counters`.
    pub fn new(settings: Rc<ConnSettings>, counters: Arc<ListenerStats>) -> Listener {
        Listener {
            name: settings.listener.name.clone(),
            settings: RefCell::new(settings),
            load: Rc::new(Load::new(counters)),
        }
    }

    /// New connections run with `settings` from now on; open ones keep theirs.
    pub fn update(&self, settings: Rc<ConnSettings>) {
        *self.settings.borrow_mut() = settings;
    }
}

/// Connection ids: unique across restarts (consumers may outlive the daemon), so they start at
/// the wall-clock start time in microseconds; a clock stepped back between two runs can repeat
/// ids (PROTOCOL.md section 2 says so). The boot-time clock would survive such a step but
/// start again near 0 at every boot, for consumers that keep state across reboots.
#[derive(Debug)]
pub struct ConnectionIds(Cell<u64>);

impl ConnectionIds {
    /// Ids from now on.
    pub fn starting_now() -> ConnectionIds {
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        ConnectionIds(Cell::new(first))
    }

    fn next(&self) -> u64 {
        let id = self.0.get();
        self.0.set(id + 1);
        id
    }
}

/// Accepts on `socket` for `listener` until the task is aborted (the socket is closed or moves
/// to another listener).
pub async fn accept_loop(
    listener: Rc<Listener>,
    socket: Rc<tokio::net::TcpListener>,
    stats: Arc<Stats>,
    ids: Rc<ConnectionIds>,
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
        Stats::bump(&stats.accepted);
        Stats::bump(&listener.load.counters().accepted);
        // Under memory pressure a connection costs what the daemon must give back: closed at
        // once, as the limits refuse, so that clients learn it and the kernel frees its buffers.
        if stats.shedding.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            Stats::bump(&stats.refused_memory_pressure);
            Stats::bump(&listener.load.counters().refused_memory_pressure);
            continue;
        }
        let settings = listener.settings.borrow().clone();
        let source = Source::of(peer.ip());
        let admission = match Admission::take(&listener.load, &settings.listener, source, &stats) {
            Ok(admission) => admission,
            Err(refused) => {
                refused.count(&stats, &listener.load, &settings.listener, peer, source);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            peer,
            id: ids.next(),
            admission,
        };
        tokio::task::spawn_local(conn::run(accepted, settings, stats.clone()));
    }
}
