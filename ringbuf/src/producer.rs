//! The producing end of a ring.

use crate::core::{ProducerCore, ReleaseHooks, Reserved};
use crate::endpoint::{
    spin_until, EventWaker, Link, PeerState, PeerStatus, Readiness, DEFAULT_SPIN,
};
use crate::format::{check_consumer_page_prefix, max_payload, Role, StaticHeader, WrapMode};
use crate::server::ServedRing;
use crate::sys::os;
use crate::sys::shm::MappedRing;
use crate::takeback::{self, TakenBack};
use crate::{attach, ring, Error, Result, RingConfig, RingFds};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An owner's producer shares its checked release with its ring server through the attach
/// state (`PeerState::checked_release`); other producers have no server.
impl ReleaseHooks for Link {
    fn checked_release(&self) -> u64 {
        match self {
            Link::Owner { state, .. } => state.checked_release(),
            _ => 0,
        }
    }

    fn set_checked_release(&self, pos: u64) {
        if let Link::Owner { state, .. } = self {
            state.set_checked_release(pos);
        }
    }
}

/// What [`Producer::move_unreleased_to`] carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    /// Records written into the new ring.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// Writes records into a ring, in place.
///
/// ```
/// # fn main() -> edgegw_ring::Result<()> {
/// use edgegw_ring::{Consumer, Producer, RingConfig};
/// let mut producer = Producer::create(RingConfig::with_capacity(64 * 1024))?;
/// let mut consumer = Consumer::from_fds(producer.served_ring()?.into_fds())?;
/// // A batch: reserve and fill two records in place, publish both with one store.
/// producer.reserve(5, 1, 0)?.copy_from_slice(b"hello");
/// producer.reserve(5, 1, 0)?.copy_from_slice(b"world");
/// producer.publish();
/// let rec = consumer.read()?.expect("a record");
/// assert_eq!(rec.payload().to_vec(), b"hello");
/// # Ok(()) }
/// ```
///
/// A `Producer` is `Send`: build it on one thread, use it on another. Records reserved and not
/// published when it is dropped are discarded; dropping does not finish the ring (see
/// [`finish`](Producer::finish)).
#[derive(Debug)]
pub struct Producer {
    mem: MappedRing,
    core: ProducerCore,
    header: StaticHeader,
    data_event: OwnedFd,
    space_event: OwnedFd,
    link: Link,
    spin: Duration,
}

impl Producer {
    /// Create a new ring that this process produces into (the daemon's ingress ring). Serve it
    /// with [`served_ring`](Producer::served_ring) and a [`RingServer`](crate::RingServer).
    pub fn create(config: RingConfig) -> Result<Producer> {
        let built = ring::create(&config, Role::Producer)?;
        let core = ProducerCore::resume(&built.mem, built.header.capacity, built.header.wrap)?;
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
        Ok(Producer {
            mem: built.mem,
            core,
            header: built.header,
            data_event,
            space_event,
            link: Link::Owner {
                state: Arc::new(PeerState::default()),
                fds: built.fds,
            },
            spin: DEFAULT_SPIN,
        })
    }

