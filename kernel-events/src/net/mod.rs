//! Network: links, addresses and routes from rtnetlink, with gap-free resync.
//!
//! Two sockets. The event socket is subscribed to the link, IPv4/IPv6 address and IPv4/IPv6
//! route multicast groups; it never sets NETLINK_NO_ENOBUFS and is read by us directly, with
//! MSG_TRUNC, because neli's router does not surface ENOBUFS for multicast sockets (it drops the
//! error), and ENOBUFS is the only sign that the kernel discarded notifications. The dump socket
//! is separate so a dump never interleaves with notifications.
//!
//! Recovery (also how the initial state is taken, so subscribe-then-dump has no gap): keep
//! reading the event socket into a buffer; dump links, then addresses, then routes on the dump
//! socket, redoing a dump whose messages carry NLM_F_DUMP_INTR; replace the model with the dump
//! (mark and sweep, emitting the difference); then replay the buffered notifications, which are
//! all newer than or as new as the dump. ENOBUFS during recovery starts it over after a backoff.
//!
//! neli provides the message types (`Ifinfomsg`, `Ifaddrmsg`, `Rtmsg`, `Rtgenmsg`) used to
//! decode notifications and to build the dump requests.

mod model;
mod parse;

use std::collections::HashMap;
use std::io::Cursor;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, Rtm};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::RtgenmsgBuilder;
use neli::ToBytes;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::model::{Batch, Change, EventKind, ResyncReason, Source};
use crate::sys::linux::{
    NLM_F_DUMP_INTR, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK, RTPROT_KERNEL,
};
use crate::sys::{self, Received};

pub use crate::model::{Address, AddressKey, Family, Link, NetworkState, NextHop, Route, RouteKey};
pub use crate::sys::ReceiveBuffer;
use model::{NetChange, NetObject};
use parse::{ParseStats, Parsed};

/// Tuning of the network reader.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Receive buffer to ask for on the event socket (default 1 MiB; the kernel doubles it).
    pub receive_buffer: usize,
    /// First backoff after ENOBUFS during a recovery, or after dumps that a change kept
    /// interrupting; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Largest number of notifications buffered during one recovery before it is restarted
    /// (bounds memory while a storm goes on: ~200 bytes each). Default 16 384.
    pub max_buffered: usize,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            receive_buffer: 1 << 20,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            max_buffered: 16_384,
        }
    }
}

impl NetOptions {
    /// Checks that the options are consistent (what `build` checks before it opens anything).
    pub fn validate(&self) -> Result<()> {
        if self.backoff.is_zero() {
            // ENOBUFS during a recovery would restart it back to back.
            return Err(Error::InvalidOption(
                "network backoff must be non-zero".into(),
            ));
        }
        if self.max_backoff < self.backoff {
            return Err(Error::InvalidOption(
                "network max_backoff must be at least the backoff".into(),
            ));
        }
        if self.max_buffered == 0 {
            return Err(Error::InvalidOption(
                "network max_buffered must be non-zero".into(),
            ));
        }
        Ok(())
    }
}

/// Multicast groups of the event socket: links, IPv4 and IPv6 addresses and routes.
const GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;

/// Interrupted dump parts redone at once; after that many in a row, the recovery backs off.
/// A dump of a few thousand addresses takes milliseconds: a burst of changes is usually over
/// after a redo or two, while a change that goes on for seconds would otherwise keep a core
/// busy re-reading the same tables.
const IMMEDIATE_REDOS: u32 = 3;

/// Datagrams read from the event socket per wake-up. A storm can queue notifications faster
/// than they are applied; reading it to EAGAIN in one go would hold the runtime's thread for as
/// long as the storm lasts. After this many, `next()` returns what it has, and the next wait
/// yields to the runtime once before reading on.
pub(crate) const DATAGRAMS_PER_WAKE: usize = 256;

/// Receive buffer for one datagram. The kernel builds notifications and dump parts in skbs of
/// at most ~32 KiB (NLMSG_GOODSIZE is a page, dumps may use up to 32 KiB); MSG_TRUNC tells us if
/// one is ever larger.
const DATAGRAM_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DumpKind {
    Links,
    Addresses,
    Routes,
}

