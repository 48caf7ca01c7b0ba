//! The owner's side of the attach protocol: a [`RingServer`] per ring, on its own unix socket.

use crate::attach::{
    answer_version, decode_hello, encode_more_counters, Reply, Request, HELLO_LEN, OWNER_COUNTERS,
    PROTOCOL_VERSION, STATE_ATTACHED, STATE_FINISHED, STATUS_BUSY, STATUS_MALFORMED,
    STATUS_NOT_ALLOWED, STATUS_OK, STATUS_VERSION, STATUS_WRONG_ROLE,
};
use crate::core::{check_release, Field, ReleaseCheck};
use crate::endpoint::{PeerState, PeerStatus};
use crate::format::{
    check_consumer_page_prefix, Protection, Role, StaticHeader, FLAG_FINISHED, FORMAT_VERSION,
    RECORD_ALIGN, STATIC_HEADER_LEN,
};
use crate::sys::os::{self, Epoll};
use crate::sys::shm::HeaderView;
use crate::{ring, Error, Refusal, Result, RingFds};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections that have not said hello yet, at most.
const MAX_PENDING: usize = 16;
/// Connections accepted per `process` call at most.
const MAX_ACCEPTS_PER_CALL: usize = 32;
/// How long a connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Walks of the record headers tried while the producer keeps moving the checked release.
const CHECK_ATTEMPTS: usize = 8;

/// Counters an owner publishes in its ring's stat answers (FORMAT.md section 6: eight in bytes
/// 64..128 of the answer, the rest in the message after it), for `stat` tools: what each counts is the owner's to say (the edgegw daemon lists
/// its own in its README). Shared between the owner's threads and its ring servers, as relaxed
/// atomics; they belong to the socket, so they survive [`RingServer::replace_ring`].
#[derive(Debug, Default)]
pub struct OwnerCounters([AtomicU64; OwnerCounters::LEN]);

impl OwnerCounters {
    /// How many there are.
    pub const LEN: usize = crate::attach::OWNER_COUNTERS + crate::attach::MORE_COUNTERS;

    /// Adds `n` to counter `index` (below [`LEN`](Self::LEN); others are ignored).
    pub fn add(&self, index: usize, n: u64) {
        if let Some(c) = self.0.get(index) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `index` now (0 beyond [`LEN`](Self::LEN)).
    pub fn get(&self, index: usize) -> u64 {
        self.0.get(index).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// All of them now.
    pub fn snapshot(&self) -> [u64; Self::LEN] {
        std::array::from_fn(|i| self.get(i))
    }
}

/// Who may attach: a peer is allowed if its uid, its primary gid (as `SO_PEERCRED` reports
/// them) or one of its supplementary groups (`SO_PEERGROUPS`, Linux 4.13+; where the kernel lacks
/// it, only the primary gid counts) is listed: the same groups the kernel lets through the
/// socket file's permissions. An empty list allows no one; root is not special.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl AllowList {
    /// Allows no one yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allow this uid.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uids.push(uid);
        self
    }

    /// Also allow this gid.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gids.push(gid);
        self
    }

    /// Allow the effective uid of this process.
    pub fn current_user() -> Self {
        Self::new().uid(nix::unistd::geteuid().as_raw())
    }

    /// Is a peer with these credentials allowed?
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }

    /// Is one of these (supplementary) groups allowed?
    pub fn allows_any_group(&self, groups: &[u32]) -> bool {
        groups.iter().any(|g| self.gids.contains(g))
    }

    /// Does the allow list name any group? (Only then are a peer's supplementary groups worth
    /// asking the kernel for.)
    fn lists_groups(&self) -> bool {
        !self.gids.is_empty()
    }
}

/// A snapshot of a ring's shared state, as its owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub producer_pos: u64,
    pub consumer_pos: u64,
    pub drops: u64,
    pub finished: bool,
}

