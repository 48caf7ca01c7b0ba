//! Footprint: a ring of 64 KiB costs its data pages, one header page and one consumer page, and
//! nothing grows with use.

mod common;

use edgegw_ring::{page_size, Consumer, Producer, RingConfig, WrapMode};
use std::os::fd::AsFd;

fn allocated_bytes(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).unwrap().st_blocks as u64 * 512
}

#[test]
fn a_64k_ring_costs_its_data_plus_one_header_page_and_one_consumer_page() {
    for wrap in [WrapMode::Pad, WrapMode::Mirror] {
        let cap = 64 * 1024;
        let page = page_size();
        let mut p = Producer::create(RingConfig::with_capacity(cap).wrap(wrap)).unwrap();
        let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
        // Write through the whole ring several times so every page is touched.
        for _ in 0..(4 * cap / 1024) {
            p.reserve(1016, 1, 0).unwrap().fill(0xaa);
            p.publish();
            c.read().unwrap().unwrap();
            c.release();
        }
        let fds = p.fds().unwrap();
        let region = nix::sys::stat::fstat(fds.region.as_fd()).unwrap().st_size as usize;
        let consumer_page = nix::sys::stat::fstat(fds.consumer_page.as_fd())
            .unwrap()
            .st_size as usize;
        assert_eq!(
            region,
            page + cap,
            "{wrap}: region memfd = header page + data"
        );
        assert_eq!(consumer_page, page, "{wrap}: consumer memfd = one page");
        // Memory really backing them (shmem pages), after use.
        let used = allocated_bytes(&fds.region) + allocated_bytes(&fds.consumer_page);
        assert!(
            used <= (2 * page + cap) as u64,
            "{wrap}: {used} bytes of shared memory"
        );
        assert!(
            used >= cap as u64,
            "{wrap}: the data pages were touched ({used})"
        );
        // Address space: the mirror mode maps the data twice, which costs no memory.
        let mapped = match wrap {
            WrapMode::Pad => 2 * page + cap,
            WrapMode::Mirror => 2 * page + 2 * cap,
        };
        assert_eq!(p.mapped_bytes(), mapped);
        assert_eq!(c.mapped_bytes(), mapped);
    }
    // The endpoints themselves are small fixed-size structs.
    assert!(
        std::mem::size_of::<Producer>() <= 512,
        "{}",
        std::mem::size_of::<Producer>()
    );
    assert!(
        std::mem::size_of::<Consumer>() <= 512,
        "{}",
        std::mem::size_of::<Consumer>()
    );
}
