//! A ring pair on the TLS thread: the producer end of the ingress ring, shared by every
//! connection routed to it, and the task that reads the reply ring and hands each reply to its
//! connection (`backend::ring` is one connection's side).
//!
//! The ingress producer is shared by every connection of the ring (the TLS thread is the ring's
//! only producer, as the format requires); each connection writes its records and publishes
//! them with one store per read from its socket. When the ring is full, `backpressure`
//! connections stop reading their socket and wait on the ring's space eventfd; `drop`
//! connections count the packet as dropped. OPEN and CLOSE records are never dropped: a
//! consumer must always see a connection begin and end.
//!
//! One task per ring reads the reply ring. Reply bytes are copied out of the shared memory
//! (the consumer process wrote them: we never form a reference over them) into their
//! connection's reply queue, which its relay encrypts and writes. Replies waiting for slow
//! clients are bounded twice: a connection whose unsent replies exceed [`CONN_REPLY_CAP`]
//! while its client takes no more is closed (it does not read; the others must not wait for
//! it), and when the ring's connections together hold [`RING_REPLY_BUDGET`] the reply task
//! stops reading the reply ring until some drain, which pushes back on the consumer instead of
//! growing memory.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use edgegw_ring::{Consumer, OwnerCounters, Producer};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::event::GatewayEvent;
use super::plan::RingEndpoints;
use super::session::PooledBuf;
use super::stats::{RingCounter, Stats};
use crate::config::WhenFull;
use edgegw_proto::{
    self as proto, encode_close, CloseReason, OpenInfo, CLOSE_LEN, DATA_HEADER_LEN,
};

/// Unsent reply bytes one connection may hold; beyond, the client is too slow and is closed.
const CONN_REPLY_CAP: usize = 256 * 1024;
/// Unsent reply bytes all connections of a ring may hold before the reply task waits.
const RING_REPLY_BUDGET: usize = 4 * 1024 * 1024;

/// A ring pair on the TLS thread.
pub struct RingPair {
    name: String,
    ingress: RefCell<Producer>,
    when_full: Cell<WhenFull>,
    /// Connections waiting for ingress space; the space task wakes them.
    waiting_room: RefCell<Vec<Rc<RingConn>>>,
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
    events: tokio::sync::mpsc::UnboundedSender<GatewayEvent>,
    /// The consumer broke the ingress ring (an impossible position): nothing is written until
    /// the control plane hands over a fresh one ([`RingPair::restart_ingress`]).
    ingress_broken: Cell<bool>,
    /// Wakes connections waiting for ingress space.
    space_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// Reads the reply ring.
    reply_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPair")
            .field("name", &self.name)
            .field("connections", &self.conns.borrow().len())
            .finish()
    }
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

/// A connection's place in its ring pair: the replies the reply task copied out for it, and
/// the consumer's request to close it. Its relay's side is `backend::ring`.
#[derive(Default)]
pub(super) struct RingConn {
    /// Reply bytes copied out of the reply ring, waiting for the relay to encrypt them.
    replies: RefCell<PooledBuf>,
    /// Woken when replies were queued, the consumer asked to close, or room came.
    wake: Notify,
    /// The consumer sent CLOSE: no reply is taken for it any more.
    closed_by_consumer: Cell<bool>,
    /// It is on the ring's list of connections waiting for room.
    waiting_room: Cell<bool>,
    /// Bytes of its replies in the client's outbox, as its relay last said.
    unsent: Cell<usize>,
    /// This connection's share of the ring's `reply_bytes`: `replies` and `unsent`.
    accounted: Cell<usize>,
}

impl RingConn {
    /// Waits until the reply task queued replies, the consumer asked to close, or (after
    /// [`RingPair::room_or_wake`]) the ring has room.
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Whether replies wait in the queue.
    pub(super) fn has_replies(&self) -> bool {
        !self.replies.borrow().is_empty()
    }

    /// Whether the consumer sent CLOSE.
    pub(super) fn closed_by_consumer(&self) -> bool {
        self.closed_by_consumer.get()
    }

    /// Whether the replies it holds (queued and unsent) are over [`CONN_REPLY_CAP`].
    pub(super) fn over_cap(&self) -> bool {
        self.accounted.get() > CONN_REPLY_CAP
    }

    /// Hands the queued replies to `sink` and empties the queue.
    pub(super) fn take_replies<E>(
        &self,
        pair: &RingPair,
        sink: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut replies = self.replies.borrow_mut();
        let n = replies.len();
        if n > 0 {
            sink(replies.as_slice())?;
            replies.consume(n);
        }
        drop(replies);
        self.account(pair);
        Ok(n)
    }

    /// The client's outbox holds `bytes` of its replies.
    pub(super) fn set_unsent(&self, pair: &RingPair, bytes: usize) {
        self.unsent.set(bytes);
        self.account(pair);
    }

