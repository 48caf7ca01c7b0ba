//! The ring protocol of FORMAT.md sections 4, 5 and 7, written once, generic over how shared
//! memory is reached.
//!
//! [`RingMem`] is implemented by the real mapping (`sys::shm::MappedRing`) and, in the loom
//! models, by loom atomics, so the exact code that runs in production is the code the models
//! check. The cores hold only private state (what a side trusts); every value loaded from memory
//! the peer writes is checked here before it is used.

use crate::format::{
    decode_record_header, encode_record_header, max_payload, record_total, WrapMode,
    FIRST_RESERVED_TYPE, FLAG_FINISHED, FLAG_REPLACED, RECORD_ALIGN, RECORD_HEADER_LEN, TYPE_PAD,
};
use crate::{Error, Result};
use std::sync::atomic::Ordering;

/// The shared u64 fields of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    ProducerPos,
    ProducerSleep,
    Drops,
    ProducerFlags,
    ConsumerPos,
    ConsumerSleep,
}

/// Access to one ring's shared memory.
pub(crate) trait RingMem {
    /// Atomic load of a shared field.
    fn load(&self, field: Field, order: Ordering) -> u64;
    /// Atomic store of a shared field this side owns.
    fn store(&self, field: Field, value: u64, order: Ordering);
    /// A full (sequentially consistent) fence.
    fn fence(&self);
    /// Relaxed atomic load of the data word at `offset` (8-aligned, below the capacity).
    fn load_data(&self, offset: usize) -> u64;
    /// Relaxed atomic store of the data word at `offset` (8-aligned, below the capacity).
    fn store_data(&self, offset: usize, value: u64);
    /// Hint that the cache line holding data offset `offset` (below the capacity) will be read
    /// soon. Not a memory access: it changes nothing any load returns.
    fn prefetch_read(&self, _offset: usize) {}
}

/// How much of a record [`ConsumerCore::next`] asks the CPU to fetch at once: the lines of a
/// record then cross from the producer's CPU together rather than one after another as the
/// application reads them (measured: one-way latency of 1 KiB packets 7 % lower); beyond this
/// the CPU's own prefetcher follows the reads.
const RECORD_PREFETCH: usize = 1024;

/// Where a producer shares its checked release with the owner's ring server (FORMAT.md
/// section 6): `PeerState` for an owner, nothing for other producers. Used only on the slow
/// path, and passed beside the memory so the fast path does not carry it.
pub(crate) trait ReleaseHooks {
    /// The highest consumer position known to be a checked release (a record boundary the
    /// consumer released), as the ring server last saw it; 0 if nobody checks.
    fn checked_release(&self) -> u64;
    /// Tell the ring server that `pos` is a checked release. Called before the producer writes
    /// over the space it frees.
    fn set_checked_release(&self, pos: u64);
}

/// What one check of a consumer's release by the owner's ring server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReleaseCheck {
    /// `consumer_pos` is a release on a record boundary: it becomes the checked release.
    Checked(u64),
    /// The consumer broke the ring: why.
    Broken(String),
    /// The producer moved the checked release during the walk (and may have written over the
    /// headers read): try again.
    Moving,
}

/// One check of `consumer_pos = c` against the producer's records, by a party other than the
/// producer (the owner's ring server): `checked` is the checked release read first, `p` the
/// producer position, `header_at` reads a record header, `checked_again` reads the checked
/// release after an acquire fence. The reader half of a sequence lock: the producer raises the
/// checked release (and fences) before it writes over freed space, so an unchanged value means
/// the headers read were intact.
pub(crate) fn check_release(
    capacity: u64,
    wrap: WrapMode,
    (checked, c, p): (u64, u64, u64),
    header_at: impl FnMut(u64) -> Option<u64>,
    checked_again: impl FnOnce() -> u64,
) -> ReleaseCheck {
    // Read in the order checked, `c`, `p`, and all three only grow: `c < checked` and `c > p`
    // are definite. (`p - c <= capacity` is not checked here: with `c` read before `p`, a
    // moving consumer makes it fail falsely; the walk bounds `c` instead, and `p` is within
    // `checked + capacity` whenever `checked` did not move.)
    if !c.is_multiple_of(RECORD_ALIGN as u64) || c > p || c < checked {
        return ReleaseCheck::Broken(format!(
            "consumer position {c} is impossible (producer at {p}, last checked release {checked}, capacity {capacity})"
        ));
    }
    let lands = lands_on_boundary(capacity, wrap, checked, c, header_at);
    if checked_again() != checked {
        return ReleaseCheck::Moving;
    }
    if lands {
        ReleaseCheck::Checked(c)
    } else {
        ReleaseCheck::Broken(format!(
            "consumer position {c} is not on a record boundary (producer at {p})"
        ))
    }
}

