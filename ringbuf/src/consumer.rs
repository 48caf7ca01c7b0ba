//! The consuming end of a ring.

use crate::core::{ConsumerCore, Next};
use crate::endpoint::{
    spin_until, EventWaker, Link, PeerState, PeerStatus, Readiness, DEFAULT_SPIN,
};
use crate::format::{max_payload, Role, StaticHeader, WrapMode};
use crate::server::ServedRing;
use crate::sys::os;
use crate::sys::shm::{MappedRing, Payload};
use crate::takeback::{self, TakenBack};
use crate::{attach, ring, Error, Result, RingConfig, RingFds};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One record, read in place. Valid until the consumer's next call (it borrows the consumer);
/// the bytes stay in the ring until [`Consumer::release`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    payload: Payload<'a>,
    ty: u16,
    flags: u16,
    producer_trusted: bool,
}

impl<'a> Record<'a> {
    /// The record type the producer gave (`0..=0xfeff`).
    pub fn record_type(&self) -> u16 {
        self.ty
    }

    /// The producer's flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The payload, in place: a bounds-checked view that reads with atomic word loads, sound
    /// whoever the producer is.
    pub fn payload(&self) -> Payload<'a> {
        self.payload
    }

    /// The payload as a byte slice, in place, where that is sound: `Some` for a consumer whose
    /// producer is trusted (see [`Consumer::producer_trusted`]), `None` otherwise.
    ///
    /// The rule: a producer never writes a record it published (it writes only space the
    /// consumer released, FORMAT.md section 4), and the slice borrows the consumer, so it is
    /// gone before [`Consumer::release`] can hand the space back. A Rust reference also promises
    /// the compiler that no one writes the bytes while it lives, and memory another process
    /// can write keeps that promise only if that process is trusted to follow the rule. The
    /// region is sealed against every process that did not map it before sealing: against this
    /// consumer and any other process given the fds. The one process that can write it is its
    /// creator (and children it forked after mapping it), which is the ring's producer:
    /// - for a consumer that attached to a ring its owner serves ([`Consumer::attach`]: the
    ///   edgegw daemon's ingress ring), the owner is that producer, and the party the consumer
    ///   already trusts to serve it, so the slice is offered;
    /// - for the owner of a ring whose producer attached ([`Consumer::create`]: the daemon
    ///   reading a reply ring), the producer is the untrusted peer, so it is not: use
    ///   [`payload`](Record::payload);
    /// - for a consumer of inherited fds ([`Consumer::from_fds`]) this end cannot tell who the
    ///   producer is; one that knows (the fork recipe of the README) says so with
    ///   [`Consumer::trust_producer`].
    ///
    /// If a producer trusted this way broke the rule and wrote a published record anyway, the
    /// ring itself stays sound: it reads positions and record headers only with atomic loads
    /// into private copies, checks them before use, and never reads through the slice, so the
    /// worst it reports is garbage bytes or [`Error::Corrupt`] on a later read. The code that
    /// reads the slice is what would break: a write racing with a read through a reference is
    /// undefined behaviour, so the compiler may, for example, check a length it read once and
    /// index with a value it read again. That is why the slice is never offered where the
    /// writer is not trusted.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        self.producer_trusted
            .then(|| self.payload.bytes_of_trusted_producer())
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Empty payload.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

/// What [`Consumer::reattach`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reattached {
    /// The same ring (same memfd and generation): reading continues from the released position.
    SameRing,
    /// A new ring with a new generation; the old one had been read to its end.
    NewGeneration {
        /// The old generation.
        old: u64,
        /// The new one.
        new: u64,
    },
    /// The owner replaced the old ring (it found it broken: FORMAT.md section 6, "Replacement").
    /// The new ring starts with every record the owner had not seen released, so some of them
    /// may have been read (even released) here already.
    Replaced {
        /// The old generation.
        old: u64,
        /// The new one.
        new: u64,
    },
}

