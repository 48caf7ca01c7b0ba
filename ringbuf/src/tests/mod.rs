//! In-crate tests that need the crate's internals: the loom models of the protocol core and the
//! hostile-peer property tests that scribble on shared pages.

mod hostile;
mod loom_models;

/// Scale a stress count by `EDGEGW_RING_TEST_SCALE` (a percentage, default 100; set lower under
/// qemu). Never below 1.
pub(crate) fn scaled(n: u64) -> u64 {
    let pct: u64 = std::env::var("EDGEGW_RING_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    (n * pct / 100).max(1)
}

/// The read-only side cannot map what it only reads as writable: with seal protection
/// `F_SEAL_FUTURE_WRITE` makes `mmap(PROT_WRITE, MAP_SHARED)` fail (EPERM); with fd protection
/// the description it gets is read-only (EACCES). A read-only mapping works.
#[test]
fn the_read_only_side_cannot_map_its_part_writable() {
    use crate::sys::shm::{Access, Mapping};
    use crate::{Consumer, Producer, Protection, RingConfig};
    use std::os::fd::AsFd;
    for (protection, error) in [
        (Protection::Seal, "Operation not permitted"),
        (Protection::Fd, "Permission denied"),
    ] {
        let config = RingConfig::with_capacity(4096).protection(protection);
        let producer = Producer::create(config).unwrap();
        let fds = producer.served_ring().unwrap().into_fds();
        let len = crate::page_size() + 4096;
        let err = Mapping::plain(fds.region.as_fd(), len, Access::ReadWrite).unwrap_err();
        assert!(err.to_string().contains(error), "{protection}: {err}");
        Mapping::plain(fds.region.as_fd(), len, Access::ReadOnly).expect("read-only mapping");
        let owner = Consumer::create(config).unwrap();
        let fds = owner.served_ring().unwrap().into_fds();
        let err = Mapping::plain(
            fds.consumer_page.as_fd(),
            crate::page_size(),
            Access::ReadWrite,
        )
        .unwrap_err();
        assert!(err.to_string().contains(error), "{protection}: {err}");
    }
}
