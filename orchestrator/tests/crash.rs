//! Crash safety of the real `fleetd`: embedded store, the AWS adapter against moto's EC2 server
//! (the cloud outlives the daemon, as a real one does), simulated agents. fleetd is SIGKILLed at
//! every crash point of a node's life (`fleet_orchestrator::crashpoint::POINTS`, the 1st and 2nd
//! pass of each: 22 kills during launches, serving and terminations), restarted each time on the
//! same data dir; after the last restart the fleet settles and the test checks, against moto:
//! no instance without a record, no record without an instance, no node launched twice, every
//! request served exactly once, and nothing left running once the fleet is idle.
//!
//! A second test kills fleetd at every crash point inside a consolidation move
//! (`crashpoint::MOVE_POINTS`): an app on on-demand is allowed spot, its runner moves to a spot
//! node; after the restarts the move is finished once (one replacement node, the old one
//! terminated), nothing leaks and every request is served once.
#![cfg(feature = "aws")]

mod common;

use std::time::{Duration, Instant};

use common::{Fleetd, aws_args, duplicates_and_unknown, live_instances, records_match_cloud};
use fleet_orchestrator::crashpoint::{MOVE_POINTS, POINTS};
use fleet_providers::moto::Moto;

const FLEET: &str = "crash";
const SPEC: &str = r#"
[fleet]
name = "crash"

[apps.llm]
gpu = "H100"
gpus = 8

[apps.llm.scaling]
max_concurrency = 2
keep_alive = "2s"
"#;

/// Asserts every request of app `llm` in `submitted` is done; returns how many took more than
/// one attempt (re-queued after a crash).
fn all_done(f: &Fleetd, submitted: &[u64]) -> usize {
    let mut retried = 0;
    for id in submitted {
        let r = f.get(&format!("/v1/apps/llm/requests/{id}"));
        assert_eq!(r["state"]["state"], "done", "request {id}: {r}");
        if r["attempts"].as_u64().unwrap() > 1 {
            retried += 1;
        }
    }
    retried
}

fn start(dir: &std::path::Path, moto: &Moto, crash_at: Option<&str>) -> Fleetd {
    let mut args = aws_args(FLEET, moto, SPEC, dir);
    args.extend(["--simulate-agents", "--fake-speed", "20", "--data-dir"].map(String::from));
    args.push(dir.display().to_string());
    Fleetd::start(&args, crash_at)
}

#[test]
fn sigkill_at_every_crash_point_leaks_nothing_and_serves_every_request_once() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let mut submitted: Vec<u64> = Vec::new();
    let points: Vec<(&str, u32)> = [1, 2].iter().flat_map(|n| POINTS.iter().map(move |p| (*p, *n))).collect();
    assert!(points.len() >= 20);
    let mut report = Vec::new();
    for (point, nth) in &points {
        // The spec (with its AWS account) is applied at every start (`--spec`).
        let f = start(dir.path(), &moto, Some(&format!("{point}:{nth}")));
        let t = Instant::now();
        let mut last_burst: Option<Instant> = None;
        loop {
            if f.saw(&format!("crash point {point}#{nth} reached"), Duration::from_millis(300)) {
                break;
            }
            // Work arrives in bursts, once the previous burst is served and the fleet had time
            // to scale down: so the run passes launches, serving and terminations in turn.
            let quiet = last_burst.is_none_or(|b| b.elapsed() > Duration::from_secs(6));
            if quiet && f.unfinished("llm", &submitted).is_empty() {
                submitted.extend(f.submit("llm", 3));
                last_burst = Some(Instant::now());
            }
            assert!(
                t.elapsed() < Duration::from_secs(40),
                "crash point {point}#{nth} not reached within 40 s; fleetd's last lines:\n{}",
                f.log()
            );
        }
        report.push(format!("{point}#{nth} after {:.1} s", t.elapsed().as_secs_f64()));
        eprintln!("killed at {}", report.last().unwrap());
        f.kill();
    }

    // The last restart, with no crash point: everything settles.
    let f = start(dir.path(), &moto, None);
    let t = Instant::now();
    while !f.unfinished("llm", &submitted).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "requests unfinished 120 s after the last restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = t.elapsed();
    // Records and the cloud agree (transients such as a terminate in flight settle first).
    records_match_cloud(&f, &moto, FLEET, Duration::from_secs(60));
    // Idle: back to zero, nothing left running.
    let t = Instant::now();
    while !live_instances(&moto, FLEET).is_empty() || !f.recorded_instances().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still running 60 s after the work ended: {:?}",
            live_instances(&moto, FLEET)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let idle = t.elapsed();

    // Exactly once: one result per request, each done.
    let retried = all_done(&f, &submitted);
    // No node launched twice; every instance belongs to a node record.
    let (duplicates, unknown, instances) = duplicates_and_unknown(&f, &moto);
    assert!(duplicates.is_empty(), "nodes launched more than once: {duplicates:?}");
    assert!(unknown.is_empty(), "instances of nodes fleetd has no record of: {unknown:?}");
    assert!(instances >= 4, "the run launched too little to test anything: {instances} instances");
    eprintln!(
        "crash test: {} SIGKILLs ({}); {instances} instances launched for {} nodes, 0 duplicates, 0 leaked; \
         {} requests served once each ({retried} after a re-queue); last restart → all served in {:.1} s, \
         idle with nothing running {:.1} s later",
        points.len(),
        report.join(", "),
        f.node_ids().len(),
        submitted.len(),
        served.as_secs_f64(),
        idle.as_secs_f64()
    );
}

