use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Catalog, Cloud, GpuModel, Offering, OfferingKey, Price};
use proptest::prelude::*;

use super::*;
use crate::placement::UnavailableReason;
use crate::placement::tests::{arb_offering, off, spec, t0};

fn catalog() -> Arc<Catalog> {
    use CapacityType::*;
    use GpuModel::*;
    Arc::new(Catalog::new(vec![
        off(Cloud::Lambda, "us-east-1", None, "gpu_8x_h100_sxm5", H100Sxm, 8, OnDemand, "23.92"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "16"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, OnDemand, "98.32"),
        off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-8g", H100Sxm, 8, OnDemand, "43.06615"),
    ]))
}

const FLEET: &str = r#"
[apps.llm]
gpu = "H100"
gpus = 2
[apps.llm.placement]
base_on_demand = 1
[apps.llm.scaling]
max_concurrency = 20
max_multiplexing = 4
"#;

fn state<'a>(cache: &'a UnavailableCache, apps: Vec<(&str, AppView)>) -> FleetView<'a> {
    FleetView {
        now: t0(),
        apps: apps.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        unavailable: cache,
        fleet_month_to_date: Money::ZERO,
    }
}

fn queued(n: u32) -> AppView {
    AppView { queued: n, ..AppView::default() }
}

#[test]
fn queue_of_40_starts_10_runners_packed_4_per_node_base_on_demand_rest_spot() {
    let s = spec(FLEET);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let p = plan(&index, &s, &state(&cache, vec![("llm", queued(40))]), &PlanOptions::default());
    let a = &p.apps[0];
    assert_eq!((a.decision.target.desired, a.decision.start), (10, 10));
    assert_eq!(a.split, CapacitySplit { on_demand: 1, spot: 9, fallback: 0 });
    // The on-demand base runner: cheapest on-demand is Lambda (4 runners of 2 GPUs per node).
    assert_eq!(a.new_nodes[0].capacity, CapacityWanted::OnDemand);
    assert_eq!(a.new_nodes[0].runners, 1);
    assert_eq!(index.offering(a.new_nodes[0].candidates[0].offering).cloud, Cloud::Lambda);
    // Nine spot runners on three spot nodes of up to four.
    let spot: Vec<u32> = a.new_nodes[1..].iter().map(|n| n.runners).collect();
    assert_eq!(spot, [4, 4, 1]);
    assert!(a.new_nodes[1..].iter().all(|n| n.candidates.iter().all(|c| c.capacity == CapacityType::Spot)));
    assert!(a.unplaced.is_empty());
}

#[test]
fn new_runners_fill_existing_nodes_first_and_empty_nodes_are_released() {
    let s = spec(FLEET);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let busy = |id: u64, node: u64| RunnerView {
        runner: RunnerInfo {
            id,
            ready: true,
            in_flight: 4,
            idle_since: None,
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    };
    // Nodes: 10 on-demand, 11 spot, 12 spot and empty.
    let st = AppView {
        queued: 8,
        in_flight: 8,
        runners: vec![busy(1, 10), busy(2, 11)],
        nodes: vec![NodeView::new(10, 0, 4), NodeView::new(11, 1, 4), NodeView::new(12, 1, 4)],
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let a = &p.apps[0];
    // 16 requests / 4 = 4 runners; 2 run, so 2 start: both spot (the base is met), onto the
    // fullest node first, and no new node is needed.
    assert_eq!(a.decision.start, 2);
    assert_eq!(a.split, CapacitySplit { on_demand: 0, spot: 2, fallback: 0 });
    assert_eq!(a.on_existing, [(11, 2)]);
    assert!(a.new_nodes.is_empty());
    assert_eq!(a.release_nodes, [12]);
    assert_eq!(a.burn_per_hour, Money::parse_decimal("55.92").unwrap());
}

#[test]
fn spot_falls_back_to_on_demand_while_unavailable_and_returns_after() {
    let s = spec(FLEET);
    let index = PlacementIndex::new(catalog(), &s);
    let mut cache = UnavailableCache::default();
    let spot_key = OfferingKey {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: None,
        instance_type: "p5.48xlarge".into(),
        capacity: CapacityType::Spot,
    };
    cache.mark(spot_key, UnavailableReason::Preempted, t0(), Duration::from_secs(600));
    let p = plan(&index, &s, &state(&cache, vec![("llm", queued(12))]), &PlanOptions::default());
    assert_eq!(p.apps[0].split, CapacitySplit { on_demand: 3, spot: 0, fallback: 2 });
    assert!(p.apps[0].new_nodes.iter().all(|n| n.capacity == CapacityWanted::OnDemand));
    // Ten minutes later the entry has expired: spot again.
    let mut later = state(&cache, vec![("llm", queued(12))]);
    later.now = t0() + chrono::Duration::seconds(601);
    let p = plan(&index, &s, &later, &PlanOptions::default());
    assert_eq!(p.apps[0].split, CapacitySplit { on_demand: 1, spot: 2, fallback: 0 });
    // A "spot"-only app waits instead of paying on-demand.
    let spot_only = spec(&FLEET.replace("base_on_demand = 1", "base_on_demand = 0\nspot = \"spot\""));
    let index = PlacementIndex::new(catalog(), &spot_only);
    let p = plan(&index, &spot_only, &state(&cache, vec![("llm", queued(12))]), &PlanOptions::default());
    assert_eq!(p.apps[0].unplaced.len(), 1);
    assert!(p.apps[0].unplaced[0].why.contains("waiting for spot"), "{:?}", p.apps[0].unplaced);
}

#[test]
fn budget_cap_binds_and_says_which() {
    let s = spec(&format!("{FLEET}\n[budget]\nmax_per_hour = \"50\"\n"));
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let p = plan(&index, &s, &state(&cache, vec![("llm", queued(80))]), &PlanOptions::default());
    let a = &p.apps[0];
    assert_eq!(a.decision.start, 20);
    let placed: u32 = a.new_nodes.iter().map(|n| n.runners).sum();
    assert!(placed < 20);
    assert!(p.max_added_per_hour <= Money::from_dollars(50), "{}", p.max_added_per_hour);
    let u = a.unplaced.last().unwrap();
    assert_eq!(u.budget_cap, Some(BudgetCap::FleetHourly { cap: Money::from_dollars(50) }));
    assert!(u.why.starts_with("budget:"), "{}", u.why);
}

#[test]
fn a_budget_too_small_for_the_cheapest_mix_still_buys_the_nodes_it_can_pay_for() {
    use CapacityType::*;
    use GpuModel::*;
    // Sixteen 1-GPU runners: the cheapest mix is two 8-GPU spot nodes ($10.24/h each, $1.28 per
    // GPU), but the budget leaves $5/h: three $1.54 1-GPU nodes fit it, not one 8-GPU node.
    let s = spec(
        "[apps.a]\ngpu = \"H100\"\ngpus = 1\n[apps.a.placement]\nspot = \"spot\"\n\
         [apps.a.scaling]\nmax_concurrency = 16\n[budget]\nmax_per_hour = \"5\"\n",
    );
    let catalog = Catalog::new(vec![
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "10.24"),
        off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-1g", H100Sxm, 1, Spot, "1.54"),
    ]);
    let index = PlacementIndex::new(Arc::new(catalog), &s);
    let cache = UnavailableCache::default();
    let p = plan(&index, &s, &state(&cache, vec![("a", queued(16))]), &PlanOptions::default());
    let a = &p.apps[0];
    assert_eq!(a.decision.start, 16);
    let sizes: Vec<(String, u32)> = a
        .new_nodes
        .iter()
        .map(|n| (index.offering(n.candidates[0].offering).instance.name.clone(), n.runners))
        .collect();
    assert_eq!(sizes, vec![("a3-highgpu-1g".to_string(), 1); 3]);
    // `fleetctl plan` says why the node is smaller than the mix wanted.
    let why = &a.new_nodes[0].why;
    assert!(why.contains("budget: a node for 8 runner(s) at $10.24/h exceeds the room left ($5.00/h"), "{why}");
    assert_eq!(p.max_added_per_hour, Money::parse_decimal("4.62").unwrap());
    // The rest waits for room, naming the cap.
    let u = a.unplaced.last().expect("13 runners unplaced");
    assert_eq!(u.runners, 13);
    assert_eq!(u.budget_cap, Some(BudgetCap::FleetHourly { cap: Money::from_dollars(5) }));
}

#[test]
fn scale_to_zero_stops_idle_runners_after_keep_alive_and_releases_their_node() {
    let s = spec("[apps.a]\ngpu = \"H100\"\n[apps.a.scaling]\nkeep_alive = \"60s\"\n");
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let idle = |secs: i64| AppView {
        runners: vec![RunnerView {
            runner: RunnerInfo {
                id: 1,
                ready: true,
                in_flight: 0,
                idle_since: Some(t0() - chrono::Duration::seconds(secs)),
                slot_price: Price::ZERO,
                paid_until: None,
                work_milli: 0,
            },
            node: 7,
        }],
        nodes: vec![NodeView::new(7, 0, 8)],
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("a", idle(59))]), &PlanOptions::default());
    assert!(p.apps[0].decision.stop.is_empty() && p.apps[0].release_nodes.is_empty());
    let p = plan(&index, &s, &state(&cache, vec![("a", idle(60))]), &PlanOptions::default());
    assert_eq!(p.apps[0].decision.stop, [1]);
    assert_eq!(p.apps[0].release_nodes, [7]);
}

