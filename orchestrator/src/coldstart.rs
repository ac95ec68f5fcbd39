//! What fleetd tells the planner about an app's cold starts ([`fleet_policies::coldstart`]):
//! learned from what its agents report, never guessed where they have said nothing.
//!
//! For an app whose spec pins a model (`[apps.X.model]`), once one of its nodes has reported a
//! cold start of that model ([`fleet_state::model::ColdStart`]):
//! - the weights' size: the bytes that cold start took (from the origin, peers and the cache);
//! - the origin's, peers' and disk's rates: the median of the reports that read only from the
//!   origin, only from peers, and every load, each falling back to [`DEFAULT_RATES`] until one
//!   such report exists;
//! - provision and boot: the median, over the app's nodes that became ready, of the time from the
//!   node's record to its readiness (the fleet's `--cold-start-seconds` before any);
//! - the origin's bill: [`EGRESS_PER_GB`] for object stores and HTTPS origins, nothing for a
//!   directory on the nodes' own machine;
//! - the horizon: the consolidation horizon (an hour without one).
//!
//! A node holds the weights when its agent reported a cold start of the pinned model (the node
//! cache keeps it), and has been empty since the first pass that saw it without a runner.

use std::collections::HashMap;
use std::time::Duration;

use fleet_core::{Money, NodeId, Time};
use fleet_policies::coldstart::ColdStartModel;
use fleet_policies::plan::AppView;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{AgentRecord, ColdStart, NodeRecord};

/// GB/s of the origin, peers and disk before any report says otherwise (the simulator's).
pub const DEFAULT_RATES: (f64, f64, f64) = (0.5, 6.0, 7.0);
/// What reading a GB out of an object store or over HTTPS costs, as internet egress does.
pub const EGRESS_PER_GB: Money = Money::from_micros(90_000);

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite() && *x > 0.0);
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The app's cold-start model from its agents' reports of the pinned model `digest`; `None`
/// until one has reported.
pub fn learn(
    app: &fleet_core::spec::AppSpec,
    agents: &[&AgentRecord],
    nodes: &[&NodeRecord],
    default_boot: Duration,
    horizon: Option<Duration>,
) -> Option<ColdStartModel> {
    let model = app.model.as_ref()?;
    let digest = model.digest.to_string();
    let reports: Vec<&ColdStart> = agents
        .iter()
        .flat_map(|a| a.health.cold_starts.iter())
        .filter(|c| c.app == app.name && c.model.as_deref() == Some(digest.as_str()))
        .collect();
    let bytes = |c: &ColdStart| c.bytes_origin + c.bytes_peers + c.bytes_cached;
    let size = reports.iter().map(|c| bytes(c)).max()?;
    if size == 0 {
        return None;
    }
    let gb = |b: u64| b as f64 / 1e9;
    let origin = median(
        reports
            .iter()
            .filter(|c| c.bytes_peers == 0 && c.bytes_origin > 0)
            .map(|c| gb(c.bytes_origin) / c.fetch_s)
            .collect(),
    );
    let peers = median(
        reports
            .iter()
            .filter(|c| c.bytes_origin == 0 && c.bytes_peers > 0)
            .map(|c| gb(c.bytes_peers) / c.fetch_s)
            .collect(),
    );
    let disk = median(reports.iter().map(|c| gb(bytes(c)) / c.load_s).collect());
    let boots: Vec<f64> = nodes
        .iter()
        .filter(|n| n.app == app.name)
        .filter_map(|n| match &n.state {
            NodePhase::Ready { since, .. } => (*since - n.created_at).to_std().ok().map(|d| d.as_secs_f64()),
            _ => None,
        })
        .collect();
    let egress = match &model.origin {
        fleet_core::artifact::Origin::File { .. } => Money::ZERO,
        fleet_core::artifact::Origin::Http { url } if url.starts_with("http://") => Money::ZERO,
        _ => EGRESS_PER_GB,
    };
    Some(ColdStartModel {
        size_gb: gb(size),
        origin_gb_per_s: origin.unwrap_or(DEFAULT_RATES.0),
        peer_gb_per_s: peers.unwrap_or(DEFAULT_RATES.1),
        disk_gb_per_s: disk.unwrap_or(DEFAULT_RATES.2),
        egress_per_gb: egress,
        provision_and_boot: median(boots).map(Duration::from_secs_f64).unwrap_or(default_boot),
        horizon: horizon.unwrap_or(Duration::from_secs(3600)),
    })
}