/// Reads records from a ring, in place.
///
/// Read with [`read`](Consumer::read) until it returns `None`, then [`release`](Consumer::release)
/// once for the whole batch. Wait with [`wait`](Consumer::wait) (spin, then sleep on the data
/// eventfd), or hand [`data_fd`](Consumer::data_fd) to epoll/tokio around
/// [`prepare_wait`](Consumer::prepare_wait) / [`finish_wait`](Consumer::finish_wait).
///
/// Everything read from the ring is checked (FORMAT.md section 4); a violation is
/// [`Error::Corrupt`] and the consumer refuses further use. A `Consumer` is `Send`.
#[derive(Debug)]
pub struct Consumer {
    mem: MappedRing,
    core: ConsumerCore,
    header: StaticHeader,
    data_event: OwnedFd,
    space_event: OwnedFd,
    link: Link,
    /// Identity of the region memfd, to recognise the same ring on re-attach.
    region_id: (u64, u64),
    spin: Duration,
    /// The producer is trusted not to write published records ([`Record::bytes`]).
    producer_trusted: bool,
}

impl Consumer {
    /// Create a new ring that this process consumes (the daemon's reply ring). Serve it with
    /// [`served_ring`](Consumer::served_ring) and a [`RingServer`](crate::RingServer).
    pub fn create(config: RingConfig) -> Result<Consumer> {
        let built = ring::create(&config, Role::Consumer)?;
        let region_id = os::file_identity(built.fds.region.as_fd())?;
        let core =
            ConsumerCore::resume(&built.mem, built.header.capacity, built.header.wrap, true)?;
        let data_event = built
            .fds
            .data_event
            .try_clone()
            .map_err(|e| Error::io("dup", e))?;
        let space_event = built
            .fds
            .space_event
            .try_clone()
            .map_err(|e| Error::io("dup", e))?;
        Ok(Consumer {
            mem: built.mem,
            core,
            header: built.header,
            data_event,
            space_event,
            link: Link::Owner {
                state: Arc::new(PeerState::default()),
                fds: built.fds,
            },
            region_id,
            spin: DEFAULT_SPIN,
            producer_trusted: false,
        })
    }

