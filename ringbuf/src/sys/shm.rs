//! Shared-memory mappings of a ring and the atomic word accesses the protocol makes to them.

use crate::core::{Field, RingMem};
use crate::format::{
    StaticHeader, WrapMode, OFF_CONSUMER_POS, OFF_CONSUMER_SLEEP, OFF_DROPS, OFF_PRODUCER_FLAGS,
    OFF_PRODUCER_POS, OFF_PRODUCER_SLEEP,
};
use crate::{Error, Result};
use memmap2::{MmapOptions, MmapRaw};
use nix::sys::mman::{self, MapFlags, ProtFlags};
use std::cell::Cell;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// The smallest page size Linux has: every shared field of FORMAT.md section 1 lies below it.
const MIN_PAGE_SIZE: usize = 4096;
const _: () =
    assert!(OFF_PRODUCER_FLAGS + 8 <= MIN_PAGE_SIZE && OFF_CONSUMER_SLEEP + 8 <= MIN_PAGE_SIZE);

/// Read-only or writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadOnly,
    ReadWrite,
}

/// One `MAP_SHARED` mapping of a memfd, unmapped on drop.
///
/// The mapping is memmap2's `MmapRaw`: it hands out raw pointers only, never a slice, so no
/// Rust reference ever covers memory the peer may write. memmap2 cannot place a mapping at a
/// chosen address, which the mirror mode needs; see [`Mapping::mirrored`] for the one call made
/// by hand.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The whole range (for mirror mappings, header + twice the data).
    map: MmapRaw,
    access: Access,
    /// Send but not Sync, as before memmap2 (whose `MmapRaw` is both): the endpoints that own
    /// mappings promise `Send` only.
    _not_sync: PhantomData<Cell<()>>,
}

impl Mapping {
    /// Map `len` bytes of `fd` from offset 0.
    ///
    /// The caller checked that `fd` is a memfd of at least `len` bytes, sealed against
    /// shrinking, so the whole mapping stays backed (the safety argument of `sys`).
    pub(crate) fn plain(fd: BorrowedFd<'_>, len: usize, access: Access) -> Result<Mapping> {
        Mapping::map_fd(fd, len, access).map_err(|e| Error::io("mmap ring memfd", e))
    }

    fn map_fd(fd: BorrowedFd<'_>, len: usize, access: Access) -> std::io::Result<Mapping> {
        let mut options = MmapOptions::new();
        options.len(len);
        let map = match access {
            Access::ReadOnly => options.map_raw_read_only(&fd)?,
            Access::ReadWrite => options.map_raw(&fd)?,
        };
        Ok(Mapping {
            map,
            access,
            _not_sync: PhantomData,
        })
    }

    /// Map header page + data, then the data a second time right after it, so a record that
    /// crosses the end of the data area is contiguous (FORMAT.md section 3, mirror mode).
    ///
    /// memmap2 maps the memfd over the whole range, `page_size + 2 * capacity` bytes: its first
    /// `page_size + capacity` bytes are the memfd itself, the rest lies past the memfd's end
    /// (an access there would fault). One `mmap(MAP_FIXED)` then replaces that rest with the
    /// second view of the data area. That call is the one memmap2 cannot make (it has no way to
    /// choose the address), so it is made here, through nix, inside the range memmap2 owns and
    /// unmaps on drop, before anyone can touch it. Mapping past the end instead of reserving
    /// anonymous memory first keeps the range a shared file mapping throughout: nothing is
    /// charged against the commit limit, even with strict overcommit.
    pub(crate) fn mirrored(
        fd: BorrowedFd<'_>,
        page_size: usize,
        capacity: usize,
        access: Access,
    ) -> Result<Mapping> {
        let total = page_size + 2 * capacity;
        let mapping =
            Mapping::map_fd(fd, total, access).map_err(|e| Error::io("mmap ring memfd", e))?;
        let prot = match access {
            Access::ReadOnly => ProtFlags::PROT_READ,
            Access::ReadWrite => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        };
        let second = mapping.as_ptr().wrapping_add(page_size + capacity);
        let (Some(addr), Some(len)) = (
            NonZeroUsize::new(second as usize),
            NonZeroUsize::new(capacity),
        ) else {
            unreachable!("a mapping never starts at address 0 and capacity is at least one page");
        };
        // SAFETY: MAP_FIXED replaces `capacity` bytes at the end of the range `mapping` owns
        // (and unmaps on drop, also if this fails): the part past the memfd's end, which nothing
        // has read or borrowed. The memfd was checked to be page_size + capacity bytes and is
        // sealed against shrinking, so the second view of its data area stays backed.
        unsafe {
            mman::mmap(
                Some(addr),
                len,
                prot,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                fd,
                page_size as libc::off_t,
            )
        }
        .map_err(|e| Error::io("mmap ring data mirror", e))?;
        Ok(mapping)
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.access == Access::ReadWrite
    }

