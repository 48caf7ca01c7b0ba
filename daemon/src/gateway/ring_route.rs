//! Routes into a shared-memory ring pair: connections' plaintext goes into the ingress ring,
//! the consumer's replies come back on the reply ring and are encrypted to their connection.
//!
//! All of it runs on the TLS thread. The ingress producer is shared by every connection of the
//! ring (the TLS thread is the ring's only producer, as the format requires); each connection
//! writes its records and publishes them with one store per read from its socket. When the ring
//! is full, `backpressure` connections stop reading their socket and wait on the ring's space
//! eventfd; `drop` connections count the packet as dropped. OPEN and CLOSE records are never
//! dropped: a consumer must always see a connection begin and end.
//!
//! One task per ring reads the reply ring. Reply bytes are copied out of the shared memory
//! (the consumer process wrote them: we never form a reference over them) into a scratch
//! buffer, encrypted into the connection's outbox and written to its socket at once if it takes
//! them. Replies waiting for slow clients are bounded twice: a connection whose unsent replies
//! exceed [`CONN_REPLY_CAP`] is closed (it does not read; the others must not wait for it), and
//! when the ring's connections together hold [`RING_REPLY_BUDGET`] the reply task stops reading
//! the reply ring until some drain, which pushes back on the consumer instead of growing memory.
//!
//! A client's close_notify ends its direction only: the consumer gets CLOSE (reason 0) and may
//! still answer; the connection ends when the consumer sends CLOSE, the client goes away, or
//! the idle timeout passes.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use edgegw_ring::{Consumer, OwnerCounters, Producer};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::{send_alert, with_scratch, SCRATCH_LEN};
use super::framing::Framer;
use super::session::{Progress, Session};
use super::stats::{RingCounter, Stats};
use super::Limits;
use crate::config::{Framing, WhenFull};
use crate::proto::{self, encode_close, CloseReason, OpenInfo, CLOSE_LEN, DATA_HEADER_LEN};

/// Unsent reply bytes one connection may hold; beyond, the client is too slow and is closed.
const CONN_REPLY_CAP: usize = 256 * 1024;
/// Unsent reply bytes all connections of a ring may hold before the reply task waits.
const RING_REPLY_BUDGET: usize = 4 * 1024 * 1024;

/// The local ends of a ring pair, built by the control plane and moved to the TLS thread.
#[derive(Debug)]
pub struct RingEndpoints {
    /// We produce into it; the consumer process reads.
    pub ingress: Producer,
    /// The consumer process produces into it; we read.
    pub reply: Consumer,
    /// The ring's counters (see [`RingCounter`]), also served by its attach servers.
    pub counters: Arc<OwnerCounters>,
}

/// A ring pair on the TLS thread.
pub struct RingRoute {
    name: String,
    ingress: RefCell<Producer>,
    when_full: Cell<WhenFull>,
    /// Connections waiting for ingress space; woken by the space task.
    space: Notify,
    /// CLOSE records that found the ring full; written before anything else when room comes.
    pending_closes: RefCell<VecDeque<(u64, CloseReason)>>,
    /// Payload length of the last record that found the ring full: what a blocked connection
    /// waits for room for (the thread runs one connection at a time, so it is that one's).
    refused_len: Cell<usize>,
    /// Live connections by id, for replies.
    conns: RefCell<HashMap<u64, Rc<RingConn>>>,
    /// Unsent reply bytes held by all connections (sum of their `accounted`).
    reply_bytes: Cell<usize>,
    /// This ring's counters, beside the gateway's `stats`.
    counters: Arc<OwnerCounters>,
    /// Woken when `reply_bytes` shrinks (the reply task may wait on it).
    drained: Notify,
    stats: Arc<Stats>,
    /// To the control plane (a ring to replace).
    events: tokio::sync::mpsc::UnboundedSender<super::GatewayEvent>,
    /// The consumer broke the ingress ring (an impossible position): nothing is written until
    /// the control plane hands over a fresh one ([`RingRoute::restart_ingress`]).
    ingress_broken: Cell<bool>,
    /// Wakes connections waiting for ingress space.
    space_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// Reads the reply ring.
    reply_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

/// What became of a record offered to the ingress ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offered {
    Written,
    /// No room now (the drop policy may drop it).
    Full,
    /// The ring is being replaced: wait for the fresh one, whatever the policy.
    Broken,
}