/// Walks the records from `from`, a record boundary, towards `to`, reading each record header
/// with `header_at(position)`: true if a record ends exactly at `to` (or `from == to`). The
/// headers must be the producer's own (the producer, or its owner's ring server reading the
/// region the peer cannot write), between a release it checked and what it published, which
/// it has not overwritten since. Costs one header load per record.
pub(crate) fn lands_on_boundary(
    capacity: u64,
    wrap: WrapMode,
    from: u64,
    to: u64,
    mut header_at: impl FnMut(u64) -> Option<u64>,
) -> bool {
    let mut pos = from;
    while pos < to {
        let Some(word) = header_at(pos) else {
            return false;
        };
        let (len, ty, _) = decode_record_header(word);
        let total = if ty == TYPE_PAD && wrap == WrapMode::Pad {
            capacity - (pos & (capacity - 1))
        } else {
            record_total(len as usize) as u64
        };
        // Our own headers are well formed; a bound keeps a bug from looping forever.
        if total > capacity {
            return false;
        }
        pos += total;
    }
    pos == to
}

/// Signals the peer's eventfd.
pub(crate) trait Wake {
    fn wake(&self);
}

/// A record found by the consumer, located in the data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordLoc {
    /// Data-area offset of the payload (8-aligned). In mirror mode it may run past the capacity
    /// into the second mapping.
    pub payload_offset: usize,
    pub len: usize,
    pub ty: u16,
    pub flags: u16,
}

/// Positions count bytes and never come near 2^63 (centuries at any rate a machine can move);
/// a side that resumes a ring refuses larger ones, so that no later sum of a position and a
/// record size or the capacity can overflow.
const MAX_POSITION: u64 = 1 << 63;

fn corrupt(msg: String) -> Error {
    Error::Corrupt(msg)
}

/// What [`ConsumerCore::next`] found. Small and `Copy`, so the hot path returns it in
/// registers; the corruption message stays in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Record(RecordLoc),
    Empty,
    Corrupt,
}

/// What [`ProducerCore::reserve`] did: small and `Copy`, so the hot path returns it in
/// registers; [`ProducerCore::reserve_error`] builds the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// Reserved; the payload starts at this data offset.
    Payload(usize),
    Full {
        needed: u64,
    },
    TooLarge,
    BadType,
    Corrupt,
}

/// The producer's private state.
#[derive(Debug)]
pub(crate) struct ProducerCore {
    capacity: u64,
    wrap: WrapMode,
    /// `max_payload(capacity)`.
    max_payload: usize,
    /// Where a record must end, as a data offset, to need no padding record: the capacity in
    /// pad mode, unbounded in mirror mode.
    lap_end: u64,
    /// Where the free space we know of ends: `consumer_cache + capacity`, or 0 once the ring is
    /// corrupt (so that the fast path of `reserve` never passes and the slow path reports it).
    limit: u64,
    /// Last value stored to `producer_pos`.
    published: u64,
    /// End of the records reserved so far (published or pending).
    write_pos: u64,
    /// Last checked value of `consumer_pos`.
    consumer_cache: u64,
    /// The consumer sleep word value we last signalled.
    last_signalled: u64,
    /// Our own sleep word (even: awake).
    sleep_seq: u64,
    drops: u64,
    corrupt: Option<String>,
    /// The last positions published (record boundaries known without reading the records
    /// back), round-robin at `recent_at`: a consumer that releases what it read releases one of
    /// them, and its position is then checked without a walk (which would read every released
    /// record's header, a cache line the consumer just had, before it is written over).
    recent: [u64; RECENT],
    recent_at: usize,
}

/// How many recent publishes the producer keeps (one cache line).
const RECENT: usize = 8;

