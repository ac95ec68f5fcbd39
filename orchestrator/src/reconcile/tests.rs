use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleet_core::spec::FleetSpec;
use fleet_core::{CapacityType, Catalog, Cloud, Money};
use fleet_policies::placement::{PlacementIndex, UnavailableCache};
use fleet_state::model::CandidateRecord;

use super::*;
use crate::testing::harness::h100x8;

fn t(s: &str) -> Time {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn node(id: u64, state: NodePhase, price: &str, since: Option<&str>, until: Option<&str>) -> NodeRecord {
    let o = h100x8(Cloud::Lambda, "us-east-1", price, CapacityType::OnDemand);
    NodeRecord {
        id,
        app: "llm".into(),
        state,
        candidates: vec![CandidateRecord { offering: o.key(), price: o.price, slots: 1 }],
        attempt: 0,
        slots: 1,
        price: since.map(|_| o.price),
        billing_since: since.map(t),
        billing_until: until.map(t),
        cordoned: false,
        leaving: None,
        created_at: t("2026-10-01T00:00:00Z"),
    }
}

#[test]
fn month_cost_counts_only_this_month_and_stops_at_billing_end() {
    let now = t("2026-11-25T12:00:00Z");
    // Billing since October: only November's 24.5 days count, at $20/h.
    let n = node(
        1,
        NodePhase::Ready {
            instance_id: "i".into(),
            offering: h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand).key(),
            since: now,
        },
        "20",
        Some("2026-10-20T00:00:00Z"),
        None,
    );
    assert_eq!(month_cost(&n, now), Money::from_dollars(20 * (24 * 24 + 12)));
    // Ended 90 minutes after it started: $30.
    let n =
        node(2, NodePhase::Terminated { since: now }, "20", Some("2026-11-02T00:00:00Z"), Some("2026-11-02T01:30:00Z"));
    assert_eq!(month_cost(&n, now), Money::from_dollars(30));
    // Never launched: nothing.
    let n = node(3, NodePhase::Requested { since: now }, "20", None, None);
    assert_eq!(month_cost(&n, now), Money::ZERO);
    assert_eq!(month_start(now), t("2026-11-01T00:00:00Z"));
}

#[test]
fn fleet_view_counts_capacity_runners_and_queue() {
    let now = t("2026-11-25T12:00:00Z");
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let catalog = Arc::new(Catalog::new(vec![o.clone()]));
    let spec = FleetSpec::parse("t", "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 8\n").unwrap();
    let index = PlacementIndex::new(catalog, &spec);
    let ids = offering_ids(&index);
    let ready = NodePhase::Ready { instance_id: "i-1".into(), offering: o.key(), since: now };
    let nodes = vec![
        node(1, ready, "20", Some("2026-11-25T11:00:00Z"), None),
        node(2, NodePhase::Terminated { since: now }, "20", Some("2026-11-25T10:00:00Z"), Some("2026-11-25T10:30:00Z")),
        NodeRecord { cordoned: true, slots: 4, ..node(3, NodePhase::Requested { since: now }, "20", None, None) },
    ];
    let runners = vec![
        RunnerRecord { state: RunnerPhase::Idle { node: 1, since: now }, ..RunnerRecord::placed(10, "llm", 1, now) },
        RunnerRecord {
            state: RunnerPhase::Stopping { node: 1, since: now },
            ..RunnerRecord::placed(11, "llm", 1, now)
        },
        RunnerRecord::placed(12, "llm", 3, now),
    ];
    let depths = BTreeMap::from([("llm".to_string(), Depth { queued: 5, in_flight: 2 })]);
    let unavailable = UnavailableCache::default();
    let s = fleet_view(&ids, &nodes, &runners, &depths, &HashMap::new(), &unavailable, now);
    let app = &s.apps["llm"];
    // The terminated node is not capacity; the cordoned one offers only the slot it uses.
    assert_eq!(app.nodes.iter().map(|n| (n.id, n.slots)).collect::<Vec<_>>(), vec![(1, 1), (3, 1)]);
    // The stopping runner does not count; the idle one is ready with its idle time.
    let r: Vec<_> = app.runners.iter().map(|r| (r.runner.id, r.runner.ready, r.node)).collect();
    assert_eq!(r, vec![(10, true, 1), (12, false, 3)]);
    assert_eq!((app.queued, app.in_flight), (5, 2));
    // One hour of node 1 + half an hour of node 2 at $20/h.
    assert_eq!(app.month_to_date, Money::from_dollars(30));
    assert_eq!(s.fleet_month_to_date, Money::from_dollars(30));
}

