//! The shared-memory layout of format version 1 (see `FORMAT.md`): offsets, magics, the record
//! header, and the checks a side applies to what it reads. No memory access happens here.

use crate::{Error, Result};
use std::fmt;

/// Format version written in the header and the consumer page.
pub const FORMAT_VERSION: u32 = 1;
/// `EDGEGWRG`: first 8 bytes of the header page.
pub const HEADER_MAGIC: [u8; 8] = *b"EDGEGWRG";
/// `EDGEGWCP`: first 8 bytes of the consumer page.
pub const CONSUMER_MAGIC: [u8; 8] = *b"EDGEGWCP";

pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_PAGE_SIZE: usize = 12;
pub(crate) const OFF_CAPACITY: usize = 16;
pub(crate) const OFF_WRAP_MODE: usize = 24;
pub(crate) const OFF_GENERATION: usize = 32;
/// Bytes of the header that are written once at creation (the rest is live state).
pub(crate) const STATIC_HEADER_LEN: usize = 40;

pub(crate) const OFF_PRODUCER_POS: usize = 128;
pub(crate) const OFF_PRODUCER_SLEEP: usize = 256;
pub(crate) const OFF_DROPS: usize = 264;
pub(crate) const OFF_PRODUCER_FLAGS: usize = 272;
pub(crate) const OFF_CONSUMER_POS: usize = 128;
pub(crate) const OFF_CONSUMER_SLEEP: usize = 256;

/// `producer_flags` bit: the producer will publish nothing more.
pub(crate) const FLAG_FINISHED: u64 = 1;
/// `producer_flags` bit: the owner replaced this ring (FORMAT.md section 6); what a consumer had
/// not released is delivered again at the start of the new one.
pub(crate) const FLAG_REPLACED: u64 = 2;

/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Record type of a padding record (pad mode only; never shown to the application).
pub(crate) const TYPE_PAD: u16 = 0xffff;
/// First reserved record type; application types are `0..FIRST_RESERVED_TYPE`.
pub const FIRST_RESERVED_TYPE: u16 = 0xff00;

/// Smallest data capacity we accept beyond the page-size minimum.
pub const MIN_CAPACITY: usize = 4096;
/// Largest data capacity (record lengths are u32 and positions are checked in u64).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Which side of a ring a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum Role {
    /// Reads records and releases them.
    Consumer,
    /// Reserves, writes and publishes records.
    Producer,
}

impl Role {
    pub(crate) fn wire(self) -> u8 {
        match self {
            Role::Consumer => 1,
            Role::Producer => 2,
        }
    }
    pub(crate) fn from_wire(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Consumer),
            2 => Some(Role::Producer),
            _ => None,
        }
    }
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Consumer => Role::Producer,
            Role::Producer => Role::Consumer,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Consumer => "consumer",
            Role::Producer => "producer",
        })
    }
}

/// How a record that would cross the end of the data area is stored (FORMAT.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum WrapMode {
    /// A padding record fills the end of the lap; records never cross the end.
    #[default]
    Pad,
    /// The data area is mapped twice back to back; records may cross the end.
    Mirror,
}

impl WrapMode {
    pub(crate) fn wire(self) -> u32 {
        match self {
            WrapMode::Pad => 0,
            WrapMode::Mirror => 1,
        }
    }
    pub(crate) fn from_wire(v: u32) -> Option<WrapMode> {
        match v {
            0 => Some(WrapMode::Pad),
            1 => Some(WrapMode::Mirror),
            _ => None,
        }
    }
}

impl fmt::Display for WrapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WrapMode::Pad => "pad",
            WrapMode::Mirror => "mirror",
        })
    }
}

/// How the owner keeps its peer from writing the part of a ring the owner writes (FORMAT.md
/// section 6). Chosen per ring at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// The owner keeps its own read-write fds and hands the peer a read-only open file
    /// description of its part; the memfds are mode 0600. A restarted owner that kept its fds
    /// (systemd's fd store) can write the ring again and continue it. Peers need attach protocol
    /// version 2.
    #[default]
    Fd,
    /// `F_SEAL_FUTURE_WRITE` on the owner's part, as in protocol version 1: every peer library
    /// can attach, but nobody, the owner included, can map that part writable again once the
    /// owner's mapping is gone, so the ring cannot continue across a restart.
    Seal,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::Fd => "fd",
            Protection::Seal => "seal",
        })
    }
}

