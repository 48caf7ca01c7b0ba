//! C ABI (see include/edgegw_ring.h).
