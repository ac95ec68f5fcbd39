//! The GCP adapter — Google's own `google-cloud-compute-v1` client — against a local server
//! answering as Compute Engine's REST API does (operations, aggregated lists, Google's error
//! bodies): the conformance suite, what each insert carried, and the mapped errors, including
//! those that arrive inside a finished operation.
#![cfg(all(feature = "gcp", feature = "emulators"))]

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{CapacityType, Catalog, Cloud, OfferingKey};
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::emulators::Fault;
use fleet_providers::emulators::gcp::{GcpEmulator, error_body};
use fleet_providers::gcp::{GcpConfig, GcpProvider};
use fleet_providers::{LaunchRequest, Provider, ProviderError, instance_name};

const ZONE: &str = "us-central1-a";

async fn provider(url: &str) -> GcpProvider {
    let mut cfg = GcpConfig::new(
        "t",
        "fleet-test",
        "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-with-nvidia-570",
    );
    cfg.endpoint = Some(url.into());
    cfg.billing_endpoint = url.into();
    cfg.anonymous = true;
    cfg.zones = vec![ZONE.into()];
    cfg.ssh_public_key = Some("ssh-ed25519 AAAAC3Nza fleet".into());
    cfg.poll_initial = Duration::from_millis(10);
    GcpProvider::connect(cfg, Arc::new(Catalog::builtin().clone())).await.unwrap()
}

fn key(ty: &str, capacity: CapacityType) -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Gcp,
        region: "us-central1".into(),
        zone: Some(ZONE.into()),
        instance_type: ty.into(),
        capacity,
    }
}