/// What the reply task needs of a connection.
struct RingConn {
    stream: TcpStream,
    session: RefCell<Session>,
    /// Woken when the reply task queued bytes or the consumer asked to close.
    wake: Notify,
    /// Set by the consumer's CLOSE, or by the reply task for a client that stopped reading.
    close_requested: Cell<Option<CloseReason>>,
    /// This connection's share of the ring's `reply_bytes`.
    accounted: Cell<usize>,
}

impl RingConn {
    /// Brings the ring's count of unsent reply bytes up to date with this outbox.
    fn account(&self, route: &RingRoute) {
        let now = self.session.borrow().outbox_len();
        self.set_accounted(route, now);
    }

    fn set_accounted(&self, route: &RingRoute, now: usize) {
        let before = self.accounted.replace(now);
        // `reply_bytes` is the sum of every connection's `accounted`, so it holds `before`.
        route
            .reply_bytes
            .set(route.reply_bytes.get().saturating_sub(before) + now);
        if now < before {
            route.drained.notify_waiters();
        }
    }
}

impl RingRoute {
    /// Starts a ring's tasks on the TLS thread.
    pub fn start(
        name: &str,
        endpoints: RingEndpoints,
        when_full: WhenFull,
        stats: Arc<Stats>,
        events: tokio::sync::mpsc::UnboundedSender<super::GatewayEvent>,
    ) -> io::Result<Rc<RingRoute>> {
        let space_fd = crate::sys::async_fd(dup(endpoints.ingress.space_fd())?)?;
        let data_fd = crate::sys::async_fd(dup(endpoints.reply.data_fd())?)?;
        let route = Rc::new(RingRoute {
            name: name.to_string(),
            ingress: RefCell::new(endpoints.ingress),
            when_full: Cell::new(when_full),
            space: Notify::new(),
            pending_closes: RefCell::default(),
            refused_len: Cell::new(0),
            conns: RefCell::default(),
            reply_bytes: Cell::new(0),
            counters: endpoints.counters,
            drained: Notify::new(),
            stats,
            events,
            ingress_broken: Cell::new(false),
            space_task: RefCell::default(),
            reply_task: RefCell::default(),
        });
        *route.space_task.borrow_mut() = Some(tokio::task::spawn_local(watch_space(
            route.clone(),
            space_fd,
        )));
        *route.reply_task.borrow_mut() = Some(tokio::task::spawn_local(dispatch_replies(
            route.clone(),
            endpoints.reply,
            data_fd,
        )));
        Ok(route)
    }

