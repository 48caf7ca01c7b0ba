//! Footprint: a ring of 64 KiB costs its data pages, one header page and one consumer page, and
//! nothing grows with use; `prefault` takes that memory up front, so a first lap takes no page
//! faults.

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

/// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
fn thread_minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, minflt field 10.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Write and read one lap of 1016-byte records; the minor faults this thread took meanwhile.
fn faults_of_a_first_lap(p: &mut Producer, c: &mut Consumer, cap: usize) -> u64 {
    let before = thread_minor_faults();
    for _ in 0..cap / 1024 {
        p.reserve(1016, 1, 0).unwrap().fill(0x5a);
        p.publish();
        assert_eq!(
            c.read().unwrap().unwrap().payload().read_u8(1015),
            Some(0x5a)
        );
        c.release();
    }
    thread_minor_faults() - before
}

#[test]
fn prefault_takes_the_rings_memory_up_front_so_a_first_lap_takes_no_page_faults() {
    let cap = 256 * 1024;
    let page = page_size();
    let pages = (cap / page) as u64;
    // Without: each end faults on each page of the first lap.
    let mut p = Producer::create(RingConfig::with_capacity(cap)).unwrap();
    let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
    let unprefaulted = faults_of_a_first_lap(&mut p, &mut c, cap);
    // With: nothing is left to fault in.
    for wrap in [WrapMode::Pad, WrapMode::Mirror] {
        let mut p = Producer::create(RingConfig::with_capacity(cap).wrap(wrap)).unwrap();
        let mut c = Consumer::from_fds(p.served_ring().unwrap().into_fds()).unwrap();
        let fds = p.fds().unwrap();
        assert!(
            allocated_bytes(&fds.region) < (page + cap) as u64 / 2,
            "{wrap}: a new ring takes its memory as it is used"
        );
        p.prefault();
        c.prefault();
        assert_eq!(
            allocated_bytes(&fds.region),
            (page + cap) as u64,
            "{wrap}: after prefault the whole region is allocated"
        );
        assert_eq!(allocated_bytes(&fds.consumer_page), page as u64);
        let prefaulted = faults_of_a_first_lap(&mut p, &mut c, cap);
        if unprefaulted < pages {
            // The counter does not see the ring's faults (qemu-user reports its own).
            common::report(
                "prefault_takes_the_rings_memory_up_front_so_a_first_lap_takes_no_page_faults",
                &format!(
                    "page-fault counts not checked: a first lap without prefault counted {unprefaulted} faults for {pages} pages on each end"
                ),
            );
        } else {
            assert!(
                prefaulted < pages / 8,
                "{wrap}: {prefaulted} faults in a prefaulted first lap (without: {unprefaulted})"
            );
        }
    }
}