    /// Take back a ring this process's previous life created and consumed (a reply ring), from
    /// its own fds (systemd's fd store; FORMAT.md section 7, "Restarts"). Everything in it is
    /// checked as memory a peer wrote: header and sizes, protection, positions, and every record
    /// from `consumer_pos` to `producer_pos`. A consistent ring continues from its
    /// `consumer_pos`, served again with [`served_ring`](Consumer::served_ring); otherwise the
    /// answer says why (what the peer wrote into a broken ring is lost: FORMAT.md section 6).
    pub fn take_back(fds: RingFds) -> Result<TakenBack<Consumer>> {
        let takeback::Stored { header, mem, .. } = match takeback::open_stored(&fds, Role::Consumer)
        {
            Ok(stored) => stored,
            Err(unfit) => return Ok(unfit),
        };
        let core = match ConsumerCore::resume(&mem, header.capacity, header.wrap, true) {
            Ok(c) => c,
            Err(e) => return Ok(takeback::unfit(e, header.generation)),
        };
        let region_id = os::file_identity(fds.region.as_fd())?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("dup", e));
        Ok(TakenBack::Continued(Consumer {
            data_event: dup(&fds.data_event)?,
            space_event: dup(&fds.space_event)?,
            mem,
            core,
            header,
            link: Link::Owner {
                state: Arc::new(PeerState::default()),
                fds,
            },
            region_id,
            spin: DEFAULT_SPIN,
            producer_trusted: false,
        }))
    }

    /// Attach as the consumer of the ring served at `path`. Checks the server's answer, the
    /// memfds' seals and sizes, the header's magic and version, then maps; reading continues
    /// from the ring's released position.
    pub fn attach(path: impl AsRef<Path>) -> Result<Consumer> {
        let (mem, header, fds, link) = attach::open_attached(path.as_ref(), Role::Consumer)?;
        Self::from_parts(mem, header, fds, link)
    }

    /// Consume a ring whose fds were inherited (fork, or exec with the fds kept open).
    pub fn from_fds(fds: RingFds) -> Result<Consumer> {
        let (mem, header) = ring::open(&fds, Role::Consumer)?;
        Self::from_parts(mem, header, fds, Link::Inherited)
    }

    /// Read an old ring, read-only, from its fds: for a restarted owner that kept the fds of a
    /// ring it consumed (systemd's fd store) and must drain what its producer published before
    /// it moves to a new generation. Reading starts at the ring's released position; releases
    /// are tracked only in this process (the consumer page is not written, and may be sealed
    /// against us). Such a consumer never sleeps: [`wait`](Consumer::wait) returns at once.
    pub fn drain_from_fds(fds: RingFds) -> Result<Consumer> {
        let (mem, header) = ring::open_read_only(&fds)?;
        Self::build(mem, header, fds, Link::Inherited, false)
    }

    fn from_parts(
        mem: MappedRing,
        header: StaticHeader,
        fds: RingFds,
        link: Link,
    ) -> Result<Consumer> {
        Self::build(mem, header, fds, link, true)
    }

    fn build(
        mem: MappedRing,
        header: StaticHeader,
        fds: RingFds,
        link: Link,
        writes_page: bool,
    ) -> Result<Consumer> {
        let region_id = os::file_identity(fds.region.as_fd())?;
        let core = ConsumerCore::resume(&mem, header.capacity, header.wrap, writes_page)?;
        // Attached to its owner: the owner produces, and is the one process that can write the
        // region (`ring::open` checked it is sealed against everyone else).
        let producer_trusted = matches!(link, Link::Attached { .. });
        Ok(Consumer {
            mem,
            core,
            header,
            data_event: fds.data_event,
            space_event: fds.space_event,
            link,
            region_id,
            spin: DEFAULT_SPIN,
            producer_trusted,
        })
    }

    /// What a [`RingServer`](crate::RingServer) needs to serve this ring to its producer. Only
    /// the ring's creator can serve it.
    pub fn served_ring(&self) -> Result<ServedRing> {
        match &self.link {
            Link::Owner { state, fds } => {
                ServedRing::new(fds.try_clone()?, Role::Producer, self.header, state.clone())
            }
            _ => Err(Error::Config(
                "only the process that created a ring can serve it".into(),
            )),
        }
    }

    /// The next record, or `None` if none is committed. Records read stay in the ring until
    /// [`release`](Consumer::release).
    #[inline(always)]
    pub fn read(&mut self) -> Result<Option<Record<'_>>> {
        match self.core.next(&self.mem) {
            Next::Record(loc) => match self.mem.payload(loc.payload_offset, loc.len) {
                Some(payload) => Ok(Some(Record {
                    payload,
                    ty: loc.ty,
                    flags: loc.flags,
                    producer_trusted: self.producer_trusted,
                })),
                None => Err(self.core.corrupt_error()),
            },
            Next::Empty => Ok(None),
            Next::Corrupt => Err(self.core.corrupt_error()),
        }
    }

    /// Release every record read so far with one store; wake the producer only if it is
    /// waiting for space.
    #[inline]
    pub fn release(&mut self) {
        self.core
            .release(&self.mem, &EventWaker(self.space_event.as_fd()));
    }

    /// Whether [`Record::bytes`] offers payloads as byte slices: true for a consumer that
    /// attached to a ring its owner serves, or that [`trust_producer`](Consumer::trust_producer)
    /// was called on.
    pub fn producer_trusted(&self) -> bool {
        self.producer_trusted
    }

    /// Declare this consumer's producer trusted, so that [`Record::bytes`] offers byte slices:
    /// for a consumer of inherited fds whose producer is known (the fork recipe of the README:
    /// a parent creates the ring, one child produces, another consumes).
    ///
    /// # Safety
    /// Every process that can write the region (its creator, and processes that inherited the
    /// creator's writable mapping by `fork`) must never write a record between publishing it
    /// and this consumer's release of it (FORMAT.md section 4: a producer writes only released
    /// space). A process that breaks this while a slice from [`Record::bytes`] lives makes the
    /// code reading that slice undefined behaviour (see there).
    #[allow(unsafe_code, reason = "a public contract; the code behind it is safe")]
    pub unsafe fn trust_producer(&mut self) {
        self.producer_trusted = true;
    }

    /// Records have been read and not released.
    pub fn has_unreleased(&self) -> bool {
        self.core.unreleased()
    }

    /// A record is committed and unread, so the next [`read`](Consumer::read) returns it
    /// (reloads the producer position when everything seen was read).
    pub fn has_data(&mut self) -> Result<bool> {
        self.core.has_data(&self.mem)
    }

    /// The producer finished the ring and everything has been read.
    pub fn is_finished(&mut self) -> Result<bool> {
        self.core.is_finished(&self.mem)
    }

    /// How long [`wait`](Consumer::wait) spins before it sleeps ([`DEFAULT_SPIN`] unless
    /// set; zero: sleep at once). Spinning answers within a fraction of a microsecond but keeps
    /// the CPU busy; sleeping costs a wake-up (about 20 µs on the development machine).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The data eventfd, readable when the producer published after
    /// [`prepare_wait`](Consumer::prepare_wait). For tokio `AsyncFd` or epoll.
    pub fn data_fd(&self) -> BorrowedFd<'_> {
        self.data_event.as_fd()
    }

    /// Arm the wait for data, then recheck. `Ok(false)`: a record is there, do not sleep (the
    /// wait is disarmed). `Ok(true)`: wait for [`data_fd`](Consumer::data_fd) to become
    /// readable, then call [`finish_wait`](Consumer::finish_wait).
    ///
    /// A ring that will never have more data ends the wait with an error, so an event loop
    /// cannot spin on it: [`Error::Finished`] when the producer finished the ring and every
    /// record was read (re-attach for the next generation, or treat the producer as gone), and
    /// [`Error::PeerGone`] for a read-only drain ([`drain_from_fds`](Consumer::drain_from_fds))
    /// with nothing left to read.
    pub fn prepare_wait(&mut self) -> Result<bool> {
        self.core.prepare_wait(&self.mem)
    }

    /// Disarm the wait and reset the data eventfd.
    pub fn finish_wait(&mut self) {
        self.core.finish_wait(&self.mem);
        os::drain_eventfd(self.data_event.as_fd());
    }

    /// Block until a record is readable, the ring is finished and drained, the peer is gone
    /// (attached consumers: the owner's socket hung up) or the timeout passes (`None`: no
    /// timeout). Spins briefly first ([`set_spin`](Consumer::set_spin)); no system call while
    /// records keep coming.
    ///
    /// [`Readiness::Ready`] means the next [`read`](Consumer::read) returns a record (or
    /// [`Error::Corrupt`] if the producer broke the ring); it is never returned with nothing
    /// to read. A wake-up that brings no record (the signal of an earlier sleep, or a padding
    /// record published without the record after it) goes back to waiting.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Readiness> {
        let deadline = timeout.map(|t| Instant::now() + t);
        if spin_until(self.spin, deadline, || self.core.has_data(&self.mem))? {
            return Ok(Readiness::Ready);
        }
        loop {
            match self.core.prepare_wait(&self.mem) {
                Ok(true) => {}
                Ok(false) => return Ok(Readiness::Ready),
                Err(Error::Finished) => return Ok(Readiness::Finished),
                Err(Error::PeerGone) => return Ok(Readiness::PeerGone),
                Err(e) => return Err(e),
            }
            // Reset the eventfd before sleeping rather than after waking, which keeps that
            // system call off the wake-up path. A signal drained here may be for this very sleep:
            // then the data is already visible, so look again before sleeping.
            if os::drain_eventfd(self.data_event.as_fd()) != 0
                && (self.core.has_data(&self.mem)? || self.core.is_finished(&self.mem)?)
            {
                self.core.finish_wait(&self.mem);
                return self.settled();
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let [_, sock] = os::poll_fds(
                [Some(self.data_event.as_fd()), self.link.socket()],
                remaining,
            )?;
            self.core.finish_wait(&self.mem);
            if self.core.has_data(&self.mem)? {
                return Ok(Readiness::Ready);
            }
            if self.core.is_finished(&self.mem)? {
                return Ok(Readiness::Finished);
            }
            if sock.hangup {
                return Ok(Readiness::PeerGone);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Readiness::TimedOut);
            }
        }
    }

    fn settled(&mut self) -> Result<Readiness> {
        if !self.core.has_data(&self.mem)? && self.core.is_finished(&self.mem)? {
            Ok(Readiness::Finished)
        } else {
            Ok(Readiness::Ready)
        }
    }

    /// Largest payload this ring carries.
    pub fn max_payload(&self) -> usize {
        max_payload(self.header.capacity)
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.header.capacity
    }

    /// The ring's generation.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }

    /// The ring's wrap mode.
    pub fn wrap_mode(&self) -> WrapMode {
        self.header.wrap
    }

    /// `(released, read, last seen producer)` positions.
    pub fn positions(&self) -> (u64, u64, u64) {
        self.core.positions()
    }

    /// Why the ring was declared corrupt, if it was.
    pub fn corruption(&self) -> Option<&str> {
        self.core.corruption()
    }

    /// Fault in every page of this process's mappings of the ring now (the header page, the
    /// data area, the consumer page), so the first packets through it take no page faults: a
    /// fresh ring's pages are otherwise allocated and mapped one at a time as the first lap
    /// writes and reads them. Call it once, after attaching or creating, on both ends; the
    /// first call for a new ring allocates its memory (the capacity, which a ring otherwise
    /// takes in full only after its first lap). The README gives the first-packet latency
    /// with and without.
    pub fn prefault(&self) {
        self.mem.prefault()
    }

    /// Bytes of address space this ring's mappings take in this process.
    pub fn mapped_bytes(&self) -> usize {
        self.mem.mapped_bytes()
    }

    /// The peer's attach state, for an owner served by a [`RingServer`](crate::RingServer).
    pub fn peer_status(&self) -> Option<PeerStatus> {
        match &self.link {
            Link::Owner { state, .. } => Some(state.status()),
            _ => None,
        }
    }

    /// True if the peer is known to be gone (see [`Producer::peer_gone`](crate::Producer::peer_gone)).
    pub fn peer_gone(&self) -> bool {
        self.link.peer_gone()
    }

    /// The ring's fds, for an owner.
    pub fn fds(&self) -> Option<&RingFds> {
        match &self.link {
            Link::Owner { fds, .. } => Some(fds),
            _ => None,
        }
    }

    /// Attach again to the path this consumer attached to (after [`Readiness::PeerGone`] or
    /// [`Readiness::Finished`]). If the server serves the same ring (the region memfd has the
    /// identity and generation of ours: a restarted owner that took its ring back), reading
    /// continues from this consumer's own read position: nothing it read comes again, nothing
    /// is skipped. If it serves a new generation, the old ring must have been read to its
    /// end first (otherwise an error says how much is unread, and nothing changes); then this
    /// consumer switches to the new ring. An old ring its owner marked replaced is not drained:
    /// its unreleased records are in the new one ([`Reattached::Replaced`]).
    pub fn reattach(&mut self) -> Result<Reattached> {
        let path = match &self.link {
            Link::Attached { path, .. } => path.clone(),
            _ => {
                return Err(Error::Config(
                    "only a consumer that attached through a socket can re-attach".into(),
                ))
            }
        };
        let same_ring_check = self.region_id;
        let att = attach::connect(&path, Role::Consumer)?;
        let (mem, header) = ring::open(&att.fds, Role::Consumer)
            .and_then(|(m, h)| attach::check_matches(&att.reply, &h).map(|_| (m, h)))
            .map_err(|e| attach::wrap_err(&path, e))?;
        let region_id = os::file_identity(att.fds.region.as_fd())?;
        let same = region_id == same_ring_check && header.generation == self.header.generation;
        let replaced = !same && self.core.is_replaced(&self.mem);
        if !same && !replaced && (self.core.has_data(&self.mem)? || self.core.unreleased()) {
            let (released, _, producer) = self.core.positions();
            return Err(Error::Attach {
                    path,
                    reason: format!(
                        "a new ring (generation {}) is served, but the old one (generation {}) still has {} unread bytes: drain it first",
                        header.generation,
                        self.header.generation,
                        producer - released
                    ),
                });
        }
        if same {
            // The same memory: keep our mapping and our private read position, so nothing read
            // and not yet released comes again and nothing is skipped; take the new link and
            // eventfds.
            drop(mem);
            let RingFds {
                data_event,
                space_event,
                ..
            } = att.fds;
            self.data_event = data_event;
            self.space_event = space_event;
            self.link = Link::Attached {
                socket: att.socket,
                path,
            };
            return Ok(Reattached::SameRing);
        }
        let old = self.header.generation;
        *self = Self::from_parts(
            mem,
            header,
            att.fds,
            Link::Attached {
                socket: att.socket,
                path,
            },
        )?;
        Ok(if replaced {
            Reattached::Replaced {
                old,
                new: self.header.generation,
            }
        } else {
            Reattached::NewGeneration {
                old,
                new: self.header.generation,
            }
        })
    }
}