    /// Reads replies from `reply` from now on, in place of the reply ring the control plane
    /// replaced (found broken, or finished by its producer).
    pub fn restart_replies(self: &Rc<Self>, reply: Consumer) -> io::Result<()> {
        let data_fd = crate::sys::async_fd(dup(reply.data_fd())?)?;
        let task = tokio::task::spawn_local(dispatch_replies(self.clone(), reply, data_fd));
        if let Some(old) = self.reply_task.borrow_mut().replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Produces into `fresh` from now on, in place of the ingress ring the control plane
    /// replaced (its consumer broke it): every record the consumer had not released moves to
    /// the fresh ring first, so nothing accepted is lost. Returns what moved.
    pub fn restart_ingress(
        self: &Rc<Self>,
        mut fresh: Producer,
    ) -> Result<edgegw_ring::Moved, edgegw_ring::Error> {
        let space_fd = dup(fresh.space_fd())
            .and_then(crate::sys::async_fd)
            .map_err(|e| edgegw_ring::Error::Io {
                what: "register the space eventfd",
                source: e,
            })?;
        let moved = self.ingress.borrow_mut().move_unreleased_to(&mut fresh)?;
        *self.ingress.borrow_mut() = fresh;
        self.ingress_broken.set(false);
        let task = tokio::task::spawn_local(watch_space(self.clone(), space_fd));
        if let Some(old) = self.space_task.borrow_mut().replace(task) {
            old.abort();
        }
        // Whoever waited for room in the broken ring tries the fresh one.
        self.keep_closes_moving();
        self.space.notify_waiters();
        Ok(moved)
    }

    /// Changes the full-ring policy (a reload).
    pub fn set_when_full(&self, when_full: WhenFull) {
        self.when_full.set(when_full);
    }

    /// Stops the ring's tasks (the TLS thread is shutting down).
    pub fn stop(&self) {
        for task in [&self.space_task, &self.reply_task] {
            if let Some(task) = task.borrow_mut().take() {
                task.abort();
            }
        }
        self.conns.borrow_mut().clear();
    }

    /// Writes one record, or says why not (nothing written).
    fn try_record(&self, kind: u16, len: usize, fill: impl FnOnce(&mut [u8])) -> Offered {
        if self.ingress_broken.get() {
            return Offered::Broken;
        }
        let mut producer = self.ingress.borrow_mut();
        match producer.reserve(len, kind, 0) {
            Ok(buf) => {
                fill(buf);
                Offered::Written
            }
            Err(edgegw_ring::Error::Full { .. }) => {
                self.refused_len.set(len);
                Offered::Full
            }
            Err(e) => {
                // TooLarge cannot happen (config validation and chunking keep records within
                // max_payload); Corrupt means the consumer wrote an impossible position.
                let generation = producer.generation();
                drop(producer);
                self.ingress_ring_corrupt(generation, &e);
                Offered::Broken
            }
        }
    }

    /// The consumer broke the ingress ring: stop writing and ask the control plane for a fresh
    /// one. Records wait (as under backpressure) until it comes.
    #[cold]
    fn ingress_ring_corrupt(&self, generation: u64, error: &edgegw_ring::Error) {
        self.ingress_broken.set(true);
        self.refused_len.set(0);
        let _ = self.events.send(super::GatewayEvent::IngressRingBroken {
            ring: self.name.clone(),
            generation,
            reason: error.to_string(),
        });
    }

    fn publish(&self) {
        self.ingress.borrow_mut().publish();
    }

    /// Whether a record with `len` payload bytes fits now, arming the space wakeup if not.
    fn prepare_wait_for_space(&self, len: usize) -> bool {
        if self.ingress_broken.get() {
            return true;
        }
        let mut producer = self.ingress.borrow_mut();
        match producer.prepare_wait_for_space(len) {
            Ok(wait) => wait,
            Err(e) => {
                let generation = producer.generation();
                drop(producer);
                self.ingress_ring_corrupt(generation, &e);
                true
            }
        }
    }

    /// Waits until a record with `len` payload bytes fits.
    async fn wait_for_space(&self, len: usize) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.prepare_wait_for_space(len) {
                return;
            }
            notified.await;
        }
    }

    /// Writes CLOSE records that were waiting for room; true when none is left.
    fn flush_closes(&self) -> bool {
        let mut closes = self.pending_closes.borrow_mut();
        let mut wrote = false;
        while let Some(&(id, reason)) = closes.front() {
            let written = self.try_record(proto::CLOSE, CLOSE_LEN, |b| encode_close(b, id, reason));
            if written != Offered::Written {
                break;
            }
            closes.pop_front();
            wrote = true;
        }
        if wrote {
            self.publish();
        }
        closes.is_empty()
    }

    /// Writes the CLOSE records that wait for room; if some still do not fit, arms the space
    /// wakeup, so the space watcher writes them when the consumer frees room. Nobody else may be
    /// waiting for room (under the drop policy nobody ever does), and a consumer signals only a
    /// producer that armed its wait.
    fn keep_closes_moving(&self) {
        while !self.flush_closes() {
            if self.prepare_wait_for_space(CLOSE_LEN) {
                return;
            }
            // Room came between the two: write them now.
        }
    }

    /// Writes a connection's CLOSE record (queued if the ring is full: it is never dropped).
    fn close(&self, id: u64, reason: CloseReason) {
        if !self.flush_closes()
            || self.try_record(proto::CLOSE, CLOSE_LEN, |b| encode_close(b, id, reason))
                != Offered::Written
        {
            self.pending_closes.borrow_mut().push_back((id, reason));
            self.keep_closes_moving();
            return;
        }
        self.publish();
    }

    /// Offers a chunk of plaintext (stream framing): cut into records of at most the ring's
    /// record size. Returns how much was taken (written, or dropped under the drop policy).
    fn offer_stream(&self, id: u64, data: &[u8]) -> usize {
        let max = self.ingress.borrow().max_payload() - DATA_HEADER_LEN;
        let mut taken = 0;
        for chunk in data.chunks(max) {
            if !self.offer_frame(id, chunk) {
                break;
            }
            taken += chunk.len();
        }
        taken
    }

    /// Offers one packet. `true` if it was written or dropped by policy; `false` if the ring is
    /// full and the policy is backpressure.
    fn offer_frame(&self, id: u64, frame: &[u8]) -> bool {
        if !self.pending_closes.borrow().is_empty() && !self.flush_closes() {
            return self.full();
        }
        let offered = self.try_record(proto::DATA, DATA_HEADER_LEN + frame.len(), |b| {
            b[..8].copy_from_slice(&id.to_le_bytes());
            b[8..].copy_from_slice(frame);
        });
        match offered {
            Offered::Written => {
                Stats::add(&self.stats.bytes_from_clients, frame.len() as u64);
                RingCounter::BytesIn.add(&self.counters, frame.len() as u64);
                true
            }
            Offered::Full => self.full(),
            Offered::Broken => false,
        }
    }

    /// The ring is full: `false` under backpressure (offer it again later), `true` under the
    /// drop policy (counted in the ring's header and in the stats).
    fn full(&self) -> bool {
        if self.ingress_broken.get() {
            return false;
        }
        match self.when_full.get() {
            WhenFull::Backpressure => false,
            WhenFull::Drop => {
                self.ingress.borrow_mut().record_drops(1);
                Stats::bump(&self.stats.ring_drops);
                true
            }
        }
    }
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Wakes connections waiting for ingress space when the consumer frees some.
async fn watch_space(route: Rc<RingRoute>, space_fd: AsyncFd<OwnedFd>) {
    loop {
        match space_fd.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            Err(e) => {
                log::error!("ring `{}`: space eventfd: {e}", route.name);
                return;
            }
        }
        route.ingress.borrow_mut().finish_wait_for_space();
        route.keep_closes_moving();
        route.space.notify_waiters();
    }
}

