//! The orchestrator end to end on fake clouds and simulated agents, in paused tokio time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::Config;
use fleet_orchestrator::sim_agents::SimAgentConfig;
use fleet_orchestrator::testing::harness::{CloudSetup, Harness, h100x8};
use fleet_providers::Provider;
use fleet_providers::fake::Call;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::RequestState;
use fleet_state::queue;

const SPEC: &str = r#"
[fleet]
name = "test"

[apps.llm]
gpu = "H100"
gpus = 8

[apps.llm.placement]
spot = "on-demand"

[apps.llm.scaling]
max_concurrency = 6
max_multiplexing = 1
keep_alive = "60s"
"#;

fn config() -> Config {
    Config { node_poll: Duration::from_secs(2), ..Config::default() }
}

fn three_clouds() -> Vec<CloudSetup> {
    let od = CapacityType::OnDemand;
    let lambda = h100x8(Cloud::Lambda, "us-east-1", "20", od);
    let runpod = h100x8(Cloud::Runpod, "us-ks-2", "25", od);
    let aws = h100x8(Cloud::Aws, "us-east-1", "60", od);
    vec![
        CloudSetup::new(Cloud::Lambda, vec![lambda.clone()]).capacity(&lambda, 2),
        CloudSetup::new(Cloud::Runpod, vec![runpod.clone()]).capacity(&runpod, 2),
        CloudSetup::new(Cloud::Aws, vec![aws]),
    ]
}

/// The fleet's events (`fleetctl get events`) as (node, kind, message).
async fn events(h: &Harness) -> Vec<(Option<u64>, String, String)> {
    let all = fleet_state::events::list(&*h.ctx.store, &h.ctx.keys, &Default::default()).await.unwrap();
    all.into_iter().map(|e| (e.node, e.kind.name().to_string(), e.message)).collect()
}

fn kinds_of(events: &[(Option<u64>, String, String)], node: u64) -> Vec<&str> {
    events.iter().filter(|e| e.0 == Some(node)).map(|e| e.1.as_str()).collect()
}