impl DumpKind {
    fn request_type(self) -> Rtm {
        match self {
            DumpKind::Links => Rtm::Getlink,
            DumpKind::Addresses => Rtm::Getaddr,
            DumpKind::Routes => Rtm::Getroute,
        }
    }
}

/// Which fd (or timer) woke the network reader.
pub(crate) enum NetWake {
    Events,
    Dump,
    Timer,
}

enum Phase {
    /// Notifications are applied as they come.
    Live,
    /// Waiting before (re)starting a dump.
    Backoff { until: Instant },
    /// A dump is running.
    Dumping {
        kind: DumpKind,
        seq: u32,
        interrupted: bool,
        fresh: NetworkState,
    },
}

/// Counts of work done by the network reader, beyond the per-source event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NetStats {
    /// Dumps sent (links, addresses and routes each count).
    pub dumps: u64,
    /// Dumps redone because a message carried NLM_F_DUMP_INTR.
    pub interrupted_dumps: u64,
    /// Recoveries restarted because ENOBUFS hit while one was running.
    pub restarted_recoveries: u64,
    /// Attributes neli does not know (skipped).
    pub unknown_attributes: u64,
    /// Attributes with a bad length (skipped).
    pub bad_attributes: u64,
    /// Messages that could not be decoded (skipped).
    pub malformed_messages: u64,
}

pub(crate) struct NetReader {
    events: AsyncFd<OwnedFd>,
    dumps: AsyncFd<OwnedFd>,
    receive_buffer: ReceiveBuffer,
    opts: NetOptions,
    buf: Vec<u8>,
    state: NetworkState,
    phase: Phase,
    /// Notifications received while a recovery runs, replayed after the dump.
    buffered: Vec<NetObject>,
    /// Why the recovery runs (None: the initial state, which emits nothing).
    recovering: Option<ResyncReason>,
    attempts: u32,
    /// Dump parts interrupted one after the other (see `IMMEDIATE_REDOS`).
    interrupted_in_row: u32,
    /// The model's routes that a deleted address would take with it silently.
    sourced: SourcedRoutes,
    next_seq: u32,
    stats: NetStats,
    parse_stats: ParseStats,
    changes: Vec<NetChange>,
    /// The event socket was left unread after `DATAGRAMS_PER_WAKE` datagrams: its readiness
    /// was cleared already, so the next wait must not wait for a new one.
    events_pending: bool,
}

impl NetReader {
    /// Subscribes, then takes the initial state with a dump (no gap between the two).
    pub(crate) async fn new(opts: NetOptions) -> Result<Self> {
        opts.validate()?;
        let events = sys::netlink_route_socket(GROUPS)
            .map_err(|e| Error::io("open rtnetlink event socket", e))?;
        let receive_buffer = sys::set_receive_buffer(&events, opts.receive_buffer)
            .map_err(|e| Error::io("set rtnetlink receive buffer", e))?;
        let dumps =
            sys::netlink_route_socket(0).map_err(|e| Error::io("open rtnetlink dump socket", e))?;
        let mut reader = NetReader {
            events: sys::register(events, tokio::io::Interest::READABLE)
                .map_err(|e| Error::io("register netlink fd", e))?,
            dumps: sys::register(dumps, tokio::io::Interest::READABLE)
                .map_err(|e| Error::io("register netlink fd", e))?,
            receive_buffer,
            opts,
            buf: vec![0; DATAGRAM_BUFFER],
            state: NetworkState::default(),
            phase: Phase::Live,
            buffered: Vec::new(),
            recovering: None,
            attempts: 0,
            interrupted_in_row: 0,
            sourced: SourcedRoutes::default(),
            next_seq: 1,
            stats: NetStats::default(),
            parse_stats: ParseStats::default(),
            changes: Vec::new(),
            events_pending: false,
        };
        reader.start_dump()?;
        // Drive the initial recovery; its events are the starting state, not changes.
        while !matches!(reader.phase, Phase::Live) {
            let wake = reader.wait().await?;
            reader.handle(wake, &mut Batch::new(Source::Network))?;
        }
        Ok(reader)
    }