/// A ring as a [`RingServer`] serves it: the four fds, which role the peer takes, and the attach
/// state it shares with the owner's endpoint. Get one from
/// [`Producer::served_ring`](crate::Producer::served_ring) /
/// [`Consumer::served_ring`](crate::Consumer::served_ring), or build one from fds a restarted
/// owner got back from systemd's fd store with [`ServedRing::from_fds`].
#[derive(Debug)]
pub struct ServedRing {
    /// The owner's own fds (read-write).
    owner_fds: RingFds,
    /// The fds as the peer gets them (FORMAT.md section 6: with fd protection, a read-only
    /// description of the owner's part).
    peer_fds: RingFds,
    protection: Protection,
    peer_role: Role,
    header: StaticHeader,
    state: Arc<PeerState>,
    view: HeaderView,
}

impl ServedRing {
    pub(crate) fn new(
        fds: RingFds,
        peer_role: Role,
        header: StaticHeader,
        state: Arc<PeerState>,
    ) -> Result<ServedRing> {
        let view = HeaderView::map(
            fds.region.as_fd(),
            fds.consumer_page.as_fd(),
            header.page_size,
        )?;
        let protection = ring::protection_of(&fds, peer_role.peer())?;
        let peer_fds = ring::peer_fds(&fds, peer_role.peer(), protection)?;
        Ok(ServedRing {
            owner_fds: fds,
            peer_fds,
            protection,
            peer_role,
            header,
            state,
            view,
        })
    }

    /// Serve a ring from its owner's fds (checked like an attaching peer checks them, but for
    /// the seals that depend on the role), offering `peer_role` to whoever attaches.
    pub fn from_fds(fds: RingFds, peer_role: Role) -> Result<ServedRing> {
        let header = ring::check(&fds, None)?;
        Self::new(fds, peer_role, header, Arc::new(PeerState::default()))
    }

    /// The role a peer takes on this ring.
    pub fn peer_role(&self) -> Role {
        self.peer_role
    }

    /// The ring's generation.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.header.capacity
    }

    /// How the owner's part is protected from the peer.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The fds as a peer gets them, for passing them without a socket (fork). (The owner's own
    /// fds, which it keeps or stores, are [`Producer::fds`](crate::Producer::fds) and
    /// [`Consumer::fds`](crate::Consumer::fds).)
    pub fn fds(&self) -> &RingFds {
        &self.peer_fds
    }

    /// Give up serving and keep the fds a peer gets.
    pub fn into_fds(self) -> RingFds {
        self.peer_fds
    }

    /// Whether a peer is attached.
    pub fn peer_status(&self) -> PeerStatus {
        self.state.status()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            producer_pos: self.view.load(Field::ProducerPos),
            consumer_pos: self.view.load(Field::ConsumerPos),
            drops: self.view.load(Field::Drops),
            finished: self.view.load(Field::ProducerFlags) & FLAG_FINISHED != 0,
        }
    }

    /// The owner's check of the part of the ring its peer writes (FORMAT.md section 6,
    /// "Replacement"), made when a peer detached and before the ring goes to a new one.
    fn check_peer_part(&self) -> std::result::Result<(), Unfit> {
        match self.peer_role {
            Role::Consumer => self.check_consumer_page(),
            Role::Producer => self.check_producer_part(),
        }
    }

    /// A consumer wrote the consumer page: magic, version, and a position that is a release on
    /// a record boundary the producer wrote (we walk the producer's record headers, which the
    /// peer cannot write, from the last checked release).
    fn check_consumer_page(&self) -> std::result::Result<(), Unfit> {
        let mut prefix = [0u8; 12];
        os::pread_exact(self.owner_fds.consumer_page.as_fd(), &mut prefix, 0)
            .and_then(|()| check_consumer_page_prefix(&prefix))
            .map_err(|e| Unfit::Broken(e.to_string()))?;
        let cap = self.header.capacity as u64;
        for _ in 0..CHECK_ATTEMPTS {
            let checked = self.state.checked_release();
            let c = self.view.load(Field::ConsumerPos);
            let p = self.view.load(Field::ProducerPos);
            let mut region = RegionReader::new(&self.owner_fds.region, self.header.page_size, cap);
            let found = check_release(
                cap,
                self.header.wrap,
                (checked, c, p),
                |pos| region.header(pos),
                || {
                    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                    self.state.checked_release()
                },
            );
            match found {
                ReleaseCheck::Checked(c) => {
                    self.state.set_checked_release(c);
                    return Ok(());
                }
                ReleaseCheck::Broken(why) => return Err(Unfit::Broken(why)),
                ReleaseCheck::Moving => continue,
            }
        }
        Err(Unfit::Busy)
    }

    /// A producer wrote the region: its static header must be intact and its position possible.
    /// A finished ring waits for its owner to drain and replace it.
    fn check_producer_part(&self) -> std::result::Result<(), Unfit> {
        let mut raw = [0u8; STATIC_HEADER_LEN];
        let header = os::pread_exact(self.owner_fds.region.as_fd(), &mut raw, 0)
            .and_then(|()| StaticHeader::decode(&raw, self.header.page_size))
            .map_err(|e| Unfit::Broken(e.to_string()))?;
        if header != self.header {
            return Err(Unfit::Broken(format!(
                "the header was rewritten: {header:?}, created as {:?}",
                self.header
            )));
        }
        let s = self.snapshot();
        let (p, c, cap) = (s.producer_pos, s.consumer_pos, self.header.capacity as u64);
        if !p.is_multiple_of(RECORD_ALIGN as u64) || p < c || p - c > cap {
            return Err(Unfit::Broken(format!(
                "producer position {p} is impossible (consumer at {c}, capacity {cap})"
            )));
        }
        if s.finished {
            // Wake the owner in case the producer set the flag without a signal.
            os::signal_eventfd(self.owner_fds.data_event.as_fd());
            return Err(Unfit::Busy);
        }
        Ok(())
    }

    fn reply(&self, status: u8) -> Reply {
        let s = self.snapshot();
        let mut state = 0;
        if self.state.status().attached {
            state |= STATE_ATTACHED;
        }
        if s.finished {
            state |= STATE_FINISHED;
        }
        Reply {
            status,
            offered_role: self.peer_role.wire(),
            capacity: self.header.capacity as u64,
            generation: self.header.generation,
            format_version: FORMAT_VERSION,
            wrap_mode: self.header.wrap.wire(),
            producer_pos: s.producer_pos,
            consumer_pos: s.consumer_pos,
            drops: s.drops,
            state,
            page_size: self.header.page_size as u32,
            owner_counters: [0; OWNER_COUNTERS],
        }
    }
}

