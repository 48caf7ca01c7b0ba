//! Building a ring (the owner's side) and checking one handed over as fds (the peer's side).

use crate::format::{
    check_consumer_page_prefix, consumer_page_prefix, Protection, Role, StaticHeader,
    STATIC_HEADER_LEN,
};
use crate::sys::os;
use crate::sys::shm::{Access, MappedRing, Mapping};
use crate::{Error, Result, RingConfig};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The four fds that make a ring: everything a peer needs, and everything an owner must keep
/// (for example in systemd's fd store) to hand the ring over.
///
/// Order and meaning are fixed by FORMAT.md section 6: region memfd (header + data), consumer
/// page memfd, data eventfd (producer → consumer), space eventfd (consumer → producer).
#[derive(Debug)]
pub struct RingFds {
    /// Header page + data area.
    pub region: OwnedFd,
    /// Consumer position page.
    pub consumer_page: OwnedFd,
    /// Signalled by the producer when the sleeping consumer has data.
    pub data_event: OwnedFd,
    /// Signalled by the consumer when the waiting producer has space.
    pub space_event: OwnedFd,
}

impl RingFds {
    /// Duplicate all four fds (close-on-exec).
    pub fn try_clone(&self) -> Result<RingFds> {
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("dup ring fd", e));
        Ok(RingFds {
            region: dup(&self.region)?,
            consumer_page: dup(&self.consumer_page)?,
            data_event: dup(&self.data_event)?,
            space_event: dup(&self.space_event)?,
        })
    }

    /// The fds in protocol order.
    pub fn as_array(&self) -> [BorrowedFd<'_>; 4] {
        [
            self.region.as_fd(),
            self.consumer_page.as_fd(),
            self.data_event.as_fd(),
            self.space_event.as_fd(),
        ]
    }

    /// The environment variable [`RingFds::export_for_child`] fills and
    /// [`RingFds::from_env`] reads: four fd numbers, comma-separated, in protocol order.
    pub const ENV: &'static str = "EDGEGW_RING_FDS";

    /// Prepare these fds for a child started with fork+exec: clears close-on-exec on all four
    /// and returns the value to put in [`RingFds::ENV`] for the child. Keep `self` open until
    /// the child has started.
    pub fn export_for_child(&self) -> Result<String> {
        let fds = self.as_array();
        for fd in fds {
            os::set_inheritable(fd)?;
        }
        Ok(fds.map(|f| f.as_raw_fd().to_string()).join(","))
    }

    /// Take the ring fds a parent passed with [`RingFds::export_for_child`]. Removes the
    /// variable from the environment so the fds cannot be taken twice, checks that the four fds
    /// are open and distinct, and sets close-on-exec on them again.
    pub fn from_env() -> Result<RingFds> {
        let value = std::env::var(Self::ENV).map_err(|_| {
            Error::Config(format!("{} is not set: no ring fds were passed", Self::ENV))
        })?;
        std::env::remove_var(Self::ENV);
        let nums: Vec<i32> = value
            .split(',')
            .map(|v| v.trim().parse::<i32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                Error::Config(format!("{}={value:?} is not four fd numbers", Self::ENV))
            })?;
        let nums: [i32; 4] = nums.try_into().map_err(|_| {
            Error::Config(format!("{}={value:?} is not four fd numbers", Self::ENV))
        })?;
        for (i, n) in nums.iter().enumerate() {
            if *n <= 2 || nums[..i].contains(n) {
                return Err(Error::Config(format!(
                    "{}={value:?}: fd {n} is a standard stream or listed twice",
                    Self::ENV
                )));
            }
        }
        let mut owned = Vec::with_capacity(4);
        for n in nums {
            owned.push(os::take_inherited_fd(n)?);
        }
        let arr: [OwnedFd; 4] = owned.try_into().expect("four fds");
        Ok(Self::from_array(arr))
    }

    /// Build from fds in protocol order.
    pub fn from_array(fds: [OwnedFd; 4]) -> RingFds {
        let [region, consumer_page, data_event, space_event] = fds;
        RingFds {
            region,
            consumer_page,
            data_event,
            space_event,
        }
    }
}

/// A ring just built by its owner: the owner's mapping plus the fds to serve.
pub(crate) struct Built {
    pub mem: MappedRing,
    pub fds: RingFds,
    pub header: StaticHeader,
}