    pub(crate) fn state(&self) -> &NetworkState {
        &self.state
    }

    pub(crate) fn receive_buffer(&self) -> ReceiveBuffer {
        self.receive_buffer
    }

    pub(crate) fn stats(&self) -> NetStats {
        let mut s = self.stats;
        s.unknown_attributes = self.parse_stats.unknown_attributes;
        s.bad_attributes = self.parse_stats.bad_attributes;
        s
    }

    pub(crate) fn fds(&self) -> [std::os::fd::BorrowedFd<'_>; 2] {
        [self.events.get_ref().as_fd(), self.dumps.get_ref().as_fd()]
    }

    /// Whether a recovery announced by a `Resync` is running.
    pub(crate) fn is_resyncing(&self) -> bool {
        self.recovering.is_some()
    }

    /// Whether a recovery (or the initial dump) is running.
    pub(crate) fn is_recovering(&self) -> bool {
        !matches!(self.phase, Phase::Live)
    }

    /// Waits for either socket or the backoff timer. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Result<NetWake> {
        let backoff_until = match self.phase {
            Phase::Backoff { until } => Some(until),
            _ => None,
        };
        let dumping = matches!(self.phase, Phase::Dumping { .. });
        // Unbiased (random) order: during a storm the event socket is ready on every pass and
        // must not starve the dump that ends the recovery.
        let pending = self.events_pending;
        let wake = tokio::select! {
            // Ready on the second poll: other tasks (and a ready dump) get a turn first.
            () = tokio::task::yield_now(), if pending => NetWake::Events,
            r = self.events.readable(), if !pending => {
                // Cleared before reading until EAGAIN: anything arriving after our last EAGAIN
                // sets it again, so no wake-up is lost.
                r.map_err(|e| Error::io("wait for netlink", e))?.clear_ready();
                NetWake::Events
            }
            r = self.dumps.readable(), if dumping => {
                r.map_err(|e| Error::io("wait for netlink", e))?.clear_ready();
                NetWake::Dump
            }
            _ = sleep_until(backoff_until) => NetWake::Timer,
        };
        Ok(wake)
    }

    /// Does the work for a wake-up.
    pub(crate) fn handle(&mut self, wake: NetWake, out: &mut Batch) -> Result<()> {
        match wake {
            NetWake::Events => self.read_events(out)?,
            NetWake::Dump => self.read_dump(out)?,
            NetWake::Timer => {
                if let Phase::Backoff { until } = self.phase {
                    if Instant::now() >= until {
                        self.start_dump()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the event socket until EAGAIN, or `DATAGRAMS_PER_WAKE` datagrams.
    fn read_events(&mut self, out: &mut Batch) -> Result<()> {
        self.events_pending = false;
        for _ in 0..DATAGRAMS_PER_WAKE {
            let received = sys::receive(self.events.get_ref().as_fd(), &mut self.buf)
                .map_err(|e| Error::io("receive from rtnetlink event socket", e))?;
            match received {
                Received::Empty => return Ok(()),
                Received::Overrun => self.lost(ResyncReason::NoBuffers, out)?,
                Received::Truncated(_) => self.lost(ResyncReason::Truncated, out)?,
                Received::Datagram(n) => {
                    let mut objects = Vec::new();
                    let mut malformed = false;
                    for msg in parse::split(&self.buf[..n]) {
                        match msg.and_then(|m| parse::parse(&m, &mut self.parse_stats)) {
                            Ok(Parsed::Object(obj)) => objects.push(obj),
                            Ok(_) => {}
                            Err(e) => {
                                log::debug!("skipped a notification: {e}");
                                malformed = true;
                            }
                        }
                    }
                    if malformed {
                        self.stats.malformed_messages += 1;
                        out.skipped(1);
                    }
                    if self.is_recovering() {
                        self.buffered.extend(objects);
                        let limit = self.opts.max_buffered;
                        if self.buffered.len() > limit {
                            self.restart_recovery(format_args!(
                                "more than {limit} notifications arrived during the dump"
                            ))?;
                        }
                    } else {
                        for obj in objects {
                            self.apply_live(obj, out)?;
                        }
                        if malformed {
                            // A notification we could not read may have changed the state.
                            self.lost(ResyncReason::Malformed, out)?;
                        }
                    }
                }
            }
        }
        // More may be queued: read on after the runtime had a turn.
        self.events_pending = true;
        Ok(())
    }

    fn apply_live(&mut self, obj: NetObject, out: &mut Batch) -> Result<()> {
        let silent_flush = self.silently_flushes(&obj);
        let placed = self.apply(obj);
        emit_changes(&mut self.changes, out);
        if !placed {
            self.lost(ResyncReason::AmbiguousRoute, out)?;
        } else if silent_flush {
            // A failure to send the dump request is the reader's failure: dropping it would
            // leave a `Resync` that never gets its `ResyncDone`.
            self.lost(ResyncReason::SilentRouteFlush, out)?;
        }
        Ok(())
    }

    /// Applies a notification to the model, changes into `self.changes`. `false`: the model
    /// could not place it for sure and the routes must be re-read.
    fn apply(&mut self, obj: NetObject) -> bool {
        let from = self.changes.len();
        let placed = self.state.apply(obj, &mut self.changes);
        self.sourced.track(&self.changes[from..]);
        placed
    }

    /// Whether applying `obj` makes the kernel drop IPv4 routes without telling anyone.
    ///
    /// The kernel flushes IPv4 routes silently when their link goes down or away, and when the
    /// address they name as preferred source disappears (`fib_sync_down_addr` + `fib_flush`).
    /// The routes the kernel made for an address itself (protocol `kernel`: its local,
    /// broadcast and prefix routes) are different: `fib_del_ifaddr` deletes them one by one,
    /// each with an RTM_DELROUTE that follows the RTM_DELADDR. Counting those would turn every
    /// IPv4 address deletion into a full resync, so only routes of other protocols (boot,
    /// static, dhcp, ...) that name the address decide.
    fn silently_flushes(&self, obj: &NetObject) -> bool {
        match obj {
            NetObject::NewLink(l) => self
                .state
                .links
                .get(&l.index)
                .is_some_and(|old| old.is_up() && !l.is_up()),
            NetObject::DelAddress(a) => a.family == Family::Inet && self.sourced.names(a.address),
            _ => false,
        }
    }

    /// Notifications were lost (or may have been): start, or restart, a recovery.
    fn lost(&mut self, reason: ResyncReason, out: &mut Batch) -> Result<()> {
        if matches!(reason, ResyncReason::NoBuffers | ResyncReason::Truncated) {
            out.overflowed();
        }
        if self.is_recovering() {
            if matches!(
                reason,
                ResyncReason::SilentRouteFlush | ResyncReason::AmbiguousRoute
            ) {
                return Ok(()); // the running dump reads the routes anyway
            }
            return self.restart_recovery(format_args!("{reason:?} during the recovery"));
        }
        out.resync(reason);
        self.recovering = Some(reason);
        self.attempts = 0;
        self.buffered.clear();
        self.discard_queued_events()?;
        self.start_dump()
    }

    /// Reads and drops everything queued on the event socket, up to EAGAIN.
    ///
    /// After an overflow the queue holds notifications *older* than the ones the kernel dropped;
    /// replaying them after the dump would bring back stale state, so they are discarded (the
    /// dump supersedes them). Reading the queue empty also clears the socket's congestion state:
    /// until then the kernel drops further notifications without reporting ENOBUFS again. Every
    /// notification read after this point is a complete suffix of the kernel's stream, so
    /// replaying it over the dump converges to the true state.
    fn discard_queued_events(&mut self) -> Result<()> {
        loop {
            match sys::receive(self.events.get_ref().as_fd(), &mut self.buf)
                .map_err(|e| Error::io("drain rtnetlink event socket", e))?
            {
                Received::Empty => return Ok(()),
                _ => continue,
            }
        }
    }

    /// ENOBUFS (or too much buffered) during a recovery: drop what we have, back off, redo.
    fn restart_recovery(&mut self, why: std::fmt::Arguments<'_>) -> Result<()> {
        self.stats.restarted_recoveries += 1;
        self.back_off(why)
    }

    /// Drops the recovery's progress and schedules a new one after an exponential backoff.
    fn back_off(&mut self, why: std::fmt::Arguments<'_>) -> Result<()> {
        self.interrupted_in_row = 0;
        self.buffered.clear();
        self.discard_queued_events()?;
        self.attempts = self.attempts.saturating_add(1);
        let backoff = self
            .opts
            .backoff
            .saturating_mul(1 << self.attempts.min(16))
            .min(self.opts.max_backoff);
        self.phase = Phase::Backoff {
            until: Instant::now() + backoff,
        };
        log::debug!("network recovery: {why}; dumping again in {backoff:?}");
        // Drain stale dump replies so the next dump starts on a clean socket.
        self.drain_dump_socket()
    }

    fn drain_dump_socket(&mut self) -> Result<()> {
        loop {
            let fd = self.dumps.get_ref().as_fd();
            match sys::receive(fd, &mut self.buf)
                .map_err(|e| Error::io("drain rtnetlink dump socket", e))?
            {
                Received::Empty => return Ok(()),
                _ => continue,
            }
        }
    }

    fn start_dump(&mut self) -> Result<()> {
        self.send_dump(DumpKind::Links, NetworkState::default())
    }

    fn send_dump(&mut self, kind: DumpKind, fresh: NetworkState) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let request = dump_request(kind, seq)?;
        sys::send_request(self.dumps.get_ref().as_fd(), &request)
            .map_err(|e| Error::io("send rtnetlink dump request", e))?;
        self.stats.dumps += 1;
        self.phase = Phase::Dumping {
            kind,
            seq,
            interrupted: false,
            fresh,
        };
        Ok(())
    }

    /// Reads dump replies until EAGAIN; finishes the recovery when the route dump is done.
    fn read_dump(&mut self, out: &mut Batch) -> Result<()> {
        loop {
            let received = sys::receive(self.dumps.get_ref().as_fd(), &mut self.buf)
                .map_err(|e| Error::io("receive from rtnetlink dump socket", e))?;
            let n = match received {
                Received::Empty => return Ok(()),
                Received::Overrun | Received::Truncated(_) => {
                    out.overflowed();
                    return self.restart_recovery(format_args!("the dump socket overflowed"));
                }
                Received::Datagram(n) => n,
            };
            let Some(result) = self.absorb_dump_datagram(n, out) else {
                continue;
            };
            let Phase::Dumping {
                kind,
                interrupted,
                fresh,
                ..
            } = std::mem::replace(&mut self.phase, Phase::Live)
            else {
                unreachable!("a dump part ends only while dumping");
            };
            if let Err(errno) = result {
                // EBUSY and friends: try again after a backoff.
                let error = std::io::Error::from_raw_os_error(errno.saturating_neg());
                self.restart_recovery(format_args!("the {kind:?} dump failed: {error}"))?;
                return Ok(());
            }
            if interrupted {
                // The dump raced with a change: it may have skipped objects that never
                // changed (the kernel's cursor is an index), which no notification would
                // bring back. Redo this part; under a change that never pauses, stop
                // spinning and redo the whole recovery after a backoff instead (the resync
                // stays open meanwhile: the state is known to be uncertain).
                self.stats.interrupted_dumps += 1;
                self.interrupted_in_row += 1;
                if self.interrupted_in_row > IMMEDIATE_REDOS {
                    return self.back_off(format_args!(
                        "{IMMEDIATE_REDOS} dumps in a row were interrupted by changes"
                    ));
                }
                let mut fresh = fresh;
                match kind {
                    DumpKind::Links => fresh.links.clear(),
                    DumpKind::Addresses => fresh.addresses.clear(),
                    DumpKind::Routes => fresh.routes.clear(),
                }
                self.send_dump(kind, fresh)?;
                continue;
            }
            self.interrupted_in_row = 0;
            match kind {
                DumpKind::Links => self.send_dump(DumpKind::Addresses, fresh)?,
                DumpKind::Addresses => self.send_dump(DumpKind::Routes, fresh)?,
                DumpKind::Routes => {
                    return self.finish_recovery(fresh, out);
                }
            }
        }
    }

    /// Adds the objects of a dump datagram (`n` bytes in the buffer) to the dump in progress.
    /// Returns how the dump part ended once its end is read: `Err(errno)` if the kernel
    /// refused it.
    fn absorb_dump_datagram(&mut self, n: usize, out: &mut Batch) -> Option<Result<(), i32>> {
        let Phase::Dumping {
            seq,
            interrupted,
            fresh,
            ..
        } = &mut self.phase
        else {
            return None; // a stale reply after a restart
        };
        let mut finished = None;
        for msg in parse::split(&self.buf[..n]) {
            let parsed = msg.and_then(|msg| {
                if msg.seq != *seq {
                    return Ok(Parsed::Ignored); // reply to an abandoned dump
                }
                if msg.flags & NLM_F_DUMP_INTR != 0 {
                    *interrupted = true;
                }
                parse::parse(&msg, &mut self.parse_stats)
            });
            match parsed {
                Ok(Parsed::Object(obj)) => {
                    let mut ignored = Vec::new();
                    // A dump only adds: routes that share a key join it, nothing is replaced
                    // or deleted, so everything is placed.
                    let _ = fresh.apply(obj, &mut ignored);
                }
                Ok(Parsed::Done) => finished = Some(Ok(())),
                Ok(Parsed::Error(0)) | Ok(Parsed::Ignored) => {}
                Ok(Parsed::Error(errno)) => finished = Some(Err(errno)),
                Err(e) => {
                    log::debug!("skipped a dump message: {e}");
                    self.stats.malformed_messages += 1;
                    out.skipped(1);
                }
            }
        }
        finished
    }

    /// Mark and sweep against the dump, then replay what arrived meanwhile.
    ///
    /// A replayed notification can imply a silent flush the dump did not see (the route part
    /// was read before the address went away), or be one the model cannot place: then a new
    /// recovery follows this one at once.
    fn finish_recovery(&mut self, fresh: NetworkState, out: &mut Batch) -> Result<()> {
        self.phase = Phase::Live;
        self.state.replace_with(fresh, &mut self.changes);
        self.sourced.track(&self.changes);
        let (mut silent_flush, mut unplaced) = (false, false);
        for obj in std::mem::take(&mut self.buffered) {
            silent_flush |= self.silently_flushes(&obj);
            unplaced |= !self.apply(obj);
        }
        emit_changes(&mut self.changes, out);
        if self.recovering.take().is_some() {
            out.resync_done();
        }
        self.attempts = 0;
        if unplaced {
            self.lost(ResyncReason::AmbiguousRoute, out)?;
        } else if silent_flush {
            self.lost(ResyncReason::SilentRouteFlush, out)?;
        }
        Ok(())
    }
}

/// The model's routes of protocols other than `kernel` that name a preferred source, counted
/// per address, kept up to date from the model's changes. With it, whether an address deletion
/// flushes routes silently is a lookup: a walk over every route for each deletion would make
/// deleting N addresses among M routes cost N x M (each address has its own local route, so
/// both grow together).
#[derive(Debug, Default)]
struct SourcedRoutes {
    source_of: HashMap<RouteKey, IpAddr>,
    routes_per_source: HashMap<IpAddr, u32>,
}

impl SourcedRoutes {
    fn track(&mut self, changes: &[NetChange]) {
        for change in changes {
            let NetChange::Route(change, route) = change else {
                continue;
            };
            let key = route.key();
            if let Some(old) = self.source_of.remove(&key) {
                if let Some(n) = self.routes_per_source.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.routes_per_source.remove(&old);
                    }
                }
            }
            if *change == Change::Removed || route.protocol == RTPROT_KERNEL {
                continue;
            }
            if let Some(source) = route.prefsrc {
                self.source_of.insert(key, source);
                *self.routes_per_source.entry(source).or_default() += 1;
            }
        }
    }

    /// Whether some route names `address` as its preferred source.
    fn names(&self, address: IpAddr) -> bool {
        self.routes_per_source.contains_key(&address)
    }
}

fn emit_changes(changes: &mut Vec<NetChange>, out: &mut Batch) {
    for change in changes.drain(..) {
        let kind = match change {
            NetChange::Link(change, link) => EventKind::Link { change, link },
            NetChange::Address(change, address) => EventKind::Address { change, address },
            NetChange::Route(change, route) => EventKind::Route { change, route },
        };
        out.push(kind);
    }
}

/// Builds an RTM_GET* dump request for all families with neli.
fn dump_request(kind: DumpKind, seq: u32) -> Result<Vec<u8>> {
    let invalid = |what: &str| {
        Error::io(
            "build dump request",
            std::io::Error::other(what.to_string()),
        )
    };
    let payload = RtgenmsgBuilder::default()
        .rtgen_family(RtAddrFamily::Unspecified)
        .build()
        .map_err(|e| invalid(&e.to_string()))?;
    let msg = NlmsghdrBuilder::default()
        .nl_type(kind.request_type())
        .nl_flags(NlmF::REQUEST | NlmF::DUMP)
        .nl_seq(seq)
        .nl_payload(NlPayload::Payload(payload))
        .build()
        .map_err(|e| invalid(&e.to_string()))?;
    let mut cursor = Cursor::new(Vec::new());
    msg.to_bytes(&mut cursor)
        .map_err(|e| invalid(&e.to_string()))?;
    Ok(cursor.into_inner())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, protocol: u8, prefsrc: Option<&str>) -> Route {
        Route {
            family: Family::Inet,
            table: 254,
            dst: Some(dst.parse().unwrap()),
            dst_len: 24,
            src: None,
            src_len: 0,
            tos: 0,
            priority: 0,
            route_type: 1,
            protocol,
            scope: 0,
            prefsrc: prefsrc.map(|p| p.parse().unwrap()),
            next_hops: Vec::new(),
        }
    }

    fn via(dst: &str, hops: &[(&str, u32)]) -> Route {
        let mut r = route(dst, 3, None);
        r.next_hops = hops
            .iter()
            .map(|(gw, oif)| NextHop {
                gateway: Some(gw.parse().unwrap()),
                oif: Some(*oif),
            })
            .collect();
        r
    }

    fn hops(state: &NetworkState, r: &Route) -> Vec<String> {
        state.routes[&r.key()]
            .next_hops
            .iter()
            .map(|h| format!("{}@{}", h.gateway.unwrap(), h.oif.unwrap()))
            .collect()
    }

    #[test]
    fn routes_that_share_a_key_keep_all_their_next_hops() {
        let mut state = NetworkState::default();
        let mut out = Vec::new();
        let a = via("198.51.100.0", &[("10.0.0.2", 2)]);
        let b = via("198.51.100.0", &[("10.0.0.3", 2)]);
        let new = |route: &Route, replace| NetObject::NewRoute {
            route: route.clone(),
            replace,
        };
        // `ip route add` then `ip route append`: two kernel routes, one entry with both hops.
        assert!(state.apply(new(&a, false), &mut out));
        assert!(state.apply(new(&b, false), &mut out));
        assert_eq!(hops(&state, &a), ["10.0.0.2@2", "10.0.0.3@2"]);
        // A repeat changes nothing.
        out.clear();
        assert!(state.apply(new(&b, false), &mut out));
        assert!(out.is_empty());
        // Deleting one leaves the other.
        assert!(state.apply(NetObject::DelRoute(a.clone()), &mut out));
        assert_eq!(hops(&state, &a), ["10.0.0.3@2"]);
        assert!(matches!(
            out.last(),
            Some(NetChange::Route(Change::Changed, _))
        ));
        // A replace of a single route takes its place.
        let c = via("198.51.100.0", &[("10.0.0.4", 2)]);
        assert!(state.apply(new(&c, true), &mut out));
        assert_eq!(hops(&state, &a), ["10.0.0.4@2"]);
        // Over several routes, which one a replace (or a deletion of a hop the model does not
        // have) took is not known: re-read.
        assert!(state.apply(new(&b, false), &mut out));
        assert!(!state.apply(new(&a, true), &mut out));
        assert!(!state.apply(NetObject::DelRoute(a.clone()), &mut out));
        // An IPv6-style group notified whole, then one sibling deleted.
        let group = via("203.0.113.0", &[("10.0.0.2", 2), ("10.0.0.3", 4)]);
        assert!(state.apply(new(&group, false), &mut out));
        let one = via("203.0.113.0", &[("10.0.0.2", 2)]);
        assert!(state.apply(NetObject::DelRoute(one), &mut out));
        assert_eq!(hops(&state, &group), ["10.0.0.3@4"]);
        // The last hop's deletion removes the entry.
        let last = via("203.0.113.0", &[("10.0.0.3", 4)]);
        assert!(state.apply(NetObject::DelRoute(last), &mut out));
        assert!(!state.routes.contains_key(&group.key()));
        assert!(matches!(
            out.last(),
            Some(NetChange::Route(Change::Removed, _))
        ));
    }

    #[test]
    fn a_deleted_link_takes_its_routes_and_leaves_shared_ones_to_a_re_read() {
        let mut state = NetworkState::default();
        let mut out = Vec::new();
        let link = |index| Link {
            index,
            name: format!("eth{index}"),
            kind: None,
            flags: 0,
            mtu: None,
            mac: None,
            oper_state: None,
            master: None,
        };
        let only_2 = via("198.51.100.0", &[("10.0.0.2", 2)]);
        let both = via("203.0.113.0", &[("10.0.0.2", 2), ("10.0.1.2", 3)]);
        for r in [&only_2, &both] {
            let obj = NetObject::NewRoute {
                route: r.clone(),
                replace: false,
            };
            assert!(state.apply(obj, &mut out));
        }
        assert!(state.apply(NetObject::NewLink(link(2)), &mut out));
        assert!(!state.apply(NetObject::DelLink(link(2)), &mut out));
        assert!(!state.routes.contains_key(&only_2.key()));
        assert!(
            state.routes.contains_key(&both.key()),
            "left for the re-read"
        );
    }

    #[test]
    fn sourced_routes_follow_the_models_changes() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut sourced = SourcedRoutes::default();
        let r1 = route("198.51.100.0", 4, Some("192.0.2.1"));
        let r2 = route("203.0.113.0", 3, Some("192.0.2.1"));
        // The kernel's own routes are deleted with notifications: they do not count.
        let kernel = route("192.0.2.0", RTPROT_KERNEL, Some("192.0.2.2"));
        sourced.track(&[
            NetChange::Route(Change::Added, r1.clone()),
            NetChange::Route(Change::Added, r2.clone()),
            NetChange::Route(Change::Added, kernel),
        ]);
        assert!(sourced.names(a));
        assert!(!sourced.names(b));
        sourced.track(&[NetChange::Route(Change::Removed, r1)]);
        assert!(sourced.names(a), "r2 still names it");
        // The same route, changed to name another source.
        let mut moved = r2.clone();
        moved.prefsrc = Some(b);
        sourced.track(&[NetChange::Route(Change::Changed, moved.clone())]);
        assert!(!sourced.names(a));
        assert!(sourced.names(b));
        // Changed to name none.
        moved.prefsrc = None;
        sourced.track(&[NetChange::Route(Change::Changed, moved.clone())]);
        assert!(!sourced.names(b));
        sourced.track(&[NetChange::Route(Change::Removed, moved)]);
        assert!(sourced.source_of.is_empty() && sourced.routes_per_source.is_empty());
    }
}