async fn results(h: &Harness, app: &str) -> Vec<fleet_state::model::RequestRecord> {
    let (kvs, _) = h.ctx.store.range(&h.ctx.keys.results(app)).await.unwrap();
    kvs.iter().map(|kv| kv.json().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn scales_from_zero_across_three_clouds_serves_and_scales_back_to_zero() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(SPEC).await;
    h.run_for(Duration::from_secs(3)).await;
    assert!(h.nodes().await.is_empty(), "no demand, no nodes");

    let ids = h.submit("llm", 60).await;
    let served = h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 60 }).await;
    assert!(served, "all 60 requests served within 10 virtual minutes");

    // Capacity went where it was cheapest first: two on Lambda, two on RunPod, the rest on AWS.
    let nodes = h.nodes().await;
    let clouds: BTreeSet<Cloud> = nodes.iter().filter_map(|n| n.offering().map(|o| o.cloud)).collect();
    assert_eq!(clouds, BTreeSet::from([Cloud::Lambda, Cloud::Runpod, Cloud::Aws]), "{nodes:#?}");
    let launched: Vec<_> = nodes.iter().filter(|n| n.billing_since.is_some()).collect();
    assert_eq!(launched.len(), 6, "six runners of 8 GPUs need six nodes");
    let per_cloud = |c| launched.iter().filter(|n| n.offering().unwrap().cloud == c).count();
    assert_eq!((per_cloud(Cloud::Lambda), per_cloud(Cloud::Runpod), per_cloud(Cloud::Aws)), (2, 2, 2));

    // Every request exactly once.
    let done = results(&h, "llm").await;
    let mut got: Vec<u64> = done.iter().map(|r| r.id).collect();
    got.sort_unstable();
    assert_eq!(got, ids);
    assert!(done.iter().all(|r| matches!(r.state, RequestState::Done { .. }) && r.attempts == 1));
    let completed = h.agents.completed();
    assert_eq!(completed.len(), 60, "no request served twice");

    // Idle past keep_alive: runners stop, nodes drain and terminate, nothing keeps billing.
    let zero = h
        .run_until(Duration::from_secs(300), || async {
            h.live_instances() == 0 && h.nodes().await.iter().all(|n| matches!(n.state, NodePhase::Terminated { .. }))
        })
        .await;
    assert!(zero, "scaled back to zero: {:#?}", h.nodes().await);
    assert!(h.runners().await.is_empty());
    let depth = queue::depths(&*h.ctx.store, &h.ctx.keys).await.unwrap();
    assert!(depth.values().all(|d| d.queued == 0 && d.in_flight == 0));
    // Billing stopped for every node; the cost is exact and positive.
    let nodes = h.nodes().await;
    assert!(nodes.iter().all(|n| n.billing_until.is_some()));
    h.run_for(Duration::from_secs(2)).await;
    let metrics = h.ctx.metrics.encode();
    assert!(metrics.contains("fleet_burn_dollars_per_hour 0.0"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn failover_reaches_capacity_with_ninety_percent_of_offerings_out_and_no_retry_storm() {
    // 20 offerings on two clouds; 18 of them (the cheapest) have no capacity at all.
    let od = CapacityType::OnDemand;
    let mut setups = Vec::new();
    for (cloud, base) in [(Cloud::Lambda, 10), (Cloud::Aws, 11)] {
        let mut offerings = Vec::new();
        let mut capacity = HashMap::new();
        for r in 0..10 {
            let o = h100x8(cloud, &format!("region-{r}"), &format!("{}", base + 2 * r), od);
            // Only the dearest offering of each cloud has capacity.
            if r < 9 {
                capacity.insert(o.key(), 0);
            }
            offerings.push(o);
        }
        setups.push(CloudSetup { capacity, ..CloudSetup::new(cloud, offerings) });
    }
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 2\nmin_concurrency = 2");
    let h = Harness::start(setups, config(), SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    let reached = h
        .run_until(Duration::from_secs(120), || async {
            h.nodes().await.iter().filter(|n| matches!(n.state, NodePhase::Ready { .. })).count() == 2
        })
        .await;
    assert!(reached, "two ready nodes: {:#?}", h.nodes().await);
    let launches: usize =
        h.fakes.values().map(|f| f.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count()).sum();
    // Each refusing offering is tried at most once (it is then avoided), plus the two launches.
    assert!(launches <= 20, "{launches} launch calls for 2 nodes over 20 offerings");
    h.run_for(Duration::from_secs(120)).await;
    let later: usize =
        h.fakes.values().map(|f| f.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count()).sum();
    assert_eq!(later, launches, "no launches once the capacity is reached");
    assert_eq!(h.live_instances(), 2);
}

/// Serves a first batch, makes one actor of `kind` panic, and checks that it was restarted and
/// the fleet carries on: a second batch is served, nothing is served twice, no instance leaks.
async fn crash_and_carry_on(kind: &str) {
    use fleet_orchestrator::actors::cloud::CloudMsg;
    use fleet_orchestrator::actors::fleet::FleetMsg;
    use fleet_orchestrator::actors::node::NodeMsg;
    use fleet_orchestrator::actors::region::RegionMsg;
    use fleet_orchestrator::actors::runner::RunnerMsg;

    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(SPEC).await;
    h.submit("llm", 12).await;

    // Node and runner actors live only while their node or runner is changing: crash the first
    // actor of the kind to show up (while the first batch is being served).
    let find = |fleet: &ractor::ActorRef<FleetMsg>| -> Option<ractor::ActorCell> {
        let clouds = fleet.get_children();
        let regions: Vec<_> = clouds.iter().flat_map(|c| c.get_children()).collect();
        let nodes: Vec<_> = regions.iter().flat_map(|r| r.get_children()).collect();
        let runners: Vec<_> = nodes.iter().flat_map(|n| n.get_children()).collect();
        match kind {
            "fleet" => Some(fleet.get_cell()),
            "cloud" => clouds.into_iter().next(),
            "region" => regions.into_iter().next(),
            "node" => nodes.into_iter().next(),
            "runner" => runners.into_iter().next(),
            _ => unreachable!(),
        }
    };
    let mut target = None;
    for _ in 0..600 {
        target = find(&h.fleet().await);
        if target.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = target.unwrap_or_else(|| panic!("no {kind} actor showed up"));
    let crash = format!("chaos test: {kind}");
    match kind {
        "fleet" => target.send_message(FleetMsg::Crash(crash)).unwrap(),
        "cloud" => target.send_message(CloudMsg::Crash(crash)).unwrap(),
        "region" => target.send_message(RegionMsg::Crash(crash)).unwrap(),
        "node" => target.send_message(NodeMsg::Crash(crash)).unwrap(),
        "runner" => target.send_message(RunnerMsg::Crash(crash)).unwrap(),
        _ => unreachable!(),
    }
    assert!(h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 12 }).await);
    h.run_for(Duration::from_secs(5)).await;
    let metrics = h.ctx.metrics.encode();
    let line = format!("fleet_actor_restarts_total{{kind=\"{kind}\"}} 1");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");

    h.submit("llm", 12).await;
    let all = h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 24 }).await;
    assert!(all, "the fleet carries on after a {kind} actor crash");
    assert_eq!(h.agents.completed().len(), 24, "nothing served twice");
    // No duplicate launch: every live instance belongs to a distinct node record, and no more than
    // the six the spec allows.
    let nodes = h.nodes().await;
    let live = h.fakes.values().flat_map(|f| f.live_instances()).collect::<Vec<_>>();
    assert!(live.len() <= 6, "{} live instances", live.len());
    for i in &live {
        let owners = nodes
            .iter()
            .filter(|n| n.state.instance_id() == Some(i.id.as_str()) && n.offering() == Some(&i.offering))
            .count();
        assert_eq!(owners, 1, "instance {} has {owners} node records", i.id);
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashing_fleet_actor_is_restarted() {
    crash_and_carry_on("fleet").await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_cloud_actor_is_restarted() {
    crash_and_carry_on("cloud").await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_region_actor_is_restarted() {
    crash_and_carry_on("region").await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_node_actor_is_restarted() {
    crash_and_carry_on("node").await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_runner_actor_is_restarted() {
    crash_and_carry_on("runner").await;
}

#[tokio::test(start_paused = true)]
async fn the_next_offering_is_tried_within_a_second_of_a_capacity_error() {
    let od = CapacityType::OnDemand;
    let lambda = h100x8(Cloud::Lambda, "us-east-1", "20", od);
    let runpod = h100x8(Cloud::Runpod, "us-ks-2", "25", od);
    let latency = Duration::from_secs(2);
    let clouds = vec![
        CloudSetup {
            launch_latency: latency,
            ..CloudSetup::new(Cloud::Lambda, vec![lambda.clone()]).capacity(&lambda, 0)
        },
        CloudSetup { launch_latency: latency, ..CloudSetup::new(Cloud::Runpod, vec![runpod]) },
    ];
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let h = Harness::start(clouds, config(), SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    assert!(h.run_until(Duration::from_secs(60), || async { h.live_instances() == 1 }).await);
    let refused = h.fakes[&Cloud::Lambda].timed_calls().into_iter().find(|(_, c)| matches!(c, Call::Launch { .. }));
    let next = h.fakes[&Cloud::Runpod].timed_calls().into_iter().find(|(_, c)| matches!(c, Call::Launch { .. }));
    let (refused_at, next_at) = (refused.unwrap().0 + latency, next.unwrap().0);
    let gap = next_at.checked_sub(refused_at).expect("the next launch comes after the refusal");
    println!("next launch {gap:?} after the capacity error");
    assert!(gap < Duration::from_secs(1), "next launch {gap:?} after the capacity error");
    // The events say why the node is on RunPod: planned with both offerings, Lambda's refusal,
    // the failover, the launch after one refused offering, ready.
    assert!(
        h.run_until(Duration::from_secs(120), || async {
            h.nodes().await.iter().any(|n| matches!(n.state, NodePhase::Ready { .. }))
        })
        .await
    );
    let ev = events(&h).await;
    let node = h.nodes().await[0].id;
    assert_eq!(kinds_of(&ev, node), ["planned", "launch-failed", "launched", "ready"], "{ev:#?}");
    let msg = |k: &str| ev.iter().find(|e| e.1 == k).unwrap().2.clone();
    assert!(msg("planned").contains("lambda/us-east-1") && msg("planned").contains("1 offering to fail over to"));
    let failed = msg("launch-failed");
    assert!(failed.starts_with("lambda/us-east-1") && failed.contains("failing over to runpod/us-ks-2"), "{failed}");
    assert!(msg("launched").contains("runpod/us-ks-2") && msg("launched").ends_with("after 1 refused offering"));
}

#[tokio::test(start_paused = true)]
async fn requests_of_a_dead_agent_are_queued_again_and_served_once_elsewhere() {
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 2\nmin_concurrency = 2");
    let agents = SimAgentConfig { service_time: Duration::from_secs(30), ..SimAgentConfig::default() };
    let h = Harness::start(three_clouds(), config(), agents, None).await;
    h.apply(&spec).await;
    let ready = h
        .run_until(Duration::from_secs(120), || async {
            h.runners()
                .await
                .iter()
                .filter(|r| matches!(r.state, fleet_state::lifecycle::runner::RunnerPhase::Idle { .. }))
                .count()
                == 2
        })
        .await;
    assert!(ready, "two idle runners");
    let ids = h.submit("llm", 2).await;
    h.run_for(Duration::from_secs(3)).await;
    let depth = queue::depths(&*h.ctx.store, &h.ctx.keys).await.unwrap()["llm"];
    assert_eq!(depth.in_flight, 2, "both requests claimed");
    // The agent of the node serving the first request dies mid-request.
    let first = queue::get(&*h.ctx.store, &h.ctx.keys, "llm", ids[0]).await.unwrap();
    let RequestState::Claimed { node, .. } = first.state else { panic!("claimed: {first:?}") };
    h.agents.kill(node);
    let served = h.run_until(Duration::from_secs(300), || async { results(&h, "llm").await.len() == 2 }).await;
    assert!(served, "both requests served");
    let done = results(&h, "llm").await;
    let again = done.iter().find(|r| r.id == ids[0]).unwrap();
    assert_eq!(again.attempts, 2, "the dead agent's request was claimed a second time");
    let RequestState::Done { runner, .. } = &again.state else { panic!("{again:?}") };
    let on_dead = h.runners().await.iter().any(|r| r.id == *runner && r.node() == Some(node));
    assert!(!on_dead, "served by another node's runner");
    assert_eq!(h.agents.completed().len(), 2, "each request completed exactly once");
    assert!(h.ctx.metrics.encode().contains("fleet_requests_requeued_total 1"));
}

#[tokio::test(start_paused = true)]
async fn an_instance_the_cloud_deletes_is_noticed_and_replaced() {
    use fleet_providers::Provider;
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    let idle = h
        .run_until(Duration::from_secs(120), || async {
            h.runners()
                .await
                .iter()
                .any(|r| matches!(r.state, fleet_state::lifecycle::runner::RunnerPhase::Idle { .. }))
        })
        .await;
    assert!(idle);
    // Settled: the node's actor has stopped; only the cloud audit watches it now.
    h.run_for(Duration::from_secs(20)).await;
    let first = h.nodes().await.into_iter().find(|n| matches!(n.state, NodePhase::Ready { .. })).unwrap();
    let cloud = first.offering().unwrap().cloud;
    h.fakes[&cloud].terminate(first.state.instance_id().unwrap()).await.unwrap();
    let replaced = h
        .run_until(Duration::from_secs(120), || async {
            let nodes = h.nodes().await;
            let gone = nodes.iter().any(|n| n.id == first.id && matches!(n.state, NodePhase::Terminated { .. }));
            gone && nodes.iter().any(|n| n.id != first.id && matches!(n.state, NodePhase::Ready { .. }))
        })
        .await;
    assert!(replaced, "{:#?}", h.nodes().await);
    assert_eq!(h.live_instances(), 1);
}

/// An instance of the fleet that no node record holds (its record lost, or a launch that went
/// through after its node was given up) is terminated after the grace period; the fleet's own
/// instances are not touched, and a young orphan is left alone until it is old enough.
#[tokio::test(start_paused = true)]
async fn orphan_instances_are_terminated_after_the_grace_period() {
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let config = Config { orphan_grace: Duration::from_secs(300), ..Config::default() };
    let h =
        Harness::start(vec![CloudSetup::new(Cloud::Lambda, vec![o.clone()])], config, SimAgentConfig::default(), None)
            .await;
    h.apply("[fleet]\nname = \"test\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 8\n[apps.llm.scaling]\nmin_concurrency = 1\nkeep_alive = \"1h\"\n")
        .await;
    assert!(h.run_until(Duration::from_secs(120), || async { h.live_instances() == 1 }).await);
    let fake = &h.fakes[&Cloud::Lambda];
    let own = fake.live_instances()[0].id.clone();
    // Tagged with the fleet, for a node no record names.
    let req = fleet_providers::LaunchRequest::new("test", "999", "llm", o.key());
    let orphan = fake.launch(&req).await.unwrap().id;
    // Tagged with a live node's id, but not the instance its record holds: what an earlier launch
    // attempt of that node left behind (another token).
    let node = h.nodes().await[0].id.to_string();
    let mut earlier = fleet_providers::LaunchRequest::new("test", &node, "llm", o.key());
    earlier.idempotency_token = "an-earlier-attempt".into();
    earlier.tags.insert(fleet_providers::TAG_TOKEN.into(), "an-earlier-attempt".into());
    let leftover = fake.launch(&earlier).await.unwrap().id;
    assert_ne!(leftover, own);
    h.run_for(Duration::from_secs(200)).await;
    let live: Vec<String> = fake.live_instances().iter().map(|i| i.id.clone()).collect();
    assert!(live.contains(&orphan) && live.contains(&leftover), "terminated before its grace period");
    let collected = h
        .run_until(Duration::from_secs(300), || async {
            !fake.live_instances().iter().any(|i| i.id == orphan || i.id == leftover)
        })
        .await;
    assert!(collected, "orphans not collected: {:?}", fake.live_instances());
    let live: Vec<String> = fake.live_instances().iter().map(|i| i.id.clone()).collect();
    assert_eq!(live, vec![own], "the fleet's own instance stays");
    let label = fleet_orchestrator::metrics::KindLabel::new("lambda");
    assert_eq!(h.ctx.metrics.orphans_terminated.get_or_create(&label).get(), 2);
    // Each is in the events, with why.
    let ev = events(&h).await;
    let collected: Vec<&String> = ev.iter().filter(|e| e.1 == "orphan-collected").map(|e| &e.2).collect();
    assert_eq!(collected.len(), 2, "{ev:#?}");
    assert!(collected.iter().any(|m| m.contains(&orphan) && m.ends_with("no node record holds it")));
    assert!(collected.iter().any(|m| m.contains(&leftover) && m.contains("leftover of an earlier launch attempt")));
}

/// A node whose agent dies is drained once the agent has been gone for `agent_lost_after`: a
/// replacement is launched before the old instance is terminated, its request is served once
/// elsewhere, and the fleet ends with the same capacity on a new node.
#[tokio::test(start_paused = true)]
async fn a_node_whose_agent_is_lost_is_replaced_then_terminated() {
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let agents = SimAgentConfig { service_time: Duration::from_secs(20), ..SimAgentConfig::default() };
    let cfg = Config { agent_lost_after: Duration::from_secs(20), ..config() };
    let h = Harness::start(three_clouds(), cfg, agents, None).await;
    h.apply(&spec).await;
    let idle = || async {
        h.runners().await.iter().any(|r| matches!(r.state, fleet_state::lifecycle::runner::RunnerPhase::Idle { .. }))
    };
    assert!(h.run_until(Duration::from_secs(120), idle).await, "a runner up");
    let old = h.nodes().await.into_iter().find(|n| matches!(n.state, NodePhase::Ready { .. })).unwrap();
    let ids = h.submit("llm", 1).await;
    h.run_for(Duration::from_secs(2)).await;
    h.agents.kill(old.id);
    let replaced = h
        .run_until(Duration::from_secs(600), || async {
            let nodes = h.nodes().await;
            let old_gone = nodes.iter().any(|n| n.id == old.id && matches!(n.state, NodePhase::Terminated { .. }));
            let new_ready = nodes.iter().any(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. }));
            old_gone && new_ready && results(&h, "llm").await.len() == 1
        })
        .await;
    assert!(replaced, "nodes: {:?}", h.nodes().await.iter().map(|n| (n.id, n.state.name())).collect::<Vec<_>>());
    // The replacement was launched before the old instance was terminated.
    let calls: Vec<(Duration, Call)> = h.fakes.values().flat_map(|f| f.timed_calls()).collect();
    let old_instance = old.state.instance_id().unwrap().to_string();
    let terminated_at = calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Terminate { id } if *id == old_instance))
        .map(|(t, _)| *t)
        .min()
        .expect("the old instance terminated");
    let mut launched: Vec<Duration> =
        calls.iter().filter(|(_, c)| matches!(c, Call::Launch { .. })).map(|(t, _)| *t).collect();
    launched.sort();
    assert!(launched.len() >= 2 && launched[1] < terminated_at, "replacement launched first: {calls:?}");
    // Served once, elsewhere; one instance left.
    let done = results(&h, "llm").await;
    assert_eq!(done[0].id, ids[0]);
    assert_eq!(h.agents.completed().len(), 1, "served exactly once");
    assert_eq!(h.live_instances(), 1);
}

/// A spot interruption notice from the node's agent drains the node at once: the replacement
/// comes up, the request being served finishes, and the node is terminated.
#[tokio::test(start_paused = true)]
async fn an_interruption_notice_drains_and_replaces_the_node() {
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let agents = SimAgentConfig { service_time: Duration::from_secs(20), ..SimAgentConfig::default() };
    let h = Harness::start(three_clouds(), config(), agents, None).await;
    h.apply(&spec).await;
    let idle = || async {
        h.runners().await.iter().any(|r| matches!(r.state, fleet_state::lifecycle::runner::RunnerPhase::Idle { .. }))
    };
    assert!(h.run_until(Duration::from_secs(120), idle).await, "a runner up");
    let old = h.nodes().await.into_iter().find(|n| matches!(n.state, NodePhase::Ready { .. })).unwrap();
    h.submit("llm", 1).await;
    h.run_for(Duration::from_secs(2)).await;
    // The agent reports the cloud's notice (as fleet-agent does from the metadata endpoint).
    report_terminate_notice(&h, old.id).await;
    h.run_for(Duration::from_secs(2)).await;
    let drained = h.nodes().await.into_iter().find(|n| n.id == old.id).unwrap();
    assert!(
        matches!(
            &drained.state,
            NodePhase::Draining { reason: fleet_state::lifecycle::node::DrainReason::SpotInterruption, .. }
        ),
        "{:?}",
        drained.state
    );
    let replaced = h
        .run_until(Duration::from_secs(600), || async {
            let nodes = h.nodes().await;
            nodes.iter().any(|n| n.id == old.id && matches!(n.state, NodePhase::Terminated { .. }))
                && nodes.iter().any(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. }))
                && results(&h, "llm").await.len() == 1
        })
        .await;
    assert!(replaced, "{:?}", h.nodes().await.iter().map(|n| (n.id, n.state.name())).collect::<Vec<_>>());
    assert_eq!(h.agents.completed().len(), 1, "served exactly once");
    assert_eq!(h.live_instances(), 1);
}

/// A spot node reclaimed by its cloud (interruption notice) makes its offering unavailable for a
/// while: the replacement is placed on the next spot offering, not the same one.
#[tokio::test(start_paused = true)]
async fn a_preempted_spot_offering_is_avoided_by_the_replacement() {
    reclaimed_spot_offering_is_avoided(true).await;
}

/// The same when the cloud deletes the spot instance without any notice.
#[tokio::test(start_paused = true)]
async fn a_spot_offering_reclaimed_without_notice_is_avoided_too() {
    reclaimed_spot_offering_is_avoided(false).await;
}

async fn reclaimed_spot_offering_is_avoided(notice: bool) {
    use fleet_providers::Provider;
    let cheap = h100x8(Cloud::Lambda, "us-east-1", "8", CapacityType::Spot);
    let other = h100x8(Cloud::Runpod, "us-ks-2", "9", CapacityType::Spot);
    let clouds =
        vec![CloudSetup::new(Cloud::Lambda, vec![cheap.clone()]), CloudSetup::new(Cloud::Runpod, vec![other.clone()])];
    let spec = SPEC
        .replace("spot = \"on-demand\"", "spot = \"spot\"")
        .replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let h = Harness::start(clouds, config(), SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    let first = h.run_until(Duration::from_secs(120), || async {
        h.nodes().await.iter().any(|n| matches!(n.state, NodePhase::Ready { .. }))
    });
    assert!(first.await, "a spot node up");
    let old = h.nodes().await.into_iter().find(|n| matches!(n.state, NodePhase::Ready { .. })).unwrap();
    assert_eq!(old.offering(), Some(&cheap.key()), "the cheapest spot offering first");
    if notice {
        report_terminate_notice(&h, old.id).await;
    } else {
        h.fakes[&Cloud::Lambda].terminate(old.state.instance_id().unwrap()).await.unwrap();
    }
    let replaced = h
        .run_until(Duration::from_secs(300), || async {
            h.nodes().await.iter().any(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. }))
        })
        .await;
    assert!(replaced, "a replacement");
    let new =
        h.nodes().await.into_iter().find(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. })).unwrap();
    assert_eq!(new.offering(), Some(&other.key()), "the preempted offering is avoided");
}

