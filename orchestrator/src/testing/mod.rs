//! Helpers for tests that run real components (etcd, sshd), the fake-cloud harness and live fleets
//! on them: for this crate's tests and benchmark and other crates' tests, compiled only with the
//! `testing` feature (never into fleetd).

pub mod etcd;
pub mod harness;
pub mod http;
pub mod live;
pub mod sshd;
