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
//!
//! Those two bounds are for consumers that do not speak credits. Once a consumer sends a CREDIT
//! record for a connection (`ringbuf/PROTOCOL.md`), the connection has a window each way: its
//! client data goes into the ingress ring only within the window the consumer granted (past it,
//! the relay stops reading the client, whose TCP backs up), and the consumer may send replies
//! within the window the daemon grants back as they leave for the client's socket (not when
//! they are encrypted: [`RingConn::set_unsent`]), so a stalled client holds at most one window
//! of replies here, queued and in its outbox together, and nobody else waits for it (such a
//! connection counts against [`RING_REPLY_BUDGET`] only what it holds beyond its window and
//! outbox, which only a consumer past its window reaches: [`budget_share`]). Each ring keeps
//! two gauges beside its counters: connections with credits on, and reply bytes held.

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
    self as proto, encode_close, encode_credit, CloseReason, OpenInfo, Window, CLOSE_LEN,
    CREDIT_LEN, DATA_HEADER_LEN, INITIAL_WINDOW,
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
    /// CLOSE and CREDIT records that found the ring full; written before anything else when
    /// room comes.
    pending_closes: RefCell<VecDeque<Control>>,
    /// Payload length of the last record that found the ring full: what a blocked connection
    /// waits for room for (the thread runs one connection at a time, so it is that one's).
    refused_len: Cell<usize>,
    /// Live connections by id, for replies.
    conns: RefCell<HashMap<u64, Rc<RingConn>>>,
    /// Unsent reply bytes held by all connections against the ring's budget (sum of their
    /// `budget_share`).
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
    /// The ingress ring's consumer as the windows last knew it: how many had attached (its
    /// server's count) and whether one was attached. Windows belong to the consumer that was
    /// attached when they came on ([`RingPair::consumer_changed`]).
    consumer_seen: Cell<(u64, bool)>,
}

impl std::fmt::Debug for RingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPair")
            .field("name", &self.name)
            .field("connections", &self.conns.borrow().len())
            .finish()
    }
}

/// A record of the daemon's own that must reach the consumer (never dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Close(u64, CloseReason),
    Credit(u64, u32),
}