/// Served a burst of four (four runners), then idle: how long until at most one runner is left,
/// and until none is (virtual seconds after the last result), with `keep_alive` as given and
/// re-creation costing `recreate`.
async fn idle_runners_last(keep_alive: &str, recreate: Duration) -> (u64, u64) {
    let config = Config { recreate, ..config() };
    let h = Harness::start(three_clouds(), config, SimAgentConfig::default(), None).await;
    h.apply(&SPEC.replace("keep_alive = \"60s\"", &format!("keep_alive = {keep_alive}"))).await;
    h.submit("llm", 4).await;
    assert!(h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 4 }).await);
    let served = tokio::time::Instant::now();
    assert!(h.run_until(Duration::from_secs(3000), || async { h.runners().await.len() <= 1 }).await);
    let one = served.elapsed().as_secs();
    assert!(h.run_until(Duration::from_secs(7200), || async { h.runners().await.is_empty() }).await);
    (one, served.elapsed().as_secs())
}

#[tokio::test(start_paused = true)]
async fn auto_keep_alive_lets_idle_runners_go_once_waiting_costs_more_than_recreating_them() {
    // Demand came once, about as long ago as the history reaches: the expected gap until it
    // comes again is longer than a 60 s re-creation, so the runners go as soon as they are idle,
    // where a 5-minute keep-alive keeps them five minutes — all but the app's last, which
    // stays until the app has had no demand for the whole history window (ten minutes): its
    // stop would make the next request wait a whole cold start.
    let (auto_one, auto_none) = idle_runners_last("\"auto\"", Duration::from_secs(60)).await;
    let (fixed_one, fixed_none) = idle_runners_last("\"5m\"", Duration::from_secs(60)).await;
    println!(
        "idle runners down to one {auto_one} s and gone {auto_none} s after the burst with auto; {fixed_one} s / {fixed_none} s with 5m"
    );
    assert!(auto_one < 60, "auto: {auto_one} s");
    assert!((500..=700).contains(&auto_none), "auto, the last runner: {auto_none} s");
    assert!(fixed_one >= 300 && fixed_none >= 300, "fixed: {fixed_one} s / {fixed_none} s");
    // Re-creation costing 20 minutes: auto keeps them past the fixed keep-alive.
    let (dear, _) = idle_runners_last("\"auto\"", Duration::from_secs(1200)).await;
    println!("with a 20-minute re-creation: {dear} s");
    assert!(dear > fixed_one, "auto with a dear re-creation: {dear} s");
}

