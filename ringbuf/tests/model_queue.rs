//! Property test: random packet sizes and batch patterns against a model queue (a VecDeque).
//! Whatever the interleaving of reserves, publishes, abandons, reads and releases, the consumer
//! sees exactly the published records in order, the producer reports `Full` exactly when the
//! model says the ring has no room, and released space is reused.

mod common;

use common::pair;
use edgegw_ring::{Error, RingConfig, WrapMode};
use proptest::prelude::*;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Op {
    Reserve(usize),
    Publish,
    Abandon,
    Read(usize),
    Release,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => prop_oneof![0usize..64, 0usize..2040, Just(2040usize)].prop_map(Op::Reserve),
            3 => Just(Op::Publish),
            1 => Just(Op::Abandon),
            4 => (1usize..6).prop_map(Op::Read),
            2 => Just(Op::Release),
        ],
        1..200,
    )
}

/// The model: positions and sizes as FORMAT.md defines them.
struct Model {
    cap: u64,
    wrap: WrapMode,
    write: u64,
    published: u64,
    released: u64,
    read: u64,
    pending: Vec<(u64, Vec<u8>)>,
    /// Published, unread records: (end position, bytes).
    queue: VecDeque<(u64, Vec<u8>)>,
    /// Read, unreleased: their end positions.
    read_end: u64,
}

impl Model {
    fn total(len: usize) -> u64 {
        ((8 + len + 7) & !7) as u64
    }
    fn needed(&self, len: usize) -> u64 {
        let t = Self::total(len);
        let tail = self.cap - (self.write % self.cap);
        if self.wrap == WrapMode::Pad && t > tail {
            tail + t
        } else {
            t
        }
    }
}

fn run(ops: &[Op], wrap: WrapMode) -> Result<(), TestCaseError> {
    let cap = 4096usize;
    let (mut p, mut c) = pair(RingConfig::with_capacity(cap).wrap(wrap));
    let mut m = Model {
        cap: cap as u64,
        wrap,
        write: 0,
        published: 0,
        released: 0,
        read: 0,
        pending: Vec::new(),
        queue: VecDeque::new(),
        read_end: 0,
    };
    let mut n = 0u8;
    for op in ops {
        match op {
            Op::Reserve(len) => {
                let needed = m.needed(*len);
                let free = m.cap - (m.write - m.released);
                match p.reserve(*len, 5, 0) {
                    Ok(buf) => {
                        prop_assert!(needed <= free, "reserve succeeded without room");
                        n = n.wrapping_add(1);
                        let bytes: Vec<u8> = (0..*len).map(|i| n.wrapping_add(i as u8)).collect();
                        buf.copy_from_slice(&bytes);
                        m.write += needed;
                        m.pending.push((m.write, bytes));
                    }
                    Err(Error::Full { needed: en, .. }) => {
                        prop_assert!(
                            needed > free,
                            "Full with room: needed {} free {}",
                            needed,
                            free
                        );
                        prop_assert_eq!(en as u64, needed);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
            Op::Publish => {
                p.publish();
                m.published = m.write;
                m.queue.extend(m.pending.drain(..));
            }
            Op::Abandon => {
                p.abandon();
                m.write = m.published;
                m.pending.clear();
            }
            Op::Read(k) => {
                for _ in 0..*k {
                    let got = c.read().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    match (got, m.queue.pop_front()) {
                        (None, None) => break,
                        (Some(rec), Some((end, bytes))) => {
                            prop_assert_eq!(rec.payload().to_vec(), bytes);
                            m.read_end = end;
                        }
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "consumer got {:?}, model expected {:?}",
                                got.map(|r| r.len()),
                                want.map(|w| w.1.len())
                            )))
                        }
                    }
                }
                m.read = m.read_end;
            }
            Op::Release => {
                c.release();
                m.released = m.read;
                let (released, _, _) = c.positions();
                prop_assert_eq!(released, m.released);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pad_mode_ring_behaves_like_the_model_queue(ops in ops()) {
        run(&ops, WrapMode::Pad)?;
    }

    #[test]
    fn mirror_mode_ring_behaves_like_the_model_queue(ops in ops()) {
        run(&ops, WrapMode::Mirror)?;
    }
}