    /// Fault in every page of the mapping now, writable if the mapping is, so that later
    /// accesses take no page fault: one atomic access per page, a load, or for a writable
    /// mapping an atomic add of zero (which changes nothing the other side could see, and is
    /// no data race with its atomic accesses). Plain accesses rather than
    /// `MADV_POPULATE_READ`/`WRITE`: those need Linux 5.14, and emulators such as qemu-user
    /// accept and ignore them.
    pub(crate) fn prefault(&self, page_size: usize) {
        for offset in (0..self.len()).step_by(page_size) {
            // SAFETY: in bounds (offset < len) and 8-aligned (page-aligned mapping); atomic, so
            // racing with the peer's accesses is fine.
            let word = unsafe { AtomicU64::from_ptr(self.as_ptr().wrapping_add(offset).cast()) };
            match self.access {
                Access::ReadOnly => {
                    std::hint::black_box(word.load(Ordering::Relaxed));
                }
                Access::ReadWrite => {
                    word.fetch_add(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Atomic load of the u64 at `offset` (8-aligned, inside the mapping).
    #[inline]
    pub(crate) fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len(),
            "word offset {offset} outside mapping"
        );
        // SAFETY: in bounds and 8-aligned (mmap returns page-aligned addresses) by the assert;
        // an atomic access is allowed to race with the peer's writes.
        unsafe { AtomicU64::from_ptr(self.as_ptr().wrapping_add(offset).cast()).load(order) }
    }

    /// Atomic store of the u64 at `offset`; the mapping must be writable. (The rings store
    /// through `MappedRing`; the hostile-peer tests scribble through this.)
    #[cfg(test)]
    pub(crate) fn store_u64(&self, offset: usize, value: u64, order: Ordering) {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len(),
            "word offset {offset} outside mapping"
        );
        assert!(self.writable(), "store to a read-only ring mapping");
        // SAFETY: in bounds, aligned and writable by the asserts; atomic, so racing peers are
        // fine.
        unsafe {
            AtomicU64::from_ptr(self.as_ptr().wrapping_add(offset).cast()).store(value, order)
        }
    }
}

/// A ring's two mappings as one process sees them.
///
/// The hot accessors (the shared fields, data words, payloads) go through pointers computed and
/// checked once, when the ring is mapped, so that each access is one instruction and no bounds
/// check: the field offsets are constants below the page size (which every mapping spans), and a
/// data offset is masked into the data area. They are `#[inline]`: an application that links
/// this crate without LTO gets them inlined into its own loop.
#[derive(Debug)]
pub(crate) struct MappedRing {
    region: Mapping,
    consumer_page: Mapping,
    capacity: usize,
    /// Bytes of data addressable from the data start: capacity, or twice it when mirrored.
    data_span: usize,
    /// Start of the header page (`region`'s first byte).
    header: NonNull<u8>,
    /// Start of the consumer page (`consumer_page`'s first byte).
    consumer: NonNull<u8>,
    /// Start of the data area (`header + page_size`).
    data: NonNull<u8>,
    /// `(capacity - 1) & !7`: masks any offset into an 8-aligned word of the data area.
    word_mask: usize,
}

// SAFETY: the pointers point into the two mappings this value owns (and unmaps on drop); they
// are used only through `&self`/`&mut self` like the mappings themselves, which are `Send`.
unsafe impl Send for MappedRing {}

impl MappedRing {
    /// Map a ring whose fds were checked. `region`/`consumer` say which parts this process
    /// writes.
    pub(crate) fn map(
        region_fd: BorrowedFd<'_>,
        consumer_fd: BorrowedFd<'_>,
        header: &StaticHeader,
        region: Access,
        consumer: Access,
    ) -> Result<MappedRing> {
        let region_map = match header.wrap {
            WrapMode::Pad => Mapping::plain(region_fd, header.region_len(), region)?,
            WrapMode::Mirror => {
                Mapping::mirrored(region_fd, header.page_size, header.capacity, region)?
            }
        };
        let consumer_page = Mapping::plain(consumer_fd, header.page_size, consumer)?;
        // Every field offset lies below the smallest page size; the region holds the header
        // page and the data area, the consumer page one page. (StaticHeader was checked: a
        // power-of-two capacity of at least one page.)
        assert!(
            header.page_size >= MIN_PAGE_SIZE
                && header.capacity.is_power_of_two()
                && region_map.len() >= header.page_size + header.capacity
                && consumer_page.len() >= header.page_size,
            "ring mapped with impossible sizes"
        );
        let base = |m: &Mapping| NonNull::new(m.as_ptr()).expect("a mapping is never at address 0");
        let header_ptr = base(&region_map);
        let consumer_ptr = base(&consumer_page);
        let data = NonNull::new(header_ptr.as_ptr().wrapping_add(header.page_size))
            .expect("inside a mapping");
        Ok(MappedRing {
            region: region_map,
            consumer_page,
            capacity: header.capacity,
            data_span: match header.wrap {
                WrapMode::Pad => header.capacity,
                WrapMode::Mirror => 2 * header.capacity,
            },
            header: header_ptr,
            consumer: consumer_ptr,
            data,
            word_mask: (header.capacity - 1) & !7,
        })
    }

    /// The shared field `field`: its word, and whether this process may write it.
    #[inline]
    fn field(&self, field: Field) -> (&AtomicU64, bool) {
        let (base, offset, writable) = match field {
            Field::ProducerPos => (self.header, OFF_PRODUCER_POS, self.region.writable()),
            Field::ProducerSleep => (self.header, OFF_PRODUCER_SLEEP, self.region.writable()),
            Field::Drops => (self.header, OFF_DROPS, self.region.writable()),
            Field::ProducerFlags => (self.header, OFF_PRODUCER_FLAGS, self.region.writable()),
            Field::ConsumerPos => (
                self.consumer,
                OFF_CONSUMER_POS,
                self.consumer_page.writable(),
            ),
            Field::ConsumerSleep => (
                self.consumer,
                OFF_CONSUMER_SLEEP,
                self.consumer_page.writable(),
            ),
        };
        // SAFETY: every field offset is a constant multiple of 8 below MIN_PAGE_SIZE, and each
        // base starts a page-aligned mapping of at least one page (checked in `map`), which
        // lives as long as `self`. Atomic accesses may race with the peer's.
        let word = unsafe { AtomicU64::from_ptr(base.as_ptr().wrapping_add(offset).cast()) };
        (word, writable)
    }

    /// The data word at `offset`, masked into the data area (the protocol passes 8-aligned
    /// offsets below the capacity; the mask makes any other value harmless).
    #[inline]
    fn data_word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset & word_mask` is 8-aligned and below the capacity, so the word lies in
        // the data area of the mapping (checked in `map`), 8-aligned because the mapping is
        // page-aligned. Atomic accesses may race with the peer's.
        unsafe {
            AtomicU64::from_ptr(
                self.data
                    .as_ptr()
                    .wrapping_add(offset & self.word_mask)
                    .cast(),
            )
        }
    }

    /// Fault in every page of both mappings (see [`Mapping::prefault`]).
    pub(crate) fn prefault(&self) {
        let page_size = crate::sys::os::page_size();
        self.region.prefault(page_size);
        self.consumer_page.prefault(page_size);
    }

    /// Address space this ring occupies in this process (mirror mode reserves the data twice;
    /// the second view costs no memory).
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.region.len() + self.consumer_page.len()
    }

    /// A checked view of `len` payload bytes at data offset `offset`; `None` if it would leave
    /// the data area (the protocol checks make that impossible; this is the last line).
    #[inline]
    pub(crate) fn payload(&self, offset: usize, len: usize) -> Option<Payload<'_>> {
        let padded = len.checked_add(7)? & !7;
        if !offset.is_multiple_of(8) || offset.checked_add(padded)? > self.data_span {
            return None;
        }
        // In bounds: offset + padded <= data_span, and the mapping holds page_size + data_span.
        let base = self.data.as_ptr().wrapping_add(offset);
        Some(Payload {
            base,
            start: 0,
            len,
            _ring: PhantomData,
        })
    }

    /// The writable payload bytes of a record this producer reserved and has not published.
    /// The reservation logic guarantees the range is free space no one else writes.
    #[inline]
    pub(crate) fn payload_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(self.region.writable(), "payload_mut on a read-only ring");
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.data_span),
            "reservation outside the data area"
        );
        // SAFETY: in bounds of the writable mapping (asserts). The peer cannot write this region
        // (it maps it read-only and the memfd is sealed F_SEAL_FUTURE_WRITE, or we are the
        // attached producer of a ring whose owner only reads it), the range is reserved free
        // space, and the &mut borrows the endpoint, so nothing else aliases it meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().wrapping_add(offset), len) }
    }
}

impl RingMem for MappedRing {
    #[inline]
    fn load(&self, field: Field, order: Ordering) -> u64 {
        self.field(field).0.load(order)
    }

    #[inline]
    fn store(&self, field: Field, value: u64, order: Ordering) {
        let (word, writable) = self.field(field);
        assert!(writable, "store to a read-only ring mapping");
        word.store(value, order)
    }

    #[inline]
    fn fence(&self) {
        fence(Ordering::SeqCst)
    }

    #[inline]
    fn load_data(&self, offset: usize) -> u64 {
        debug_assert!(offset < self.capacity && offset.is_multiple_of(8));
        self.data_word(offset).load(Ordering::Relaxed)
    }

    #[inline]
    fn prefetch_read(&self, offset: usize) {
        prefetch(self.data_word(offset).as_ptr());
    }

    #[inline]
    fn store_data(&self, offset: usize, value: u64) {
        debug_assert!(offset < self.capacity && offset.is_multiple_of(8));
        assert!(self.region.writable(), "store to a read-only ring mapping");
        self.data_word(offset).store(value, Ordering::Relaxed)
    }
}

/// A hint that the cache line at `addr` will be read soon. Not a memory access: it cannot fault,
/// and it changes nothing any load returns.
#[inline(always)]
fn prefetch(addr: *mut u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only moves a cache line: it never faults, reads or writes
    // program-visible memory, touches the stack or changes flags.
    unsafe {
        std::arch::asm!("prefetcht0 [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM only moves a cache line: it never faults, reads or writes program-visible
    // memory, touches the stack or changes flags.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = addr;
}

/// From this many bytes, `rep movsb` beats the word loop (measured by the `ipc` bench's
/// `--compare-copy` on the development machine, an AMD EPYC with FSRM).
#[cfg(target_arch = "x86_64")]
const REP_MOVSB_MIN: usize = 2048;

/// The payload of a record, in place in the ring: a bounds-checked view, never a reference.
///
/// The peer may still be writing this memory (a hostile producer can rewrite a record after
/// publishing it), so every read is an atomic word load and every value read is just bytes:
/// parse them, do not trust them. The view is valid until the record is released (it borrows
/// the consumer).
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// 8-aligned start of the record's payload.
    base: *const u8,
    /// View start, relative to `base`.
    start: usize,
    len: usize,
    _ring: PhantomData<&'a ()>,
}

// SAFETY: a Payload is a read-only view made of atomic loads; sharing it between threads is as
// safe as sharing the `&Consumer` it borrows.
unsafe impl Send for Payload<'_> {}
// SAFETY: see Send.
unsafe impl Sync for Payload<'_> {}

impl<'a> Payload<'a> {
    /// Payload length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Zero-length payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn word(&self, aligned: usize) -> u64 {
        // SAFETY: `aligned` is a multiple of 8 below start + len rounded up to 8, which the
        // MappedRing::payload check keeps inside the mapping; the base is 8-aligned.
        unsafe {
            AtomicU64::from_ptr(self.base.wrapping_add(aligned).cast_mut().cast())
                .load(Ordering::Relaxed)
        }
    }

    /// Copy bytes `[at, at + dst.len())` of the view into `dst`.
    ///
    /// On x86_64 the bulk of the copy is inline assembly (one `rep movsb` from `REP_MOVSB_MIN`
    /// bytes up, a loop of 16-byte SSE2 moves from 64 bytes up): the copy happens outside the
    /// Rust abstract machine, as a hardware copy, so a peer writing the bytes concurrently is no
    /// data race in the language's sense (the bytes may just be torn), and it runs near memcpy
    /// speed. The rest, and other architectures, use relaxed atomic word loads.
    #[inline]
    fn copy_range(&self, at: usize, dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if dst.len() >= REP_MOVSB_MIN {
            let src = self.base.wrapping_add(self.start + at);
            // SAFETY: callers pass `at + dst.len() <= self.len`, so the source range lies inside
            // the payload, which MappedRing::payload checked is inside the mapping; the
            // destination is an exclusive borrow of dst.len() bytes. `rep movsb` reads and writes
            // exactly those ranges, clobbers only rcx/rsi/rdi (declared), needs DF clear (the
            // ABI guarantees it) and touches no stack or flags.
            unsafe {
                std::arch::asm!(
                    "rep movsb",
                    inout("rcx") dst.len() => _,
                    inout("rsi") src => _,
                    inout("rdi") dst.as_mut_ptr() => _,
                    options(nostack, preserves_flags)
                );
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if dst.len() >= 64 {
            let blocks = dst.len() / 64;
            let src = self.base.wrapping_add(self.start + at);
            // SAFETY: as for `rep movsb` above: the 64 * blocks bytes read lie inside the payload
            // (blocks * 64 <= dst.len() and at + dst.len() <= self.len) and the bytes written
            // inside `dst`. SSE2 is part of the x86_64 baseline; the asm clobbers only the
            // declared registers and flags, and uses no stack.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "movdqu xmm0, [{src}]",
                    "movdqu xmm1, [{src} + 16]",
                    "movdqu xmm2, [{src} + 32]",
                    "movdqu xmm3, [{src} + 48]",
                    "movdqu [{dst}], xmm0",
                    "movdqu [{dst} + 16], xmm1",
                    "movdqu [{dst} + 32], xmm2",
                    "movdqu [{dst} + 48], xmm3",
                    "add {src}, 64",
                    "add {dst}, 64",
                    "dec {n}",
                    "jnz 2b",
                    src = inout(reg) src => _,
                    dst = inout(reg) dst.as_mut_ptr() => _,
                    n = inout(reg) blocks => _,
                    out("xmm0") _,
                    out("xmm1") _,
                    out("xmm2") _,
                    out("xmm3") _,
                    options(nostack)
                );
            }
            let done = blocks * 64;
            self.copy_range_words(at + done, &mut dst[done..]);
            return;
        }
        self.copy_range_words(at, dst)
    }

    /// Copy bytes `[at, at + dst.len())` of the view into `dst`, by relaxed atomic word loads.
    fn copy_range_words(&self, at: usize, dst: &mut [u8]) {
        let mut pos = self.start + at;
        let mut rest = dst;
        let misalign = pos % 8;
        if misalign != 0 && !rest.is_empty() {
            let w = self.word(pos - misalign).to_ne_bytes();
            let n = (8 - misalign).min(rest.len());
            rest[..n].copy_from_slice(&w[misalign..misalign + n]);
            rest = &mut rest[n..];
            pos += n;
        }
        let mut chunks = rest.chunks_exact_mut(32);
        for c in &mut chunks {
            let (a, b, cc, d) = (
                self.word(pos),
                self.word(pos + 8),
                self.word(pos + 16),
                self.word(pos + 24),
            );
            c[0..8].copy_from_slice(&a.to_ne_bytes());
            c[8..16].copy_from_slice(&b.to_ne_bytes());
            c[16..24].copy_from_slice(&cc.to_ne_bytes());
            c[24..32].copy_from_slice(&d.to_ne_bytes());
            pos += 32;
        }
        let rest = chunks.into_remainder();
        let mut words = rest.chunks_exact_mut(8);
        for c in &mut words {
            c.copy_from_slice(&self.word(pos).to_ne_bytes());
            pos += 8;
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let w = self.word(pos).to_ne_bytes();
            let n = tail.len();
            tail.copy_from_slice(&w[..n]);
        }
    }

    /// Copy the payload into `dst`; copies `min(len, dst.len())` bytes and returns that count.
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        self.copy_range(0, &mut dst[..n]);
        n
    }

    /// Append the payload to `v` (one reservation, no per-byte growth).
    pub fn copy_into(&self, v: &mut Vec<u8>) {
        let old = v.len();
        v.resize(old + self.len, 0);
        self.copy_range(0, &mut v[old..]);
    }

    /// The payload as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.copy_into(&mut v);
        v
    }

    /// Copy `N` bytes at `at`, or `None` if they are not all inside the payload.
    pub fn read_array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        if at.checked_add(N)? > self.len {
            return None;
        }
        let mut b = [0u8; N];
        self.copy_range(at, &mut b);
        Some(b)
    }

    /// The byte at `at`.
    pub fn read_u8(&self, at: usize) -> Option<u8> {
        self.read_array::<1>(at).map(|b| b[0])
    }

    /// Little-endian u16 at byte offset `at` (any alignment).
    pub fn read_u16_le(&self, at: usize) -> Option<u16> {
        self.read_array(at).map(u16::from_le_bytes)
    }

    /// Little-endian u32 at byte offset `at` (any alignment).
    pub fn read_u32_le(&self, at: usize) -> Option<u32> {
        self.read_array(at).map(u32::from_le_bytes)
    }

    /// Little-endian u64 at byte offset `at` (any alignment).
    pub fn read_u64_le(&self, at: usize) -> Option<u64> {
        self.read_array(at).map(u64::from_le_bytes)
    }

    /// Big-endian (network order) u16 at `at`.
    pub fn read_u16_be(&self, at: usize) -> Option<u16> {
        self.read_array(at).map(u16::from_be_bytes)
    }

    /// Big-endian (network order) u32 at `at`.
    pub fn read_u32_be(&self, at: usize) -> Option<u32> {
        self.read_array(at).map(u32::from_be_bytes)
    }

    /// A sub-view of `len` bytes from `at`, or `None` if it does not fit.
    pub fn slice(&self, at: usize, len: usize) -> Option<Payload<'a>> {
        if at.checked_add(len)? > self.len {
            return None;
        }
        Some(Payload {
            base: self.base,
            start: self.start + at,
            len,
            _ring: PhantomData,
        })
    }

    /// Fold over the payload as native-endian u64 words, in place; the last word's bytes past the
    /// payload's end read as zero. No copy is made.
    pub fn fold_words<B>(&self, init: B, mut f: impl FnMut(B, u64) -> B) -> B {
        let mut acc = init;
        if !self.start.is_multiple_of(8) {
            // Unaligned sub-view: go through 8-byte copies.
            let mut at = 0;
            while at < self.len {
                let mut b = [0u8; 8];
                let n = (self.len - at).min(8);
                self.copy_range(at, &mut b[..n]);
                acc = f(acc, u64::from_ne_bytes(b));
                at += 8;
            }
            return acc;
        }
        let full = self.len / 8;
        for i in 0..full {
            acc = f(acc, self.word(self.start + i * 8));
        }
        let rem = self.len % 8;
        if rem != 0 {
            let mut b = self.word(self.start + full * 8).to_ne_bytes();
            b[rem..].fill(0);
            acc = f(acc, u64::from_ne_bytes(b));
        }
        acc
    }

    /// The payload as a byte slice, for a ring whose producer is trusted never to write a record
    /// between publishing it and its release: `Record::bytes` is the only caller, and says when
    /// that holds.
    pub(crate) fn bytes_of_trusted_producer(&self) -> &'a [u8] {
        // SAFETY: the range lies inside the mapping (MappedRing::payload checked it), which
        // outlives 'a (the view borrows the consumer, which owns the mapping). This process maps
        // the region read-only, and the only process that can write it is the trusted producer,
        // which does not write a published record before the consumer releases it; release
        // needs the consumer mutably, so it cannot happen while 'a lives. So nothing writes
        // these bytes while the slice exists.
        unsafe { std::slice::from_raw_parts(self.base.wrapping_add(self.start), self.len) }
    }

    /// Raw pointer to the first byte, for C-style in-place use (for example handing it to a
    /// parser over FFI). Reading through it is your responsibility: the bytes may change under
    /// you if the peer is hostile, and it dangles once the record is released.
    pub fn as_ptr(&self) -> *const u8 {
        self.base.wrapping_add(self.start)
    }
}

/// Read-only views of a ring's header page and consumer page (no data area): what a server or
/// `stat` needs to report positions.
#[derive(Debug)]
pub(crate) struct HeaderView {
    header: Mapping,
    consumer_page: Mapping,
}

impl HeaderView {
    pub(crate) fn map(
        region_fd: BorrowedFd<'_>,
        consumer_fd: BorrowedFd<'_>,
        page_size: usize,
    ) -> Result<HeaderView> {
        Ok(HeaderView {
            header: Mapping::plain(region_fd, page_size, Access::ReadOnly)?,
            consumer_page: Mapping::plain(consumer_fd, page_size, Access::ReadOnly)?,
        })
    }

    /// Acquire load of a shared field.
    pub(crate) fn load(&self, field: Field) -> u64 {
        let (m, off) = match field {
            Field::ProducerPos => (&self.header, OFF_PRODUCER_POS),
            Field::ProducerSleep => (&self.header, OFF_PRODUCER_SLEEP),
            Field::Drops => (&self.header, OFF_DROPS),
            Field::ProducerFlags => (&self.header, OFF_PRODUCER_FLAGS),
            Field::ConsumerPos => (&self.consumer_page, OFF_CONSUMER_POS),
            Field::ConsumerSleep => (&self.consumer_page, OFF_CONSUMER_SLEEP),
        };
        m.load_u64(off, Ordering::Acquire)
    }
}