/// Serves one established connection on a ring route until it ends.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    route: &Rc<RingRoute>,
    id: u64,
    info: OpenInfo,
    stream: TcpStream,
    session: Session,
    limits: &Limits,
    framing: Framing,
    stats: &Stats,
) {
    // OPEN is never dropped: wait for room.
    let open_len = info.encoded_len();
    while route.try_record(proto::OPEN, open_len, |b| info.encode(id, b)) != Offered::Written {
        let waited =
            tokio::time::timeout(limits.idle_timeout, route.wait_for_space(open_len)).await;
        if waited.is_err() {
            Stats::bump(&stats.idle_timeouts);
            return;
        }
    }
    route.publish();
    RingCounter::Connections.add(&route.counters, 1);
    drop(info);

    let conn = Rc::new(RingConn {
        stream,
        session: RefCell::new(session),
        wake: Notify::new(),
        close_requested: Cell::new(None),
        accounted: Cell::new(0),
    });
    route.conns.borrow_mut().insert(id, conn.clone());
    let (reason, close_sent) = relay(route, id, &conn, limits, framing, stats).await;
    route.conns.borrow_mut().remove(&id);
    if !close_sent {
        route.close(id, reason);
    }
    if reason == CloseReason::SlowClient {
        // It did not read 256 KiB of replies: the rest would not go out either. Drop them now,
        // so they stop counting against the ring's budget (and free their memory) at once,
        // rather than after the final flush's timeout.
        conn.session.borrow_mut().discard_outbox();
        conn.set_accounted(route, 0);
        return;
    }
    conn.session.borrow_mut().close();
    let _ = tokio::time::timeout(limits.handshake_timeout, flush_conn(&conn)).await;
    conn.set_accounted(route, 0);
}

async fn flush_conn(conn: &RingConn) -> io::Result<()> {
    loop {
        let done = conn
            .session
            .borrow_mut()
            .flush_to(|b| conn.stream.try_write(b))?;
        if done {
            return Ok(());
        }
        conn.stream.writable().await?;
    }
}