/// How to build a new ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Data capacity in bytes: a power of two, at least the page size, at most 1 GiB.
    pub capacity: usize,
    /// Generation written in the header; a restarted producer uses the old one plus one.
    pub generation: u64,
    /// Wrap strategy.
    pub wrap: WrapMode,
    /// How the owner's part is protected from the peer.
    pub protection: Protection,
}

impl RingConfig {
    /// The default: 1 MiB of data, generation 1, pad mode. (The edgegw daemon sizes its rings
    /// from its config: 256 KiB unless set.)
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A config with the given capacity, generation 1 and the default wrap mode.
    pub fn with_capacity(capacity: usize) -> Self {
        RingConfig {
            capacity,
            generation: 1,
            wrap: WrapMode::default(),
            protection: Protection::default(),
        }
    }

    /// Same config with another generation.
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Same config with another wrap mode.
    pub fn wrap(mut self, wrap: WrapMode) -> Self {
        self.wrap = wrap;
        self
    }

    /// Same config with another protection.
    pub fn protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }

    pub(crate) fn validate(&self, page_size: usize) -> Result<()> {
        let c = self.capacity;
        if !c.is_power_of_two() {
            return Err(Error::Config(format!("capacity {c} is not a power of two")));
        }
        if c < MIN_CAPACITY.max(page_size) {
            return Err(Error::Config(format!(
                "capacity {c} is below the minimum {} (the page size or 4096)",
                MIN_CAPACITY.max(page_size)
            )));
        }
        if c > MAX_CAPACITY {
            return Err(Error::Config(format!(
                "capacity {c} is above the maximum {MAX_CAPACITY}"
            )));
        }
        Ok(())
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

/// Largest payload a ring of `capacity` bytes carries.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER_LEN
}

/// Bytes a record with `len` payload bytes occupies.
#[inline]
pub(crate) const fn record_total(len: usize) -> usize {
    (RECORD_HEADER_LEN + len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// A record header as one 64-bit word.
#[inline]
pub(crate) const fn encode_record_header(len: u32, ty: u16, flags: u16) -> u64 {
    (len as u64) | ((ty as u64) << 32) | ((flags as u64) << 48)
}

/// `(len, type, flags)` of a record header word.
#[inline]
pub(crate) const fn decode_record_header(word: u64) -> (u32, u16, u16) {
    (word as u32, (word >> 32) as u16, (word >> 48) as u16)
}

/// The static part of a header, as created or as read back and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaticHeader {
    pub page_size: usize,
    pub capacity: usize,
    pub wrap: WrapMode,
    pub generation: u64,
}

impl StaticHeader {
    pub(crate) fn encode(&self) -> [u8; STATIC_HEADER_LEN] {
        let mut b = [0u8; STATIC_HEADER_LEN];
        b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&HEADER_MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_ne_bytes());
        b[OFF_PAGE_SIZE..OFF_PAGE_SIZE + 4].copy_from_slice(&(self.page_size as u32).to_ne_bytes());
        b[OFF_CAPACITY..OFF_CAPACITY + 8].copy_from_slice(&(self.capacity as u64).to_ne_bytes());
        b[OFF_WRAP_MODE..OFF_WRAP_MODE + 4].copy_from_slice(&self.wrap.wire().to_ne_bytes());
        b[OFF_GENERATION..OFF_GENERATION + 8].copy_from_slice(&self.generation.to_ne_bytes());
        b
    }

    /// Parse and check the static header bytes read from a region memfd.
    pub(crate) fn decode(b: &[u8; STATIC_HEADER_LEN], our_page_size: usize) -> Result<Self> {
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if b[..8] != HEADER_MAGIC {
            return Err(Error::InvalidRing(format!(
                "header magic is {:02x?}, expected \"EDGEGWRG\"",
                &b[..8]
            )));
        }
        let version = u32_at(OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::InvalidRing(format!(
                "format version mismatch: the ring is version {version}, this library reads version {FORMAT_VERSION}"
            )));
        }
        let page_size = u32_at(OFF_PAGE_SIZE) as usize;
        if page_size != our_page_size {
            return Err(Error::InvalidRing(format!(
                "ring was built for page size {page_size}, this process has {our_page_size}"
            )));
        }
        let capacity = u64_at(OFF_CAPACITY);
        let capacity = usize::try_from(capacity)
            .map_err(|_| Error::InvalidRing(format!("capacity {capacity} does not fit")))?;
        RingConfig::with_capacity(capacity)
            .validate(page_size)
            .map_err(|e| Error::InvalidRing(format!("header capacity: {e}")))?;
        let wrap_raw = u32_at(OFF_WRAP_MODE);
        let wrap = WrapMode::from_wire(wrap_raw)
            .ok_or_else(|| Error::InvalidRing(format!("unknown wrap mode {wrap_raw}")))?;
        Ok(StaticHeader {
            page_size,
            capacity,
            wrap,
            generation: u64_at(OFF_GENERATION),
        })
    }

    /// Size of the region memfd (header page plus data).
    pub(crate) fn region_len(&self) -> usize {
        self.page_size + self.capacity
    }
}

