//! Everything that touches the OS or raw memory, and nothing else: mappings of the ring's memfds
//! and the atomic accesses to them ([`shm`]), and memfds, seals, eventfds and unix-socket fd
//! passing ([`os`]). (The C ABI is a face, not OS glue: it is the `edgegw-ring-ffi` crate.)
//!
//! The safety argument, once: a ring mapping is created here from a memfd whose size we checked
//! (`fstat`) and which is sealed against shrinking, so every address inside the mapping stays
//! valid for the mapping's lifetime and no access can fault. Mappings are memmap2's `MmapRaw`,
//! which yields raw pointers only; the mirror mode's second view of the data area is mapped by
//! hand over the end of such a mapping, before it is used, because memmap2 cannot choose an
//! address. All accesses to memory the peer may write are atomic (`AtomicU64` loads and stores
//! through raw pointers, 8-aligned), so a peer that writes concurrently cannot cause a data race
//! in the Rust sense; we never create `&` or `&mut` references to such memory. Memory only we can write (the producer's reserved, unpublished
//! space in a ring whose region the peer maps read-only) is handed out as `&mut [u8]`, borrowed
//! from the endpoint so it cannot outlive the mapping or alias another reservation.
#![allow(unsafe_code)]

pub(crate) mod os;
pub(crate) mod shm;
#[cfg(feature = "tokio")]
pub(crate) mod tokio_fd;