// --- Budgets hold for every input -----------------------------------------------------------

fn arb_budget() -> impl Strategy<Value = String> {
    (proptest::option::of(1i64..300), proptest::option::of(1i64..200_000)).prop_map(|(h, m)| {
        let mut t = String::new();
        if let Some(h) = h {
            t += &format!("max_per_hour = \"{h}\"\n");
        }
        if let Some(m) = m {
            t += &format!("max_per_month = \"{m}\"\n");
        }
        t
    })
}

fn arb_app_state(n_offerings: usize) -> impl Strategy<Value = AppView> {
    (0u32..200, proptest::collection::vec((0usize..64, 1u32..4), 0..4), 0i64..200_000_000_000).prop_map(
        move |(q, nodes, mtd)| AppView {
            queued: q,
            nodes: nodes
                .into_iter()
                .enumerate()
                .filter(|(_, (o, _))| *o < n_offerings)
                .map(|(i, (o, slots))| NodeView::new(i as u64, o as u32, slots))
                .collect(),
            month_to_date: Money::from_micros(mtd),
            ..AppView::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_plan_breaks_a_budget_whatever_failover_picks(
        offerings in proptest::collection::vec(arb_offering(), 1..30),
        fleet_budget in arb_budget(),
        a_budget in arb_budget(),
        b_budget in arb_budget(),
        a_state in arb_app_state(30),
        b_state in arb_app_state(30),
        fleet_mtd in 0i64..300_000_000_000,
        minute in 0i64..(60 * 24 * 31),
    ) {
        let text = format!(
            "[budget]\n{fleet_budget}\n[apps.a]\ngpu = [\"H100\", \"A100\"]\n[apps.a.budget]\n{a_budget}\n\
             [apps.a.scaling]\nmax_concurrency = 50\n\
             [apps.b]\ngpu = \"H100\"\ngpus = 2\n[apps.b.budget]\n{b_budget}\n[apps.b.scaling]\nmax_concurrency = 50\nmin_concurrency = 3\n"
        );
        let s = spec(&text);
        let n = offerings.len();
        let index = PlacementIndex::new(Arc::new(Catalog::new(offerings)), &s);
        let cache = UnavailableCache::default();
        let keep = |st: AppView| AppView { nodes: st.nodes.into_iter().filter(|x| (x.offering as usize) < n).collect(), ..st };
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().to_utc() + chrono::Duration::minutes(minute);
        let st = FleetView {
            now,
            apps: [("a".to_string(), keep(a_state)), ("b".to_string(), keep(b_state))].into_iter().collect(),
            unavailable: &cache,
            fleet_month_to_date: Money::from_micros(fleet_mtd),
        };
        let p = plan(&index, &s, &st, &PlanOptions { max_candidates: 8, ..PlanOptions::default() });
        let price = |c: &Candidate| index.offering(c.offering).price.hourly();
        let mut fleet_added = Money::ZERO;
        for (app, ap) in s.apps.iter().zip(&p.apps) {
            let app_st = &st.apps[&app.name];
            let burn: Money = app_st.nodes.iter().map(|x| index.offering(x.offering).price.hourly()).sum();
            // Every failover choice of every node: at worst the dearest candidate of each.
            let worst: Money = ap.new_nodes.iter().map(|node| node.candidates.iter().map(price).max().unwrap()).sum();
            for node in &ap.new_nodes {
                prop_assert!(!node.candidates.is_empty());
                prop_assert!(node.candidates.iter().all(|c| price(c) <= node.reserved_per_hour));
            }
            let spend = Spend { burn_per_hour: burn, month_to_date: app_st.month_to_date };
            if !ap.new_nodes.is_empty() {
                prop_assert!(budget::within(&app.budget, &spend, worst, now), "app {} adds {} over {:?}", app.name, worst, app.budget);
            }
            fleet_added += worst;
        }
        let fleet_burn: Money = st.apps.values().flat_map(|a| &a.nodes).map(|x| index.offering(x.offering).price.hourly()).sum();
        if fleet_added > Money::ZERO {
            let spend = Spend { burn_per_hour: fleet_burn, month_to_date: st.fleet_month_to_date };
            prop_assert!(budget::within(&s.budget, &spend, fleet_added, now), "fleet adds {} over {:?}", fleet_added, s.budget);
        }
    }
}

/// The cheapest way to host `n` runners with nodes of these (runners per node, $/h) offerings,
/// found by trying every count of every offering.
fn exhaustive_min(offerings: &[(u32, Money)], n: u32) -> Option<Money> {
    fn go(o: &[(u32, Money)], n: u32, i: usize, hosted: u32, cost: Money, best: &mut Option<Money>) {
        if hosted >= n {
            if best.is_none_or(|b| cost < b) {
                *best = Some(cost);
            }
            return;
        }
        if i == o.len() {
            return;
        }
        let (fits, price) = o[i];
        if fits == 0 {
            return go(o, n, i + 1, hosted, cost, best);
        }
        for k in 0..=(n - hosted).div_ceil(fits) {
            go(o, n, i + 1, hosted + k * fits, cost + price.times(k), best);
        }
    }
    let mut best = None;
    go(offerings, n, 0, 0, Money::ZERO, &mut best);
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Right-sized nodes: whatever the catalog's node sizes and prices and however many runners
    /// must start, the plan's new nodes cost (at their first choices) what the cheapest of every
    /// possible mix of nodes costs, and every node's failover list hosts its runners at no more
    /// than the price it reserved.
    #[test]
    fn the_plan_costs_what_an_exhaustive_search_finds(
        offerings in prop::collection::vec((prop::sample::select(vec![1u32, 2, 4, 8]), 100u32..=6000), 1..=4),
        gpus in 1u32..=2,
        n in 1u32..=12,
    ) {
        let catalog = Arc::new(Catalog::new(
            offerings
                .iter()
                .enumerate()
                .map(|(k, (count, cents))| {
                    let price = format!("{}.{:02}", cents / 100, cents % 100);
                    off(Cloud::Lambda, &format!("us-east-{k}"), None, &format!("gpu_{count}x_h100"), GpuModel::H100Sxm,
                        *count, CapacityType::OnDemand, &price)
                })
                .collect(),
        ));
        let s = spec(&format!(
            "[apps.a]\ngpu = \"H100\"\ngpus = {gpus}\n[apps.a.placement]\nspot = \"on-demand\"\n\
             [apps.a.scaling]\nmin_concurrency = {n}\nmax_concurrency = {n}\n"
        ));
        let index = PlacementIndex::new(catalog.clone(), &s);
        let cache = UnavailableCache::default();
        let p = plan(&index, &s, &state(&cache, vec![]), &PlanOptions::default());
        let a = &p.apps[0];
        let sizes: Vec<(u32, Money)> =
            catalog.offerings().iter().map(|o| (o.instance.gpu_count / gpus, o.price.hourly())).collect();
        match exhaustive_min(&sizes, n) {
            None => prop_assert!(a.new_nodes.is_empty() && !a.unplaced.is_empty()),
            Some(best) => {
                prop_assert_eq!(a.decision.start, n);
                prop_assert_eq!(a.new_nodes.iter().map(|x| x.runners).sum::<u32>(), n);
                let cost: Money = a.new_nodes.iter().map(|x| x.candidates[0].node_price.hourly()).sum();
                prop_assert_eq!(cost, best, "plan {:?}", a.new_nodes);
                for node in &a.new_nodes {
                    for c in &node.candidates {
                        prop_assert!(c.runners_per_node >= node.runners);
                        prop_assert!(c.node_price.hourly() <= node.reserved_per_hour);
                    }
                }
            }
        }
    }
}

#[test]
fn one_small_runner_rents_a_small_node_and_auto_takes_on_demand_where_that_is_cheaper() {
    use CapacityType::*;
    use GpuModel::*;
    let big_spot = off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "10.24");
    let small_spot = off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-1g", H100Sxm, 1, Spot, "1.54");
    let small_od = off(Cloud::Lambda, "us-east-1", None, "gpu_1x_h100_sxm5", H100Sxm, 1, OnDemand, "2.49");
    let app = |policy: &str| {
        spec(&format!(
            "[apps.a]\ngpu = \"H100\"\ngpus = 1\n[apps.a.placement]\nspot = \"{policy}\"\n\
             [apps.a.scaling]\nmin_concurrency = 1\nmax_concurrency = 1\n"
        ))
    };
    let first = |offerings: Vec<Offering>, policy: &str| {
        let s = app(policy);
        let index = PlacementIndex::new(Arc::new(Catalog::new(offerings)), &s);
        let cache = UnavailableCache::default();
        let p = plan(&index, &s, &state(&cache, vec![]), &PlanOptions::default());
        let n = &p.apps[0].new_nodes;
        assert_eq!(n.len(), 1, "{n:?}");
        let o = index.offering(n[0].candidates[0].offering).clone();
        (o.instance.name, o.capacity, n[0].why.clone())
    };
    // $1.28 per GPU on the 8-GPU node, but $10.24 for the one runner: the $1.54 node is rented.
    let (name, cap, why) = first(vec![big_spot.clone(), small_spot, small_od.clone()], "auto");
    assert_eq!((name.as_str(), cap), ("a3-highgpu-1g", Spot));
    assert!(why.contains("lowest $/GPU offering (8 runners per node) would cost $10.24"), "{why}");
    // No small spot node: `auto` takes the small on-demand one ($2.49) over the large spot one.
    assert_eq!(first(vec![big_spot.clone(), small_od.clone()], "auto").0, "gpu_1x_h100_sxm5");
    // `spot` never pays on-demand: the large spot node it is.
    assert_eq!(first(vec![big_spot, small_od], "spot").0, "p5.48xlarge");
}

#[test]
fn scale_down_empties_the_node_that_costs_most_per_used_slot_first() {
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 2\n[apps.llm.placement]\nspot = \"on-demand\"\n\
         [apps.llm.scaling]\nmax_concurrency = 10\nmax_multiplexing = 4\nkeep_alive = \"60s\"\n",
    );
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let runner = |id: u64, node: u64, in_flight: u32, idle_s: i64| RunnerView {
        runner: RunnerInfo {
            id,
            ready: true,
            in_flight,
            idle_since: (in_flight == 0).then(|| t0() - chrono::Duration::seconds(idle_s)),
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    };
    // Two Lambda nodes at $23.92/h: node 10 hosts a busy runner and two idle a long while
    // ($7.97 per runner), node 11 one idle runner, idle for less long ($23.92 per runner).
    let st = AppView {
        queued: 4,
        in_flight: 4,
        runners: vec![runner(1, 10, 4, 0), runner(2, 10, 0, 300), runner(3, 10, 0, 300), runner(4, 11, 0, 100)],
        nodes: vec![NodeView::new(10, 0, 4), NodeView::new(11, 0, 4)],
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let a = &p.apps[0];
    // 8 requests / 4 = 2 runners wanted of 4: two stop. Longest idle first would stop 2 and 3 and
    // keep both nodes; the dearest slot first stops 4 and empties node 11.
    assert_eq!(a.decision.stop, [4, 2]);
    assert_eq!(a.release_nodes, [11]);
}

#[test]
fn scale_down_weighs_a_slot_by_the_work_it_buys_when_the_app_allows_several_gpu_families() {
    use CapacityType::*;
    use GpuModel::*;
    // One runner per 8-GPU node: an H100 spot at $16/h and an A100 spot at $10/h, both idle as
    // long. The A100 bills less but does a third of the work ($31.70 per hour of H100 work):
    // its runner is the one to stop (until 2026-12-03 the H100's was, by the bill alone).
    let catalog = Arc::new(Catalog::new(vec![
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "16"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p4de.24xlarge", A100_80GB, 8, Spot, "10"),
    ]));
    let s = spec(
        "[apps.llm]\ngpu = [\"H100\", \"A100-80GB\"]\ngpus = 8\n[apps.llm.placement]\nspot = \"spot\"\n\
         [apps.llm.scaling]\nmax_concurrency = 10\nmax_multiplexing = 4\nkeep_alive = \"60s\"\n",
    );
    let index = PlacementIndex::new(catalog, &s);
    let cache = UnavailableCache::default();
    let st = AppView {
        queued: 1,
        runners: vec![idle_5m(1, 10), idle_5m(2, 11)],
        nodes: vec![NodeView::new(10, 0, 1), NodeView::new(11, 1, 1)],
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let a = &p.apps[0];
    assert_eq!(a.decision.stop, [2]);
    assert_eq!(a.release_nodes, [11]);
}

#[test]
fn scale_down_keeps_the_base_on_demand_runners_and_stops_spot_ones_first() {
    // base_on_demand = 1, 2-GPU runners: runner 1 on a Lambda on-demand node ($23.92/h for 4
    // slots), runners 2 and 3 on an AWS spot node ($16/h), all idle past keep-alive. One request
    // queued wants one runner. The dearest slot first would stop the on-demand runner and leave
    // the app on spot alone (until 2026-12-03); the base runner stays.
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 2\n[apps.llm.placement]\nbase_on_demand = 1\n\
         [apps.llm.scaling]\nmax_concurrency = 10\nmax_multiplexing = 4\nkeep_alive = \"60s\"\n",
    );
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let st = |runners: Vec<RunnerView>| AppView {
        queued: 1,
        runners,
        nodes: vec![NodeView::new(10, 0, 4), NodeView::new(11, 1, 4)],
        ..AppView::default()
    };
    // The runners stopped (sorted) and the nodes released.
    let scale_down = |runners: Vec<RunnerView>| {
        let p = plan(&index, &s, &state(&cache, vec![("llm", st(runners))]), &PlanOptions::default());
        let mut stop = p.apps[0].decision.stop.clone();
        stop.sort();
        (stop, p.apps[0].release_nodes.clone())
    };
    assert_eq!(scale_down(vec![idle_5m(1, 10), idle_5m(2, 11), idle_5m(3, 11)]), (vec![2, 3], vec![11]));
    // Two runners on on-demand nodes (the second is spot's fallback): the fallback one goes.
    assert_eq!(scale_down(vec![idle_5m(1, 10), idle_5m(4, 10), idle_5m(2, 11)]).0, [2, 4]);
}

/// A ready runner idle for five minutes (past a 60 s keep-alive).
fn idle_5m(id: u64, node: u64) -> RunnerView {
    RunnerView {
        runner: RunnerInfo {
            idle_since: Some(t0() - chrono::Duration::seconds(300)),
            ..idle_runner(id, node, true).runner
        },
        node,
    }
}

fn idle_runner(id: u64, node: u64, ready: bool) -> RunnerView {
    RunnerView {
        runner: RunnerInfo {
            id,
            ready,
            in_flight: 0,
            idle_since: ready.then(t0),
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    }
}

fn serving_runner(id: u64, node: u64) -> RunnerView {
    RunnerView {
        runner: RunnerInfo {
            id,
            ready: true,
            in_flight: 1,
            idle_since: None,
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    }
}

fn money(s: &str) -> Money {
    Money::parse_decimal(s).unwrap()
}

const ONE_PER_NODE: &str = r#"
[apps.llm]
gpu = "H100"
gpus = 8
[apps.llm.placement]
spot = "auto"
[apps.llm.scaling]
max_concurrency = 4
keep_alive = "10m"
"#;

/// One serving runner on an AWS on-demand p5 ($98.32/h, up for `age` seconds), cold start 180 s,
/// one minute of minimum billing.
fn on_demand_node_app_aged(age: i64) -> AppView {
    let node = NodeView { billed_since: Some(t0() - chrono::Duration::seconds(age)), ..NodeView::new(10, 2, 1) };
    AppView {
        in_flight: 1,
        runners: vec![serving_runner(1, 10)],
        nodes: vec![node],
        demand: DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180)),
        ..AppView::default()
    }
}

fn on_demand_node_app() -> AppView {
    on_demand_node_app_aged(7200)
}

#[test]
fn consolidation_replaces_an_on_demand_node_with_spot_when_the_saving_pays_for_the_move() {
    use crate::consolidate::MoveKind;
    let s = spec(ONE_PER_NODE);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let run = |st: AppView, opts: PlanOptions, s: &FleetSpec| plan(&index, s, &state(&cache, vec![("llm", st)]), &opts);
    let p = run(on_demand_node_app(), PlanOptions::default(), &s);
    let m = p.apps[0].consolidate.clone().expect("a move");
    assert_eq!((m.nodes.as_slice(), m.kind), ([10].as_slice(), MoveKind::Replace));
    // AWS spot p5 at $16/h: $82.32/h less. The move: 180 s of $16/h billed before it serves
    // ($0.80); the old node is past its minimum billing.
    assert_eq!(m.saving_per_hour, money("82.32"));
    assert_eq!(m.cost, money("0.80"));
    assert!(m.why.contains("spot"), "{}", m.why);
    // Within 30 s the saving ($0.686) does not pay for the move: none.
    let short = PlanOptions { consolidation_horizon: Some(Duration::from_secs(30)), ..PlanOptions::default() };
    assert_eq!(run(on_demand_node_app(), short, &s).apps[0].consolidate, None);
    // A node up for 20 s is expected to stay about 20 s more ($0.457 saved) and still owes 40 s
    // of minimum billing ($1.092): no move. Up for 30 minutes: a move.
    assert_eq!(run(on_demand_node_app_aged(20), PlanOptions::default(), &s).apps[0].consolidate, None);
    assert!(run(on_demand_node_app_aged(1800), PlanOptions::default(), &s).apps[0].consolidate.is_some());
    // Billed by the hour, a node up two hours has paid for its third hour as it began. The move
    // releases it 180 s (cold start) + 120 s (drain) from now. With 58 minutes paid for, the 53
    // left after the release ($86.85) are owed whether it runs or not, more than the hour's
    // saving: no move. With 10 minutes, 5 ($8.19) are owed: the move pays, and costs that too.
    // With 4 minutes, the release falls a minute into the next hour: 59 minutes ($96.68) owed,
    // no move.
    let hourly = |left: i64| {
        let mut st = on_demand_node_app();
        st.nodes[0].paid_until = Some(t0() + chrono::Duration::seconds(left));
        st.nodes[0].billing_step = Some(Duration::from_secs(3600));
        st
    };
    assert_eq!(run(hourly(3480), PlanOptions::default(), &s).apps[0].consolidate, None);
    let m = run(hourly(600), PlanOptions::default(), &s).apps[0].consolidate.clone().expect("a move");
    assert_eq!(m.cost, money("0.80") + money("98.32").divided_by(12));
    assert_eq!(run(hourly(240), PlanOptions::default(), &s).apps[0].consolidate, None);
    // A one-hour minimum billing (a cloud billing by the hour) and a 30-minute horizon: the new
    // spot node is paid for an hour, and the half hour beyond the saving counted ($8) is part
    // of the move's cost: $0.80 + $8.00.
    let mut hour_min = on_demand_node_app();
    hour_min.demand = DemandHistory::new(Duration::from_secs(3780), Duration::from_secs(180));
    let half = PlanOptions { consolidation_horizon: Some(Duration::from_secs(1800)), ..PlanOptions::default() };
    let m = run(hour_min, half, &s).apps[0].consolidate.clone().expect("a move");
    assert_eq!(m.cost, money("8.80"));
    assert!(m.why.contains("minimum billing beyond the saving counted"), "{}", m.why);
    // A runner idle for longer than a cold start is the autoscaler's to stop, not to move; one
    // idle for a moment (between requests) moves.
    let mut idle = idle_runner(1, 10, true);
    idle.runner.idle_since = Some(t0() - chrono::Duration::seconds(181));
    let long_idle = AppView { in_flight: 0, runners: vec![idle], ..on_demand_node_app() };
    assert_eq!(run(long_idle, PlanOptions::default(), &s).apps[0].consolidate, None);
    let between = AppView { in_flight: 0, runners: vec![idle_runner(1, 10, true)], ..on_demand_node_app() };
    assert!(run(between, PlanOptions::default(), &s).apps[0].consolidate.is_some());
    // Off when the app forbids it, or the fleet turns it off.
    let off = spec(&ONE_PER_NODE.replace("keep_alive = \"10m\"", "keep_alive = \"10m\"\nconsolidation = false"));
    let index_off = PlacementIndex::new(catalog(), &off);
    let p = plan(&index_off, &off, &state(&cache, vec![("llm", on_demand_node_app())]), &PlanOptions::default());
    assert_eq!(p.apps[0].consolidate, None);
    let never = PlanOptions { consolidation_horizon: None, ..PlanOptions::default() };
    assert_eq!(run(on_demand_node_app(), never, &s).apps[0].consolidate, None);
    // Not while the app is scaling: a queued request wants a runner.
    assert_eq!(
        run(AppView { queued: 8, ..on_demand_node_app() }, PlanOptions::default(), &s).apps[0].consolidate,
        None
    );
    // Not beyond the budget: $1.68/h of room cannot hold a $16/h node, even for a while.
    let capped = spec(&format!("{ONE_PER_NODE}[apps.llm.budget]\nmax_per_hour = \"100\"\n"));
    let index_capped = PlacementIndex::new(catalog(), &capped);
    let p = plan(&index_capped, &capped, &state(&cache, vec![("llm", on_demand_node_app())]), &PlanOptions::default());
    assert_eq!(p.apps[0].consolidate, None);
}

#[test]
fn consolidation_never_moves_runners_to_a_gpu_that_bills_less_but_does_less_work_for_it() {
    use CapacityType::*;
    use GpuModel::*;
    // The app allows A100s and H100s; its runner is on an AWS on-demand p5 ($98.32/h). H100 spot
    // is out of capacity; an A100 spot p4de bills $40/h but does a third of the work: $126.81
    // per hour of H100 work. Not a saving (until 2026-12-02 it was taken for one of $58.32/h).
    let catalog = Arc::new(Catalog::new(vec![
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, Spot, "16"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", H100Sxm, 8, OnDemand, "98.32"),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p4de.24xlarge", A100_80GB, 8, Spot, "40"),
    ]));
    let s = spec(&ONE_PER_NODE.replace("gpu = \"H100\"", "gpu = [\"H100\", \"A100-80GB\"]"));
    let index = PlacementIndex::new(catalog.clone(), &s);
    let mut cache = UnavailableCache::default();
    let spot_h100 = catalog.offerings()[0].key();
    cache.mark(spot_h100, UnavailableReason::InsufficientCapacity, t0(), Duration::from_secs(600));
    let node = NodeView { billed_since: Some(t0() - chrono::Duration::seconds(7200)), ..NodeView::new(10, 1, 1) };
    let app = AppView {
        in_flight: 1,
        runners: vec![serving_runner(1, 10)],
        nodes: vec![node],
        demand: DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180)),
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", app.clone())]), &PlanOptions::default());
    assert_eq!(p.apps[0].consolidate, None);
    // A move under way (the node leaving, say for spot's return): its replacement fails over only
    // to nodes that buy more work for less, not to the A100 that merely bills less.
    let fresh = UnavailableCache::default();
    let leaving = AppView { nodes: vec![NodeView { leaving: true, ..app.nodes[0].clone() }], ..app.clone() };
    let p = plan(&index, &s, &state(&fresh, vec![("llm", leaving)]), &PlanOptions::default());
    let offerings: Vec<u32> = p.apps[0].new_nodes[0].candidates.iter().map(|c| c.offering).collect();
    assert_eq!(offerings, [0], "the H100 spot only: {:?}", p.apps[0].new_nodes);
    // The A100 at $30/h is $95.11 of H100 work: cheaper in both, a move.
    let cheaper = Arc::new(Catalog::new(vec![
        catalog.offerings()[0].clone(),
        catalog.offerings()[1].clone(),
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p4de.24xlarge", A100_80GB, 8, Spot, "30"),
    ]));
    let index = PlacementIndex::new(cheaper, &s);
    let p = plan(&index, &s, &state(&cache, vec![("llm", app)]), &PlanOptions::default());
    let m = p.apps[0].consolidate.clone().expect("a move");
    assert_eq!(m.saving_per_hour, money("68.32"));
}