    /// Brings the ring's count of held reply bytes up to date.
    fn account(&self, pair: &RingPair) {
        self.set_accounted(pair, self.replies.borrow().len() + self.unsent.get());
    }

    /// Sets this connection's share of the ring's reply bytes (0: it holds none any more).
    pub(super) fn set_accounted(&self, pair: &RingPair, now: usize) {
        let before = self.accounted.replace(now);
        // `reply_bytes` is the sum of every connection's `accounted`, so it holds `before`.
        pair.reply_bytes
            .set(pair.reply_bytes.get().saturating_sub(before) + now);
        if now < before {
            pair.drained.notify_waiters();
        }
    }
}

impl RingPair {
    /// Starts a ring's tasks on the TLS thread.
    pub fn start(
        name: &str,
        endpoints: RingEndpoints,
        when_full: WhenFull,
        stats: Arc<Stats>,
        events: tokio::sync::mpsc::UnboundedSender<GatewayEvent>,
    ) -> io::Result<Rc<RingPair>> {
        let space_fd = crate::sys::async_fd(dup(endpoints.ingress.space_fd())?)?;
        let data_fd = crate::sys::async_fd(dup(endpoints.reply.data_fd())?)?;
        let pair = Rc::new(RingPair {
            name: name.to_string(),
            ingress: RefCell::new(endpoints.ingress),
            when_full: Cell::new(when_full),
            waiting_room: RefCell::default(),
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
        *pair.space_task.borrow_mut() = Some(tokio::task::spawn_local(watch_space(
            pair.clone(),
            space_fd,
        )));
        *pair.reply_task.borrow_mut() = Some(tokio::task::spawn_local(dispatch_replies(
            pair.clone(),
            endpoints.reply,
            data_fd,
        )));
        Ok(pair)
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
        self.wake_waiting_room();
        Ok(moved)
    }

    /// Changes the full-ring policy (a reload).
    pub fn set_when_full(&self, when_full: WhenFull) {
        self.when_full.set(when_full);
    }

    /// The producer stops for good: what is pending is published and the ingress ring marked
    /// FINISHED, which wakes the consumer (it drains the ring, then attaches again).
    pub fn finish(&self) {
        if !self.ingress_broken.get() {
            self.ingress.borrow_mut().finish();
        }
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

    /// Writes a connection's OPEN record, waiting for room (it is never dropped) for at most
    /// `wait` at a time, and takes the connection in. `None` if it waited in vain.
    pub(super) async fn open(
        &self,
        id: u64,
        info: &OpenInfo,
        wait: Duration,
    ) -> Option<Rc<RingConn>> {
        let conn = Rc::new(RingConn::default());
        let open_len = info.encoded_len();
        while self.try_record(proto::OPEN, open_len, |b| info.encode(id, b)) != Offered::Written {
            if !self.room_or_wake(&conn, open_len)
                && tokio::time::timeout(wait, conn.woken()).await.is_err()
            {
                Stats::bump(&self.stats.idle_timeouts);
                return None;
            }
        }
        self.publish();
        RingCounter::Connections.add(&self.counters, 1);
        self.conns.borrow_mut().insert(id, conn.clone());
        Some(conn)
    }

    /// Lets a connection go: replies for it are no longer taken.
    pub(super) fn forget(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Payload length of the last record that found the ring full.
    pub(super) fn refused_len(&self) -> usize {
        self.refused_len.get()
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
        let _ = self.events.send(GatewayEvent::IngressRingBroken {
            ring: self.name.clone(),
            generation,
            reason: error.to_string(),
        });
    }

    pub(super) fn publish(&self) {
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

    /// Whether a record with `len` payload bytes fits now; if not, `conn` is woken when the
    /// consumer frees room (or the ring is replaced).
    pub(super) fn room_or_wake(&self, conn: &Rc<RingConn>, len: usize) -> bool {
        if !conn.waiting_room.replace(true) {
            self.waiting_room.borrow_mut().push(conn.clone());
        }
        !self.prepare_wait_for_space(len)
    }

    /// Wakes every connection waiting for room: they try again.
    fn wake_waiting_room(&self) {
        for conn in self.waiting_room.take() {
            conn.waiting_room.set(false);
            conn.wake.notify_one();
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
    pub(super) fn close(&self, id: u64, reason: CloseReason) {
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
    pub(super) fn offer_stream(&self, id: u64, data: &[u8]) -> usize {
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
    pub(super) fn offer_frame(&self, id: u64, frame: &[u8]) -> bool {
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
async fn watch_space(pair: Rc<RingPair>, space_fd: AsyncFd<OwnedFd>) {
    loop {
        match space_fd.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            Err(e) => {
                log::error!("ring `{}`: space eventfd: {e}", pair.name);
                return;
            }
        }
        pair.ingress.borrow_mut().finish_wait_for_space();
        pair.keep_closes_moving();
        pair.wake_waiting_room();
    }
}

/// Reads the reply ring and hands each record to its connection.
async fn dispatch_replies(pair: Rc<RingPair>, mut reply: Consumer, data_fd: AsyncFd<OwnedFd>) {
    loop {
        // Everything available now, as long as the reply budget lasts.
        while pair.reply_bytes.get() < RING_REPLY_BUDGET {
            let record = match reply.read() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(e) => return reply_ring_corrupt(&pair, reply.generation(), &e),
            };
            deliver_reply(&pair, record.record_type(), record.payload());
        }
        reply.release();

        if pair.reply_bytes.get() >= RING_REPLY_BUDGET {
            // Slow clients hold the whole budget: wait until one drains or goes away. The
            // consumer meanwhile finds the reply ring full: backpressure, not memory growth.
            let drained = pair.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if pair.reply_bytes.get() >= RING_REPLY_BUDGET {
                drained.await;
            }
            continue;
        }

        match reply.prepare_wait() {
            Ok(true) => {
                match data_fd.readable().await {
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        log::error!("ring `{}`: reply eventfd: {e}", pair.name);
                        return;
                    }
                }
                reply.finish_wait();
            }
            Ok(false) => {}
            Err(edgegw_ring::Error::Finished) => {
                return reply_ring_finished(&pair, reply.generation())
            }
            Err(e) => return reply_ring_corrupt(&pair, reply.generation(), &e),
        }
    }
}

/// Hands one reply record to its connection: DATA is copied out of the peer's memory (never
/// referenced in place) into the connection's reply queue; CLOSE asks the connection to end.
/// Malformed records and replies for unknown connections are counted and skipped.
fn deliver_reply(pair: &RingPair, kind: u16, payload: edgegw_ring::Payload<'_>) {
    let body = payload.slice(
        DATA_HEADER_LEN,
        payload.len().saturating_sub(DATA_HEADER_LEN),
    );
    let (Some(body), true) = (body, kind == proto::DATA || kind == proto::CLOSE) else {
        Stats::bump(&pair.stats.malformed_replies);
        RingCounter::MalformedReplies.add(&pair.counters, 1);
        log::debug!(
            "ring `{}`: skipped a malformed reply record (type {kind}, {} bytes)",
            pair.name,
            payload.len()
        );
        return;
    };
    let id = payload.read_u64_le(0).unwrap_or(0);
    let conn = pair.conns.borrow().get(&id).cloned();
    let Some(conn) = conn.filter(|c| !c.closed_by_consumer.get()) else {
        // A CLOSE for a connection that already ended is how consumers answer the daemon's
        // CLOSE: not worth counting.
        if kind == proto::DATA {
            Stats::bump(&pair.stats.replies_for_unknown_connections);
            RingCounter::RepliesForUnknownConnections.add(&pair.counters, 1);
            log::debug!(
                "ring `{}`: dropped a reply for connection {id}, which is closed or never existed",
                pair.name
            );
        }
        return;
    };
    if kind == proto::CLOSE {
        conn.closed_by_consumer.set(true);
        conn.wake.notify_one();
        return;
    }
    let len = body.len();
    conn.replies
        .borrow_mut()
        .append_with(len, |buf| body.copy_to_slice(buf));
    Stats::add(&pair.stats.bytes_to_clients, len as u64);
    RingCounter::BytesOut.add(&pair.counters, len as u64);
    conn.account(pair);
    conn.wake.notify_one();
}

/// The consumer finished its reply ring (FORMAT.md section 7) and everything it committed has
/// been delivered: it is done replying, as if it had detached. Connections keep their ingress;
/// the control plane serves a fresh reply ring for the next producer.
fn reply_ring_finished(pair: &RingPair, generation: u64) {
    Stats::bump(&pair.stats.finished_reply_rings);
    RingCounter::FinishedReplyRings.add(&pair.counters, 1);
    log::info!(
        "ring `{}`: the consumer finished its reply ring; its replies are delivered and a fresh \
         reply ring is served for the next producer",
        pair.name
    );
    let _ = pair.events.send(GatewayEvent::ReplyRingFinished {
        ring: pair.name.clone(),
        generation,
    });
}

/// The consumer broke the reply ring's contract: stop reading it and ask the control plane for
/// a fresh one (it logs and counts the replacement). Connections stay; what the corrupt ring
/// held is lost with it.
fn reply_ring_corrupt(pair: &RingPair, generation: u64, error: &edgegw_ring::Error) {
    let _ = pair.events.send(GatewayEvent::ReplyRingBroken {
        ring: pair.name.clone(),
        generation,
        reason: error.to_string(),
    });
}