impl ProducerCore {
    /// State for a producer of a ring whose shared fields may already hold a history (a new
    /// ring has all zeroes; a producer that attaches to a served ring continues it).
    pub(crate) fn resume(mem: &impl RingMem, capacity: usize, wrap: WrapMode) -> Result<Self> {
        let published = mem.load(Field::ProducerPos, Ordering::Acquire);
        let consumer = mem.load(Field::ConsumerPos, Ordering::Acquire);
        Self::resume_at(mem, capacity, wrap, published, consumer)
    }

    /// Resume at positions the caller read and checked (a ring taken back after a restart).
    pub(crate) fn resume_at(
        mem: &impl RingMem,
        capacity: usize,
        wrap: WrapMode,
        published: u64,
        consumer: u64,
    ) -> Result<Self> {
        let capacity = capacity as u64;
        if published > MAX_POSITION
            || !published.is_multiple_of(RECORD_ALIGN as u64)
            || !consumer.is_multiple_of(RECORD_ALIGN as u64)
            || consumer > published
            || published - consumer > capacity
        {
            return Err(corrupt(format!(
                "positions out of range at attach: producer {published}, consumer {consumer}, capacity {capacity}"
            )));
        }
        let sleep = mem.load(Field::ProducerSleep, Ordering::Relaxed);
        let sleep_seq = sleep.wrapping_add(1) & !1;
        if sleep != sleep_seq {
            mem.store(Field::ProducerSleep, sleep_seq, Ordering::Relaxed);
        }
        Ok(ProducerCore {
            capacity,
            wrap,
            max_payload: max_payload(capacity as usize),
            lap_end: match wrap {
                WrapMode::Pad => capacity,
                WrapMode::Mirror => u64::MAX,
            },
            limit: consumer + capacity,
            published,
            write_pos: published,
            consumer_cache: consumer,
            last_signalled: 0,
            sleep_seq,
            drops: mem.load(Field::Drops, Ordering::Relaxed),
            corrupt: None,
            recent: [published; RECENT],
            recent_at: 0,
        })
    }

    fn check_usable(&self) -> Result<()> {
        match &self.corrupt {
            Some(msg) => Err(corrupt(msg.clone())),
            None => Ok(()),
        }
    }

