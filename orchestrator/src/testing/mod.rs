//! Helpers for tests that run real components (used by this crate's tests and by later crates').

pub mod etcd;
