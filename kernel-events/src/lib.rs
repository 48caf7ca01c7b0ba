//! Kernel event readers (inotify, rtnetlink, cgroup v2) merged into one ordered stream.
//!
//! Work in progress: see issue 3 and `../shared/DESIGN.md` ("Kernel events").
#![deny(unsafe_code)]
