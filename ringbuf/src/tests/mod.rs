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