    /// Reload and check `consumer_pos`: in range, not backwards, and on a record boundary (we
    /// walk our own record headers from the last checked release to it; amortised, one load
    /// per released record, and only on this slow path). Out of line, so the fast path of
    /// `reserve` that calls it compiles as before.
    #[cold]
    #[inline(never)]
    fn refresh_consumer(&mut self, mem: &impl RingMem, hooks: &impl ReleaseHooks) -> Result<()> {
        // A release the owner's server checked since is as good as one we checked.
        let checked = hooks.checked_release();
        let floor = if checked > self.consumer_cache && checked <= self.published {
            checked
        } else {
            self.consumer_cache
        };
        let c = mem.load(Field::ConsumerPos, Ordering::Acquire);
        let in_range = c.is_multiple_of(RECORD_ALIGN as u64)
            && c <= self.published
            && self.published - c <= self.capacity
            && c >= floor;
        if !in_range {
            return Err(self.bad_consumer_position(c, floor, "is impossible"));
        }
        // Walk only from the nearest boundary we know below `c`: usually `c` is one of them.
        let known = self
            .recent
            .iter()
            .copied()
            .filter(|&r| r >= floor && r <= c)
            .max()
            .unwrap_or(floor);
        if known != c && !self.lands_on_boundary(mem, known, c) {
            return Err(self.bad_consumer_position(c, floor, "is not on a record boundary"));
        }
        if c != self.consumer_cache {
            self.consumer_cache = c;
            self.limit = c + self.capacity;
            hooks.set_checked_release(c);
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn bad_consumer_position(&mut self, c: u64, floor: u64, what: &str) -> Error {
        let msg = format!(
            "consumer position {c} {what} (producer at {}, last checked consumer position {floor}, capacity {})",
            self.published, self.capacity
        );
        self.corrupt = Some(msg.clone());
        self.limit = 0;
        corrupt(msg)
    }

    fn lands_on_boundary(&self, mem: &impl RingMem, from: u64, to: u64) -> bool {
        let mask = self.capacity - 1;
        lands_on_boundary(self.capacity, self.wrap, from, to, |pos| {
            Some(mem.load_data((pos & mask) as usize))
        })
    }

    /// Check `consumer_pos` now (an owner whose consumer detached, say).
    pub(crate) fn check_consumer(
        &mut self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
    ) -> Result<()> {
        self.check_usable()?;
        self.refresh_consumer(mem, hooks)
    }

    /// The records between the last checked release and the published position, in order, as
    /// `(payload offset, len, type, flags)`: what a consumer has not (verifiably) released.
    /// Padding is skipped. Valid even after the consumer broke the ring: we never overwrote
    /// them.
    pub(crate) fn unreleased(
        &self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
    ) -> Vec<RecordLoc> {
        let checked = hooks.checked_release();
        let mut pos = if checked > self.consumer_cache && checked <= self.published {
            checked
        } else {
            self.consumer_cache
        };
        let mask = self.capacity - 1;
        let mut out = Vec::new();
        while pos < self.published {
            let offset = (pos & mask) as usize;
            let (len, ty, flags) = decode_record_header(mem.load_data(offset));
            if ty == TYPE_PAD && self.wrap == WrapMode::Pad {
                pos += self.capacity - offset as u64;
                continue;
            }
            out.push(RecordLoc {
                payload_offset: offset + RECORD_HEADER_LEN,
                len: len as usize,
                ty,
                flags,
            });
            pos += record_total(len as usize) as u64;
        }
        out
    }

    pub(crate) fn free(&self) -> u64 {
        self.capacity - (self.write_pos - self.consumer_cache)
    }

    /// Bytes of ring space a record of `len` bytes needs at the current write position.
    fn space_needed(&self, total: u64) -> u64 {
        let offset = self.write_pos & (self.capacity - 1);
        let tail = self.capacity - offset;
        match self.wrap {
            WrapMode::Pad if total > tail => tail + total,
            _ => total,
        }
    }

    /// Reserve a record; returns the data offset of its payload. The record header is written;
    /// the record becomes visible at the next [`publish`](Self::publish).
    ///
    /// The common case (a legal record that needs no padding and fits in the free space known
    /// without reloading `consumer_pos`) is a few instructions, inlined into the caller; the
    /// rest is [`reserve_slow`](Self::reserve_slow).
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
        len: usize,
        ty: u16,
        flags: u16,
    ) -> Reserved {
        if len <= self.max_payload && ty < FIRST_RESERVED_TYPE {
            let total = record_total(len) as u64;
            let offset = self.write_pos & (self.capacity - 1);
            // `limit` is 0 once the ring is corrupt, so this fails then.
            if offset + total <= self.lap_end && self.write_pos + total <= self.limit {
                mem.store_data(offset as usize, encode_record_header(len as u32, ty, flags));
                self.write_pos += total;
                return Reserved::Payload(offset as usize + RECORD_HEADER_LEN);
            }
        }
        self.reserve_slow(mem, hooks, len, ty, flags)
    }

    /// [`reserve`](Self::reserve) when the fast path does not apply: errors, a padding record,
    /// or a reload of `consumer_pos`.
    #[inline(never)]
    fn reserve_slow(
        &mut self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
        len: usize,
        ty: u16,
        flags: u16,
    ) -> Reserved {
        if self.corrupt.is_some() {
            return Reserved::Corrupt;
        }
        if ty >= FIRST_RESERVED_TYPE {
            return Reserved::BadType;
        }
        if len > self.max_payload {
            return Reserved::TooLarge;
        }
        let total = record_total(len) as u64;
        let needed = self.space_needed(total);
        if needed > self.free() {
            if self.refresh_consumer(mem, hooks).is_err() {
                return Reserved::Corrupt;
            }
            if needed > self.free() {
                return Reserved::Full { needed };
            }
        }
        let mut offset = (self.write_pos & (self.capacity - 1)) as usize;
        if needed != total {
            let tail = self.capacity as usize - offset;
            let pad = encode_record_header((tail - RECORD_HEADER_LEN) as u32, TYPE_PAD, 0);
            mem.store_data(offset, pad);
            self.write_pos += tail as u64;
            offset = 0;
        }
        mem.store_data(offset, encode_record_header(len as u32, ty, flags));
        self.write_pos += total;
        Reserved::Payload(offset + RECORD_HEADER_LEN)
    }

    /// The error for a failed [`reserve`](Self::reserve).
    #[cold]
    #[inline(never)]
    pub(crate) fn reserve_error(&self, r: Reserved, len: usize, ty: u16) -> Error {
        match r {
            Reserved::Full { needed } => Error::Full {
                needed: needed as usize,
                free: self.free() as usize,
            },
            Reserved::TooLarge => Error::TooLarge {
                len,
                max: max_payload(self.capacity as usize),
                capacity: self.capacity as usize,
            },
            Reserved::BadType => Error::ReservedType(ty),
            Reserved::Corrupt | Reserved::Payload(_) => corrupt(
                self.corrupt
                    .clone()
                    .unwrap_or_else(|| "ring corrupt".into()),
            ),
        }
    }

    /// Records reserved but not yet published.
    pub(crate) fn pending(&self) -> bool {
        self.write_pos != self.published
    }

    /// Publish every reserved record with one release store, then wake the consumer if (and only
    /// if) it announced it is going to sleep.
    pub(crate) fn publish(&mut self, mem: &impl RingMem, wake: &impl Wake) {
        if self.write_pos == self.published {
            return;
        }
        mem.store(Field::ProducerPos, self.write_pos, Ordering::Release);
        self.published = self.write_pos;
        self.recent[self.recent_at % RECENT] = self.write_pos;
        self.recent_at = self.recent_at.wrapping_add(1);
        mem.fence();
        let s = mem.load(Field::ConsumerSleep, Ordering::Relaxed);
        if s & 1 == 1 && s != self.last_signalled {
            self.last_signalled = s;
            wake.wake();
        }
    }

    /// Forget the reserved, unpublished records.
    pub(crate) fn abandon(&mut self) {
        self.write_pos = self.published;
    }

    pub(crate) fn record_drops(&mut self, mem: &impl RingMem, n: u64) {
        self.drops = self.drops.wrapping_add(n);
        mem.store(Field::Drops, self.drops, Ordering::Relaxed);
    }

    pub(crate) fn drops(&self) -> u64 {
        self.drops
    }

    /// Publish what is pending, mark the ring finished and wake the consumer unconditionally.
    pub(crate) fn finish(&mut self, mem: &impl RingMem, wake: &impl Wake) {
        self.publish(mem, wake);
        mem.store(Field::ProducerFlags, FLAG_FINISHED, Ordering::Release);
        mem.fence();
        wake.wake();
    }

    /// Clear `FINISHED` (a restarted producer continuing its ring, before it publishes again).
    pub(crate) fn clear_finished(&self, mem: &impl RingMem) {
        let flags = mem.load(Field::ProducerFlags, Ordering::Relaxed);
        if flags & FLAG_FINISHED != 0 {
            mem.store(
                Field::ProducerFlags,
                flags & !FLAG_FINISHED,
                Ordering::Release,
            );
        }
    }

    /// Mark the ring replaced (FORMAT.md section 6) and wake the consumer, so a waiting one looks
    /// at it and finds its link gone.
    pub(crate) fn mark_replaced(&mut self, mem: &impl RingMem, wake: &impl Wake) {
        let flags = mem.load(Field::ProducerFlags, Ordering::Relaxed);
        mem.store(
            Field::ProducerFlags,
            flags | FLAG_REPLACED,
            Ordering::Release,
        );
        mem.fence();
        wake.wake();
    }

    /// Announce that we will sleep until `needed` bytes are free. Returns `Ok(false)` if they
    /// already are (do not sleep), `Ok(true)` if the caller should wait on the space eventfd and
    /// then call [`finish_wait`](Self::finish_wait).
    pub(crate) fn prepare_wait(
        &mut self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
        needed: u64,
    ) -> Result<bool> {
        self.check_usable()?;
        if self.sleep_seq & 1 == 0 {
            self.sleep_seq += 1;
            mem.store(Field::ProducerSleep, self.sleep_seq, Ordering::Relaxed);
        }
        mem.fence();
        self.refresh_consumer(mem, hooks)?;
        if self.free() >= needed.min(self.capacity) {
            self.finish_wait(mem);
            return Ok(false);
        }
        Ok(true)
    }

    /// Are `needed` bytes free? Reloads the consumer position only if the cached one says no.
    pub(crate) fn has_space(
        &mut self,
        mem: &impl RingMem,
        hooks: &impl ReleaseHooks,
        needed: u64,
    ) -> Result<bool> {
        self.check_usable()?;
        let needed = needed.min(self.capacity);
        if self.free() >= needed {
            return Ok(true);
        }
        self.refresh_consumer(mem, hooks)?;
        Ok(self.free() >= needed)
    }

    pub(crate) fn finish_wait(&mut self, mem: &impl RingMem) {
        if self.sleep_seq & 1 == 1 {
            self.sleep_seq += 1;
            mem.store(Field::ProducerSleep, self.sleep_seq, Ordering::Relaxed);
        }
    }

    /// Space a record of `len` payload bytes needs now (for waiting).
    pub(crate) fn needed_for(&self, len: usize) -> u64 {
        self.space_needed(record_total(len) as u64)
    }

    pub(crate) fn positions(&self) -> (u64, u64) {
        (self.published, self.consumer_cache)
    }
}

/// The consumer's private state.
#[derive(Debug)]
pub(crate) struct ConsumerCore {
    capacity: u64,
    wrap: WrapMode,
    /// Where a record may end, as a data offset: the capacity in pad mode, unbounded in mirror
    /// mode (a record may run into the second view).
    lap_end: usize,
    /// Last value stored to `consumer_pos`.
    released: u64,
    /// Start of the next record to read.
    read_pos: u64,
    /// Last checked value of `producer_pos`.
    producer_cache: u64,
    /// The producer sleep word value we last signalled.
    last_signalled: u64,
    /// Our own sleep word (even: awake).
    sleep_seq: u64,
    /// We write the consumer page (false: a read-only drain of an old ring).
    writes_page: bool,
    corrupt: Option<String>,
}

impl ConsumerCore {
    /// State for a consumer that continues from the ring's `consumer_pos`.
    pub(crate) fn resume(
        mem: &impl RingMem,
        capacity: usize,
        wrap: WrapMode,
        owns_consumer_page: bool,
    ) -> Result<Self> {
        let capacity = capacity as u64;
        let released = mem.load(Field::ConsumerPos, Ordering::Acquire);
        let mut core = ConsumerCore {
            capacity,
            wrap,
            lap_end: match wrap {
                WrapMode::Pad => capacity as usize,
                WrapMode::Mirror => usize::MAX,
            },
            released,
            read_pos: released,
            producer_cache: released,
            last_signalled: 0,
            sleep_seq: 0,
            writes_page: owns_consumer_page,
            corrupt: None,
        };
        if !released.is_multiple_of(RECORD_ALIGN as u64) || released > MAX_POSITION {
            return Err(corrupt(format!(
                "consumer position {released} is not a multiple of {RECORD_ALIGN} below 2^63"
            )));
        }
        core.refresh_producer_checked(mem)?;
        if owns_consumer_page {
            let sleep = mem.load(Field::ConsumerSleep, Ordering::Relaxed);
            core.sleep_seq = sleep.wrapping_add(1) & !1;
            if sleep != core.sleep_seq {
                mem.store(Field::ConsumerSleep, core.sleep_seq, Ordering::Relaxed);
            }
        }
        Ok(core)
    }

