use chrono::TimeZone;
use fleet_core::{CapacityType, Cloud, Time};

use super::*;

fn t(s: i64) -> Time {
    chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn offering() -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: None,
        instance_type: "p5.48xlarge".into(),
        capacity: CapacityType::Spot,
    }
}

/// One state of every kind (Failed twice: with and without an instance).
fn states() -> Vec<(&'static str, NodePhase)> {
    let (o, id) = (offering(), "i-1".to_string());
    vec![
        ("Requested", NodePhase::Requested { since: t(0) }),
        ("Launching", NodePhase::Launching { offering: o.clone(), token: "tok".into(), since: t(0) }),
        ("Bootstrapping", NodePhase::Bootstrapping { instance_id: id.clone(), offering: o.clone(), since: t(0) }),
        ("Ready", NodePhase::Ready { instance_id: id.clone(), offering: o.clone(), since: t(0) }),
        (
            "Draining",
            NodePhase::Draining { instance_id: id.clone(), offering: o, reason: DrainReason::ScaleDown, since: t(0) },
        ),
        ("Terminating", NodePhase::Terminating { instance_id: id.clone(), since: t(0) }),
        ("Terminated", NodePhase::Terminated { since: t(0) }),
        ("Failed+instance", NodePhase::Failed { instance_id: Some(id), reason: "x".into(), since: t(0) }),
        ("Failed", NodePhase::Failed { instance_id: None, reason: "x".into(), since: t(0) }),
    ]
}

fn events() -> Vec<(&'static str, NodeEvent)> {
    vec![
        ("LaunchStarted", NodeEvent::LaunchStarted { offering: offering(), token: "tok".into() }),
        ("Launched", NodeEvent::Launched { instance_id: "i-1".into() }),
        ("LaunchFailed/retry", NodeEvent::LaunchFailed { reason: "ICE".into(), retry: true }),
        ("LaunchFailed/fatal", NodeEvent::LaunchFailed { reason: "AMI".into(), retry: false }),
        ("BootstrapSucceeded", NodeEvent::BootstrapSucceeded),
        ("BootstrapFailed", NodeEvent::BootstrapFailed { reason: "host key".into() }),
        ("Drain", NodeEvent::Drain { reason: DrainReason::SpotInterruption }),
        ("Drained", NodeEvent::Drained),
        ("Terminate", NodeEvent::Terminate),
        ("TerminateConfirmed", NodeEvent::TerminateConfirmed),
        ("InstanceGone", NodeEvent::InstanceGone),
    ]
}

/// Every (state, event) pair: the resulting state's name, or "-" for an invalid transition.
const TABLE: &[(&str, &[&str])] = &[
    //                  LStart       Launched         LF/retry     LF/fatal  BootOk   BootFail  Drain       Drained        Terminate      TermConfirmed  Gone
    ("Requested", &["Launching", "-", "-", "-", "-", "-", "-", "-", "Terminated", "-", "-"]),
    ("Launching", &["-", "Bootstrapping", "Requested", "Failed", "-", "-", "-", "-", "-", "-", "-"]),
    ("Bootstrapping", &["-", "-", "-", "-", "Ready", "Failed", "-", "-", "Terminating", "-", "Terminated"]),
    ("Ready", &["-", "-", "-", "-", "-", "-", "Draining", "-", "Terminating", "-", "Terminated"]),
    ("Draining", &["-", "-", "-", "-", "-", "-", "Draining", "Terminating", "Terminating", "-", "Terminated"]),
    ("Terminating", &["-", "-", "-", "-", "-", "-", "-", "-", "Terminating", "Terminated", "Terminated"]),
    ("Terminated", &["-", "-", "-", "-", "-", "-", "-", "-", "Terminated", "Terminated", "Terminated"]),
    ("Failed+instance", &["-", "-", "-", "-", "-", "-", "-", "-", "Terminating", "-", "Terminated"]),
    ("Failed", &["-", "-", "-", "-", "-", "-", "-", "-", "Terminated", "-", "-"]),
];

#[test]
fn every_state_and_event_pair_is_as_the_table_says() {
    let events = events();
    for ((label, state), (row_label, row)) in states().into_iter().zip(TABLE) {
        assert_eq!(label, *row_label);
        for ((ev_label, ev), want) in events.iter().zip(row.iter()) {
            let got = transition(&state, ev.clone(), t(5));
            match (*want, &got) {
                ("-", Err(e)) => {
                    assert_eq!((e.state, e.event), (state.name(), ev.name()));
                    assert!(!e.hint.is_empty());
                }
                (name, Ok(next)) => assert_eq!(next.name(), name, "{label} + {ev_label}"),
                (want, got) => panic!("{label} + {ev_label}: want {want}, got {got:?}"),
            }
        }
    }
}

#[test]
fn no_instance_is_forgotten() {
    // From any state that may hold an instance, Terminated comes only from the cloud's word.
    for (label, state) in states() {
        for (ev_label, ev) in events() {
            if let Ok(NodePhase::Terminated { .. }) = transition(&state, ev.clone(), t(5))
                && state.instance_id().is_some()
            {
                assert!(
                    matches!(ev, NodeEvent::TerminateConfirmed | NodeEvent::InstanceGone),
                    "{label} + {ev_label} forgets instance {:?}",
                    state.instance_id()
                );
            }
        }
    }
}

#[test]
fn a_happy_life_carries_its_data() {
    let mut s = NodePhase::Requested { since: t(0) };
    let steps = [
        NodeEvent::LaunchStarted { offering: offering(), token: "fleet-n1".into() },
        NodeEvent::Launched { instance_id: "i-0abc".into() },
        NodeEvent::BootstrapSucceeded,
        NodeEvent::Drain { reason: DrainReason::ScaleDown },
        NodeEvent::Drain { reason: DrainReason::SpotInterruption },
        NodeEvent::Drained,
        NodeEvent::Terminate,
        NodeEvent::TerminateConfirmed,
    ];
    for (i, e) in steps.into_iter().enumerate() {
        s = transition(&s, e, t(i as i64)).unwrap();
        if let NodePhase::Draining { reason, since, .. } = &s {
            assert_eq!((reason, *since), (&DrainReason::ScaleDown, t(3)), "the first drain's reason and time are kept");
        }
        if (1..7).contains(&i) {
            assert_eq!(s.instance_id(), Some("i-0abc"));
        }
    }
    assert_eq!(s, NodePhase::Terminated { since: t(7) });
    let e = transition(&s, NodeEvent::BootstrapSucceeded, t(8)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node in state Terminated cannot take BootstrapSucceeded: the node is gone; request a new node instead"
    );
}

#[test]
fn states_round_trip_through_json_for_the_store() {
    for (_, s) in states() {
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<NodePhase>(&j).unwrap(), s);
    }
}