/// What a connection in its hello phase has sent.
enum Hello {
    /// A message (at most `HELLO_LEN + 1` bytes are kept: a longer one is malformed anyway).
    Got([u8; HELLO_LEN + 1], usize),
    /// It closed, or its socket failed.
    Gone,
    /// Nothing yet.
    NotYet,
}

fn read_hello(socket: BorrowedFd<'_>) -> Hello {
    let mut buf = [0u8; HELLO_LEN + 1];
    match os::recv_message(socket, &mut buf, true) {
        Ok(None) => Hello::NotYet,
        Ok(Some(m)) if m.len == 0 => Hello::Gone,
        Ok(Some(m)) => Hello::Got(buf, if m.truncated { buf.len() } else { m.len }),
        Err(_) => Hello::Gone,
    }
}

/// Why a served ring does not go to a new peer now.
#[derive(Debug)]
enum Unfit {
    /// The peer broke its part: the owner must replace the ring.
    Broken(String),
    /// Not now (the owner is catching up): answer busy.
    Busy,
}

/// Reads the producer's record headers from the region memfd with `pread`, a page at a time
/// (the server has no mapping of the data area, and needs none for a walk at attach time).
struct RegionReader<'a> {
    fd: &'a OwnedFd,
    base: u64,
    capacity: u64,
    buf: Vec<u8>,
    /// Data offset of `buf[0]`.
    start: u64,
}