    /// Record why the ring is corrupt (first reason wins); kept out of the hot path.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, msg: String) -> Next {
        if self.corrupt.is_none() {
            self.corrupt = Some(msg);
        }
        Next::Corrupt
    }

    /// The error for a ring found corrupt.
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupt_error(&self) -> Error {
        corrupt(
            self.corrupt
                .clone()
                .unwrap_or_else(|| "ring corrupt".into()),
        )
    }

    fn check_usable(&self) -> Result<()> {
        match &self.corrupt {
            Some(_) => Err(self.corrupt_error()),
            None => Ok(()),
        }
    }

    #[cold]
    #[inline(never)]
    fn bad_producer_position(&mut self, p: u64) {
        let msg = format!(
            "producer position {p} is impossible (read up to {}, released {}, previous producer position {}, capacity {})",
            self.read_pos, self.released, self.producer_cache, self.capacity
        );
        self.fail(msg);
    }

    /// Reload and check `producer_pos`; false if it is impossible (the ring is then corrupt).
    #[inline]
    fn refresh_producer(&mut self, mem: &impl RingMem) -> bool {
        let p = mem.load(Field::ProducerPos, Ordering::Acquire);
        if !p.is_multiple_of(RECORD_ALIGN as u64)
            || p < self.read_pos
            || p < self.producer_cache
            || p - self.released > self.capacity
        {
            self.bad_producer_position(p);
            return false;
        }
        self.producer_cache = p;
        true
    }