#[test]
fn consolidation_deletes_a_node_whose_runners_fit_on_the_others() {
    use crate::consolidate::MoveKind;
    let s = spec(&FLEET.replace("base_on_demand = 1", "spot = \"on-demand\""));
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    // Two Lambda nodes of four slots, one serving runner each: one node can go.
    let st = AppView {
        in_flight: 2,
        runners: vec![serving_runner(1, 10), serving_runner(2, 11)],
        nodes: vec![NodeView::new(10, 0, 4), NodeView::new(11, 0, 4)],
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let m = p.apps[0].consolidate.clone().expect("a move");
    assert_eq!(
        (m.nodes.as_slice(), m.kind, m.saving_per_hour, m.cost),
        ([10].as_slice(), MoveKind::Delete, money("23.92"), Money::ZERO)
    );
}

#[test]
fn consolidation_merges_part_full_nodes_into_one_larger_node_that_costs_less() {
    use crate::consolidate::MoveKind;
    use CapacityType::*;
    // Runners of one GPU; a 1-GPU node costs $3/h, a 4-GPU one $13/h, an 8-GPU one $20/h.
    let cat = Arc::new(Catalog::new(vec![
        off(Cloud::Lambda, "us-east-1", None, "gpu_1x_h100_sxm5", GpuModel::H100Sxm, 1, OnDemand, "3"),
        off(Cloud::Lambda, "us-east-1", None, "gpu_4x_h100_sxm5", GpuModel::H100Sxm, 4, OnDemand, "13"),
        off(Cloud::Lambda, "us-east-1", None, "gpu_8x_h100_sxm5", GpuModel::H100Sxm, 8, OnDemand, "20"),
    ]));
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 1\n[apps.llm.placement]\nspot = \"on-demand\"\n\
         [apps.llm.scaling]\nmax_concurrency = 20\nkeep_alive = \"10m\"\n",
    );
    let index = PlacementIndex::new(cat, &s);
    let cache = UnavailableCache::default();
    let aged = |id: u64, offering: u32, slots: u32| NodeView {
        billed_since: Some(t0() - chrono::Duration::seconds(7200)),
        ..NodeView::new(id, offering, slots)
    };
    // Seven 1-GPU nodes, one serving runner each: $21/h. No free slot anywhere (no delete), no
    // single node cheaper than $3/h (no replace); one 8-GPU node hosts all seven for $20/h.
    let seven = AppView {
        in_flight: 7,
        runners: (0..7).map(|k| serving_runner(k + 1, 10 + k)).collect(),
        nodes: (0..7).map(|k| aged(10 + k, 0, 1)).collect(),
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", seven.clone())]), &PlanOptions::default());
    let m = p.apps[0].consolidate.clone().expect("a merge");
    assert_eq!(m.kind, MoveKind::Merge);
    assert_eq!(m.nodes, (10..17).collect::<Vec<_>>(), "all seven go");
    assert_eq!(m.saving_per_hour, money("1"));
    assert!(m.why.contains("gpu_8x_h100_sxm5") && m.why.contains("7 nodes"), "{}", m.why);
    // Four of them cost $12/h together, less than any node that holds four: no merge.
    let four = AppView {
        in_flight: 4,
        runners: seven.runners[..4].to_vec(),
        nodes: seven.nodes[..4].to_vec(),
        ..AppView::default()
    };
    assert_eq!(
        plan(&index, &s, &state(&cache, vec![("llm", four)]), &PlanOptions::default()).apps[0].consolidate,
        None
    );
    // Carried out: the seven leaving nodes' runners are replaced on one node whose every
    // candidate costs less than the seven together ($21/h).
    let leaving = AppView {
        nodes: seven.nodes.iter().map(|n| NodeView { leaving: true, ..n.clone() }).collect(),
        ..seven.clone()
    };
    let a = plan(&index, &s, &state(&cache, vec![("llm", leaving)]), &PlanOptions::default()).apps.remove(0);
    assert_eq!(a.decision.start, 7);
    assert_eq!(a.new_nodes.len(), 1, "{:?}", a.new_nodes);
    assert_eq!(a.new_nodes[0].runners, 7);
    assert!(a.new_nodes[0].candidates.iter().all(|c| c.node_price.hourly() < money("21")));
    // Two part-full 4-GPU nodes (two runners each, $26/h) → one 4-GPU node ($13/h) would be a
    // delete (the other's free slots hold them): the cheaper move of the same saving.
    let two = AppView {
        in_flight: 4,
        runners: vec![serving_runner(1, 10), serving_runner(2, 10), serving_runner(3, 11), serving_runner(4, 11)],
        nodes: vec![aged(10, 1, 4), aged(11, 1, 4)],
        ..AppView::default()
    };
    let m = plan(&index, &s, &state(&cache, vec![("llm", two)]), &PlanOptions::default()).apps[0]
        .consolidate
        .clone()
        .expect("a move");
    assert_eq!((m.kind, m.saving_per_hour), (MoveKind::Delete, money("13")));
}

#[test]
fn a_move_starts_replacements_first_then_stops_the_old_runners_then_releases_the_node() {
    let s = spec(ONE_PER_NODE);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let run = |st: AppView| plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default()).apps.remove(0);
    let leaving = NodeView { leaving: true, ..on_demand_node_app().nodes[0].clone() };
    // Pass 1: the runner on the leaving node is replaced by one on a new spot node; it keeps
    // serving meanwhile.
    let a = run(AppView { nodes: vec![leaving.clone()], ..on_demand_node_app() });
    assert_eq!(a.replaced, [(10, 1)]);
    assert_eq!(a.decision.start, 1);
    assert_eq!(a.new_nodes.len(), 1);
    assert_eq!(a.new_nodes[0].candidates[0].capacity, CapacityType::Spot);
    assert!(a.decision.stop.is_empty() && a.release_nodes.is_empty());
    assert_eq!(a.consolidate, None, "one move at a time");
    // Pass 2: the replacement (runner 2 on node 20) is starting: nothing more starts, nothing stops.
    let replaced = NodeView { replaced: 1, ..leaving };
    let starting = AppView {
        runners: vec![idle_runner(1, 10, true), idle_runner(2, 20, false)],
        nodes: vec![replaced.clone(), NodeView::new(20, 1, 1)],
        ..on_demand_node_app()
    };
    let a = run(starting.clone());
    assert!(a.replaced.is_empty() && a.decision.start == 0 && a.new_nodes.is_empty());
    assert!(a.decision.stop.is_empty() && a.release_nodes.is_empty());
    // Pass 3: it serves: the old runner stops and its node is released (a release drains).
    let ready = AppView { runners: vec![idle_runner(1, 10, true), idle_runner(2, 20, true)], ..starting.clone() };
    let a = run(ready);
    assert_eq!(a.decision.stop, [1]);
    assert_eq!(a.release_nodes, [10]);
    // A busy old runner stops too: a stop drains it (its requests finish, it claims no more).
    let mut busy = idle_runner(1, 10, true);
    busy.runner.in_flight = 2;
    busy.runner.idle_since = None;
    let a = run(AppView { runners: vec![busy, idle_runner(2, 20, true)], ..starting });
    assert_eq!(a.decision.stop, [1]);
}