/// Runners after a burst of 20 requests, 20 s in (within the first cold start), and whether all
/// 20 were served within 20 minutes.
async fn runners_after_a_burst(predict: bool) -> (usize, bool) {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    let spec = SPEC.replace("keep_alive = \"60s\"", &format!("keep_alive = \"60s\"\npredict = {predict}"));
    h.apply(&spec).await;
    h.submit("llm", 20).await;
    h.run_until(Duration::from_secs(20), || async { false }).await;
    let early = h.runners().await.len();
    let served = h.run_until(Duration::from_secs(1200), || async { results(&h, "llm").await.len() == 20 }).await;
    (early, served)
}

#[tokio::test(start_paused = true)]
async fn predict_probes_with_one_runner_where_fal_starts_one_per_queued_request() {
    // fal's rule: 20 queued requests, one per runner, capped at max_concurrency = 6. predict:
    // nothing measured yet (fleetd counted 20 arrivals but no service time): one probe runner,
    // and the count holds until it has served a few requests (a floor under the service time,
    // then the mean of twenty).
    let (fal, fal_served) = runners_after_a_burst(false).await;
    let (predict, predict_served) = runners_after_a_burst(true).await;
    println!("runners 20 s after a burst of 20: fal {fal}, predict {predict}");
    assert_eq!(fal, 6);
    assert_eq!(predict, 1);
    assert!(fal_served && predict_served, "all served: fal {fal_served}, predict {predict_served}");
}

