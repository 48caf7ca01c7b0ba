//! The shared-memory packet ring between the edgegw daemon and local consumers.
//!
//! Work in progress: see issue 2 and `../shared/DESIGN.md` ("The ring").
#![deny(unsafe_code)]