    /// Take back a ring this process's previous life created and produced into, from its own
    /// fds (systemd's fd store; FORMAT.md section 7, "Restarts"). Everything in it is checked as
    /// memory a peer wrote: the header and sizes, the protection (a ring with seal protection
    /// cannot be written again), the positions, and every record from `consumer_pos` to
    /// `producer_pos`. A consistent ring continues: same generation, same positions, `FINISHED`
    /// cleared (the old life set it when it stopped), served again with
    /// [`served_ring`](Producer::served_ring). Otherwise the answer says why, with the records
    /// that passed the checks, for a fresh ring.
    pub fn take_back(fds: RingFds) -> Result<TakenBack<Producer>> {
        let takeback::Stored {
            header,
            mem,
            consumer_pos,
            producer_pos,
        } = match takeback::open_stored(&fds, Role::Producer) {
            Ok(stored) => stored,
            Err(unfit) => return Ok(unfit),
        };
        let core = match ProducerCore::resume_at(
            &mem,
            header.capacity,
            header.wrap,
            producer_pos,
            consumer_pos,
        ) {
            Ok(c) => c,
            Err(e) => return Ok(takeback::unfit(e, header.generation)),
        };
        let state = Arc::new(PeerState::default());
        // The walk proved consumer_pos a record boundary: the checked release.
        state.set_checked_release(consumer_pos);
        core.clear_finished(&mem);
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("dup", e));
        Ok(TakenBack::Continued(Producer {
            data_event: dup(&fds.data_event)?,
            space_event: dup(&fds.space_event)?,
            mem,
            core,
            header,
            link: Link::Owner { state, fds },
            spin: DEFAULT_SPIN,
        }))
    }

    /// Attach as the producer of a ring served at `path` (a consumer process answering on the
    /// daemon's reply ring).
    pub fn attach(path: impl AsRef<Path>) -> Result<Producer> {
        let (mem, header, fds, link) = attach::open_attached(path.as_ref(), Role::Producer)?;
        Self::from_parts(mem, header, fds, link)
    }

    /// Produce into a ring whose fds were inherited (fork, or exec with the fds kept open).
    pub fn from_fds(fds: RingFds) -> Result<Producer> {
        let (mem, header) = ring::open(&fds, Role::Producer)?;
        Self::from_parts(mem, header, fds, Link::Inherited)
    }

    fn from_parts(
        mem: MappedRing,
        header: StaticHeader,
        fds: RingFds,
        link: Link,
    ) -> Result<Producer> {
        let core = ProducerCore::resume(&mem, header.capacity, header.wrap)?;
        Ok(Producer {
            mem,
            core,
            header,
            data_event: fds.data_event,
            space_event: fds.space_event,
            link,
            spin: DEFAULT_SPIN,
        })
    }

    /// What a [`RingServer`](crate::RingServer) needs to serve this ring: duplicated fds and the
    /// shared attach state. Only the ring's creator can serve it.
    pub fn served_ring(&self) -> Result<ServedRing> {
        match &self.link {
            Link::Owner { state, fds } => {
                ServedRing::new(fds.try_clone()?, Role::Consumer, self.header, state.clone())
            }
            _ => Err(Error::Config(
                "only the process that created a ring can serve it".into(),
            )),
        }
    }

    /// Reserve a record of `len` payload bytes with type `ty` (`0..=0xfeff`) and `flags`, and
    /// return its payload to fill in place. It becomes visible at the next
    /// [`publish`](Producer::publish); several reservations make one batch.
    ///
    /// Errors: [`Error::Full`] (nothing reserved; drop or wait), [`Error::TooLarge`],
    /// [`Error::ReservedType`], [`Error::Corrupt`] (the consumer wrote an impossible position).
    #[inline(always)]
    pub fn reserve(&mut self, len: usize, ty: u16, flags: u16) -> Result<&mut [u8]> {
        match self.core.reserve(&self.mem, &self.link, len, ty, flags) {
            Reserved::Payload(offset) => Ok(self.mem.payload_mut(offset, len)),
            other => Err(self.core.reserve_error(other, len, ty)),
        }
    }

    /// Publish every reserved record with one release store; write the consumer's eventfd only
    /// if it said it is going to sleep.
    #[inline]
    pub fn publish(&mut self) {
        self.core
            .publish(&self.mem, &EventWaker(self.data_event.as_fd()));
    }

    /// Discard the records reserved since the last publish.
    pub fn abandon(&mut self) {
        self.core.abandon();
    }

    /// Reserved records not yet published.
    pub fn has_pending(&self) -> bool {
        self.core.pending()
    }

    /// Copy `payload` into one record and publish it.
    pub fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<()> {
        self.reserve(payload.len(), ty, flags)?
            .copy_from_slice(payload);
        self.publish();
        Ok(())
    }

    /// Count `n` dropped packets in the header's drop counter (the drop policy after
    /// [`Error::Full`]); `stat` tools show it.
    pub fn record_drops(&mut self, n: u64) {
        self.core.record_drops(&self.mem, n);
    }

    /// Packets counted as dropped so far.
    pub fn drops(&self) -> u64 {
        self.core.drops()
    }

    /// Publish what is pending and mark the ring finished: the consumer drains it and then
    /// looks for a new generation. Do not publish after this: a consumer that saw the flag may
    /// have left.
    pub fn finish(&mut self) {
        self.core
            .finish(&self.mem, &EventWaker(self.data_event.as_fd()));
    }

    /// Check the consumer's side of the ring now: its position (in range, not moved backwards,
    /// on a record boundary this producer wrote) and, for the ring's owner, the consumer page's
    /// magic and version. An owner does this when its consumer detached, before another one
    /// gets the ring; the position is also checked whenever the producer needs room. An error
    /// ([`Error::Corrupt`], [`Error::InvalidRing`]) means the consumer broke the ring: replace
    /// it ([`move_unreleased_to`](Producer::move_unreleased_to)).
    pub fn check_consumer(&mut self) -> Result<()> {
        if let Link::Owner { fds, .. } = &self.link {
            let mut prefix = [0u8; 12];
            os::pread_exact(fds.consumer_page.as_fd(), &mut prefix, 0)?;
            check_consumer_page_prefix(&prefix)?;
        }
        self.core.check_consumer(&self.mem, &self.link)
    }

    /// Replace this ring with `fresh` (a new, empty ring of at least the same capacity): every
    /// record a consumer has not verifiably released (after the last release this producer, or
    /// its ring server, checked; up to the published position) is written into `fresh`, in
    /// order, with its type, flags and payload, and published; this ring is then marked
    /// `REPLACED` (FORMAT.md section 6) and its consumer signalled. Nothing that was published
    /// is lost, even when the consumer broke this ring: a producer never overwrites what was not
    /// released. Records reserved and not published here are discarded.
    pub fn move_unreleased_to(&mut self, fresh: &mut Producer) -> Result<Moved> {
        if fresh.capacity() < self.capacity() || fresh.core.positions() != (0, 0) {
            return Err(Error::Config(format!(
                "records move only into a new, empty ring of at least {} bytes",
                self.capacity()
            )));
        }
        self.core.abandon();
        let mut moved = Moved::default();
        for loc in self.core.unreleased(&self.mem, &self.link) {
            let payload = self
                .mem
                .payload(loc.payload_offset, loc.len)
                .ok_or_else(|| Error::Corrupt("an unreleased record is out of bounds".into()))?;
            payload.copy_to_slice(fresh.reserve(loc.len, loc.ty, loc.flags)?);
            moved.records += 1;
            moved.bytes += loc.len as u64;
        }
        fresh.publish();
        self.core
            .mark_replaced(&self.mem, &EventWaker(self.data_event.as_fd()));
        Ok(moved)
    }

    /// Largest payload this ring carries (`capacity / 2 - 8`).
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

    /// Bytes free as of the last check of the consumer's position.
    pub fn free_space(&self) -> usize {
        self.core.free() as usize
    }

    /// `(published producer position, last seen consumer position)`.
    pub fn positions(&self) -> (u64, u64) {
        self.core.positions()
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

    /// The peer's attach state, for an owner served by a [`RingServer`](crate::RingServer);
    /// `None` for attached or inherited producers.
    pub fn peer_status(&self) -> Option<PeerStatus> {
        match &self.link {
            Link::Owner { state, .. } => Some(state.status()),
            _ => None,
        }
    }

    /// True if the peer is known to be gone: an owner whose server saw no peer attached, or an
    /// attached producer whose socket hung up.
    pub fn peer_gone(&self) -> bool {
        self.link.peer_gone()
    }

    /// The ring's fds, for an owner (to store them in systemd's fd store, for example).
    pub fn fds(&self) -> Option<&RingFds> {
        match &self.link {
            Link::Owner { fds, .. } => Some(fds),
            _ => None,
        }
    }

    /// How long [`wait_for_space`](Producer::wait_for_space) spins before it sleeps
    /// ([`DEFAULT_SPIN`] unless set; zero: sleep at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The space eventfd, readable when the consumer freed space after
    /// [`prepare_wait_for_space`](Producer::prepare_wait_for_space). For tokio `AsyncFd` or epoll.
    pub fn space_fd(&self) -> BorrowedFd<'_> {
        self.space_event.as_fd()
    }

    /// Arm the wait for room for a record of `len` payload bytes, then recheck. `Ok(false)`:
    /// there is room now, do not sleep (the wait is disarmed). `Ok(true)`: wait for
    /// [`space_fd`](Producer::space_fd) to become readable, then call
    /// [`finish_wait_for_space`](Producer::finish_wait_for_space). The arm-then-recheck order
    /// closes the lost-wakeup race.
    pub fn prepare_wait_for_space(&mut self, len: usize) -> Result<bool> {
        let needed = self.core.needed_for(len);
        self.core.prepare_wait(&self.mem, &self.link, needed)
    }

    /// Disarm the wait and reset the space eventfd.
    pub fn finish_wait_for_space(&mut self) {
        self.core.finish_wait(&self.mem);
        os::drain_eventfd(self.space_event.as_fd());
    }

    /// Block until a record of `len` payload bytes fits, the timeout passes (`None`: no
    /// timeout), or (attached producers) the owner hangs up. Spins briefly first.
    pub fn wait_for_space(&mut self, len: usize, timeout: Option<Duration>) -> Result<Readiness> {
        if len > self.max_payload() {
            return Err(Error::TooLarge {
                len,
                max: self.max_payload(),
                capacity: self.capacity(),
            });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let has_space = spin_until(self.spin, deadline, || {
            let needed = self.core.needed_for(len);
            self.core.has_space(&self.mem, &self.link, needed)
        })?;
        if has_space {
            return Ok(Readiness::Ready);
        }
        loop {
            if !self.prepare_wait_for_space(len)? {
                return Ok(Readiness::Ready);
            }
            // As in Consumer::wait: reset the eventfd before sleeping, then look again.
            if os::drain_eventfd(self.space_event.as_fd()) != 0 {
                let needed = self.core.needed_for(len);
                if self.core.has_space(&self.mem, &self.link, needed)? {
                    self.core.finish_wait(&self.mem);
                    return Ok(Readiness::Ready);
                }
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let [_, sock] = os::poll_fds(
                [Some(self.space_event.as_fd()), self.link.socket()],
                remaining,
            )?;
            self.core.finish_wait(&self.mem);
            let needed = self.core.needed_for(len);
            if self.core.has_space(&self.mem, &self.link, needed)? {
                return Ok(Readiness::Ready);
            }
            if sock.hangup {
                return Ok(Readiness::PeerGone);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Readiness::TimedOut);
            }
        }
    }
}