/// Consolidation through the actor tree: a runner placed on on-demand while spot had no capacity
/// moves to spot once spot has room again — the replacement starts first, the old runner drains,
/// the on-demand node is terminated — and every request is served exactly once.
#[tokio::test(start_paused = true)]
async fn a_runner_on_on_demand_moves_to_spot_when_spot_returns_and_nothing_is_lost() {
    move_to_spot(false).await;
}

/// The same with the fleet actor crashing (and restarted, with nothing but the store) right after
/// the node is marked leaving, and again once its replacement is counted: the move carries on
/// from the store, with one replacement, not two.
#[tokio::test(start_paused = true)]
async fn a_move_in_flight_survives_fleet_actor_crashes() {
    move_to_spot(true).await;
}

async fn move_to_spot(crash: bool) {
    use fleet_orchestrator::actors::fleet::FleetMsg;
    let od = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let spot = h100x8(Cloud::Runpod, "us-ks-2", "8", CapacityType::Spot);
    let clouds = vec![
        CloudSetup::new(Cloud::Lambda, vec![od.clone()]),
        CloudSetup::new(Cloud::Runpod, vec![spot.clone()]).capacity(&spot, 0),
    ];
    let spec = SPEC
        .replace("spot = \"on-demand\"", "spot = \"auto\"")
        .replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let agents = SimAgentConfig { service_time: Duration::from_secs(10), ..SimAgentConfig::default() };
    let h = Harness::start(clouds, config(), agents, None).await;
    h.apply(&spec).await;
    // 300 requests of 10 s each, one at a time: the runner serves for ~50 minutes.
    let ids = h.submit("llm", 300).await;
    let on_od = h
        .run_until(Duration::from_secs(300), || async {
            h.nodes()
                .await
                .iter()
                .any(|n| n.offering() == Some(&od.key()) && matches!(n.state, NodePhase::Ready { .. }))
        })
        .await;
    assert!(on_od, "spot had no room: on-demand");
    let old = h.nodes().await.into_iter().find(|n| n.offering() == Some(&od.key())).unwrap();
    // Spot has room again; its unavailable mark expires after ten minutes.
    h.fakes[&Cloud::Runpod].set_capacity(spot.key(), 4);
    if crash {
        let leaving = |replaced: u32| {
            let h = &h;
            let id = old.id;
            move || async move {
                h.nodes().await.iter().any(|n| n.id == id && n.leaving.as_ref().is_some_and(|l| l.replaced >= replaced))
            }
        };
        // Each crash waits for the restart it causes: the next crash goes to the new actor, not
        // to the old one's mailbox (where a pass queued before the first crash may have counted
        // the replacement already, and the second crash would die with it).
        let restarts = || {
            let metrics = &h.ctx.metrics;
            move || async move {
                metrics.actor_restarts.get_or_create(&fleet_orchestrator::metrics::KindLabel::new("fleet")).get()
            }
        };
        assert!(h.run_until(Duration::from_secs(1800), leaving(0)).await, "marked leaving");
        h.fleet().await.send_message(FleetMsg::Crash("consolidation: marked".into())).unwrap();
        let once = restarts();
        assert!(h.run_until(Duration::from_secs(60), || async { once().await == 1 }).await, "restarted once");
        assert!(h.run_until(Duration::from_secs(600), leaving(1)).await, "replacement counted");
        h.fleet().await.send_message(FleetMsg::Crash("consolidation: replaced".into())).unwrap();
        let twice = restarts();
        assert!(h.run_until(Duration::from_secs(60), || async { twice().await == 2 }).await, "restarted twice");
    }
    let moved = h
        .run_until(Duration::from_secs(1800), || async {
            let nodes = h.nodes().await;
            let old_gone =
                nodes.iter().find(|n| n.id == old.id).is_none_or(|n| matches!(n.state, NodePhase::Terminated { .. }));
            let on_spot =
                nodes.iter().any(|n| n.offering() == Some(&spot.key()) && matches!(n.state, NodePhase::Ready { .. }));
            old_gone && on_spot
        })
        .await;
    assert!(moved, "moved to spot and the on-demand node terminated: {:?}", h.nodes().await);
    assert!(h.ctx.metrics.consolidations.get() >= 1);
    assert!(h.run_until(Duration::from_secs(7200), || async { results(&h, "llm").await.len() == ids.len() }).await);
    let mut done = h.agents.completed();
    done.sort_unstable();
    let n = done.len();
    done.dedup();
    assert_eq!((n, done.len()), (ids.len(), ids.len()), "every request served exactly once");
    assert_eq!(h.live_instances(), 1, "only the spot node is left: {:?}", h.fakes[&Cloud::Lambda].live_instances());
    let spot_nodes = h.nodes().await.iter().filter(|n| n.offering() == Some(&spot.key())).count();
    assert_eq!(spot_nodes, 1, "one replacement: {:?}", h.nodes().await);
    if crash {
        let metrics = h.ctx.metrics.encode();
        assert!(metrics.contains("fleet_actor_restarts_total{kind=\"fleet\"} 2"), "{metrics}");
    }
}