/// During a move, requests in flight on the leaving node's runners (replaced, so the autoscaler
/// sees their replacements instead) are not demand for more runners: they finish where they are.
#[test]
fn requests_on_a_leaving_nodes_runners_start_no_runner_beside_their_replacements() {
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 1\n[apps.llm.placement]\nspot = \"auto\"\n[apps.llm.scaling]\n\
         max_concurrency = 10\nmax_multiplexing = 8\nkeep_alive = \"10m\"\npredict = true\nscaling_delay = \"0s\"\n",
    );
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    // Measured: 10 requests/s of 2.1 s each = 21 slots = 3 runners of 8.
    let mut demand = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
    for i in 0..=30 {
        let at = t0() + chrono::Duration::seconds(-300 + i * 10);
        demand.record(crate::autoscale::DemandSample {
            at,
            desired: 3,
            arrived: 100 * i as u64,
            queued: 0,
            in_flight: 21,
            in_flight_work: 21000,
        });
    }
    demand.service_s = Some(2.1);
    let busy = |id: u64, node: u64, n: u32| RunnerView {
        runner: RunnerInfo {
            id,
            ready: true,
            in_flight: n,
            idle_since: None,
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    };
    // Node 10 leaves: its three runners are replaced by three ready ones on node 20, and still
    // serve 8 requests each (36 in flight in all: more than the replacements' 24 slots).
    let st = AppView {
        in_flight: 36,
        runners: vec![busy(1, 10, 8), busy(2, 10, 8), busy(3, 10, 8), busy(4, 20, 4), busy(5, 20, 4), busy(6, 20, 4)],
        nodes: vec![NodeView { leaving: true, replaced: 3, ..NodeView::new(10, 2, 8) }, NodeView::new(20, 1, 8)],
        demand,
        ..AppView::default()
    };
    let a = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default()).apps.remove(0);
    assert_eq!((a.decision.target.desired, a.decision.start), (3, 0), "{:?}", a.decision);
    assert!(a.new_nodes.is_empty() && a.on_existing.is_empty());
    // The move completes: the old runners stop (draining) and their node goes.
    assert_eq!(a.decision.stop, [1, 2, 3]);
    assert_eq!(a.release_nodes, [10]);
}