    /// [`refresh_producer`](Self::refresh_producer) as a `Result`.
    fn refresh_producer_checked(&mut self, mem: &impl RingMem) -> Result<()> {
        if self.refresh_producer(mem) {
            Ok(())
        } else {
            Err(self.corrupt_error())
        }
    }

    /// The next committed record, checked; `Empty` if there is none; `Corrupt` if the peer
    /// broke the format (the reason is kept, see [`corrupt_error`](Self::corrupt_error)).
    #[inline]
    pub(crate) fn next(&mut self, mem: &impl RingMem) -> Next {
        if self.corrupt.is_some() {
            return Next::Corrupt;
        }
        loop {
            if self.read_pos == self.producer_cache {
                if !self.refresh_producer(mem) {
                    return Next::Corrupt;
                }
                if self.read_pos == self.producer_cache {
                    return Next::Empty;
                }
            }
            let offset = (self.read_pos & (self.capacity - 1)) as usize;
            let (len, ty, flags) = decode_record_header(mem.load_data(offset));
            let len = len as usize;
            let cap = self.capacity as usize;
            let total = record_total(len);
            if ty < FIRST_RESERVED_TYPE
                && total <= cap / 2
                && self.read_pos + total as u64 <= self.producer_cache
                && offset + total <= self.lap_end
            {
                self.read_pos += total as u64;
                // Up to two lines the CPU fetches together by itself (adjacent-line prefetch).
                if total > 128 {
                    self.prefetch_record(mem, offset, total);
                }
                return Next::Record(RecordLoc {
                    payload_offset: offset + RECORD_HEADER_LEN,
                    len,
                    ty,
                    flags,
                });
            }
            if ty == TYPE_PAD && self.skip_padding(offset, len) {
                continue;
            }
            return self.bad_record(offset, len, ty);
        }
    }