/// The connection's loop: client bytes into the ring, replies (queued by the reply task) out.
/// Returns why it ended and whether the CLOSE record was already written (at the client's
/// close_notify, when the connection stays open for the consumer's last replies).
async fn relay(
    route: &Rc<RingRoute>,
    id: u64,
    conn: &Rc<RingConn>,
    limits: &Limits,
    framing: Framing,
    stats: &Stats,
) -> (CloseReason, bool) {
    let mut framer = match framing {
        Framing::LengthPrefixed { max_frame } => Some(Framer::new(max_frame)),
        Framing::Stream => None,
    };
    let mut deadline = Instant::now() + limits.idle_timeout;
    let mut client_done = false;
    loop {
        // Client plaintext into the ring.
        let mut blocked = false;
        if !client_done {
            let mut bad_frame = None;
            let progress = conn
                .session
                .borrow_mut()
                .process(&mut |data| match framer.as_mut() {
                    None => route.offer_stream(id, data),
                    Some(framer) => {
                        match framer.push(data, &mut |frame| route.offer_frame(id, frame)) {
                            Ok(used) => used,
                            Err(e) => {
                                bad_frame = Some(e);
                                data.len()
                            }
                        }
                    }
                });
            route.publish();
            if let Some(e) = bad_frame {
                Stats::bump(&stats.oversized_frames);
                log::debug!("connection {id}: {e}");
                return (CloseReason::ProtocolError, false);
            }
            match progress {
                Ok(Progress::NeedInput) => {}
                Ok(Progress::SinkFull) => blocked = true,
                Ok(Progress::PeerClosed | Progress::Closed) => {
                    // The client is done sending; the consumer may still answer.
                    client_done = true;
                    route.close(id, CloseReason::ClientClosed);
                }
                Err(e) => {
                    send_alert(&conn.stream, &mut conn.session.borrow_mut(), stats, &e);
                    return (CloseReason::ProtocolError, false);
                }
            }
        }
        if let Some(reason) = conn.close_requested.get() {
            return (reason, client_done);
        }

        let wants_write = conn.session.borrow().wants_write();
        let read = !blocked && !client_done;
        let wanted = if blocked { route.refused_len.get() } else { 0 };
        tokio::select! {
            r = conn.stream.readable(), if read => {
                if r.is_err() { return (CloseReason::ClientAborted, client_done); }
                let got = conn.session.borrow_mut().read_from(|b| conn.stream.try_read(b));
                match got {
                    Ok(0) => return (CloseReason::ClientAborted, client_done),
                    Ok(_) => deadline = Instant::now() + limits.idle_timeout,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return (CloseReason::ClientAborted, client_done),
                }
            }
            () = route.wait_for_space(wanted), if blocked => {}
            r = conn.stream.writable(), if wants_write => {
                if r.is_err() { return (CloseReason::ClientAborted, client_done); }
                let flushed = conn.session.borrow_mut().flush_to(|b| conn.stream.try_write(b));
                let before = conn.accounted.get();
                conn.account(route);
                match flushed {
                    Err(_) => return (CloseReason::ClientAborted, client_done),
                    // The client reads: it is not idle.
                    Ok(_) if conn.accounted.get() < before => deadline = Instant::now() + limits.idle_timeout,
                    Ok(_) => {}
                }
            }
            // Replies were queued or a close was asked for: look again.
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                Stats::bump(&stats.idle_timeouts);
                return (CloseReason::Idle, client_done);
            }
        }
    }
}

/// Reads the reply ring and hands each record to its connection.
async fn dispatch_replies(route: Rc<RingRoute>, mut reply: Consumer, data_fd: AsyncFd<OwnedFd>) {
    loop {
        // Everything available now, as long as the reply budget lasts.
        while route.reply_bytes.get() < RING_REPLY_BUDGET {
            let record = match reply.read() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(e) => return reply_ring_corrupt(&route, reply.generation(), &e),
            };
            deliver_reply(&route, record.record_type(), record.payload());
        }
        reply.release();

        if route.reply_bytes.get() >= RING_REPLY_BUDGET {
            // Slow clients hold the whole budget: wait until one drains or goes away. The
            // consumer meanwhile finds the reply ring full: backpressure, not memory growth.
            let drained = route.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if route.reply_bytes.get() >= RING_REPLY_BUDGET {
                drained.await;
            }
            continue;
        }

        match reply.prepare_wait() {
            Ok(true) => {
                match data_fd.readable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        log::error!("ring `{}`: reply eventfd: {e}", route.name);
                        return;
                    }
                }
                reply.finish_wait();
            }
            Ok(false) => {}
            Err(edgegw_ring::Error::Finished) => {
                return reply_ring_finished(&route, reply.generation())
            }
            Err(e) => return reply_ring_corrupt(&route, reply.generation(), &e),
        }
    }
}