fn accesses(role: Role) -> (Access, Access) {
    match role {
        Role::Producer => (Access::ReadWrite, Access::ReadOnly),
        Role::Consumer => (Access::ReadOnly, Access::ReadWrite),
    }
}

/// Create a ring whose owner plays `owner`: memfds, initial header, the owner's mapping, then the
/// seals (the owner's writable part is mapped before `F_SEAL_FUTURE_WRITE`, with seal
/// protection, closes it to others).
pub(crate) fn create(config: &RingConfig, owner: Role) -> Result<Built> {
    let page_size = os::page_size();
    config.validate(page_size)?;
    let header = StaticHeader {
        page_size,
        capacity: config.capacity,
        wrap: config.wrap,
        generation: config.generation,
    };
    let region = os::create_memfd("edgegw-ring", header.region_len())?;
    os::pwrite_all(region.as_fd(), &header.encode(), 0)?;
    let consumer_page = os::create_memfd("edgegw-ring-consumer", page_size)?;
    os::pwrite_all(consumer_page.as_fd(), &consumer_page_prefix(), 0)?;
    let (region_access, consumer_access) = accesses(owner);
    let mem = MappedRing::map(
        region.as_fd(),
        consumer_page.as_fd(),
        &header,
        region_access,
        consumer_access,
    )?;
    // Seal protection closes the owner's part with F_SEAL_FUTURE_WRITE; fd protection keeps
    // it open to the owner's read-write fds only (0600, and peers get read-only descriptions).
    let seal = config.protection == Protection::Seal;
    if !seal {
        os::restrict_to_owner(region.as_fd())?;
        os::restrict_to_owner(consumer_page.as_fd())?;
    }
    os::add_seals(region.as_fd(), seal && owner == Role::Producer)?;
    os::add_seals(consumer_page.as_fd(), seal && owner == Role::Consumer)?;
    let fds = RingFds {
        region,
        consumer_page,
        data_event: os::create_eventfd()?,
        space_event: os::create_eventfd()?,
    };
    Ok(Built { mem, fds, header })
}

/// Check a ring handed over as fds (seals, sizes, header, fd kinds), then map it for `role`.
/// Nothing is mapped until every check passed.
pub(crate) fn open(fds: &RingFds, role: Role) -> Result<(MappedRing, StaticHeader)> {
    let header = check(fds, Some(role))?;
    let (region_access, consumer_access) = accesses(role);
    let mem = MappedRing::map(
        fds.region.as_fd(),
        fds.consumer_page.as_fd(),
        &header,
        region_access,
        consumer_access,
    )?;
    Ok((mem, header))
}

/// Map a ring read-only in both parts (stat and draining an old ring).
pub(crate) fn open_read_only(fds: &RingFds) -> Result<(MappedRing, StaticHeader)> {
    let header = check(fds, None)?;
    let mem = MappedRing::map(
        fds.region.as_fd(),
        fds.consumer_page.as_fd(),
        &header,
        Access::ReadOnly,
        Access::ReadOnly,
    )?;
    Ok((mem, header))
}

