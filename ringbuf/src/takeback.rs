//! Taking a ring back after a restart (FORMAT.md section 7, "Restarts"): a restarted owner gets
//! its own fds back (systemd's fd store) and continues the ring if everything in it is
//! consistent; otherwise it replaces it, with what passed the checks.

use crate::core::{ConsumerCore, Next};
use crate::format::{Protection, Role, StaticHeader, FLAG_REPLACED};
use crate::sys::os;
use crate::sys::shm::{Access, MappedRing};
use crate::{ring, Error, Result, RingFds};
use std::os::fd::AsFd;

/// A record of a stored ring that failed the checks, copied out because it passed them: the
/// records from the stored ring's `consumer_pos` up to the first one that did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvagedRecord {
    /// Its type.
    pub ty: u16,
    /// Its flags.
    pub flags: u16,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What an owner's stored ring turned out to be.
#[derive(Debug)]
pub enum TakenBack<T> {
    /// Consistent: the ring continues (same generation, same positions), served again.
    Continued(T),
    /// Not fit to continue: replace it with a fresh ring.
    Unfit {
        /// Why, for the log.
        reason: String,
        /// The stored ring's generation, if its header could be read (a fresh ring takes the
        /// next one).
        generation: Option<u64>,
        /// On a ring the owner produced: the records that passed the checks, in order, for the
        /// fresh ring. On a ring the owner consumed: empty (FORMAT.md section 6: what a broken
        /// reply ring held is lost).
        salvaged: Vec<SalvagedRecord>,
    },
}

/// A stored ring's checks that come before any mapping: the header and sizes (as a peer checks
/// them), the protection (a sealed owner's part cannot be written again), and that the owner's
/// part came back writable.
fn check_stored(
    fds: &RingFds,
    owner: Role,
) -> std::result::Result<StaticHeader, (String, Option<u64>)> {
    let header = ring::check(fds, None).map_err(|e| (e.to_string(), None))?;
    let generation = Some(header.generation);
    match ring::protection_of(fds, owner) {
        Ok(Protection::Fd) => {}
        Ok(Protection::Seal) => {
            return Err((
                "it has seal protection (F_SEAL_FUTURE_WRITE): no one can write it again".into(),
                generation,
            ))
        }
        Err(e) => return Err((e.to_string(), generation)),
    }
    let ours = match owner {
        Role::Producer => fds.region.as_fd(),
        Role::Consumer => fds.consumer_page.as_fd(),
    };
    match os::is_read_only(ours) {
        Ok(false) => Ok(header),
        Ok(true) => Err((
            format!("the owner's {} fd came back read-only", owner_part(owner)),
            generation,
        )),
        Err(e) => Err((e.to_string(), generation)),
    }
}

fn owner_part(owner: Role) -> &'static str {
    match owner {
        Role::Producer => "region",
        Role::Consumer => "consumer page",
    }
}

/// The records of a mapped stored ring, walked with every check a consumer makes (FORMAT.md
/// section 4) from its `consumer_pos` to its `producer_pos`: the positions seen and the records,
/// or, with the records before it, why the walk stopped. Keeps nothing but locations until
/// `copy` asks for payloads.
struct Walk {
    /// `consumer_pos` the walk started from.
    pub consumer_pos: u64,
    /// `producer_pos` it ended at (when it did).
    pub producer_pos: u64,
    /// What was wrong, if anything.
    pub broken: Option<String>,
    pub salvaged: Vec<SalvagedRecord>,
}

fn walk(mem: &MappedRing, header: &StaticHeader, copy: bool) -> Walk {
    use crate::core::{Field, RingMem};
    use std::sync::atomic::Ordering;
    let mut salvaged = Vec::new();
    let mut reader = match ConsumerCore::resume(mem, header.capacity, header.wrap, false) {
        Ok(r) => r,
        Err(e) => {
            return Walk {
                consumer_pos: 0,
                producer_pos: 0,
                broken: Some(e.to_string()),
                salvaged,
            }
        }
    };
    let broken = loop {
        match reader.next(mem) {
            Next::Record(loc) => {
                if copy {
                    match mem.payload(loc.payload_offset, loc.len) {
                        Some(p) => salvaged.push(SalvagedRecord {
                            ty: loc.ty,
                            flags: loc.flags,
                            payload: p.to_vec(),
                        }),
                        None => break Some("a record lies outside the data area".to_string()),
                    }
                }
            }
            Next::Empty => break None,
            Next::Corrupt => {
                break Some(
                    reader
                        .corruption()
                        .unwrap_or("the ring is corrupt")
                        .to_string(),
                )
            }
        }
    };
    let (released, read, _) = reader.positions();
    let broken = broken.or_else(|| {
        (mem.load(Field::ProducerFlags, Ordering::Acquire) & FLAG_REPLACED != 0)
            .then(|| "it was marked REPLACED".to_string())
    });
    Walk {
        consumer_pos: released,
        producer_pos: read,
        broken,
        salvaged,
    }
}

/// Maps a stored ring for its owner: its own part writable, the peer's read-only.
fn map_for_owner(fds: &RingFds, header: &StaticHeader, owner: Role) -> Result<MappedRing> {
    let (region, consumer) = match owner {
        Role::Producer => (Access::ReadWrite, Access::ReadOnly),
        Role::Consumer => (Access::ReadOnly, Access::ReadWrite),
    };
    MappedRing::map(
        fds.region.as_fd(),
        fds.consumer_page.as_fd(),
        header,
        region,
        consumer,
    )
}

/// A stored ring that passed [`check_stored`] and its walk, mapped for its owner.
pub(crate) struct Stored {
    pub header: StaticHeader,
    pub mem: MappedRing,
    /// Where the walk started: a record boundary.
    pub consumer_pos: u64,
    /// Where it ended.
    pub producer_pos: u64,
}

/// The part of `take_back` both roles share: checks a stored ring, maps it for `owner` and
/// walks its records. A ring that fails is [`TakenBack::Unfit`], with, on a ring the owner
/// produced, the records that passed the checks.
pub(crate) fn open_stored<T>(
    fds: &RingFds,
    owner: Role,
) -> std::result::Result<Stored, TakenBack<T>> {
    let header = match check_stored(fds, owner) {
        Ok(h) => h,
        Err((reason, generation)) => {
            return Err(TakenBack::Unfit {
                reason,
                generation,
                salvaged: Vec::new(),
            })
        }
    };
    let mem = match map_for_owner(fds, &header, owner) {
        Ok(m) => m,
        Err(e) => return Err(unfit(e, header.generation)),
    };
    let walked = walk(&mem, &header, false);
    if let Some(reason) = walked.broken {
        let salvaged = match owner {
            // Walk again, copying: what passed the checks goes to the fresh ring.
            Role::Producer => walk(&mem, &header, true).salvaged,
            // FORMAT.md section 6: what a broken reply ring held is lost.
            Role::Consumer => Vec::new(),
        };
        return Err(TakenBack::Unfit {
            reason,
            generation: Some(header.generation),
            salvaged,
        });
    }
    Ok(Stored {
        header,
        mem,
        consumer_pos: walked.consumer_pos,
        producer_pos: walked.producer_pos,
    })
}

/// An error from mapping a stored ring, as a reason to replace it.
pub(crate) fn unfit<T>(e: Error, generation: u64) -> TakenBack<T> {
    TakenBack::Unfit {
        reason: e.to_string(),
        generation: Some(generation),
        salvaged: Vec::new(),
    }
}