#[test]
fn unhealthy_nodes_from_agent_records() {
    use fleet_state::model::{AgentHealth, AgentRecord, InterruptionNotice};
    let now = t("2026-11-25T12:00:00Z");
    let ready = |id: u64, since: &str| {
        let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand).key();
        node(id, NodePhase::Ready { instance_id: format!("i-{id}"), offering: o, since: t(since) }, "20", None, None)
    };
    let agent = |node: u64, ok: bool, reason: Option<&str>, interruption: Option<&str>| AgentRecord {
        node,
        lease: 1,
        version: "test".into(),
        gpus: 8,
        since: now,
        health: AgentHealth {
            ok,
            reason: reason.map(str::to_string),
            interruption: interruption.map(|k| InterruptionNotice {
                source: "aws".into(),
                kind: k.into(),
                not_before: Some("2026-11-25T12:02:00Z".into()),
                noticed_at: now,
            }),
            ..AgentHealth::default()
        },
    };
    let nodes = vec![
        ready(1, "2026-11-25T11:00:00Z"),                               // healthy agent
        ready(2, "2026-11-25T11:00:00Z"),                               // no agent: lease expired
        ready(3, "2026-11-25T11:59:55Z"),                               // no agent yet, within grace
        ready(4, "2026-11-25T11:00:00Z"),                               // burn-in failed
        ready(5, "2026-11-25T11:00:00Z"),                               // spot notice
        node(6, NodePhase::Requested { since: now }, "20", None, None), // not ready: not judged
    ];
    let agents = vec![
        agent(1, true, None, None),
        agent(4, false, Some("burn-in failed: cuda:0 reached 120 TFLOP/s"), None),
        agent(5, true, None, Some("terminate")),
    ];
    let none = std::collections::HashSet::new();
    let u = unhealthy_nodes(&nodes, &agents, &none, now, std::time::Duration::from_secs(10));
    assert_eq!(u.keys().copied().collect::<Vec<_>>(), vec![2, 4, 5]);
    assert_eq!(u[&2], Unhealthy::NoAgent);
    assert_eq!(u[&4].label(), "reported");
    assert!(u[&4].to_string().contains("burn-in failed"), "{}", u[&4]);
    assert_eq!(u[&5].to_string(), "the cloud announced 'terminate' at 2026-11-25T12:02:00Z");
    // Past the grace, node 3 counts too.
    let later = t("2026-11-25T12:00:06Z");
    assert!(unhealthy_nodes(&nodes, &agents, &none, later, std::time::Duration::from_secs(10)).contains_key(&3));
    // An agent seen before and gone now is no grace case: its lease expired.
    let seen = std::collections::HashSet::from([3]);
    assert_eq!(
        unhealthy_nodes(&nodes, &agents, &seen, now, std::time::Duration::from_secs(10))[&3],
        Unhealthy::NoAgent
    );
}

#[test]
fn unhealthy_nodes_are_drained_after_a_while_and_never_right_after_a_store_outage() {
    use fleet_state::lifecycle::node::DrainReason;
    let now = t("2026-11-25T12:00:00Z");
    let after = std::time::Duration::from_secs(30);
    let u = BTreeMap::from([
        (1, Unhealthy::NoAgent),
        (2, Unhealthy::NoAgent),
        (3, Unhealthy::Interrupted { kind: "terminate".into(), not_before: None }),
        (4, Unhealthy::Reported("ECC errors".into())),
    ]);
    let since =
        HashMap::from([(1, t("2026-11-25T11:59:00Z")), (2, t("2026-11-25T11:59:50Z")), (4, t("2026-11-25T11:50:00Z"))]);
    // The store seen without a break for an hour: 1 and 4 have been unhealthy long enough, 2 not yet;
    // 3 goes at once.
    let d = drains(&u, &since, t("2026-11-25T11:00:00Z"), now, after);
    assert_eq!(d, vec![(1, DrainReason::AgentLost), (3, DrainReason::SpotInterruption), (4, DrainReason::AgentLost)]);
    // The store came back 10 s ago: no node is drained for a missing agent yet (only the notice counts).
    let d = drains(&u, &since, t("2026-11-25T11:59:50Z"), now, after);
    assert_eq!(d, vec![(3, DrainReason::SpotInterruption)]);
}

