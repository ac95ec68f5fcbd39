//! The RunPod adapter against a local server answering as RunPod's GraphQL API does: the
//! conformance suite (on-demand and interruptible pods), what each deploy carried, the mapped
//! errors through the real HTTP path, and live prices with their fallbacks.
#![cfg(all(feature = "runpod", feature = "emulators"))]

use std::sync::Arc;

use fleet_core::{Availability, CapacityType, Catalog, Cloud, OfferingKey, Price, Secret};
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::emulators::Fault;
use fleet_providers::emulators::runpod::{RunpodEmulator, no_capacity};
use fleet_providers::runpod::{RunpodConfig, RunpodProvider};
use fleet_providers::{LaunchRequest, Provider, ProviderError};

const KEY: &str = "rpa_SECRETRUNPODKEY0123456789";

fn provider(url: &str, key: &str) -> RunpodProvider {
    let mut cfg = RunpodConfig::new("t", Secret::new(key), "runpod/base:0.6.2-cuda12.4.1");
    cfg.endpoint = url.into();
    cfg.ssh_public_key = Some("ssh-ed25519 AAAAC3Nza fleet".into());
    RunpodProvider::new(cfg, Arc::new(Catalog::builtin().clone()))
}

fn key(ty: &str, capacity: CapacityType) -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Runpod,
        region: "us".into(),
        zone: Some("us-ca-1".into()),
        instance_type: ty.into(),
        capacity,
    }
}