    /// Ask for the cache lines of the record at `offset` after its first (which holds the header
    /// just read), up to `RECORD_PREFETCH` bytes. The record is published: no line the producer
    /// still writes is pulled away from it.
    #[inline]
    fn prefetch_record(&self, mem: &impl RingMem, offset: usize, total: usize) {
        let end = offset + total.min(RECORD_PREFETCH);
        let mut line = (offset | 63) + 1;
        while line < end {
            mem.prefetch_read(line & (self.capacity as usize - 1));
            line += 64;
        }
    }

    /// Skip a padding record at `offset` if it is legal; false (and corrupt) otherwise.
    fn skip_padding(&mut self, offset: usize, len: usize) -> bool {
        let cap = self.capacity as usize;
        if self.wrap != WrapMode::Pad {
            let msg = format!(
                "padding record at position {} in a mirror-mode ring",
                self.read_pos
            );
            self.fail(msg);
            return false;
        }
        if offset + RECORD_HEADER_LEN + len != cap {
            let msg = format!(
                "padding record at offset {offset} has length {len}, which does not end the lap (capacity {cap})"
            );
            self.fail(msg);
            return false;
        }
        let next = self.read_pos + (cap - offset) as u64;
        if next > self.producer_cache {
            let msg = format!(
                "padding record at position {} runs past the producer position {}",
                self.read_pos, self.producer_cache
            );
            self.fail(msg);
            return false;
        }
        self.read_pos = next;
        true
    }

    /// Say which check a record header failed.
    #[cold]
    #[inline(never)]
    fn bad_record(&mut self, offset: usize, len: usize, ty: u16) -> Next {
        if self.corrupt.is_some() {
            return Next::Corrupt;
        }
        let cap = self.capacity as usize;
        let total = record_total(len);
        let msg = if ty >= FIRST_RESERVED_TYPE {
            format!(
                "record at position {} has reserved type {ty:#06x}",
                self.read_pos
            )
        } else if total > cap / 2 {
            format!(
                "record at position {} has length {len}, above the ring's limit {}",
                self.read_pos,
                max_payload(cap)
            )
        } else if self.read_pos + total as u64 > self.producer_cache {
            format!(
                "record at position {} of {total} bytes runs past the producer position {}",
                self.read_pos, self.producer_cache
            )
        } else {
            format!(
                "record at offset {offset} of {total} bytes crosses the end of a pad-mode ring (capacity {cap})"
            )
        };
        self.fail(msg)
    }

    /// Records have been read and not released.
    pub(crate) fn unreleased(&self) -> bool {
        self.read_pos != self.released
    }