#[tokio::test]
async fn gcp_passes_the_conformance_suite_and_sends_what_compute_engine_expects() {
    let emu = GcpEmulator::start(&[(ZONE, "a3-highgpu-8g", 2), (ZONE, "a2-ultragpu-1g", 2)]).await;
    emu.set_page_size(1); // every list walks pages
    let p = provider(&emu.running.url).await;
    let env = ConformanceEnv {
        fleet: "t".into(),
        on_demand: key("a3-highgpu-8g", CapacityType::OnDemand),
        spot: Some(key("a2-ultragpu-1g", CapacityType::Spot)),
        missing_id: format!("{ZONE}/fleet-no-such-instance"),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;

    let inserts = emu.requests_to("POST", "/zones/us-central1-a/instances");
    assert_eq!(inserts.len(), 2, "the relaunch found its instance by name: {inserts:#?}");
    let (od, spot) = (&inserts[0], &inserts[1]);
    let rid = od.query_param("requestId").expect("a requestId");
    assert_eq!(rid.len(), 36, "a UUID: {rid}");
    assert_ne!(Some(rid), spot.query_param("requestId"), "one requestId per attempt");
    assert_eq!(od.path, "/compute/v1/projects/fleet-test/zones/us-central1-a/instances");
    let b = &od.body;
    assert_eq!(b["name"], instance_name("t-conf-a"));
    assert_eq!(b["machineType"], "zones/us-central1-a/machineTypes/a3-highgpu-8g");
    assert_eq!(b["labels"]["fleet-name"], "t");
    assert_eq!(b["labels"]["fleet-token"], "t-conf-a");
    assert_eq!(b["labels"]["fleet-node"], "conf-a");
    assert_eq!(b["scheduling"]["provisioningModel"], "STANDARD");
    assert_eq!(b["scheduling"]["onHostMaintenance"], "TERMINATE");
    assert_eq!(b["disks"][0]["initializeParams"]["sourceImage"].as_str().map(|s| s.contains("nvidia")), Some(true));
    // A3 refuses pd-standard, the API's default: the boot disk names a type A3 supports.
    assert_eq!(b["disks"][0]["initializeParams"]["diskType"], "zones/us-central1-a/diskTypes/pd-balanced");
    assert_eq!(b["networkInterfaces"][0]["accessConfigs"][0]["type"], "ONE_TO_ONE_NAT");
    assert_eq!(b["metadata"]["items"][0]["key"], "enable-guest-attributes");
    assert_eq!(b["metadata"]["items"][0]["value"], "TRUE");
    assert_eq!(b["metadata"]["items"][1]["key"], "ssh-keys");
    assert_eq!(b["metadata"]["items"][1]["value"], "fleet:ssh-ed25519 AAAAC3Nza fleet");
    let s = &spot.body["scheduling"];
    assert_eq!(
        (s["provisioningModel"].as_str(), s["instanceTerminationAction"].as_str()),
        (Some("SPOT"), Some("DELETE"))
    );
    assert_eq!(spot.body["machineType"], "zones/us-central1-a/machineTypes/a2-ultragpu-1g");

    // Lists filtered by the fleet's label, and walked every page.
    let lists = emu.requests_to("GET", "/aggregated/instances");
    assert!(lists.iter().all(|r| r.query_param("filter").as_deref() == Some("labels.fleet-name = \"t\"")), "{lists:?}");
    assert!(lists.iter().any(|r| r.query_param("pageToken").is_some_and(|t| !t.is_empty())), "no second page was read");
    // Both deletes were awaited: nothing is left.
    assert!(emu.instances().is_empty(), "{:?}", emu.instances());
    fleet_providers::emulators::shapes::assert_conforms("gcp", &emu.requests());
}

#[tokio::test]
async fn gcp_errors_map_to_what_the_orchestrator_acts_on() {
    let emu = GcpEmulator::start(&[(ZONE, "a3-highgpu-8g", 1)]).await;
    let p = provider(&emu.running.url).await;
    let h100 = key("a3-highgpu-8g", CapacityType::OnDemand);

    // Capacity: the insert is accepted, its operation ends in ZONE_RESOURCE_POOL_EXHAUSTED.
    p.launch(&LaunchRequest::new("t", "1", "a", h100.clone())).await.unwrap();
    match p.launch(&LaunchRequest::new("t", "2", "a", h100.clone())).await {
        Err(ProviderError::InsufficientCapacity { offering, detail }) => {
            assert_eq!(offering, h100);
            assert!(detail.starts_with("ZONE_RESOURCE_POOL_EXHAUSTED"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!emu.requests_to("GET", "/operations/").is_empty(), "the operation was polled");

    // Quota, also in the operation.
    emu.set_capacity(ZONE, "a3-highgpu-8g", 5);
    emu.set_gpu_quota(8);
    match p.launch(&LaunchRequest::new("t", "3", "a", h100.clone())).await {
        Err(ProviderError::QuotaExceeded { offering, detail }) => {
            assert_eq!(offering, h100);
            assert!(detail.contains("NVIDIA_H100_GPUS"), "{detail}");
        }
        other => panic!("{other:?}"),
    }

    // HTTP errors, with Google's bodies.
    let fault = |method: &'static str, status: u16, s: &str, reason: &str, headers: Vec<(String, String)>| Fault {
        method,
        path_contains: "/compute/v1/".into(),
        body_contains: "",
        status,
        headers,
        body: error_body(status, s, reason, "m"),
    };
    emu.fail_next(fault(
        "GET",
        403,
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
        vec![("retry-after".into(), "4".into())],
    ));
    match p.list().await {
        Err(ProviderError::Throttled { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(4)),
        other => panic!("{other:?}"),
    }
    emu.fail_next(fault("GET", 403, "PERMISSION_DENIED", "forbidden", vec![]));
    assert_eq!(p.list().await.unwrap_err().kind(), "unauthorized");
    emu.fail_next(fault("POST", 403, "PERMISSION_DENIED", "quotaExceeded", vec![]));
    let e = p.launch(&LaunchRequest::new("t", "4", "a", h100.clone())).await.unwrap_err();
    assert_eq!(e.kind(), "quota-exceeded", "{e}");
    match p.get(&format!("{ZONE}/fleet-nothing")).await {
        Err(ProviderError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }

    // UNSUPPORTED_OPERATION in the operation: the zone cannot host it now; fail over, as on a stockout.
    emu.fail_next_operation(
        "UNSUPPORTED_OPERATION",
        "The resource 'projects/fleet-test/zones/us-central1-a/acceleratorTypes/nvidia-h100-80gb' is not available in this zone for this operation.",
        400,
    );
    let e = p.launch(&LaunchRequest::new("t", "5", "a", h100.clone())).await.unwrap_err();
    assert!(matches!(&e, ProviderError::InsufficientCapacity { offering, .. } if *offering == h100), "{e:?}");

    // A re-sent insert of a node whose first insert went through (answer lost): adopted, not doubled.
    let req = LaunchRequest::new("t", "1", "a", h100.clone());
    let before = emu.instances().len();
    assert_eq!(p.launch(&req).await.unwrap().id, format!("{ZONE}/{}", instance_name(&req.idempotency_token)));
    assert_eq!(emu.instances().len(), before);
    fleet_providers::emulators::shapes::assert_conforms("gcp", &emu.requests());
}

#[tokio::test]
async fn gcp_prices_are_live_from_the_billing_catalog() {
    let emu = GcpEmulator::start(&[]).await;
    let mut cfg = GcpConfig::new("t", "fleet-test", "img");
    cfg.endpoint = Some(emu.running.url.clone());
    cfg.billing_endpoint = emu.running.url.clone();
    cfg.anonymous = true;
    cfg.zones = vec![ZONE.into()];
    let p = GcpProvider::connect(cfg, Arc::new(Catalog::builtin().clone())).await.unwrap();
    let rows = p.offerings().await.unwrap();
    let find = |k: OfferingKey| rows.iter().find(|o| o.key() == k).cloned().unwrap_or_else(|| panic!("{k}"));
    // a3-highgpu-8g: 8 × $2.934 (GPU) + 208 × $0.029 (vCPU) + 1,872 × $0.0039 (GiB) = $36.8048, plus
    // its bundled 6,000 GiB of Local SSD at $0.08 per GiB-month: $480 / 730 h = $0.657534 → $37.462334.
    let a3 = find(key("a3-highgpu-8g", CapacityType::OnDemand));
    assert_eq!(
        (a3.price.hourly().to_decimal_string(), a3.source.name.as_str()),
        ("37.462334".into(), "gcp billing catalog")
    );
    // a2-ultragpu-1g on Spot ("Nvidia Tesla A100 80GB GPU …" SKUs): $1.40 + 12 × $0.0126 +
    // 170 × $0.00168 = $1.8368, plus 375 GiB of Local SSD at $0.048: $18 / 730 = $0.024658.
    let a2 = find(key("a2-ultragpu-1g", CapacityType::Spot));
    assert_eq!(
        (a2.price.hourly().to_decimal_string(), a2.source.name.as_str()),
        ("1.861458".into(), "gcp billing catalog")
    );
    // On demand: $3.50 + 12 × $0.0315 + 170 × $0.0042 + 375 × $0.08 / 730 = $4.592 + $0.041096.
    assert_eq!(find(key("a2-ultragpu-1g", CapacityType::OnDemand)).price.hourly().to_decimal_string(), "4.633096");
    // No SKUs for a3-megagpu here: the catalog's price stays.
    let mega = find(key("a3-megagpu-8g", CapacityType::OnDemand));
    assert_ne!(mega.source.name, "gcp billing catalog");
    let asked = emu.requests_to("GET", "/v1/services/6F81-5844-456A/skus");
    assert!(asked.len() >= 3, "every page read: {asked:?}");
    assert!(asked.iter().all(|r| r.query_param("currencyCode").as_deref() == Some("USD")));

    emu.fail_next(Fault {
        method: "GET",
        path_contains: "/skus".into(),
        body_contains: "",
        status: 503,
        headers: vec![],
        body: serde_json::json!({}),
    });
    assert_eq!(p.offerings().await.unwrap(), rows, "a failed refresh keeps the last prices");
    fleet_providers::emulators::shapes::assert_conforms("gcp", &emu.requests());
}

/// GCP remembers a `requestId` and answers a re-send with the first request's operation, even a
/// failed one: a node tried again in a zone after a stockout must not be answered with the old
/// failure. (Before, the id was fixed per node and zone: the second attempt failed again.)
#[tokio::test]
async fn gcp_a_second_attempt_is_not_answered_with_the_first_ones_failure() {
    let emu = GcpEmulator::start(&[(ZONE, "a3-highgpu-8g", 0)]).await;
    let p = provider(&emu.running.url).await;
    let req = LaunchRequest::new("t", "1", "a", key("a3-highgpu-8g", CapacityType::OnDemand));
    assert_eq!(p.launch(&req).await.unwrap_err().kind(), "insufficient-capacity");
    emu.set_capacity(ZONE, "a3-highgpu-8g", 1);
    let i = p.launch(&req).await.expect("the second attempt reaches the zone again");
    let ids: Vec<_> = emu.requests_to("POST", "/instances").iter().filter_map(|r| r.query_param("requestId")).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    // Deletes too: two attempts, two ids, and the instance goes.
    p.terminate(&i.id).await.unwrap();
    p.terminate(&i.id).await.unwrap();
    assert!(emu.instances().is_empty());
    fleet_providers::emulators::shapes::assert_conforms("gcp", &emu.requests());
}

/// What GCP refuses about boot disks, the emulator refuses too (so the adapter's choice is tested).
#[tokio::test]
async fn gcp_boot_disk_types_are_ones_the_family_supports() {
    use fleet_providers::gcp::boot_disk_type;
    assert_eq!(boot_disk_type("a3-highgpu-8g"), "pd-balanced");
    assert_eq!(boot_disk_type("a2-ultragpu-1g"), "pd-balanced");
    assert_eq!(boot_disk_type("a3-ultragpu-8g"), "hyperdisk-balanced");
    assert_eq!(boot_disk_type("a4-highgpu-8g"), "hyperdisk-balanced");
    let emu = GcpEmulator::start(&[(ZONE, "a3-highgpu-8g", 1)]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/compute/v1/projects/p/zones/{ZONE}/instances", emu.running.url);
    let body = |disk: serde_json::Value| {
        serde_json::json!({"name": "x", "machineType": format!("zones/{ZONE}/machineTypes/a3-highgpu-8g"),
            "disks": [{"boot": true, "initializeParams": disk}]})
    };
    for disk in [serde_json::json!({}), serde_json::json!({"diskType": format!("zones/{ZONE}/diskTypes/pd-standard")})]
    {
        let r = http.post(&url).json(&body(disk)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("pd-standard"), "{v}");
    }
    assert!(emu.instances().is_empty());
}

/// The host keys Compute Engine relays from the guest (`hostkeys/` guest attributes): none until
/// the guest has published them, then exactly those, and NotFound for an instance not the fleet's.
#[tokio::test]
async fn gcp_host_keys_come_from_the_guest_attributes() {
    let emu = GcpEmulator::start(&[(ZONE, "a3-highgpu-8g", 1)]).await;
    let p = provider(&emu.running.url).await;
    let i = p.launch(&LaunchRequest::new("t", "1", "llm", key("a3-highgpu-8g", CapacityType::OnDemand))).await.unwrap();
    assert_eq!(p.host_keys(&i.id).await.unwrap(), Some(vec![]), "not published yet: ask again later");
    let name = i.id.rsplit('/').next().unwrap();
    let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheGuest";
    let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=";
    emu.set_host_keys(name, &[ed, ecdsa]);
    assert_eq!(p.host_keys(&i.id).await.unwrap(), Some(vec![ed.to_string(), ecdsa.to_string()]));
    let e = p.host_keys(&format!("{ZONE}/fleet-no-such-instance")).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");
    let asked = emu.requests_to("GET", "/getGuestAttributes");
    assert!(asked.iter().all(|r| r.query_param("queryPath").as_deref() == Some("hostkeys/")), "{asked:?}");
    fleet_providers::emulators::shapes::assert_conforms("gcp", &emu.requests());
}