/// A launching node holds the dearest candidate it may still fail over to: a later pass cannot
/// plan into that room; a node whose offering left the catalog still counts (outside_burn).
#[test]
fn a_launching_node_holds_its_dearest_candidate_and_unseen_nodes_still_count() {
    let s = spec(&format!("{FLEET}[apps.llm.budget]\nmax_per_hour = \"60\"\n"));
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    // One on-demand Lambda node ($23.92) launching, its failover list up to $43.07 (GCP).
    let launching =
        NodeView { held_per_hour: Some(Money::parse_decimal("43.06615").unwrap()), ..NodeView::new(10, 0, 4) };
    let app = |nodes: Vec<NodeView>, outside: &str| AppView {
        queued: 24,
        nodes,
        outside_burn: Money::parse_decimal(outside).unwrap(),
        ..AppView::default()
    };
    // At the offering's price, $36.08 of room is left: a $16 spot node fits.
    let p = plan(
        &index,
        &s,
        &state(&cache, vec![("llm", app(vec![NodeView::new(10, 0, 4)], "0"))]),
        &PlanOptions::default(),
    );
    assert!(!p.apps[0].new_nodes.is_empty(), "{:?}", p.apps[0]);
    // Held at its dearest candidate: $16.93 left, still one spot node.
    let p = plan(&index, &s, &state(&cache, vec![("llm", app(vec![launching.clone()], "0"))]), &PlanOptions::default());
    assert_eq!(p.apps[0].burn_per_hour, Money::parse_decimal("43.06615").unwrap());
    assert!(
        p.apps[0].new_nodes.iter().map(|n| n.reserved_per_hour).sum::<Money>()
            <= Money::parse_decimal("16.93385").unwrap()
    );
    // Plus a $10/h node outside the catalog: no room for any node.
    let p = plan(&index, &s, &state(&cache, vec![("llm", app(vec![launching], "10"))]), &PlanOptions::default());
    assert!(p.apps[0].new_nodes.is_empty(), "{:?}", p.apps[0].new_nodes);
    assert_eq!(p.apps[0].unplaced.iter().filter(|u| u.budget_cap.is_some()).count(), 1, "{:?}", p.apps[0].unplaced);
}