/// Hands one reply record to its connection: DATA is copied out of the peer's memory (never
/// referenced in place), encrypted and written if the socket takes it; CLOSE asks the connection
/// to end. Malformed records and replies for unknown connections are counted and skipped.
fn deliver_reply(route: &RingRoute, kind: u16, payload: edgegw_ring::Payload<'_>) {
    if payload.len() < DATA_HEADER_LEN || !(kind == proto::DATA || kind == proto::CLOSE) {
        Stats::bump(&route.stats.malformed_replies);
        RingCounter::MalformedReplies.add(&route.counters, 1);
        log::debug!(
            "ring `{}`: skipped a malformed reply record (type {kind}, {} bytes)",
            route.name,
            payload.len()
        );
        return;
    }
    let id = payload.read_u64_le(0).unwrap_or(0);
    let conn = route.conns.borrow().get(&id).cloned();
    let Some(conn) = conn.filter(|c| c.close_requested.get().is_none()) else {
        // A CLOSE for a connection that already ended is how consumers answer the daemon's
        // CLOSE: not worth counting.
        if kind == proto::DATA {
            Stats::bump(&route.stats.replies_for_unknown_connections);
            RingCounter::RepliesForUnknownConnections.add(&route.counters, 1);
            log::debug!(
                "ring `{}`: dropped a reply for connection {id}, which is closed or never existed",
                route.name
            );
        }
        return;
    };
    if kind == proto::CLOSE {
        conn.close_requested.set(Some(CloseReason::ConsumerClosed));
        conn.wake.notify_one();
        return;
    }
    // Copy out of the peer's memory, one TLS record's worth at a time, and encrypt.
    let len = payload.len() - DATA_HEADER_LEN;
    let mut at = DATA_HEADER_LEN;
    let mut failed = false;
    while at < payload.len() && !failed {
        let n = (payload.len() - at).min(SCRATCH_LEN);
        with_scratch(|buf| {
            let copied = payload
                .slice(at, n)
                .map_or(0, |part| part.copy_to_slice(&mut buf[..n]));
            failed = copied != n || conn.session.borrow_mut().write(&buf[..n]).is_err();
        });
        at += n;
    }
    if failed {
        conn.close_requested.set(Some(CloseReason::ProtocolError));
        conn.wake.notify_one();
        return;
    }
    Stats::add(&route.stats.bytes_to_clients, len as u64);
    RingCounter::BytesOut.add(&route.counters, len as u64);
    let _ = conn
        .session
        .borrow_mut()
        .flush_to(|b| conn.stream.try_write(b));
    conn.account(route);
    if conn.accounted.get() > CONN_REPLY_CAP {
        // Not reading its replies: drop it rather than hold the ring for it.
        conn.close_requested.set(Some(CloseReason::SlowClient));
    }
    if conn.accounted.get() > 0 || conn.close_requested.get().is_some() {
        conn.wake.notify_one();
    }
}

/// The consumer finished its reply ring (FORMAT.md section 7) and everything it committed has
/// been delivered: it is done replying, as if it had detached. Connections keep their ingress;
/// the control plane serves a fresh reply ring for the next producer.
fn reply_ring_finished(route: &RingRoute, generation: u64) {
    Stats::bump(&route.stats.finished_reply_rings);
    RingCounter::FinishedReplyRings.add(&route.counters, 1);
    log::info!(
        "ring `{}`: the consumer finished its reply ring; its replies are delivered and a fresh \
         reply ring is served for the next producer",
        route.name
    );
    let _ = route.events.send(super::GatewayEvent::ReplyRingFinished {
        ring: route.name.clone(),
        generation,
    });
}

/// The consumer broke the reply ring's contract: stop reading it and ask the control plane for
/// a fresh one (it logs and counts the replacement). Connections stay; what the corrupt ring
/// held is lost with it.
fn reply_ring_corrupt(route: &RingRoute, generation: u64, error: &edgegw_ring::Error) {
    let _ = route.events.send(super::GatewayEvent::ReplyRingBroken {
        ring: route.name.clone(),
        generation,
        reason: error.to_string(),
    });
}