    /// Release every record read so far with one release store, then wake the producer if it
    /// announced it is waiting for space.
    pub(crate) fn release(&mut self, mem: &impl RingMem, wake: &impl Wake) {
        if self.read_pos == self.released {
            return;
        }
        if !self.writes_page {
            self.released = self.read_pos;
            return;
        }
        mem.store(Field::ConsumerPos, self.read_pos, Ordering::Release);
        self.released = self.read_pos;
        mem.fence();
        let s = mem.load(Field::ProducerSleep, Ordering::Relaxed);
        if s & 1 == 1 && s != self.last_signalled {
            self.last_signalled = s;
            wake.wake();
        }
    }

    /// Is a record readable now, so that the next [`next`](Self::next) returns it (or finds the
    /// ring corrupt)? Reloads the producer position if everything seen was read, and skips a
    /// padding record, as `next` would: a producer that published a padding record without the
    /// record after it (FORMAT.md section 3 says they are committed together) has published
    /// nothing to read yet.
    pub(crate) fn has_data(&mut self, mem: &impl RingMem) -> Result<bool> {
        self.check_usable()?;
        loop {
            if self.read_pos == self.producer_cache {
                self.refresh_producer_checked(mem)?;
                if self.read_pos == self.producer_cache {
                    return Ok(false);
                }
            }
            if self.wrap != WrapMode::Pad {
                return Ok(true);
            }
            let offset = (self.read_pos & (self.capacity - 1)) as usize;
            let (len, ty, _) = decode_record_header(mem.load_data(offset));
            if ty != TYPE_PAD {
                return Ok(true);
            }
            if !self.skip_padding(offset, len as usize) {
                return Err(self.corrupt_error());
            }
        }
    }

    /// The owner replaced this ring (FORMAT.md section 6): what was not released is in the new
    /// one.
    pub(crate) fn is_replaced(&self, mem: &impl RingMem) -> bool {
        mem.load(Field::ProducerFlags, Ordering::Acquire) & FLAG_REPLACED != 0
    }

    /// The producer marked the ring finished and everything has been read.
    pub(crate) fn is_finished(&mut self, mem: &impl RingMem) -> Result<bool> {
        // Flags first: the producer stores its last position before the flag.
        let finished = mem.load(Field::ProducerFlags, Ordering::Acquire) & FLAG_FINISHED != 0;
        Ok(finished && !self.has_data(mem)?)
    }

    /// Announce that we will sleep until data arrives. `Ok(false)`: a record is there, do not
    /// sleep. `Ok(true)`: wait on the data eventfd, then call `finish_wait`.
    ///
    /// A ring that can never give more data is an error, so that no waiting loop can spin on it:
    /// [`Error::Finished`] once the producer finished it and every record was read, and
    /// [`Error::PeerGone`] for a read-only drain with nothing left to read (no producer signals
    /// it).
    pub(crate) fn prepare_wait(&mut self, mem: &impl RingMem) -> Result<bool> {
        self.check_usable()?;
        if !self.writes_page {
            if self.has_data(mem)? {
                return Ok(false);
            }
            return Err(if self.is_finished(mem)? {
                Error::Finished
            } else {
                Error::PeerGone
            });
        }
        if self.sleep_seq & 1 == 0 {
            self.sleep_seq += 1;
            mem.store(Field::ConsumerSleep, self.sleep_seq, Ordering::Relaxed);
        }
        mem.fence();
        // Flags first: the producer stores its last position before the flag.
        let finished = mem.load(Field::ProducerFlags, Ordering::Acquire) & FLAG_FINISHED != 0;
        let has_data = self.has_data(mem);
        if finished || !matches!(has_data, Ok(false)) {
            self.finish_wait(mem);
        }
        match has_data? {
            true => Ok(false),
            false if finished => Err(Error::Finished),
            false => Ok(true),
        }
    }

    pub(crate) fn finish_wait(&mut self, mem: &impl RingMem) {
        if self.writes_page && self.sleep_seq & 1 == 1 {
            self.sleep_seq += 1;
            mem.store(Field::ConsumerSleep, self.sleep_seq, Ordering::Relaxed);
        }
    }

    /// `(released, read, producer)` positions as this side knows them.
    pub(crate) fn positions(&self) -> (u64, u64, u64) {
        (self.released, self.read_pos, self.producer_cache)
    }

    pub(crate) fn corruption(&self) -> Option<&str> {
        self.corrupt.as_deref()
    }
}