/// As the month's money runs out (month to date + ten minutes at this burn > the cap), nothing
/// starts and the app winds down to its floor: none, or `min_concurrency` where the app keeps it.
#[test]
fn a_monthly_cap_running_out_winds_the_app_down_to_its_floor() {
    let budget = "[budget]\nmax_per_month = \"1000\"\n";
    let runner = |id: u64, node: u64, in_flight: u32| RunnerView {
        runner: RunnerInfo {
            id,
            ready: true,
            in_flight,
            idle_since: (in_flight == 0).then(t0),
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        },
        node,
    };
    let app = || AppView {
        queued: 20,
        in_flight: 4,
        runners: vec![runner(1, 10, 4), runner(2, 10, 0), runner(3, 11, 0)],
        nodes: vec![NodeView::new(10, 0, 4), NodeView::new(11, 1, 4)],
        ..AppView::default()
    };
    let view = |cache, mtd: &str| {
        let mut v = state(cache, vec![("llm", app())]);
        v.fleet_month_to_date = Money::parse_decimal(mtd).unwrap();
        v
    };
    let cache = UnavailableCache::default();
    // Burn $39.92/h ($6.65 in ten minutes): with $990 spent it fits; with $995 it does not.
    let s = spec(&format!("{budget}{FLEET}"));
    let index = PlacementIndex::new(catalog(), &s);
    let p = plan(&index, &s, &view(&cache, "990"), &PlanOptions::default());
    assert!(p.apps[0].winding_down.is_none());
    assert!(p.apps[0].new_nodes.is_empty(), "but no room for a new node's hour");
    let p = plan(&index, &s, &view(&cache, "995"), &PlanOptions::default());
    let a = &p.apps[0];
    assert!(matches!(a.winding_down, Some(BudgetCap::FleetMonthly { .. })), "{a:?}");
    assert_eq!(a.decision.start, 0);
    assert!(a.new_nodes.is_empty());
    let mut stopped = a.decision.stop.clone();
    stopped.sort_unstable();
    assert_eq!(stopped, [1, 2, 3], "every runner winds down (the busy one drains)");
    assert_eq!(a.release_nodes.len(), 2);
    // An app that keeps min_concurrency over budget keeps that many: the idle ones go first.
    let s = spec(&format!(
        "{budget}{}",
        FLEET.replace("max_concurrency = 20", "max_concurrency = 20\nmin_concurrency = 1\nkeep_min_over_budget = true")
    ));
    let index = PlacementIndex::new(catalog(), &s);
    let p = plan(&index, &s, &view(&cache, "995"), &PlanOptions::default());
    let mut stopped = p.apps[0].decision.stop.clone();
    stopped.sort_unstable();
    assert_eq!(stopped, [2, 3], "the busy runner stays as the floor");
}

/// A 70B model: 280 s from the origin, 20 s from peers, 20 s to load, $12.60 from the origin;
/// 150 s to provision and boot; weighed over `horizon_s`.
fn llama70b(horizon_s: u64) -> crate::coldstart::ColdStartModel {
    crate::coldstart::ColdStartModel {
        size_gb: 140.0,
        origin_gb_per_s: 0.5,
        peer_gb_per_s: 7.0,
        disk_gb_per_s: 7.0,
        egress_per_gb: Money::parse_decimal("0.09").unwrap(),
        provision_and_boot: Duration::from_secs(150),
        horizon: Duration::from_secs(horizon_s),
    }
}

const WHOLE_NODES: &str = "[apps.llm]\ngpu = \"H100\"\ngpus = 8\n[apps.llm.placement]\nspot = \"on-demand\"\n[apps.llm.scaling]\nmax_concurrency = 4\n";

fn busy_on(node: u64) -> RunnerView {
    serving_runner(node, node)
}

#[test]
fn a_new_node_goes_where_the_weights_are_when_its_cold_start_is_worth_more_than_the_price_gap() {
    let s = spec(WHOLE_NODES);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    // A busy node on GCP (offering 3, $43.07/h) holds the weights; one more runner is wanted.
    let app = |model: Option<crate::coldstart::ColdStartModel>| AppView {
        queued: 1,
        in_flight: 1,
        runners: vec![busy_on(10)],
        nodes: vec![NodeView { holds_weights: true, ..NodeView::new(10, 3, 1) }],
        cold_start: model,
        ..AppView::default()
    };
    let first = |model| {
        let p = plan(&index, &s, &state(&cache, vec![("llm", app(model))]), &PlanOptions::default());
        let n = p.apps[0].new_nodes.first().unwrap_or_else(|| panic!("{:?}", p.apps[0]));
        (index.offering(n.candidates[0].offering).cloud, n.candidates.len())
    };
    // By price alone, Lambda ($23.92/h) first.
    assert_eq!(first(None).0, Cloud::Lambda);
    // Over an hour, Lambda still: $23.92 × (450 s + 1 h) + $12.60 = $39.51 against GCP's warm
    // $43.07 × (190 s + 1 h) = $45.34.
    assert_eq!(first(Some(llama70b(3600))).0, Cloud::Lambda);
    // Over ten minutes the cold start dominates: Lambda $19.58, GCP $9.45: GCP first, and the
    // same candidates (only their order moves).
    let (cloud, n) = first(Some(llama70b(600)));
    assert_eq!((cloud, n), (Cloud::Gcp, first(None).1));
}