#[tokio::test]
async fn runpod_passes_the_conformance_suite_and_sends_what_runpod_expects() {
    let emu = RunpodEmulator::start(KEY, &["US-CA-1"], 8).await;
    let p = provider(&emu.graphql_url(), KEY);
    let env = ConformanceEnv {
        fleet: "t".into(),
        on_demand: key("1x_H100-SXM_SECURE", CapacityType::OnDemand),
        spot: Some(key("1x_A100-80GB_SECURE", CapacityType::Spot)),
        missing_id: "x7y8z9nopod000".into(),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;

    let ops = emu.operations();
    let deploys: Vec<_> = ops.iter().filter(|(op, _)| op == "podFindAndDeployOnDemand").collect();
    assert_eq!(deploys.len(), 1, "the relaunch found its pod by token: {ops:?}");
    let i = &deploys[0].1["input"];
    assert_eq!(i["gpuTypeId"], "NVIDIA H100 80GB HBM3");
    assert_eq!(i["gpuCount"], 1);
    assert_eq!(i["cloudType"], "SECURE");
    assert_eq!(i["dataCenterId"], "US-CA-1");
    assert_eq!(i["name"], "t-conf-a");
    let env_has = |k: &str, v: &str| i["env"].as_array().unwrap().iter().any(|e| e["key"] == k && e["value"] == v);
    assert!(env_has("FLEET_TAG_FLEET_NAME", "t") && env_has("FLEET_TAG_FLEET_TOKEN", "t-conf-a"), "{i}");
    assert!(env_has("PUBLIC_KEY", "ssh-ed25519 AAAAC3Nza fleet"));

    // The interruptible pod bid RunPod's live minimum (1.19 per GPU here): the launch had no cap.
    let rents: Vec<_> = ops.iter().filter(|(op, _)| op == "podRentInterruptable").collect();
    assert_eq!(rents.len(), 1);
    assert_eq!(rents[0].1["input"]["bidPerGpu"], serde_json::json!(1.19));
    assert_eq!(rents[0].1["input"]["gpuTypeId"], "NVIDIA A100 80GB PCIe");
    assert!(emu.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
    assert!(emu.live().is_empty(), "the suite left {:?}", emu.live());
    fleet_providers::emulators::shapes::assert_conforms("runpod", &emu.requests());
}

#[tokio::test]
async fn runpod_errors_map_to_what_the_orchestrator_acts_on() {
    let emu = RunpodEmulator::start(KEY, &["US-CA-1"], 1).await;
    let p = provider(&emu.graphql_url(), KEY);
    let h100 = key("1x_H100-SXM_SECURE", CapacityType::OnDemand);

    emu.fail_next(no_capacity());
    match p.launch(&LaunchRequest::new("t", "1", "a", h100.clone())).await {
        Err(ProviderError::InsufficientCapacity { offering, detail }) => {
            assert_eq!(offering, h100);
            assert!(detail.contains("no longer any instances"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Real exhaustion: one GPU free, two pods asked for.
    p.launch(&LaunchRequest::new("t", "2", "a", h100.clone())).await.unwrap();
    assert_eq!(
        p.launch(&LaunchRequest::new("t", "3", "a", h100.clone())).await.unwrap_err().kind(),
        "insufficient-capacity"
    );

    // A spot bid below the market is "no capacity at this price".
    let spot = key("1x_A100-80GB_SECURE", CapacityType::Spot);
    let mut low = LaunchRequest::new("t", "4", "a", spot.clone());
    low.max_price = Some(Price::parse_decimal("0.50").unwrap());
    assert_eq!(p.launch(&low).await.unwrap_err().kind(), "insufficient-capacity");

    emu.set_balance(0.0);
    let e = p.launch(&LaunchRequest::new("t", "5", "a", spot.clone())).await.unwrap_err();
    assert!(matches!(&e, ProviderError::QuotaExceeded { offering, .. } if *offering == spot), "{e:?}");

    emu.fail_next(Fault {
        method: "POST",
        path_contains: "/graphql".into(),
        body_contains: "",
        status: 429,
        headers: vec![("retry-after".into(), "3".into())],
        body: serde_json::json!({"error": "Too Many Requests", "status": 429}),
    });
    match p.list().await {
        Err(ProviderError::Throttled { retry_after, .. }) => assert_eq!(retry_after.as_secs(), 3),
        other => panic!("{other:?}"),
    }

    let wrong = provider(&emu.graphql_url(), "rpa_WRONGKEY");
    let e = wrong.list().await.unwrap_err();
    assert_eq!(e.kind(), "unauthorized");
    for text in [e.to_string(), format!("{e:?}"), format!("{wrong:?}")] {
        assert!(!text.contains("rpa_WRONGKEY") && !text.contains(KEY), "{text}");
    }
    assert_eq!(p.list().await.unwrap().len(), 1);
    fleet_providers::emulators::shapes::assert_conforms("runpod", &emu.requests());
}

#[tokio::test]
async fn runpod_prices_are_live_and_survive_a_failed_refresh() {
    let emu = RunpodEmulator::start(KEY, &["US-CA-1"], 8).await;
    let p = provider(&emu.graphql_url(), KEY);
    let rows = p.offerings().await.unwrap();
    let find = |rows: &[fleet_core::Offering], k: &OfferingKey| rows.iter().find(|o| o.key() == *k).cloned().unwrap();
    let h = find(&rows, &key("1x_H100-SXM_SECURE", CapacityType::OnDemand));
    assert_eq!((h.price.hourly().to_decimal_string(), h.source.name.as_str()), ("2.69".into(), "runpod gpuTypes"));
    let h2 = find(&rows, &key("2x_H100-SXM_SECURE", CapacityType::OnDemand));
    assert_eq!(h2.price.hourly().to_decimal_string(), "5.38", "per-GPU price × 2, exactly");
    let a = find(&rows, &key("1x_A100-80GB_SECURE", CapacityType::Spot));
    assert_eq!(a.price.hourly().to_decimal_string(), "1.19");
    // A GPU RunPod does not list (the emulator has no H100 PCIe): unavailable, not guessed.
    let pcie = find(&rows, &key("1x_H100_SECURE", CapacityType::OnDemand));
    assert!(matches!(pcie.availability, Availability::Unavailable { .. }), "{pcie:?}");

    emu.fail_next(Fault {
        method: "POST",
        path_contains: "/graphql".into(),
        body_contains: "",
        status: 502,
        headers: vec![],
        body: serde_json::json!(null),
    });
    assert_eq!(p.offerings().await.unwrap(), rows, "a failed refresh keeps the last prices");

    let cold = provider("http://127.0.0.1:9/graphql", KEY);
    let rows = cold.offerings().await.unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|o| o.cloud == Cloud::Runpod && o.source.name != "runpod gpuTypes"));
    fleet_providers::emulators::shapes::assert_conforms("runpod", &emu.requests());
}

/// The bid follows RunPod's live minimum (`lowestPrice.minimumBidPrice`), not the price list's
/// spot price: when the minimum moves up, a bid at the static price would be refused.
#[tokio::test]
async fn runpod_spot_bids_the_live_minimum_within_the_cap() {
    let emu = RunpodEmulator::start(KEY, &["US-CA-1"], 8).await;
    let p = provider(&emu.graphql_url(), KEY);
    let spot = key("2x_A100-80GB_SECURE", CapacityType::Spot);
    // Prices are read (1.19 per GPU), then the market moves.
    p.offerings().await.unwrap();
    emu.set_min_bid("NVIDIA A100 80GB PCIe", 1.35);
    let i = p.launch(&LaunchRequest::new("t", "1", "a", spot.clone())).await.unwrap();
    let rent = emu.operations().into_iter().find(|(op, _)| op == "podRentInterruptable").expect("rented");
    assert_eq!(rent.1["input"]["bidPerGpu"], serde_json::json!(1.35), "bid the live minimum");
    assert_eq!(rent.1["input"]["gpuCount"], 2);
    let ask =
        emu.requests().into_iter().find(|r| r.body["query"].as_str().unwrap_or("").contains("lowestPrice")).unwrap();
    let q = ask.body["query"].as_str().unwrap();
    assert!(q.contains("gpuCount: 2") && q.contains("secureCloud: true"), "{q}");
    assert_eq!(ask.body["variables"]["input"]["id"], "NVIDIA A100 80GB PCIe");
    p.terminate(&i.id).await.unwrap();

    // A cap of $2.60/h for two GPUs is 1.30 per GPU: under the 1.35 minimum, so no pod is asked for.
    emu.clear_requests();
    let mut capped = LaunchRequest::new("t", "2", "a", spot.clone());
    capped.max_price = Some(Price::parse_decimal("2.60").unwrap());
    match p.launch(&capped).await {
        Err(ProviderError::InsufficientCapacity { offering, detail }) => {
            assert_eq!(offering, spot);
            assert!(detail.contains("1.35") && detail.contains("1.3"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(emu.operations().iter().all(|(op, _)| op != "podRentInterruptable"));
    // Within the cap: bids the minimum, not the cap.
    capped.max_price = Some(Price::parse_decimal("3.00").unwrap());
    p.launch(&capped).await.unwrap();
    let rent = emu.operations().into_iter().find(|(op, _)| op == "podRentInterruptable").expect("rented");
    assert_eq!(rent.1["input"]["bidPerGpu"], serde_json::json!(1.35));
    fleet_providers::emulators::shapes::assert_conforms("runpod", &emu.requests());
}

/// RunPod publishes a pod's sshd on another port of its public address; the instance says so,
/// so bootstrap dials that port (port 22 on that address is not the pod's).
#[tokio::test]
async fn runpod_instances_carry_the_mapped_ssh_port() {
    let emu = RunpodEmulator::start(KEY, &["US-CA-1"], 8).await;
    let p = provider(&emu.graphql_url(), KEY);
    emu.set_ssh_endpoint("198.51.100.7", 40_123);
    let on_demand = key("1x_H100-SXM_SECURE", CapacityType::OnDemand);
    let launched = p.launch(&LaunchRequest::new("t", "1", "a", on_demand)).await.unwrap();
    let i = p.get(&launched.id).await.unwrap();
    assert_eq!(i.ssh, Some("198.51.100.7:40123".parse().unwrap()), "{i:?}");
    assert_eq!(i.public_ip, Some("198.51.100.7".parse().unwrap()));
    assert_eq!(p.list().await.unwrap()[0].ssh, i.ssh);
    fleet_providers::emulators::shapes::assert_conforms("runpod", &emu.requests());
}