impl Control {
    /// Writes it into the ingress ring, or says why not.
    fn write(self, pair: &RingPair) -> Offered {
        match self {
            Control::Close(id, reason) => {
                pair.try_record(proto::CLOSE, CLOSE_LEN, |b| encode_close(b, id, reason))
            }
            Control::Credit(id, n) => {
                pair.try_record(proto::CREDIT, CREDIT_LEN, |b| encode_credit(b, id, n))
            }
        }
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

/// A connection's place in its ring pair: the replies the reply task copied out for it, the
/// consumer's request to close it, and its windows. Its relay's side is `backend::ring`.
/// (The windows add 56 bytes to it.)
#[derive(Default)]
pub(super) struct RingConn {
    id: u64,
    /// The consumer sent CREDIT for it: the windows below apply.
    credits: Cell<bool>,
    /// Client bytes the consumer lets the daemon send (while `credits`).
    ingress_window: Cell<Window>,
    /// Its client data waits for the consumer's credit.
    window_blocked: Cell<bool>,
    /// Reply bytes the consumer may send, as the daemon counts them.
    reply_window: Cell<Window>,
    /// Reply bytes that reached the client's socket since the daemon last granted credit for
    /// them (while `credits`). Below zero by the replies the daemon already held when credits
    /// came on: those earn the consumer nothing.
    reply_ungranted: Cell<i64>,
    /// Reply bytes taken into the client's outbox whose way into its socket is not counted
    /// yet: never fewer than the reply bytes the outbox still holds ([`RingConn::set_unsent`]).
    reply_unflushed: Cell<usize>,
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
    /// What of `accounted` counts against the ring's reply budget ([`budget_share`]).
    budget_share: Cell<usize>,
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

    /// Whether its client data must wait for the consumer's credit; counts the stall when it
    /// begins.
    fn window_closed(&self, stats: &Stats, counters: &OwnerCounters) -> bool {
        if !self.credits.get() || self.ingress_window.get().available() > 0 {
            return false;
        }
        if !self.window_blocked.replace(true) {
            Stats::bump(&stats.credit_stalls);
            RingCounter::CreditStalls.add(counters, 1);
        }
        true
    }

    /// Back to the no-credit rules (its consumer went away): no window either way until the
    /// next consumer's CREDIT, which starts both at [`INITIAL_WINDOW`]. Its relay is woken, so
    /// client data held back for the old window flows into the ring for the next consumer.
    /// Returns whether credits were on.
    fn drop_credits(&self, pair: &RingPair) -> bool {
        if !self.credits.replace(false) {
            return false;
        }
        RingCounter::CreditConnections.sub(&pair.counters, 1);
        self.ingress_window.set(Window::default());
        self.reply_window.set(Window::default());
        self.reply_ungranted.set(0);
        self.window_blocked.set(false);
        // What it holds now counts against the ring's budget whole, as under the old rules.
        self.account(pair);
        self.wake.notify_one();
        true
    }

    /// Whether the consumer speaks credits for it.
    pub(super) fn credits_on(&self) -> bool {
        self.credits.get()
    }

    /// Whether it waits for credit that has not come (cleared once it came).
    pub(super) fn waits_for_credit(&self) -> bool {
        if self.window_blocked.get() && self.ingress_window.get().available() > 0 {
            self.window_blocked.set(false);
        }
        self.window_blocked.get()
    }

    /// Hands the queued replies to `sink` (which encrypts them into the client's outbox) and
    /// empties the queue. Their credit waits until they leave the outbox ([`Self::set_unsent`]).
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
        self.reply_unflushed.set(self.reply_unflushed.get() + n);
        self.account(pair);
        Ok(n)
    }

    /// The client's outbox holds `bytes` (ciphertext) now. Reply bytes that left it for the
    /// client's socket are granted back to the consumer, half a window at a time: a client that
    /// does not read keeps its consumer's credit, so the consumer stops and the connection
    /// holds at most one window of replies here, queued and in the outbox together (PROTOCOL.md
    /// section 4).
    ///
    /// The outbox's ciphertext is never shorter than the reply plaintext it still holds, so at
    /// least `reply_unflushed - bytes` of the replies taken reached the socket: granting that
    /// much never grants a byte that is still here, and an empty outbox grants them all.
    pub(super) fn set_unsent(&self, pair: &RingPair, bytes: usize) {
        self.unsent.set(bytes);
        self.account(pair);
        let unflushed = self.reply_unflushed.get();
        let flushed = unflushed.saturating_sub(bytes);
        if flushed == 0 {
            return;
        }
        self.reply_unflushed.set(unflushed - flushed);
        if !self.credits.get() {
            return;
        }
        let ungranted = self.reply_ungranted.get() + flushed as i64;
        if ungranted < i64::from(INITIAL_WINDOW / 2) {
            self.reply_ungranted.set(ungranted);
            return;
        }
        let grant = u32::try_from(ungranted).unwrap_or(u32::MAX);
        let mut window = self.reply_window.get();
        window.grant(grant);
        self.reply_window.set(window);
        self.reply_ungranted.set(ungranted - i64::from(grant));
        pair.control(Control::Credit(self.id, grant));
    }

    /// Brings the ring's count of held reply bytes up to date.
    fn account(&self, pair: &RingPair) {
        self.set_accounted(pair, self.replies.borrow().len() + self.unsent.get());
    }

    /// The connection ended: what it held no longer counts, and its credits are off.
    pub(super) fn end(&self, pair: &RingPair) {
        self.set_accounted(pair, 0);
        if self.credits.replace(false) {
            RingCounter::CreditConnections.sub(&pair.counters, 1);
        }
    }

    /// Sets this connection's share of the ring's reply bytes (0: it holds none any more).
    fn set_accounted(&self, pair: &RingPair, now: usize) {
        let held = self.accounted.replace(now);
        if now > held {
            RingCounter::ReplyBytesHeld.add(&pair.counters, (now - held) as u64);
        } else if now < held {
            RingCounter::ReplyBytesHeld.sub(&pair.counters, (held - now) as u64);
        }
        let share = budget_share(now, self.credits.get());
        let before = self.budget_share.replace(share);
        // `reply_bytes` is the sum of every connection's `budget_share`, so it holds `before`.
        pair.reply_bytes
            .set(pair.reply_bytes.get().saturating_sub(before) + share);
        if share < before {
            pair.drained.notify_waiters();
        }
    }
}

/// What a connection holding `held` reply bytes (queued and in its client's outbox) counts
/// against its ring's reply budget. Without credits, all of it. With credits, what is beyond its
/// window and the relay's outbox: a consumer that keeps to its window never fills the budget,
/// so however many of its clients stall, the reply task never stops reading the reply ring
/// (which also carries their credits) for them. Their memory is bounded by the window instead.
fn budget_share(held: usize, credits: bool) -> usize {
    if credits {
        held.saturating_sub(INITIAL_WINDOW as usize + super::relay::OUTBOX_LIMIT)
    } else {
        held
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
        let consumer_seen = consumer(&endpoints.ingress);
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
            consumer_seen: Cell::new(consumer_seen),
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
        // The consumer was disconnected from the old ring: whoever attaches to the fresh one
        // starts afresh. Unless that reset was done already (a CREDIT read meanwhile saw the
        // old ring's consumer gone): then credits on now are the next consumer's, and stay.
        let old = consumer(&self.ingress.borrow());
        let reset_done = self.consumer_seen.get() == old && !old.1;
        self.consumer_seen.set(consumer(&fresh));
        *self.ingress.borrow_mut() = fresh;
        self.ingress_broken.set(false);
        if !reset_done {
            self.reset_windows();
        }
        let task = tokio::task::spawn_local(watch_space(self.clone(), space_fd));
        if let Some(old) = self.space_task.borrow_mut().replace(task) {
            old.abort();
        }
        // Whoever waited for room in the broken ring tries the fresh one.
        self.keep_closes_moving();
        self.wake_waiting_room();
        Ok(moved)
    }

    /// The ingress ring's consumer may have changed (its attach server saw it detach or a
    /// consumer attach): if it did since the windows last looked (it went away, or another
    /// attached), every connection drops back to the no-credit rules, so that the next
    /// consumer's first CREDIT for a connection starts fresh windows (PROTOCOL.md section 4).
    /// A late call for a change already seen changes nothing.
    pub fn consumer_changed(&self) {
        let now = consumer(&self.ingress.borrow());
        if self.consumer_seen.replace(now) != now {
            self.reset_windows();
        }
    }

    /// Every connection back to the no-credit rules; the daemon's reply credit still queued
    /// for the old consumer is dropped (the new one's windows start at its own CREDIT).
    fn reset_windows(&self) {
        let conns: Vec<_> = self.conns.borrow().values().cloned().collect();
        let mut reset = 0;
        for conn in conns {
            reset += usize::from(conn.drop_credits(self));
        }
        self.pending_closes
            .borrow_mut()
            .retain(|c| !matches!(c, Control::Credit(..)));
        if reset > 0 {
            log::info!(
                "ring `{}`: the consumer changed; {reset} connection(s) with credits on start \
                 afresh (their next CREDIT opens new windows)",
                self.name
            );
        }
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
        let conn = Rc::new(RingConn {
            id,
            ..RingConn::default()
        });
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
        while let Some(&control) = closes.front() {
            if control.write(self) != Offered::Written {
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
        self.control(Control::Close(id, reason));
    }

    /// Writes one of the daemon's own records (queued if the ring is full: never dropped).
    fn control(&self, control: Control) {
        if let Control::Close(_, reason) = control {
            RingCounter::closed(reason).add(&self.counters, 1);
        }
        if !self.flush_closes() || control.write(self) != Offered::Written {
            self.pending_closes.borrow_mut().push_back(control);
            self.keep_closes_moving();
            return;
        }
        self.publish();
    }

    /// Offers a chunk of plaintext (stream framing): cut into records of at most the ring's
    /// record size, and to the connection's window. Returns how much was taken (written, or
    /// dropped under the drop policy).
    pub(super) fn offer_stream(&self, conn: &RingConn, data: &[u8]) -> usize {
        let max = self.ingress.borrow().max_payload() - DATA_HEADER_LEN;
        let data = if conn.credits.get() {
            let window = conn.ingress_window.get().available();
            if window == 0 {
                conn.window_closed(&self.stats, &self.counters);
                return 0;
            }
            &data[..data.len().min(window)]
        } else {
            data
        };
        let mut taken = 0;
        for chunk in data.chunks(max) {
            if !self.offer_frame(conn, chunk) {
                break;
            }
            taken += chunk.len();
        }
        taken
    }

    /// Offers one packet. `true` if it was written or dropped by policy; `false` if the ring is
    /// full and the policy is backpressure, or the connection's window is closed (whatever the
    /// policy: the consumer asked to wait).
    pub(super) fn offer_frame(&self, conn: &RingConn, frame: &[u8]) -> bool {
        if conn.window_closed(&self.stats, &self.counters) {
            return false;
        }
        let id = conn.id;
        if !self.pending_closes.borrow().is_empty() && !self.flush_closes() {
            return self.full();
        }
        let offered = self.try_record(proto::DATA, DATA_HEADER_LEN + frame.len(), |b| {
            b[..8].copy_from_slice(&id.to_le_bytes());
            b[8..].copy_from_slice(frame);
        });
        match offered {
            Offered::Written => {
                let mut window = conn.ingress_window.get();
                window.sent(frame.len());
                conn.ingress_window.set(window);
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

/// The consumer of an ingress ring as its attach server sees it: how many have attached, and
/// whether one is attached now.
fn consumer(ingress: &Producer) -> (u64, bool) {
    ingress
        .peer_status()
        .map_or((0, true), |s| (s.attaches, s.attached))
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
/// referenced in place) into the connection's reply queue; CLOSE asks the connection to end;
/// CREDIT opens its window. Malformed records and replies for unknown connections are counted
/// and skipped.
fn deliver_reply(pair: &RingPair, kind: u16, payload: edgegw_ring::Payload<'_>) {
    if kind == proto::CREDIT {
        return deliver_credit(pair, payload);
    }
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
    let mut window = conn.reply_window.get();
    if conn.credits.get() && window.available() == 0 {
        // Delivered all the same: the connection's reply cap bounds what it holds.
        Stats::bump(&pair.stats.reply_window_overruns);
        RingCounter::ReplyWindowOverruns.add(&pair.counters, 1);
    }
    window.sent(len);
    conn.reply_window.set(window);
    conn.replies
        .borrow_mut()
        .append_with(len, |buf| body.copy_to_slice(buf));
    Stats::add(&pair.stats.bytes_to_clients, len as u64);
    RingCounter::BytesOut.add(&pair.counters, len as u64);
    conn.account(pair);
    conn.wake.notify_one();
}

/// A CREDIT from the consumer: the connection's ingress window grows (and is on from now). One
/// for an unknown connection, or past the window's bound, is counted and ignored.
fn deliver_credit(pair: &RingPair, payload: edgegw_ring::Payload<'_>) {
    let credit = payload
        .read_u64_le(0)
        .zip(payload.read_u32_le(DATA_HEADER_LEN));
    let Some((id, increment)) = credit else {
        Stats::bump(&pair.stats.malformed_replies);
        RingCounter::MalformedReplies.add(&pair.counters, 1);
        return;
    };
    // A consumer that attached since the windows were reset may speak before the control
    // plane's word of it arrives: its windows are fresh either way.
    pair.consumer_changed();
    let conn = pair.conns.borrow().get(&id).cloned();
    let Some(conn) = conn else {
        Stats::bump(&pair.stats.credits_for_unknown_connections);
        RingCounter::CreditsForUnknownConnections.add(&pair.counters, 1);
        return;
    };
    if !conn.credits.replace(true) {
        // The windows start now: what went either way before counts for nothing (a consumer
        // that attached after the connection opened cannot know it), and the replies the
        // daemon holds already (an old consumer's) earn it no credit when they leave.
        conn.ingress_window.set(Window::default());
        conn.reply_window.set(Window::default());
        let held = conn.replies.borrow().len() + conn.reply_unflushed.get();
        conn.reply_ungranted
            .set(-i64::try_from(held).unwrap_or(i64::MAX));
        RingCounter::CreditConnections.add(&pair.counters, 1);
    }
    let mut window = conn.ingress_window.get();
    if !window.grant(increment) {
        Stats::bump(&pair.stats.excess_credits);
        RingCounter::ExcessCredits.add(&pair.counters, 1);
        log::debug!(
            "ring `{}`: credit for connection {id} over the window's bound, ignored",
            pair.name
        );
    }
    conn.ingress_window.set(window);
    if conn.window_blocked.get() && window.available() > 0 {
        conn.wake.notify_one();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_within_its_windows_takes_none_of_the_ring_reply_budget() {
        let allowance = INITIAL_WINDOW as usize + super::super::relay::OUTBOX_LIMIT;
        assert_eq!(budget_share(allowance, true), 0);
        assert_eq!(budget_share(allowance + 10, true), 10, "an overrun counts");
        assert_eq!(
            budget_share(allowance, false),
            allowance,
            "without credits, all of it"
        );
    }
}