const MOVE_SPEC: &str = r#"
[fleet]
name = "crash-move"

[apps.llm]
gpu = "H100"
gpus = 8

[apps.llm.placement]
spot = "on-demand"

[apps.llm.scaling]
min_concurrency = 1
max_concurrency = 1
keep_alive = "1h"
"#;

#[test]
fn sigkill_inside_a_consolidation_move_finishes_it_once_and_serves_every_request_once() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // A one-second cold start and no minimum billing (recreate = cold start): a move to spot pays
    // for itself within seconds.
    let start = |spec: &str, crash_at: Option<&str>| {
        let mut args = aws_args("crash-move", &moto, spec, dir.path());
        args.extend(
            ["--simulate-agents", "--fake-speed", "20", "--cold-start-seconds", "1", "--recreate-seconds", "1"]
                .map(String::from),
        );
        args.extend(["--data-dir".to_string(), dir.path().display().to_string()]);
        Fleetd::start(&args, crash_at)
    };
    let mut submitted: Vec<u64> = Vec::new();
    // On on-demand, serving.
    let f = start(MOVE_SPEC, None);
    let t = Instant::now();
    loop {
        submitted.extend(f.submit("llm", 1));
        if f.unfinished("llm", &submitted).len() < submitted.len() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "nothing served within 60 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let first = f.nodes();
    assert_eq!(first.len(), 1, "{first:?}");
    let (old, _, capacity) = first[0].clone();
    assert_eq!(capacity, "on-demand");
    f.kill();

    // Spot allowed (the spec is applied at each start): the move starts; fleetd is killed at each
    // point of it in turn while requests keep coming.
    let spot = MOVE_SPEC.replace("spot = \"on-demand\"", "spot = \"auto\"");
    let mut report = Vec::new();
    for point in MOVE_POINTS {
        let f = start(&spot, Some(&format!("{point}:1")));
        let t = Instant::now();
        while !f.saw(&format!("crash point {point}#1 reached"), Duration::from_millis(300)) {
            submitted.extend(f.submit("llm", 1));
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "crash point {point}#1 not reached within 60 s; nodes {:?}; fleetd's last lines:\n{}",
                f.nodes(),
                f.log()
            );
        }
        report.push(format!("{point} after {:.1} s", t.elapsed().as_secs_f64()));
        eprintln!("killed at {}", report.last().unwrap());
        f.kill();
    }

    // The last restart: the move is finished, once.
    let f = start(&spot, None);
    let t = Instant::now();
    loop {
        let nodes = f.nodes();
        let old_gone = nodes.iter().any(|(id, state, _)| *id == old && state == "terminated");
        let live: Vec<_> = nodes.iter().filter(|(_, state, _)| state != "terminated").collect();
        if old_gone && live.len() == 1 && live[0].1 == "ready" && live[0].2 == "spot" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the move did not finish within 60 s: {nodes:?}\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    while !f.unfinished("llm", &submitted).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "unfinished: {:?}", f.unfinished("llm", &submitted));
        std::thread::sleep(Duration::from_millis(200));
    }
    records_match_cloud(&f, &moto, "crash-move", Duration::from_secs(60));
    let nodes = f.nodes();
    assert_eq!(nodes.len(), 2, "one node before the move, one replacement after it: {nodes:?}");
    let (duplicates, unknown, instances) = duplicates_and_unknown(&f, &moto);
    assert!(duplicates.is_empty(), "nodes launched more than once: {duplicates:?}");
    assert!(unknown.is_empty(), "instances of nodes fleetd has no record of: {unknown:?}");
    let retried = all_done(&f, &submitted);
    eprintln!(
        "move crash test: {} SIGKILLs ({}); {instances} instances for 2 nodes, 0 duplicates, 0 leaked; \
         {} requests served, each done ({retried} after a re-queue)",
        MOVE_POINTS.len(),
        report.join(", "),
        submitted.len()
    );
}