#[test]
fn an_empty_node_with_its_regions_last_copy_stays_while_that_copy_is_worth_keeping() {
    let s = spec(WHOLE_NODES);
    let index = PlacementIndex::new(catalog(), &s);
    let cache = UnavailableCache::default();
    let model = Some(llama70b(3600));
    let empty = |secs: i64| NodeView {
        holds_weights: true,
        empty_since: Some(t0() - chrono::Duration::seconds(secs)),
        ..NodeView::new(10, 3, 1)
    };
    let released = |st: AppView| {
        plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default()).apps[0].release_nodes.clone()
    };
    // At $43.07/h the copy is worth 260 s of slower fetch and $12.60 (1,053 s of the node): 1,313 s.
    let kept = AppView { nodes: vec![empty(300)], cold_start: model, ..AppView::default() };
    assert!(released(kept).is_empty(), "empty for 5 minutes: kept");
    let stale = AppView { nodes: vec![empty(1400)], cold_start: model, ..AppView::default() };
    assert_eq!(released(stale), [10], "empty past what the copy is worth: released");
    let unaware = AppView { nodes: vec![empty(300)], ..AppView::default() };
    assert_eq!(released(unaware), [10], "no cold-start model: released as before");
    // Another node of the region holds the weights and serves: this one is not the last copy.
    let other = AppView {
        runners: vec![busy_on(11)],
        nodes: vec![empty(300), NodeView { holds_weights: true, ..NodeView::new(11, 3, 1) }],
        cold_start: model,
        ..AppView::default()
    };
    assert_eq!(released(other), [10]);
}

#[test]
fn consolidation_keeps_a_free_slot_that_demand_wants_again_before_the_move_pays() {
    use crate::consolidate::MoveKind;
    use CapacityType::*;
    // Runners of 4 GPUs: an 8-GPU spot node hosts two for $6.84/h, a 4-GPU one hosts one for
    // $6.16/h. One runner serves on the 8-GPU node (up two hours); its other slot is free.
    let cat = Arc::new(Catalog::new(vec![
        off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-4g", GpuModel::H100Sxm, 4, Spot, "6.16"),
        off(Cloud::Lambda, "us-east-1", None, "gpu_8x_h100_sxm5", GpuModel::H100Sxm, 8, Spot, "6.84"),
    ]));
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 4\n[apps.llm.placement]\nspot = \"spot\"\n\
         [apps.llm.scaling]\nmax_concurrency = 4\nkeep_alive = \"auto\"\n",
    );
    let index = PlacementIndex::new(cat, &s);
    let cache = UnavailableCache::default();
    let app = |demand: DemandHistory| AppView {
        in_flight: 1,
        runners: vec![serving_runner(1, 10)],
        nodes: vec![NodeView { billed_since: Some(t0() - chrono::Duration::seconds(7200)), ..NodeView::new(10, 1, 2) }],
        demand,
        ..AppView::default()
    };
    let run = |st: AppView| plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    // No demand for a second runner in the history: the 4-GPU node saves $0.68/h for the hour,
    // $0.68 against 180 s of $6.16/h billed before it serves ($0.31): a move.
    let quiet = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
    let m = run(app(quiet.clone())).apps[0].consolidate.clone().expect("a move");
    assert_eq!((m.kind, m.saving_per_hour), (MoveKind::Replace, money("0.68")));
    // Demand wanted a second runner for a minute every four (the last time a minute ago): with
    // the 4-GPU node, that runner needs a node of its own for a third of the time or more
    // ($6.16/h each time, against $0.68/h saved). No move (until 2026-12-03, one, and a node
    // launched for the runner at the next rise, the two merged back onto an 8-GPU node, and so
    // on).
    // A pass every 10 s over the `span` seconds up to now: two runners wanted while `second`
    // holds of the pass's time (seconds since the first pass), one otherwise.
    let passes = |span: i64, second: &dyn Fn(i64) -> bool| {
        let mut h = quiet.clone();
        for k in 0..=span / 10 {
            let desired = if second(k * 10) { 2 } else { 1 };
            h.record(crate::autoscale::DemandSample {
                at: t0() + chrono::Duration::seconds(k * 10 - span),
                desired,
                arrived: k as u64 * 10,
                queued: 0,
                in_flight: desired,
                in_flight_work: u64::from(desired) * 1000,
            });
        }
        h
    };
    let busy = passes(660, &|t| (t - 660).rem_euclid(240) < 60);
    assert_eq!(busy.expected_gap(2, t0()), Some(Duration::from_secs(240)));
    assert_eq!(run(app(busy)).apps[0].consolidate, None);
    // A second runner for the first ten minutes of each of the last three hours, the last burst
    // begun half an hour ago: out of the samples' window, but a sixth of the time at $6.16/h and
    // a cold start an hour cost more than the $0.68/h saved. No move (until 2026-12-03 it was
    // made between bursts, and undone by a merge at the next, every hour of the code trace).
    let hourly = passes(3 * 3600 - 1800, &|t| t % 3600 < 600);
    assert_eq!(hourly.expected_gap(2, t0()), None, "out of the samples' window");
    assert_eq!(run(app(hourly)).apps[0].consolidate, None);
}

#[test]
fn billed_by_the_hour_a_new_node_makes_room_for_the_runner_of_a_dearer_node_it_will_take_over() {
    use crate::consolidate::MoveKind;
    use CapacityType::*;
    // Runners of 4 GPUs: a 4-GPU node hosts one for $6.16/h, an 8-GPU node two for $6.84/h.
    // One runner serves on a 4-GPU node, ten minutes into its paid hour; demand wants a second.
    let cat = Arc::new(Catalog::new(vec![
        off(Cloud::Gcp, "us-central1", Some("us-central1-a"), "a3-highgpu-4g", GpuModel::H100Sxm, 4, OnDemand, "6.16"),
        off(Cloud::Lambda, "us-east-1", None, "gpu_8x_h100_sxm5", GpuModel::H100Sxm, 8, OnDemand, "6.84"),
    ]));
    let s = spec(
        "[apps.llm]\ngpu = \"H100\"\ngpus = 4\n[apps.llm.placement]\nspot = \"on-demand\"\n\
         [apps.llm.scaling]\nmax_concurrency = 4\nmax_multiplexing = 1\nscaling_delay = \"0s\"\n",
    );
    let index = PlacementIndex::new(cat, &s);
    let cache = UnavailableCache::default();
    let hourly = NodeView {
        billed_since: Some(t0() - chrono::Duration::seconds(600)),
        paid_until: Some(t0() + chrono::Duration::seconds(3000)),
        billing_step: Some(Duration::from_secs(3600)),
        ..NodeView::new(10, 0, 1)
    };
    let app = |node: NodeView, min_billing: u64| AppView {
        queued: 1,
        in_flight: 1,
        runners: vec![serving_runner(1, 10)],
        nodes: vec![node],
        demand: DemandHistory::new(Duration::from_secs(180 + min_billing), Duration::from_secs(180)),
        ..AppView::default()
    };
    let first = |st: AppView, opts: &PlanOptions| {
        let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), opts);
        let a = &p.apps[0];
        assert_eq!(a.decision.start, 1);
        assert_eq!(a.new_nodes.len(), 1, "{:?}", a.new_nodes);
        let n = a.new_nodes[0].clone();
        (index.offering(n.candidates[0].offering).instance.name.clone(), n.runners, n.sized_for, n.why)
    };
    // Billed by the hour: the second runner's cheapest fit alone is another 4-GPU node ($12.32/h
    // for the two); merging them later would pay an 8-GPU node's hour beside theirs. Its node is
    // the 8-GPU one, sized for both runners.
    let (name, runners, sized_for, why) = first(app(hourly.clone(), 3600), &PlanOptions::default());
    assert_eq!((name.as_str(), runners, sized_for), ("gpu_8x_h100_sxm5", 1, 2));
    assert!(why.contains("room for the 1 runner(s) of 1 node(s) of the app it takes over"), "{why}");
    // Billed by the second (a minute's minimum, shorter than the cold start): a later merge costs
    // a cold start, and the runner gets the node that fits it alone.
    let per_second = NodeView { paid_until: None, billing_step: None, ..hourly.clone() };
    assert_eq!(first(app(per_second, 60), &PlanOptions::default()).2, 1);
    // Without consolidation nothing would move the first runner over: no room made.
    let never = PlanOptions { consolidation_horizon: None, ..PlanOptions::default() };
    let (name, _, sized_for, _) = first(app(hourly, 3600), &never);
    assert_eq!((name.as_str(), sized_for), ("a3-highgpu-4g", 1));

    // Fifty minutes into its hour, with the 8-GPU node up beside it: the first runner moves to
    // the free slot (a delete), its node released within the hour it has paid.
    let st = AppView {
        in_flight: 2,
        runners: vec![serving_runner(1, 10), serving_runner(2, 11)],
        nodes: vec![
            NodeView {
                billed_since: Some(t0() - chrono::Duration::seconds(3000)),
                paid_until: Some(t0() + chrono::Duration::seconds(600)),
                billing_step: Some(Duration::from_secs(3600)),
                ..NodeView::new(10, 0, 1)
            },
            NodeView {
                billed_since: Some(t0() - chrono::Duration::seconds(2400)),
                paid_until: Some(t0() + chrono::Duration::seconds(1200)),
                billing_step: Some(Duration::from_secs(3600)),
                ..NodeView::new(11, 1, 2)
            },
        ],
        demand: DemandHistory::new(Duration::from_secs(3780), Duration::from_secs(180)),
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let m = p.apps[0].consolidate.clone().expect("a move");
    assert_eq!((m.nodes.as_slice(), m.kind), ([10].as_slice(), MoveKind::Delete));
}

