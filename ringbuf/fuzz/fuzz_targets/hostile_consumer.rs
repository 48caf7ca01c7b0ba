//! A producer whose consumer wrote arbitrary values into the consumer page between the
//! producer's operations. The producer must never crash or write outside its free space: it
//! reserves, reports `Full`, or reports `Error::Corrupt`.
#![no_main]

use edgegw_ring::{Error, Producer, RingConfig};
use libfuzzer_sys::fuzz_target;
use std::os::fd::AsFd;

fuzz_target!(|input: &[u8]| {
    let mut producer = Producer::create(RingConfig::with_capacity(4096)).unwrap();
    let page = producer.fds().unwrap().consumer_page.try_clone().unwrap();
    // Input: chunks of [op, 8 value bytes]: op even = write consumer_pos, odd = write the sleep
    // word; then reserve a record of (op * 13) bytes.
    for chunk in input.chunks(9) {
        let (&op, value) = chunk.split_first().unwrap();
        if value.len() == 8 {
            let offset = if op & 1 == 0 { 128 } else { 256 };
            nix::sys::uio::pwrite(page.as_fd(), value, offset).unwrap();
        }
        let len = op as usize * 13;
        match producer.reserve(len, 1, 0) {
            Ok(buf) => {
                assert_eq!(buf.len(), len);
                buf.fill(op);
                producer.publish();
            }
            Err(Error::Full { needed, free }) => assert!(needed > free),
            Err(Error::TooLarge { .. }) => assert!(len > producer.max_payload()),
            Err(Error::Corrupt(_)) => {
                assert!(matches!(producer.reserve(1, 1, 0), Err(Error::Corrupt(_))));
                return;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
});