/// Marks the view's nodes that hold the pinned weights and how long each has been empty
/// (`empty` remembers, across passes, when each node was first seen empty).
pub fn annotate(
    view: &mut AppView,
    app: &fleet_core::spec::AppSpec,
    agents: &HashMap<NodeId, &AgentRecord>,
    empty: &mut HashMap<NodeId, Time>,
    now: Time,
) {
    let digest = app.model.as_ref().map(|m| m.digest.to_string());
    let hosting: std::collections::HashSet<NodeId> = view.runners.iter().map(|r| r.node).collect();
    for n in view.nodes.iter_mut() {
        n.holds_weights = agents.get(&n.id).is_some_and(|a| {
            a.health.cold_starts.iter().any(|c| c.app == app.name && c.model.is_some() && c.model == digest)
        });
        if hosting.contains(&n.id) {
            empty.remove(&n.id);
        } else {
            n.empty_since = Some(*empty.entry(n.id).or_insert(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_policies::plan::NodeView;
    use fleet_state::model::AgentHealth;

    fn at(s: i64) -> Time {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn app(origin: &str) -> fleet_core::spec::AppSpec {
        let toml = format!(
            "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H100\"\n[apps.llm.model]\nsource = \"{origin}\"\ndigest = \"{DIGEST}\"\n"
        );
        fleet_core::spec::FleetSpec::parse("t", &toml).unwrap().apps.remove(0)
    }

    fn agent(node: u64, starts: Vec<ColdStart>) -> AgentRecord {
        AgentRecord {
            node,
            lease: 1,
            version: "t".into(),
            gpus: 1,
            since: at(0),
            health: AgentHealth { cold_starts: starts, ..Default::default() },
        }
    }

    fn start(origin: u64, peers: u64, fetch_s: f64, load_s: f64, model: Option<&str>) -> ColdStart {
        ColdStart {
            runner: 1,
            app: "llm".into(),
            model: model.map(String::from),
            fetch_s,
            load_s,
            bytes_origin: origin,
            bytes_peers: peers,
            bytes_cached: 0,
            first_token_s: None,
            at: at(0),
        }
    }

    #[test]
    fn the_model_is_learned_from_reports_of_the_pinned_weights_only() {
        let a = app("s3://models/llama");
        // 16 GB: from the origin in 32 s (0.5 GB/s), from peers in 4 s (4 GB/s); loads of 2 s.
        let agents = [
            agent(1, vec![start(16_000_000_000, 0, 32.0, 2.0, Some(DIGEST))]),
            agent(2, vec![start(0, 16_000_000_000, 4.0, 2.0, Some(DIGEST))]),
            // Another model's report says nothing about this one.
            agent(3, vec![start(1_000, 0, 100.0, 100.0, Some("sha256:ffff"))]),
        ];
        let refs: Vec<&AgentRecord> = agents.iter().collect();
        let m = learn(&a, &refs, &[], Duration::from_secs(150), None).unwrap();
        assert_eq!(m.size_gb, 16.0);
        assert_eq!((m.origin_gb_per_s, m.peer_gb_per_s, m.disk_gb_per_s), (0.5, 4.0, 8.0));
        assert_eq!(m.egress_per_gb, EGRESS_PER_GB);
        assert_eq!((m.provision_and_boot, m.horizon), (Duration::from_secs(150), Duration::from_secs(3600)));
        // Nothing reported yet: no model, and placement stays by price.
        assert!(learn(&a, &refs[2..], &[], Duration::from_secs(150), None).is_none());
        // A directory on the machine: no egress bill.
        let local = app("file:///srv/models/llama");
        assert_eq!(learn(&local, &refs, &[], Duration::ZERO, None).unwrap().egress_per_gb, Money::ZERO);
    }

    #[test]
    fn nodes_that_loaded_the_weights_hold_them_and_empty_ones_are_timed_from_when_first_seen() {
        let a = app("s3://models/llama");
        let agents = [agent(1, vec![start(1, 0, 1.0, 1.0, Some(DIGEST))]), agent(2, vec![])];
        let by_node: HashMap<NodeId, &AgentRecord> = agents.iter().map(|a| (a.node, a)).collect();
        let mut view = AppView { nodes: vec![NodeView::new(1, 0, 1), NodeView::new(2, 0, 1)], ..AppView::default() };
        let mut empty = HashMap::new();
        annotate(&mut view, &a, &by_node, &mut empty, at(10));
        assert!(view.nodes[0].holds_weights && !view.nodes[1].holds_weights);
        assert_eq!(view.nodes[0].empty_since, Some(at(10)));
        // A later pass keeps the first time it was seen empty.
        let mut again = AppView { nodes: vec![NodeView::new(1, 0, 1)], ..AppView::default() };
        annotate(&mut again, &a, &by_node, &mut empty, at(70));
        assert_eq!(again.nodes[0].empty_since, Some(at(10)));
    }
}