impl<'a> RegionReader<'a> {
    fn new(fd: &'a OwnedFd, page_size: usize, capacity: u64) -> Self {
        RegionReader {
            fd,
            base: page_size as u64,
            capacity,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn header(&mut self, pos: u64) -> Option<u64> {
        let offset = pos & (self.capacity - 1);
        let held = offset >= self.start && offset + 8 <= self.start + self.buf.len() as u64;
        if !held {
            let len = (self.capacity - offset).min(4096) as usize;
            self.buf.resize(len, 0);
            os::pread_exact(self.fd.as_fd(), &mut self.buf, self.base + offset).ok()?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Some(u64::from_ne_bytes(self.buf[at..at + 8].try_into().ok()?))
    }
}

/// Something the server did, for the owner's logs and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A peer attached.
    Attached {
        /// Its pid.
        pid: i32,
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// The attached peer hung up (exited, crashed or was killed). The ring and its unread records
    /// are kept for the next peer.
    Detached {
        /// Its pid.
        pid: i32,
    },
    /// A connection was refused.
    Refused {
        /// Its pid (0 if the hello never came).
        pid: i32,
        /// Its uid.
        uid: u32,
        /// Why.
        reason: Refusal,
    },
    /// A `stat` request was answered.
    Stat {
        /// Its pid.
        pid: i32,
    },
    /// A connection closed or timed out before a valid hello, or was closed to make room for
    /// newer ones (it had said nothing).
    Dropped {
        /// Its pid (0 if it had closed before the server looked at it).
        pid: i32,
    },
    /// The part of the ring the peer writes is broken (FORMAT.md section 6, "Replacement"),
    /// found when a peer detached or before the ring went to a new one: a bad consumer page
    /// magic or version, a consumer position off the producer's record boundaries or moved
    /// backwards, a rewritten header, an impossible producer position. Reported once per ring.
    /// The owner replaces the ring ([`RingServer::replace_ring`]); until then every attach is
    /// answered busy.
    RingBroken {
        /// The broken ring's generation.
        generation: u64,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug)]
struct Conn {
    socket: OwnedFd,
    pid: i32,
    uid: u32,
    gid: u32,
    /// When it connected; once it is the peer, when it attached.
    since: Instant,
}

/// Serves one ring on one unix socket (FORMAT.md section 6).
///
/// It never blocks: the listener and connections are non-blocking, and everything it watches is
/// gathered in one epoll fd ([`AsFd`]) that turns readable when [`process`](RingServer::process)
/// has work. On a tokio runtime, wrap that fd in `AsyncFd` and call `process` when it is
/// readable; without one, call [`serve_for`](RingServer::serve_for) in a loop.
#[derive(Debug)]
pub struct RingServer {
    path: PathBuf,
    listener: OwnedFd,
    epoll: Epoll,
    ring: ServedRing,
    allow: AllowList,
    peer: Option<Conn>,
    pending: Vec<Conn>,
    socket_id: (u64, u64),
    /// The ring was found broken (and reported): no attach until it is replaced.
    broken: bool,
    /// The owner's counters, for stat answers.
    counters: Option<Arc<OwnerCounters>>,
}

impl RingServer {
    /// Listen at `path` for peers of `ring`. A stale socket file (nobody listening) is
    /// replaced; a live one, or any other file, is an error.
    pub fn bind(path: impl AsRef<Path>, ring: ServedRing, allow: AllowList) -> Result<RingServer> {
        let path = path.as_ref().to_owned();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if os::seqpacket_connect(&path).is_ok() {
                    return Err(Error::Config(format!(
                        "{}: another ring server is listening there",
                        path.display()
                    )));
                }
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io("remove stale ring socket", e))?;
            }
            Ok(_) => {
                return Err(Error::Config(format!(
                    "{}: exists and is not a socket; refusing to replace it",
                    path.display()
                )))
            }
            Err(_) => {}
        }
        let listener = os::seqpacket_listen(&path)?;
        let socket_id = std::fs::metadata(&path)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .map_err(|e| Error::io("stat ring socket", e))?;
        let epoll = Epoll::new()?;
        epoll.add(listener.as_fd(), listener.as_raw_fd() as u64)?;
        Ok(RingServer {
            path,
            listener,
            epoll,
            ring,
            allow,
            peer: None,
            pending: Vec::new(),
            socket_id,
            broken: false,
            counters: None,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes `counters` in this server's stat answers (FORMAT.md section 6).
    pub fn set_owner_counters(&mut self, counters: Arc<OwnerCounters>) {
        self.counters = Some(counters);
    }

    /// Replaces who may attach (a config reload). An attached peer stays attached; the new list
    /// applies from the next hello.
    pub fn set_allow(&mut self, allow: AllowList) {
        self.allow = allow;
    }

    /// Serves `ring` from now on, in place of the current one, on the same socket. The attached
    /// peer, if any, is disconnected: it sees its link hang up (as when the owner goes away) and
    /// attaches again to get the new ring. Connections still in their hello get the new ring.
    ///
    /// This is how an owner recovers from a peer that broke the ring's contract (a reply ring it
    /// wrote impossible positions or records into): the broken ring is given up, with whatever
    /// was in it, and a fresh one takes its place. Returns the peer's `Detached` event.
    pub fn replace_ring(&mut self, ring: ServedRing) -> Option<ServerEvent> {
        let detached = self.peer.take().map(|peer| {
            self.epoll.delete(peer.socket.as_fd());
            self.ring.state.detached();
            ServerEvent::Detached { pid: peer.pid }
            // `peer` is dropped here: its socket closes and the peer sees the hang-up.
        });
        self.ring = ring;
        self.broken = false;
        detached
    }

    /// Is the ring fit for a new peer? Checks the part the peer writes; a broken ring is
    /// reported once (`RingBroken`) and stays unfit until replaced.
    fn ring_fit(&mut self, events: &mut Vec<ServerEvent>) -> bool {
        if self.broken {
            return false;
        }
        match self.ring.check_peer_part() {
            Ok(()) => true,
            Err(Unfit::Busy) => false,
            Err(Unfit::Broken(reason)) => {
                self.broken = true;
                events.push(ServerEvent::RingBroken {
                    generation: self.ring.header.generation,
                    reason,
                });
                false
            }
        }
    }

    /// The ring being served.
    pub fn ring(&self) -> &ServedRing {
        &self.ring
    }

    /// Whether a peer is attached.
    pub fn peer_attached(&self) -> bool {
        self.peer.is_some()
    }

    /// How long the attached peer has been attached (since the server accepted its hello),
    /// `None` without one.
    pub fn peer_attached_for(&self) -> Option<std::time::Duration> {
        self.peer.as_ref().map(|p| p.since.elapsed())
    }

    /// Do all pending work without blocking: accept connections, answer hellos, notice a peer's
    /// hang-up, expire silent connections. Returns what happened.
    pub fn process(&mut self) -> Result<Vec<ServerEvent>> {
        let mut events = Vec::new();
        // Hang-up of the attached peer first, so a replacement that is already waiting is served.
        self.check_peer(&mut events);
        // Bounded, so a flood of connections cannot hold the owner's thread; the rest wait in
        // the backlog for the next call (the epoll fd stays readable).
        for _ in 0..MAX_ACCEPTS_PER_CALL {
            let Some(socket) = os::accept(self.listener.as_fd())? else {
                break;
            };
            // A real peer sends its hello right after connecting, and a flood's connections are
            // often closed already: read what is there now, so neither takes a pending slot
            // (nor two epoll calls), and one that is gone costs no more system calls.
            let hello = read_hello(socket.as_fd());
            if let Hello::Gone = hello {
                events.push(ServerEvent::Dropped { pid: 0 });
                continue;
            }
            let (pid, uid, gid) =
                os::peer_credentials(socket.as_fd()).unwrap_or((0, u32::MAX, u32::MAX));
            let conn = Conn {
                socket,
                pid,
                uid,
                gid,
                since: Instant::now(),
            };
            match hello {
                Hello::Got(buf, len) => self.answer(conn, &buf[..len], &mut events),
                Hello::Gone => {}
                Hello::NotYet => {
                    self.epoll
                        .add(conn.socket.as_fd(), conn.socket.as_raw_fd() as u64)?;
                    self.pending.push(conn);
                }
            }
        }
        self.read_pending(&mut events);
        // Too many connections that said nothing: the oldest silent ones go. Every connection
        // that sent a hello has been answered above, so only silent ones are pending here, and
        // the newest (a peer whose hello is on its way) stay.
        while self.pending.len() > MAX_PENDING {
            let old = self.pending.remove(0);
            self.epoll.delete(old.socket.as_fd());
            events.push(ServerEvent::Dropped { pid: old.pid });
        }
        Ok(events)
    }

    /// Notices the attached peer's hang-up (or a message after its hello, which ends the
    /// attachment too).
    fn check_peer(&mut self, events: &mut Vec<ServerEvent>) {
        let Some(peer) = &self.peer else {
            return;
        };
        let mut scratch = [0u8; 64];
        // The peer must stay silent after the hello: a message (or an error) ends the
        // attachment, so a chatty peer cannot keep this loop, and the owner's thread, busy.
        let gone = os::socket_hung_up(peer.socket.as_fd())
            || !matches!(
                os::recv_message(peer.socket.as_fd(), &mut scratch, true),
                Ok(None)
            );
        if !gone {
            return;
        }
        let peer = self.peer.take().expect("checked");
        self.epoll.delete(peer.socket.as_fd());
        self.ring.state.detached();
        events.push(ServerEvent::Detached { pid: peer.pid });
        if self.ring.peer_role == Role::Producer {
            // Let the owner look at the ring once more: a producer may have published, or
            // finished, without a signal before it left.
            os::signal_eventfd(self.ring.owner_fds.data_event.as_fd());
        }
        // What the peer left must be fit for the next one (and the owner learns now, not when
        // the next peer trips over it).
        self.ring_fit(events);
    }

    /// Answers the pending connections whose hello came, drops those that closed or timed out.
    fn read_pending(&mut self, events: &mut Vec<ServerEvent>) {
        let mut i = 0;
        while i < self.pending.len() {
            let hello = read_hello(self.pending[i].socket.as_fd());
            if let Hello::NotYet = hello {
                if self.pending[i].since.elapsed() <= HELLO_TIMEOUT {
                    i += 1;
                    continue;
                }
            }
            let conn = self.pending.remove(i);
            self.epoll.delete(conn.socket.as_fd());
            match hello {
                Hello::Got(buf, len) => self.answer(conn, &buf[..len], events),
                Hello::Gone | Hello::NotYet => events.push(ServerEvent::Dropped { pid: conn.pid }),
            }
        }
    }

    /// Is this peer on the allow list? Its supplementary groups are asked for only when its uid
    /// and primary gid are not listed and the list names a group; a kernel without
    /// `SO_PEERGROUPS` leaves the primary gid the only one that counts.
    fn allows(&self, conn: &Conn) -> bool {
        self.allow.allows(conn.uid, conn.gid)
            || (self.allow.lists_groups()
                && os::peer_groups(conn.socket.as_fd())
                    .is_ok_and(|groups| self.allow.allows_any_group(&groups)))
    }

    fn answer(&mut self, conn: Conn, hello: &[u8], events: &mut Vec<ServerEvent>) {
        // Answered in the hello's version when we speak it, which is the one the peer reads;
        // a hello of another version, or no hello at all, in our newest (FORMAT.md section 6).
        let version = answer_version(hello);
        let refuse = |status: u8,
                      reason: Refusal,
                      version: u16,
                      this: &Self,
                      events: &mut Vec<ServerEvent>| {
            // Only a peer that is allowed and speaks our hello learns anything about the ring.
            let reply = match status {
                STATUS_NOT_ALLOWED | STATUS_MALFORMED | STATUS_VERSION => Reply {
                    status,
                    ..Reply::default()
                },
                _ => this.ring.reply(status),
            };
            let _ = os::send_message(conn.socket.as_fd(), &reply.encode(version), &[]);
            events.push(ServerEvent::Refused {
                pid: conn.pid,
                uid: conn.uid,
                reason,
            });
        };
        // Credentials first: a peer that is not allowed gets nothing parsed, and nothing but
        // its refusal (FORMAT.md section 6).
        if !self.allows(&conn) {
            return refuse(
                STATUS_NOT_ALLOWED,
                Refusal::NotAllowed {
                    uid: conn.uid,
                    gid: conn.gid,
                },
                version,
                self,
                events,
            );
        }
        let req = match decode_hello(hello) {
            Ok((r, v)) => {
                debug_assert_eq!(v, version);
                r
            }
            Err((status, client)) => {
                let reason = if status == crate::attach::STATUS_VERSION {
                    Refusal::VersionMismatch {
                        server: PROTOCOL_VERSION,
                        client,
                    }
                } else {
                    Refusal::Malformed
                };
                return refuse(status, reason, version, self, events);
            }
        };
        let role = match req {
            Request::Stat => {
                let mut reply = self.ring.reply(STATUS_OK);
                let counters = self.counters.as_ref().map(|c| c.snapshot());
                if let Some(counters) = &counters {
                    reply
                        .owner_counters
                        .copy_from_slice(&counters[..OWNER_COUNTERS]);
                }
                let _ = os::send_message(conn.socket.as_fd(), &reply.encode(version), &[]);
                if let Some(counters) = &counters {
                    // The rest in a message of its own: a stat tool that knows only the answer
                    // reads one message and never sees it.
                    let more = encode_more_counters(&counters[OWNER_COUNTERS..]);
                    let _ = os::send_message(conn.socket.as_fd(), &more, &[]);
                }
                events.push(ServerEvent::Stat { pid: conn.pid });
                return;
            }
            Request::Attach(role) => role,
        };
        if role != self.ring.peer_role {
            return refuse(
                STATUS_WRONG_ROLE,
                Refusal::WrongRole {
                    offered: self.ring.peer_role,
                    requested: role,
                },
                version,
                self,
                events,
            );
        }
        if version < 2 && self.ring.protection == Protection::Fd {
            // A version 1 peer requires F_SEAL_FUTURE_WRITE on the part it only reads and would
            // refuse this ring after the fds came: say so now, as a version mismatch in ours.
            return refuse(
                STATUS_VERSION,
                Refusal::NeedsSealProtection { client: version },
                PROTOCOL_VERSION,
                self,
                events,
            );
        }
        if self.peer.is_some() {
            // It may have gone since the last look: a peer that re-attaches right after it
            // detached must not be told "busy" by its own ghost.
            self.check_peer(events);
        }
        if self.peer.is_some() || !self.ring_fit(events) {
            return refuse(STATUS_BUSY, Refusal::Busy, version, self, events);
        }
        self.hand_over(conn, version, events);
    }

    /// Sends the fds to a peer that passed every check, and watches its connection.
    fn hand_over(&mut self, conn: Conn, version: u16, events: &mut Vec<ServerEvent>) {
        // Mark attached before the fds leave, so the owner never sees a peer it does not know of.
        self.ring.state.attached();
        let fds = self.ring.peer_fds.as_array();
        match os::send_message(
            conn.socket.as_fd(),
            &self.ring.reply(STATUS_OK).encode(version),
            &fds,
        ) {
            Ok(()) => {
                if self
                    .epoll
                    .add(conn.socket.as_fd(), conn.socket.as_raw_fd() as u64)
                    .is_err()
                {
                    // We could not watch it; treat it as gone rather than never noticing.
                    self.ring.state.detached();
                    events.push(ServerEvent::Detached { pid: conn.pid });
                    return;
                }
                events.push(ServerEvent::Attached {
                    pid: conn.pid,
                    uid: conn.uid,
                    gid: conn.gid,
                });
                self.peer = Some(Conn {
                    since: Instant::now(),
                    ..conn
                });
            }
            Err(_) => {
                self.ring.state.detached();
                events.push(ServerEvent::Dropped { pid: conn.pid });
            }
        }
    }

    /// Is there work for [`process`](RingServer::process) right now? (Never blocks.)
    pub fn has_pending_work(&self) -> bool {
        os::poll_fds([Some(self.epoll.as_fd())], Some(Duration::ZERO))
            .map_or(true, |[r]| r.readable)
    }

    /// Block up to `timeout` (`None`: until something happens) for work, then
    /// [`process`](RingServer::process) it. For servers without an event loop.
    pub fn serve_for(&mut self, timeout: Option<Duration>) -> Result<Vec<ServerEvent>> {
        let timeout = match (timeout, self.pending.is_empty()) {
            // Wake up in time to expire silent connections.
            (t, false) => Some(t.map_or(HELLO_TIMEOUT, |t| t.min(HELLO_TIMEOUT))),
            (t, true) => t,
        };
        self.epoll.wait(timeout)?;
        self.process()
    }
}

impl AsFd for RingServer {
    /// The epoll fd: readable when [`RingServer::process`] has work.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

impl std::os::fd::AsRawFd for RingServer {
    /// The epoll fd (for `AsyncFd` and other APIs that want a raw fd).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_fd().as_raw_fd()
    }
}

impl Drop for RingServer {
    fn drop(&mut self) {
        // Remove our socket file, unless someone replaced it meanwhile.
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.socket_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        if self.peer.take().is_some() {
            self.ring.state.detached();
        }
    }
}
