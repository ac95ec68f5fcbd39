use chrono::TimeZone;

use super::*;

fn t(s: i64) -> Time {
    chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn states() -> Vec<(&'static str, RunnerPhase)> {
    let n = || 1u64;
    vec![
        ("Pending", RunnerPhase::Pending { node: n() }),
        ("Starting", RunnerPhase::Starting { node: n(), since: t(0) }),
        ("Idle", RunnerPhase::Idle { node: n(), since: t(0) }),
        ("Busy1", RunnerPhase::Busy { node: n(), in_flight: 1, since: t(0) }),
        ("Busy-full", RunnerPhase::Busy { node: n(), in_flight: 2, since: t(0) }),
        ("Stopping", RunnerPhase::Stopping { node: n(), since: t(0) }),
        ("Stopped", RunnerPhase::Stopped { since: t(0), lost_requests: 0 }),
    ]
}

fn events() -> Vec<RunnerEvent> {
    vec![
        RunnerEvent::Start,
        RunnerEvent::Started,
        RunnerEvent::StartFailed,
        RunnerEvent::Claim { max: 2 },
        RunnerEvent::Complete,
        RunnerEvent::Stop,
        RunnerEvent::Stopped,
        RunnerEvent::Lost,
    ]
}

/// Resulting state (with in-flight count for Busy) per (state, event), "-" where invalid.
const TABLE: &[(&str, &[&str])] = &[
    //           Start       Started  StartFailed  Claim     Complete  Stop        Stopped    Lost
    ("Pending", &["Starting", "-", "-", "-", "-", "Stopped", "-", "Stopped"]),
    ("Starting", &["-", "Idle", "Stopped", "-", "-", "Stopping", "-", "Stopped"]),
    ("Idle", &["-", "-", "-", "Busy1", "-", "Stopping", "-", "Stopped"]),
    ("Busy1", &["-", "-", "-", "Busy2", "Idle", "Stopping", "-", "Stopped"]),
    ("Busy-full", &["-", "-", "-", "-", "Busy1", "Stopping", "-", "Stopped"]),
    ("Stopping", &["-", "-", "-", "-", "Stopping", "Stopping", "Stopped", "Stopped"]),
    ("Stopped", &["-", "-", "-", "-", "-", "Stopped", "Stopped", "Stopped"]),
];

fn label(s: &RunnerPhase) -> String {
    match s {
        RunnerPhase::Busy { in_flight, .. } => format!("Busy{in_flight}"),
        other => other.name().to_string(),
    }
}

#[test]
fn every_state_and_event_pair_is_as_the_table_says() {
    for ((name, state), (row_name, row)) in states().into_iter().zip(TABLE) {
        assert_eq!(name, *row_name);
        for (ev, want) in events().into_iter().zip(row.iter()) {
            let ev_name = ev.name();
            match (*want, transition(&state, ev, t(5))) {
                ("-", Err(e)) => assert_eq!((e.state, e.event), (state.name(), ev_name)),
                (want, Ok(next)) => assert_eq!(label(&next), want, "{name} + {ev_name}"),
                (want, got) => panic!("{name} + {ev_name}: want {want}, got {got:?}"),
            }
        }
    }
}

#[test]
fn busy_runners_drain_when_stopped_and_lost_ones_hand_back_their_requests() {
    let busy = RunnerPhase::Busy { node: 1, in_flight: 3, since: t(0) };
    // Stopped while busy: it drains (claims nothing more; its requests finish).
    let draining = transition(&busy, RunnerEvent::Stop, t(1)).unwrap();
    assert_eq!(draining, RunnerPhase::Stopping { node: 1, since: t(1) });
    assert!(transition(&draining, RunnerEvent::Claim { max: 4 }, t(2)).is_err());
    assert_eq!(transition(&draining, RunnerEvent::Complete, t(2)).unwrap(), draining);
    assert_eq!(
        transition(&busy, RunnerEvent::Lost, t(1)).unwrap(),
        RunnerPhase::Stopped { since: t(1), lost_requests: 3 }
    );
    // Claims keep the time it became busy; the last completion makes it idle from then.
    let mut s = RunnerPhase::Idle { node: 1, since: t(0) };
    for i in 1..=4 {
        s = transition(&s, RunnerEvent::Claim { max: 4 }, t(i)).unwrap();
    }
    assert_eq!(s, RunnerPhase::Busy { node: 1, in_flight: 4, since: t(1) });
    assert!(transition(&s, RunnerEvent::Claim { max: 4 }, t(5)).is_err());
    for i in 0..4 {
        s = transition(&s, RunnerEvent::Complete, t(10 + i)).unwrap();
    }
    assert_eq!(s, RunnerPhase::Idle { node: 1, since: t(13) });
}