/// The checks of FORMAT.md section 6, done before mapping. `role` is the side we will play
/// (`None`: we only read, so the role-specific seals do not matter).
pub(crate) fn check(fds: &RingFds, role: Option<Role>) -> Result<StaticHeader> {
    let page_size = os::page_size();
    let region_seals = os::get_seals(fds.region.as_fd(), "region")?;
    let consumer_seals = os::get_seals(fds.consumer_page.as_fd(), "consumer page")?;
    for (name, s) in [("region", region_seals), ("consumer page", consumer_seals)] {
        if !s.shrink || !s.grow {
            return Err(Error::InvalidRing(format!(
                "the {name} memfd is not sealed against shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW); a peer could make our mapping fault"
            )));
        }
        if s.write {
            return Err(Error::InvalidRing(format!(
                "the {name} memfd is sealed F_SEAL_WRITE; no side could write it"
            )));
        }
    }
    // The part the peer only reads must be closed to its writes; the part we write must not be.
    let mut read_only_part = None;
    if let Some(role) = role {
        let (ours, ours_name, theirs, theirs_name) = match role {
            Role::Producer => (region_seals, "region", consumer_seals, "consumer page"),
            Role::Consumer => (consumer_seals, "consumer page", region_seals, "region"),
        };
        if ours.future_write {
            return Err(Error::InvalidRing(format!(
                "the {ours_name} memfd is sealed F_SEAL_FUTURE_WRITE, so a {role} cannot write it: is this ring meant for a {}?",
                role.peer()
            )));
        }
        let ours_fd = match role {
            Role::Producer => fds.region.as_fd(),
            Role::Consumer => fds.consumer_page.as_fd(),
        };
        if os::is_read_only(ours_fd)? {
            return Err(Error::InvalidRing(format!(
                "the {ours_name} fd is open read-only, so a {role} cannot write it: is this ring meant for a {}?",
                role.peer()
            )));
        }
        if !theirs.future_write {
            // Fd protection: the description we got must be read-only, and a writable shared
            // mapping of it must fail.
            let theirs_fd = match role {
                Role::Producer => fds.consumer_page.as_fd(),
                Role::Consumer => fds.region.as_fd(),
            };
            if !os::is_read_only(theirs_fd)? {
                return Err(Error::InvalidRing(format!(
                    "the {theirs_name} memfd is neither sealed F_SEAL_FUTURE_WRITE nor handed over read-only: a {role} must not be able to write it"
                )));
            }
            read_only_part = Some((theirs_fd, theirs_name, role));
        }
    }
    let mut raw = [0u8; STATIC_HEADER_LEN];
    let region_size = os::file_size(fds.region.as_fd())?;
    if region_size < STATIC_HEADER_LEN as u64 {
        return Err(Error::InvalidRing(format!(
            "the region memfd is {region_size} bytes, too small for a header"
        )));
    }
    os::pread_exact(fds.region.as_fd(), &mut raw, 0)?;
    let header = StaticHeader::decode(&raw, page_size)?;
    if region_size != header.region_len() as u64 {
        return Err(Error::InvalidRing(format!(
            "the region memfd is {region_size} bytes, the header says {} (page {} + capacity {})",
            header.region_len(),
            header.page_size,
            header.capacity
        )));
    }
    let consumer_size = os::file_size(fds.consumer_page.as_fd())?;
    if consumer_size != page_size as u64 {
        return Err(Error::InvalidRing(format!(
            "the consumer page memfd is {consumer_size} bytes, expected one page ({page_size})"
        )));
    }
    let mut prefix = [0u8; 12];
    os::pread_exact(fds.consumer_page.as_fd(), &mut prefix, 0)?;
    check_consumer_page_prefix(&prefix)?;
    if let Some((fd, name, role)) = read_only_part {
        // Both memfds are at least a page and sealed against shrinking (checked above).
        if Mapping::plain(fd, page_size, Access::ReadWrite).is_ok() {
            return Err(Error::InvalidRing(format!(
                "the {name} memfd can be mapped writable: a {role} must not be able to write it"
            )));
        }
    }
    os::check_eventfd(fds.data_event.as_fd(), "data")?;
    os::check_eventfd(fds.space_event.as_fd(), "space")?;
    Ok(header)
}

/// The protection of a ring, from its owner's fds: seal protection if the owner's part (the
/// region for a producing owner, the consumer page for a consuming one) is sealed
/// `F_SEAL_FUTURE_WRITE`.
pub(crate) fn protection_of(fds: &RingFds, owner: Role) -> Result<Protection> {
    let (fd, name) = match owner {
        Role::Producer => (fds.region.as_fd(), "region"),
        Role::Consumer => (fds.consumer_page.as_fd(), "consumer page"),
    };
    Ok(if os::get_seals(fd, name)?.future_write {
        Protection::Seal
    } else {
        Protection::Fd
    })
}

/// The fds as the peer of an owner playing `owner` gets them: with fd protection, a read-only
/// description of the owner's part in place of the owner's own; with seal protection,
/// duplicates (the seal protects).
pub(crate) fn peer_fds(fds: &RingFds, owner: Role, protection: Protection) -> Result<RingFds> {
    let mut peer = fds.try_clone()?;
    if protection == Protection::Fd {
        match owner {
            Role::Producer => peer.region = os::reopen_read_only(fds.region.as_fd())?,
            Role::Consumer => peer.consumer_page = os::reopen_read_only(fds.consumer_page.as_fd())?,
        }
    }
    Ok(peer)
}