/// An app removed from the spec: its runners stop and its nodes drain and terminate; no paid
/// machine is left running for an app nobody asked for.
#[tokio::test(start_paused = true)]
async fn nodes_of_an_app_removed_from_the_spec_are_drained_and_terminated() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(
        &SPEC
            .replace("max_concurrency = 6", "max_concurrency = 2\nmin_concurrency = 2\nkeep_alive = \"1h\"")
            .replace("keep_alive = \"60s\"\n", ""),
    )
    .await;
    h.submit("llm", 4).await;
    assert!(h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 4 }).await);
    assert_eq!(h.live_instances(), 2, "min_concurrency = 2 keeps two nodes");
    // The spec now has another app only.
    h.apply(&SPEC.replace("[apps.llm]", "[apps.embed]").replace("[apps.llm.", "[apps.embed.")).await;
    let gone = h
        .run_until(Duration::from_secs(300), || async {
            h.live_instances() == 0
                && h.nodes().await.iter().all(|n| matches!(n.state, NodePhase::Terminated { .. }))
                && h.runners().await.is_empty()
        })
        .await;
    assert!(gone, "still there: {:?}", h.nodes().await);
    assert_eq!(h.ctx.metrics.removed_app_nodes.get(), 2);
    let ev = events(&h).await;
    for n in h.nodes().await {
        let of_node: Vec<&(Option<u64>, String, String)> = ev.iter().filter(|e| e.0 == Some(n.id)).collect();
        assert!(of_node.iter().any(|e| e.1 == "draining" && e.2.contains("its app was removed from the spec")));
        let last = of_node.last().unwrap();
        assert!(last.1 == "terminated" && last.2.contains("billed $"), "{of_node:#?}");
    }
}

/// A node whose offering leaves the catalog is not left billing outside the plan: its runners are
/// replaced on an offering the plan may use, and it is drained and terminated, with why in its
/// events and a metric.
#[tokio::test(start_paused = true)]
async fn a_node_whose_offering_left_the_catalog_is_replaced_and_terminated() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1\nkeep_alive = \"1h\"");
    h.apply(&spec.replace("keep_alive = \"60s\"\n", "")).await;
    let ready = || async {
        h.nodes().await.into_iter().filter(|n| matches!(n.state, NodePhase::Ready { .. })).collect::<Vec<_>>()
    };
    assert!(h.run_until(Duration::from_secs(300), || async { ready().await.len() == 1 }).await);
    let first = ready().await.remove(0);
    let gone = first.offering().unwrap().clone();
    assert_eq!(gone.cloud, Cloud::Lambda, "the cheapest first");
    // The next price refresh no longer lists that offering.
    let rest: Vec<fleet_core::Offering> =
        three_clouds().into_iter().flat_map(|c| c.offerings).filter(|o| o.key() != gone).collect();
    let fleet = h.fleet().await;
    fleet
        .send_message(fleet_orchestrator::actors::fleet::FleetMsg::Prices(Arc::new(fleet_core::Catalog::new(rest))))
        .unwrap();
    let moved = h
        .run_until(Duration::from_secs(600), || async {
            let nodes = h.nodes().await;
            let old_gone = nodes.iter().any(|n| n.id == first.id && matches!(n.state, NodePhase::Terminated { .. }));
            let new_ready = nodes.iter().any(|n| n.id != first.id && matches!(n.state, NodePhase::Ready { .. }));
            old_gone && new_ready
        })
        .await;
    assert!(moved, "{:#?}", h.nodes().await);
    assert_eq!(h.live_instances(), 1);
    assert_eq!(h.ctx.metrics.offering_gone_nodes.get(), 1);
    let ev = events(&h).await;
    assert!(
        ev.iter().any(|e| e.0 == Some(first.id) && e.1 == "draining" && e.2.contains("no longer one the plan may use")),
        "{ev:#?}"
    );
}

