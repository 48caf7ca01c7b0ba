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

/// The read-only side cannot map what it only reads as writable: `F_SEAL_FUTURE_WRITE` makes
/// `mmap(PROT_WRITE, MAP_SHARED)` fail, while a read-only mapping works.
#[test]
fn the_read_only_side_cannot_map_its_part_writable() {
    use crate::sys::shm::{Access, Mapping};
    use crate::{Consumer, Producer, RingConfig};
    use std::os::fd::AsFd;
    let producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let fds = producer.fds().unwrap();
    let len = crate::page_size() + 4096;
    let err = Mapping::plain(fds.region.as_fd(), len, Access::ReadWrite).unwrap_err();
    assert!(err.to_string().contains("Operation not permitted"), "{err}");
    Mapping::plain(fds.region.as_fd(), len, Access::ReadOnly).expect("read-only mapping");
    let owner = Consumer::create(RingConfig::with_capacity(4096)).unwrap();
    let fds = owner.fds().unwrap();
    let err = Mapping::plain(
        fds.consumer_page.as_fd(),
        crate::page_size(),
        Access::ReadWrite,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Operation not permitted"), "{err}");
}