/// The consumer page's fixed prefix.
pub(crate) fn consumer_page_prefix() -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&CONSUMER_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_ne_bytes());
    b
}

/// Check the consumer page's prefix.
pub(crate) fn check_consumer_page_prefix(b: &[u8; 12]) -> Result<()> {
    if b[..8] != CONSUMER_MAGIC {
        return Err(Error::InvalidRing(format!(
            "consumer page magic is {:02x?}, expected \"EDGEGWCP\"",
            &b[..8]
        )));
    }
    let version = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::InvalidRing(format!(
            "consumer page format version {version}, this library reads version {FORMAT_VERSION}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_word_round_trips() {
        let w = encode_record_header(0xdead_beef, 0x1234, 0xabcd);
        assert_eq!(decode_record_header(w), (0xdead_beef, 0x1234, 0xabcd));
        // The word's memory layout is len (u32), type (u16), flags (u16) on little-endian hosts.
        if cfg!(target_endian = "little") {
            assert_eq!(&w.to_ne_bytes()[..4], &0xdead_beefu32.to_le_bytes());
        }
    }

    #[test]
    fn record_total_is_header_plus_payload_rounded_to_eight() {
        assert_eq!(record_total(0), 8);
        assert_eq!(record_total(1), 16);
        assert_eq!(record_total(8), 16);
        assert_eq!(record_total(9), 24);
    }

    #[test]
    fn static_header_round_trips_and_rejects_each_bad_field() {
        let h = StaticHeader {
            page_size: 4096,
            capacity: 65536,
            wrap: WrapMode::Mirror,
            generation: 7,
        };
        let b = h.encode();
        assert_eq!(StaticHeader::decode(&b, 4096).unwrap(), h);
        let mut bad = b;
        bad[0] = b'X';
        assert!(StaticHeader::decode(&bad, 4096)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut bad = b;
        bad[OFF_VERSION] = 2;
        assert!(StaticHeader::decode(&bad, 4096)
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert!(StaticHeader::decode(&b, 16384)
            .unwrap_err()
            .to_string()
            .contains("page size"));
        let mut bad = b;
        bad[OFF_CAPACITY] = 1;
        assert!(StaticHeader::decode(&bad, 4096)
            .unwrap_err()
            .to_string()
            .contains("capacity"));
        let mut bad = b;
        bad[OFF_WRAP_MODE] = 9;
        assert!(StaticHeader::decode(&bad, 4096)
            .unwrap_err()
            .to_string()
            .contains("wrap"));
    }

    #[test]
    fn config_rejects_non_power_of_two_and_out_of_range_capacities() {
        assert!(RingConfig::with_capacity(65536).validate(4096).is_ok());
        assert!(RingConfig::with_capacity(65535).validate(4096).is_err());
        assert!(RingConfig::with_capacity(2048).validate(4096).is_err());
        assert!(RingConfig::with_capacity(8192).validate(16384).is_err());
        assert!(RingConfig::with_capacity(1 << 31).validate(4096).is_err());
    }
}