/// Demand no enabled cloud can place is said once in the events with its reason (not every
/// pass), and said again only when the reason changes.
#[tokio::test(start_paused = true)]
async fn demand_that_cannot_be_placed_is_an_event_with_its_reason_once() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(&SPEC.replace(
        "gpus = 8",
        "gpus = 8
[apps.llm.budget]
max_per_hour = \"10\"",
    ))
    .await;
    h.submit("llm", 2).await;
    h.run_for(Duration::from_secs(120)).await;
    assert_eq!(h.live_instances(), 0, "$10/h buys no 8×H100 node here");
    let ev = events(&h).await;
    let held: Vec<&(Option<u64>, String, String)> = ev.iter().filter(|e| e.1 == "budget-held").collect();
    assert_eq!(held.len(), 1, "said once over many passes: {ev:#?}");
    assert!(held[0].2.contains("not placed") && held[0].2.contains("$10"), "{}", held[0].2);
}

/// One bad value under an app's queue (an agent's token may write there) used to fail every
/// reconcile pass; now it is quarantined and the fleet carries on.
#[tokio::test(start_paused = true)]
async fn a_poisoned_queue_record_does_not_stop_the_fleet() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    h.apply(SPEC).await;
    h.ctx.store.put(&h.ctx.keys.queued("llm", 999_999), b"\xff not json".to_vec(), None).await.unwrap();
    h.submit("llm", 4).await;
    assert!(h.run_until(Duration::from_secs(600), || async { results(&h, "llm").await.len() == 4 }).await);
    let metrics = h.ctx.metrics.encode();
    assert!(!metrics.contains("fleet_queue_records_quarantined 0\n"), "{metrics}");
    assert!(metrics.contains("fleet_queue_records_quarantined"), "{metrics}");
}

/// An agent that finds its machine unlike what was rented (here: a GPU gone) reports a hardware
/// fault: the node is drained at once (HardwareFault), its offering is avoided for a while, and
/// the replacement is placed elsewhere — on-demand capacity too, not only spot.
#[tokio::test(start_paused = true)]
async fn a_machine_unlike_its_rental_is_replaced_elsewhere() {
    let cheap = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let other = h100x8(Cloud::Runpod, "us-ks-2", "22", CapacityType::OnDemand);
    let clouds =
        vec![CloudSetup::new(Cloud::Lambda, vec![cheap.clone()]), CloudSetup::new(Cloud::Runpod, vec![other.clone()])];
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 1\nmin_concurrency = 1");
    let h = Harness::start(clouds, config(), SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    let up = h.run_until(Duration::from_secs(120), || async {
        h.nodes().await.iter().any(|n| matches!(n.state, NodePhase::Ready { .. }))
    });
    assert!(up.await, "a node up");
    let old = h.nodes().await.into_iter().find(|n| matches!(n.state, NodePhase::Ready { .. })).unwrap();
    assert_eq!(old.offering(), Some(&cheap.key()));
    edit_agent_record(&h, old.id, |rec| {
        rec.health.ok = false;
        rec.health.hardware = Some("rented as 8× H100-SXM, the machine shows 7 GPUs".into());
    })
    .await;
    h.run_for(Duration::from_secs(2)).await;
    let drained = h.nodes().await.into_iter().find(|n| n.id == old.id).unwrap();
    assert!(
        matches!(
            &drained.state,
            NodePhase::Draining { reason: fleet_state::lifecycle::node::DrainReason::HardwareFault, .. }
        ),
        "drained at once: {:?}",
        drained.state
    );
    let replaced = h
        .run_until(Duration::from_secs(300), || async {
            h.nodes().await.iter().any(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. }))
        })
        .await;
    assert!(replaced, "a replacement");
    let new =
        h.nodes().await.into_iter().find(|n| n.id != old.id && matches!(n.state, NodePhase::Ready { .. })).unwrap();
    assert_eq!(new.offering(), Some(&other.key()), "the faulty machine's offering is avoided");
}

/// Changes what a node's agent reports, as fleet-agent would (on the agent's own lease).
async fn edit_agent_record(h: &Harness, node: u64, edit: impl FnOnce(&mut fleet_state::model::AgentRecord)) {
    use fleet_state::store::{get_json, to_json};
    let key = h.ctx.keys.agent(node);
    let (mut rec, _) =
        get_json::<fleet_state::model::AgentRecord>(&*h.ctx.store, &key).await.unwrap().expect("agent record");
    edit(&mut rec);
    h.ctx.store.put(&key, to_json(&rec), Some(rec.lease)).await.unwrap();
}

/// The node's agent reports the cloud's terminate notice (as fleet-agent does from the metadata
/// endpoint).
async fn report_terminate_notice(h: &Harness, node: u64) {
    let now = h.ctx.clock.now();
    edit_agent_record(h, node, |rec| {
        rec.health.interruption = Some(fleet_state::model::InterruptionNotice {
            source: "aws".into(),
            kind: "terminate".into(),
            not_before: None,
            noticed_at: now,
        });
    })
    .await;
}

