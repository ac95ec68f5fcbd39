//! Crash points: where the crash-safety test kills `fleetd` (`orchestrator/tests/crash.rs`).
//!
//! With `FLEETD_CRASH_AT=NAME:N` in its environment, the N-th time fleetd passes the point `NAME`
//! it says so on stderr (`fleetd: crash point NAME#N reached`) and stops that thread there, so
//! that the test's SIGKILL lands exactly between two steps that must survive a crash (a record
//! written and the cloud call not yet made, a cloud call answered and not yet recorded, ...).
//! Without the variable a point costs one relaxed load. The names are listed in [`POINTS`]
//! and [`MOVE_POINTS`].
//!
//! A test hook: only a fleetd built with the `testing` feature (as the tests build it) reads the
//! variable; in any other build [`hit`] is empty.

#[cfg(feature = "testing")]
use std::sync::OnceLock;
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicU32, Ordering};

/// Every crash point, in the order a node's life passes them.
pub const POINTS: &[&str] = &[
    "plan.written",        // new node records written; launch orders not sent yet
    "launch.started",      // record Launching (with the token); cloud not called yet
    "launch.answered",     // the cloud made the instance; its id not recorded yet
    "launch.recorded",     // instance id recorded (Bootstrapping)
    "node.ready",          // node Ready
    "request.claimed",     // a runner claimed a request; no result yet
    "request.completed",   // a request's result written
    "node.draining",       // scale-down: node Draining
    "terminate.started",   // record Terminating; terminate not called yet
    "terminate.answered",  // the cloud accepted the terminate; not confirmed yet
    "terminate.confirmed", // record Terminated
];

/// Crash points inside a consolidation move, in the order a move passes them (a separate list: a
/// move needs a cheaper node to move to, which the node-life test's fleet never has).
pub const MOVE_POINTS: &[&str] = &[
    "consolidate.marked",   // node record marked leaving; no replacement counted or started yet
    "consolidate.replaced", // replacements counted on the leaving record; their runners not written
    "node.draining",        // every replacement serves: the emptied node Draining
    "terminate.started",    // record Terminating; terminate not called yet
];

#[cfg(feature = "testing")]
struct Target {
    name: String,
    nth: u32,
    seen: AtomicU32,
}

#[cfg(feature = "testing")]
fn target() -> Option<&'static Target> {
    static T: OnceLock<Option<Target>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("FLEETD_CRASH_AT").ok()?;
        let (name, nth) = v.rsplit_once(':').unwrap_or((&v, "1"));
        let nth = nth.parse().ok()?;
        Some(Target { name: name.to_string(), nth, seen: AtomicU32::new(0) })
    })
    .as_ref()
}

/// Passes the crash point `name` (see the module doc).
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Passes the crash point `name` (see the module doc).
#[cfg(feature = "testing")]
pub fn hit(name: &'static str) {
    let Some(t) = target() else { return };
    if t.name != name || t.seen.fetch_add(1, Ordering::SeqCst) + 1 != t.nth {
        return;
    }
    eprintln!("fleetd: crash point {name}#{} reached", t.nth);
    // Block this thread (not just the task) until the test's SIGKILL arrives.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