/// Lambda's 1-GPU A100 on demand at $1.29/h ($4.10 per hour of H100 work).
fn lambda_1x_a100() -> Offering {
    off(Cloud::Lambda, "us-east-1", None, "gpu_1x_a100_sxm4", GpuModel::A100_80GB, 1, CapacityType::OnDemand, "1.29")
}

#[test]
fn requests_in_flight_are_weighed_by_their_runners_speed() {
    // An app on H100s and A100s: three requests on an H100 runner, two on an A100 runner, and
    // one more the runners given do not show (counted at their mean speed).
    let s = spec(
        "[apps.llm]\ngpu = [\"H100\", \"A100\"]\ngpus = 1\n[apps.llm.scaling]\nmax_concurrency = 4\nmax_multiplexing = 4\n",
    );
    let cat = Arc::new(Catalog::new(vec![
        off(Cloud::Lambda, "us-east-1", None, "gpu_1x_h100_sxm5", GpuModel::H100Sxm, 1, CapacityType::OnDemand, "3.60"),
        lambda_1x_a100(),
    ]));
    let index = PlacementIndex::new(cat, &s);
    let cache = UnavailableCache::default();
    let on = |id: u64, node: u64, in_flight: u32| RunnerView {
        runner: RunnerInfo { in_flight, idle_since: None, ..idle_runner(id, node, true).runner },
        node,
    };
    let nodes = || vec![NodeView::new(10, 0, 1), NodeView::new(11, 1, 1)];
    let st = AppView { in_flight: 6, runners: vec![on(1, 10, 3), on(2, 11, 2)], nodes: nodes(), ..AppView::default() };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    // 3 × 1000 + 2 × 315 + 1 × 657 (the mean of the two speeds), thousandths of an H100's work.
    assert_eq!(p.apps[0].in_flight_work, 3000 + 630 + 657);
    // Views that show more in flight than the app has: scaled down to its total.
    let over =
        AppView { in_flight: 2, runners: vec![on(1, 10, 3), on(2, 11, 1)], nodes: nodes(), ..AppView::default() };
    let p = plan(&index, &s, &state(&cache, vec![("llm", over)]), &PlanOptions::default());
    assert_eq!(p.apps[0].in_flight_work, (3000 + 315) * 2 / 4);
}

/// One planning pass for a `predict` app on H100s or A100s of `gpus` GPUs a runner, one request
/// each: its probe runner serves on a node of `offerings[0]`, `queued` requests wait, each 2 s of
/// an H100's work (cold start 180 s, a minute's minimum billing). The plan's app and the GPU of each
/// new node's first candidate.
fn predict_on_two_families(offerings: Vec<Offering>, gpus: u32, queued: u32) -> (AppPlan, Vec<GpuModel>) {
    let s = spec(&format!(
        "[apps.llm]\ngpu = [\"H100\", \"A100\"]\ngpus = {gpus}\n[apps.llm.placement]\nspot = \"auto\"\n\
         [apps.llm.scaling]\nmax_concurrency = 64\npredict = true\nkeep_alive = \"auto\"\n"
    ));
    let index = PlacementIndex::new(Arc::new(Catalog::new(offerings)), &s);
    let cache = UnavailableCache::default();
    let mut demand = DemandHistory::new(Duration::from_secs(240), Duration::from_secs(180));
    demand.service_s = Some(2.0);
    let st = AppView {
        queued,
        in_flight: 1,
        runners: vec![serving_runner(1, 10)],
        nodes: vec![NodeView::new(10, 0, 1)],
        demand,
        ..AppView::default()
    };
    let p = plan(&index, &s, &state(&cache, vec![("llm", st)]), &PlanOptions::default());
    let a = p.apps.into_iter().next().expect("one app");
    let gpus = a.new_nodes.iter().map(|n| index.offering(n.candidates[0].offering).instance.gpu).collect();
    (a, gpus)
}

#[test]
fn predict_sizes_the_runners_it_starts_for_the_gpu_they_will_get_not_its_probes() {
    // One-GPU runners. The probe got a 1-GPU A100 ($1.29/h: $4.10 per hour of H100 work);
    // several runners are cheapest on an 8-GPU H100 spot node ($16/h). 360 requests drained
    // within the cold start want 4 H100 runners, or 12.7 A100 runners.
    let h100 =
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", GpuModel::H100Sxm, 8, CapacityType::Spot, "16");
    let (a, gpus) = predict_on_two_families(vec![lambda_1x_a100(), h100], 1, 360);
    // Sized for the probe's A100, 12 would start, and go on two H100 nodes (the cheapest mix
    // for 12): three times the work the queue wants. Sized for the H100s they get: 4, on one.
    assert_eq!(a.decision.start, 4, "{:?}", a.decision);
    assert_eq!(a.new_nodes.iter().map(|n| n.runners).collect::<Vec<_>>(), [4]);
    assert_eq!(gpus, [GpuModel::H100Sxm]);
}

#[test]
fn predict_where_the_speeds_cycle_starts_the_fewest_runners_of_the_cycle() {
    // Two-GPU runners. A 2-GPU A100 node at $1.20/h ($3.81 per hour of H100 work) is the
    // cheapest for one or two runners; for three, an 8-GPU H100 spot node sized for four ($10/h;
    // three A100 nodes are $11.43 of work). 100 requests: sized for A100s (6.35 s each) three
    // start, and would get the H100 node; sized for H100s one starts, and would get an A100 node.
    let a100 = off(
        Cloud::Azure,
        "eastus",
        None,
        "Standard_NC48ads_A100_v4",
        GpuModel::A100_80GB,
        2,
        CapacityType::OnDemand,
        "1.20",
    );
    let h100 =
        off(Cloud::Aws, "us-east-1", Some("use1-az1"), "p5.48xlarge", GpuModel::H100Sxm, 8, CapacityType::Spot, "10");
    let (a, gpus) = predict_on_two_families(vec![a100, h100], 2, 100);
    // Three H100 runners would be three times the work wanted, on a node paid whatever it
    // serves; one A100 runner more is made up at the next pass if short.
    assert_eq!(a.decision.start, 1, "{:?}", a.decision);
    assert_eq!(gpus, [GpuModel::A100_80GB]);
}