/// Simulated agents serve as many requests per runner as the applied spec's `max_multiplexing`
/// (they served one at a time, whatever the spec said), and report the node's GPUs and runners.
#[tokio::test(start_paused = true)]
async fn simulated_agents_multiplex_as_the_spec_says_and_report_gpus_and_runners() {
    let h = Harness::start(three_clouds(), config(), SimAgentConfig::default(), None).await;
    let spec = SPEC
        .replace("max_concurrency = 6", "max_concurrency = 1")
        .replace("max_multiplexing = 1", "max_multiplexing = 8");
    h.apply(&spec).await;
    h.submit("llm", 8).await;
    let eight = h
        .run_until(Duration::from_secs(300), || async { h.runners().await.iter().any(|r| r.state.in_flight() == 8) })
        .await;
    assert!(eight, "{:#?}", h.runners().await);
    let node = h.nodes().await[0].id;
    let (agent, _) =
        fleet_state::store::get_json::<fleet_state::model::AgentRecord>(&*h.ctx.store, &h.ctx.keys.agent(node))
            .await
            .unwrap()
            .unwrap();
    assert_eq!((agent.gpus, agent.health.devices.len()), (8, 8), "an 8×H100 offering");
    assert_eq!(agent.health.runners.len(), 1);
    assert!(h.ctx.store.get(&h.ctx.keys.agent_log(node)).await.unwrap().is_some(), "a log to show");
}

/// Cold-start-aware placement through fleetd: an app pins a 140 GB model. Its first node can
/// only go to GCP ($30/h; Lambda, $24/h, has no capacity then), where its agent reports the cold
/// start (280 s from the origin). With Lambda back, the app's second node still goes to GCP, the
/// region holding the weights: over the hour it is weighed on, Lambda's cold start (the fetch
/// from the origin billed at its price, and $12.60 of egress) costs more than the $6/h it saves.
/// Without a pinned model, the same second node goes to Lambda.
#[tokio::test(start_paused = true)]
async fn a_second_node_goes_where_the_weights_are_when_fetching_them_again_costs_more() {
    async fn second_node(pinned: bool) -> Cloud {
        let od = CapacityType::OnDemand;
        let lambda = h100x8(Cloud::Lambda, "us-east-1", "24", od);
        let gcp = h100x8(Cloud::Gcp, "us-central1", "30", od);
        let clouds = vec![
            CloudSetup::new(Cloud::Lambda, vec![lambda.clone()]).capacity(&lambda, 0),
            CloudSetup::new(Cloud::Gcp, vec![gcp]),
        ];
        let agents = SimAgentConfig { weights_gb: Some(140.0), ..SimAgentConfig::default() };
        let h = Harness::start(clouds, config(), agents, None).await;
        let model = if pinned {
            "[apps.llm.model]\nsource = \"s3://models/llama-70b\"\ndigest = \"sha256:7f83b1657ff1fc53b92dc18148a1d65dfc2d4b1fa3d677284addd200126d9069\"\n"
        } else {
            ""
        };
        let spec = |n: u32| {
            format!(
                "[fleet]\nname = \"test\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 8\n[apps.llm.placement]\nclouds = [\"lambda\", \"gcp\"]\n\
                 [apps.llm.scaling]\nmin_concurrency = {n}\nmax_concurrency = {n}\nkeep_alive = \"1h\"\n{model}"
            )
        };
        h.apply(&spec(1)).await;
        let up = h
            .run_until(Duration::from_secs(300), || async {
                h.nodes().await.iter().any(|n| matches!(n.state, NodePhase::Ready { .. }))
            })
            .await;
        assert!(up, "the first node is ready");
        let first = h.nodes().await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].offering().unwrap().cloud, Cloud::Gcp, "Lambda had no capacity");
        // Lambda has capacity again, and its refusal has been forgotten.
        h.fakes[&Cloud::Lambda].set_capacity(lambda.key(), 4);
        h.run_for(Duration::from_secs(660)).await;
        h.apply(&spec(2)).await;
        let two = h.run_until(Duration::from_secs(300), || async { h.nodes().await.len() == 2 }).await;
        assert!(two, "a second node planned");
        let nodes = h.nodes().await;
        let second = nodes.iter().find(|n| n.id != first[0].id).unwrap();
        second.candidates[0].offering.cloud
    }
    assert_eq!(second_node(false).await, Cloud::Lambda, "by price alone: Lambda");
    assert_eq!(second_node(true).await, Cloud::Gcp, "weighing the cold start: where the weights are");
}

/// Launches sent together are recorded as started together (one transaction, every record with
/// its token, before any of their calls), while the calls themselves stay within
/// `launches_per_region`; each node is launched once.
#[tokio::test(start_paused = true)]
async fn launches_sent_together_are_recorded_in_one_transaction_before_their_calls() {
    let lambda = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let latency = Duration::from_secs(60);
    let clouds = vec![CloudSetup { launch_latency: latency, ..CloudSetup::new(Cloud::Lambda, vec![lambda]) }];
    let config = Config { launches_per_region: 2, ..config() };
    let spec = SPEC.replace("max_concurrency = 6", "max_concurrency = 6\nmin_concurrency = 6");
    let h = Harness::start(clouds, config, SimAgentConfig::default(), None).await;
    h.apply(&spec).await;
    let fake = h.fakes[&Cloud::Lambda].clone();
    // The first launch probes the offering; when it answers, the other five go together.
    assert!(h.run_until(Duration::from_secs(120), || async { fake.launch_count() >= 2 }).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (kvs, _) = h.ctx.store.range(&h.ctx.keys.nodes()).await.unwrap();
    let launching: Vec<(u64, String, i64)> = kvs
        .iter()
        .filter_map(|kv| {
            let rec: fleet_state::model::NodeRecord = kv.json().unwrap();
            match rec.state {
                NodePhase::Launching { token, .. } => Some((rec.id, token, kv.mod_revision)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(launching.len(), 5, "{launching:?}");
    let revisions: BTreeSet<i64> = launching.iter().map(|(_, _, r)| *r).collect();
    assert_eq!(revisions.len(), 1, "recorded in one transaction: {launching:?}");
    for (id, token, _) in &launching {
        assert_eq!(*token, fleet_providers::idempotency_token("test", &id.to_string()));
    }
    assert_eq!(fake.launch_count(), 3, "the probe and two calls in flight (launches_per_region)");
    // All six come up, each launched once.
    assert!(h.run_until(Duration::from_secs(600), || async { h.live_instances() == 6 }).await);
    assert_eq!(fake.launch_count(), 6);
}
