//! A consumer reading a ring whose producer wrote arbitrary bytes: the fuzz input is written
//! over the live header fields and the data area (the region a hostile producer controls), then
//! the consumer reads everything it accepts. It must never crash or read out of bounds; it may
//! only return records or `Error::Corrupt`.
#![no_main]

use edgegw_ring::{Consumer, Error, RingConfig, WrapMode};
use libfuzzer_sys::fuzz_target;
use std::os::fd::AsFd;

const CAP: usize = 4096;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let wrap = if mode & 1 == 0 {
        WrapMode::Pad
    } else {
        WrapMode::Mirror
    };
    let mut consumer = Consumer::create(RingConfig::with_capacity(CAP).wrap(wrap)).unwrap();
    let page = edgegw_ring::page_size();
    let region = &consumer.fds().unwrap().region;
    // Producer-written part of the header: positions, sleep word, drops, flags (offsets 128..280).
    let header_len = rest.len().min(152);
    nix::sys::uio::pwrite(region.as_fd(), &rest[..header_len], 128).unwrap();
    let data = &rest[header_len..];
    let data = &data[..data.len().min(CAP)];
    nix::sys::uio::pwrite(region.as_fd(), data, page as i64).unwrap();
    let mut buf = vec![0u8; CAP];
    for _ in 0..CAP {
        match consumer.read() {
            Ok(Some(rec)) => {
                assert!(rec.len() <= consumer_max(CAP));
                let n = rec.payload().copy_to_slice(&mut buf);
                assert_eq!(n, rec.len());
                let _ = rec.payload().fold_words(0u64, |a, w| a ^ w);
            }
            Ok(None) => break,
            Err(Error::Corrupt(_)) => {
                assert!(
                    matches!(consumer.read(), Err(Error::Corrupt(_))),
                    "corruption is sticky"
                );
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    consumer.release();
});

fn consumer_max(cap: usize) -> usize {
    edgegw_ring::max_payload(cap)
}