/// An agent that says its machine is not what was rented: that node is drained at once (no
/// grace: the machine will not get better), even right after a store outage.
#[test]
fn a_machine_unlike_its_rental_is_drained_at_once() {
    use fleet_state::lifecycle::node::DrainReason;
    let now = t("2026-11-25T12:00:00Z");
    let u = BTreeMap::from([(7, Unhealthy::Hardware("rented as 8× H100, the machine shows 7 GPUs".into()))]);
    let d = drains(&u, &HashMap::new(), now, now, std::time::Duration::from_secs(30));
    assert_eq!(d, vec![(7, DrainReason::HardwareFault)]);
    assert_eq!(u[&7].label(), "hardware");
    assert!(u[&7].to_string().starts_with("not the machine rented: rented as 8× H100"));
}

/// A draining node bills until the cloud confirms it gone: its price holds budget room, so a
/// replacement planned beside it cannot take the burn over the cap (found by `fleetctl demo`: a
/// spot node drained on its notice, and its replacement took the fleet to $8.55/h under an $8 cap).
#[test]
fn a_draining_node_still_holds_its_price_against_the_budget() {
    let now = t("2026-11-25T12:00:00Z");
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let catalog = Arc::new(Catalog::new(vec![o.clone()]));
    let toml = "[fleet]\nname = \"t\"\n[budget]\nmax_per_hour = \"30\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 8\n[apps.llm.scaling]\nmax_concurrency = 4\n";
    let spec = FleetSpec::parse("t", toml).unwrap();
    let index = PlacementIndex::new(catalog, &spec);
    let ids = offering_ids(&index);
    let draining = NodePhase::Draining {
        instance_id: "i-1".into(),
        offering: o.key(),
        reason: fleet_state::lifecycle::node::DrainReason::SpotInterruption,
        since: now,
    };
    let terminating = NodePhase::Terminating { instance_id: "i-1".into(), since: now };
    let depths = BTreeMap::from([("llm".to_string(), Depth { queued: 5, in_flight: 0 })]);
    let unavailable = UnavailableCache::default();
    let opts = fleet_policies::plan::PlanOptions::default();
    for leaving in [draining, terminating] {
        let nodes = vec![node(1, leaving.clone(), "20", Some("2026-11-25T11:00:00Z"), None)];
        let s = fleet_view(&ids, &nodes, &Vec::<RunnerRecord>::new(), &depths, &HashMap::new(), &unavailable, now);
        assert_eq!(s.apps["llm"].outside_burn, Money::from_dollars(20), "{leaving:?}");
        let p = fleet_policies::plan::plan(&index, &spec, &s, &opts);
        assert!(
            p.apps[0].new_nodes.is_empty(),
            "$20/h more would take $20/h to $40/h under a $30 cap: {:?}",
            p.apps[0]
        );
        assert!(p.burn_per_hour <= Money::from_dollars(30), "{}", p.burn_per_hour);
    }
    // Once the cloud confirms it gone, the room is back.
    let gone =
        node(1, NodePhase::Terminated { since: now }, "20", Some("2026-11-25T11:00:00Z"), Some("2026-11-25T12:00:00Z"));
    let s = fleet_view(&ids, &[gone], &Vec::<RunnerRecord>::new(), &depths, &HashMap::new(), &unavailable, now);
    assert_eq!(s.apps["llm"].outside_burn, Money::ZERO);
    let p = fleet_policies::plan::plan(&index, &spec, &s, &opts);
    assert_eq!(p.apps[0].new_nodes.len(), 1, "{:?}", p.apps[0]);
}
