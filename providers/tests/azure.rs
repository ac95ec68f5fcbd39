//! The Azure adapter — `azure_mgmt_compute` with an `azure_core` credential — against a local
//! server answering as Azure Resource Manager does (PUT with async operations, paged lists, ARM
//! error bodies): the conformance suite, what each PUT carried, and the mapped errors, including
//! an allocation failure that arrives in the async operation and leaves a Failed VM behind.
#![cfg(all(feature = "azure", feature = "emulators"))]

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{CapacityType, Catalog, Cloud, OfferingKey, Price, Secret};
use fleet_providers::azure::{AzureConfig, AzureProvider, FixedToken};
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::emulators::Fault;
use fleet_providers::emulators::azure::{AzureEmulator, error_body};
use fleet_providers::{LaunchRequest, Provider, ProviderError, instance_name};

const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret";
const SUB: &str = "00000000-0000-0000-0000-000000000001";
const SUBNET: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/fleet/providers/Microsoft.Network/virtualNetworks/fleet/subnets/nodes";

const NSG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/fleet/providers/Microsoft.Network/networkSecurityGroups/fleet-ssh";

fn provider(url: &str, token: &str) -> AzureProvider {
    AzureProvider::new(config(url, token), Arc::new(Catalog::builtin().clone())).unwrap()
}

fn config(url: &str, token: &str) -> AzureConfig {
    let mut cfg = AzureConfig::new(
        "t",
        SUB,
        "fleet",
        SUBNET,
        "microsoft-dsvm:ubuntu-hpc:2204:latest".parse().unwrap(),
        "ssh-ed25519 AAAAC3Nza fleet",
    );
    cfg.endpoint = url.into();
    cfg.network_security_group = Some(NSG.into());
    cfg.credential = Some(Arc::new(FixedToken(Secret::new(token))));
    cfg.regions = vec!["eastus".into()];
    cfg.max_retries = 1;
    cfg.poll_interval = Duration::from_millis(10);
    cfg.prices_endpoint = format!("{url}/api/retail/prices");
    cfg
}

fn key(ty: &str, capacity: CapacityType) -> OfferingKey {
    OfferingKey { cloud: Cloud::Azure, region: "eastus".into(), zone: None, instance_type: ty.into(), capacity }
}

#[tokio::test]
async fn azure_passes_the_conformance_suite_and_sends_what_arm_expects() {
    let emu = AzureEmulator::start(
        TOKEN,
        &[("eastus", "Standard_ND96isr_H100_v5", 2), ("eastus", "Standard_NC24ads_A100_v4", 2)],
    )
    .await;
    emu.set_page_size(1);
    let p = provider(&emu.running.url, TOKEN);
    let env = ConformanceEnv {
        fleet: "t".into(),
        on_demand: key("Standard_ND96isr_H100_v5", CapacityType::OnDemand),
        spot: Some(key("Standard_NC24ads_A100_v4", CapacityType::Spot)),
        missing_id: "fleet-no-such-vm".into(),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;

    let puts = emu.requests_to("PUT", "/providers/Microsoft.Compute/virtualMachines/");
    assert_eq!(puts.len(), 2, "the relaunch found its VM: {puts:#?}");
    let od = &puts[0];
    assert_eq!(
        od.path,
        format!(
            "/subscriptions/{SUB}/resourceGroups/fleet/providers/Microsoft.Compute/virtualMachines/{}",
            instance_name("t-conf-a")
        )
    );
    assert_eq!(od.query_param("api-version").as_deref(), Some("2024-07-01"));
    let b = &od.body;
    // Not in the SDK's VmSize enum (FACTS.md), and still sent as written.
    assert_eq!(b["properties"]["hardwareProfile"]["vmSize"], "Standard_ND96isr_H100_v5");
    assert_eq!(b["location"], "eastus");
    assert_eq!(b["tags"]["fleet-name"], "t");
    assert_eq!(b["tags"]["fleet-token"], "t-conf-a");
    assert_eq!(b["tags"]["fleet-node"], "conf-a");
    assert_eq!(b["properties"]["priority"], "Regular");
    assert!(b["properties"]["evictionPolicy"].is_null());
    assert_eq!(b["properties"]["storageProfile"]["imageReference"]["offer"], "ubuntu-hpc");
    assert_eq!(b["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"], true);
    assert_eq!(
        b["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"],
        "ssh-ed25519 AAAAC3Nza fleet"
    );
    let ipc = &b["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"];
    assert_eq!(ipc["deleteOption"], "Delete", "the NIC goes with the VM");
    assert_eq!(ipc["networkSecurityGroup"]["id"], NSG, "the NSG that admits SSH is on the NIC");
    let pip = &ipc["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"];
    assert_eq!(
        (pip["sku"]["name"].as_str(), pip["properties"]["publicIPAllocationMethod"].as_str()),
        (Some("Standard"), Some("Static"))
    );
    assert_eq!(ipc["ipConfigurations"][0]["properties"]["subnet"]["id"], SUBNET);
    let spot = &puts[1].body["properties"];
    assert_eq!(
        (spot["priority"].as_str(), spot["evictionPolicy"].as_str(), spot["billingProfile"]["maxPrice"].as_f64()),
        (Some("Spot"), Some("Delete"), Some(-1.0))
    );
    // Every call carried the credential's token; every VM is gone (deletes were awaited).
    // ARM calls carry the token; the public Retail Prices API never gets it.
    for r in emu.requests() {
        let want = if r.path.starts_with("/api/retail/prices") { None } else { Some(format!("Bearer {TOKEN}")) };
        assert_eq!(r.authorization, want, "{} {}", r.method, r.path);
    }
    assert!(emu.vms().is_empty(), "{:?}", emu.vms());
    assert!(!emu.requests_to("GET", "/operations/").is_empty(), "async operations were polled");
    fleet_providers::emulators::shapes::assert_conforms("azure", &emu.requests());
}

#[tokio::test]
async fn azure_errors_map_to_what_the_orchestrator_acts_on() {
    let emu = AzureEmulator::start(TOKEN, &[("eastus", "Standard_ND96isr_H100_v5", 1)]).await;
    let p = provider(&emu.running.url, TOKEN);
    let h100 = key("Standard_ND96isr_H100_v5", CapacityType::OnDemand);

    // Capacity runs out: the PUT is accepted, the operation fails with AllocationFailed, and the
    // Failed VM it leaves is deleted.
    p.launch(&LaunchRequest::new("t", "1", "a", h100.clone())).await.unwrap();
    for code in ["AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest"] {
        emu.set_exhaustion_code(code);
        match p.launch(&LaunchRequest::new("t", "2", "a", h100.clone())).await {
            Err(ProviderError::InsufficientCapacity { offering, detail }) => {
                assert_eq!(offering, h100);
                assert!(detail.starts_with(code), "{detail}");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(emu.vms().len(), 1, "the Failed VM of {code} was not deleted: {:?}", emu.vms());
    }

    // Synchronous refusals, with ARM's bodies.
    let put_fault = |status: u16, code: &str| Fault {
        method: "PUT",
        path_contains: "/virtualMachines/".into(),
        body_contains: "",
        status,
        headers: vec![("x-ms-error-code".into(), code.into())],
        body: error_body(code, "m"),
    };
    emu.fail_next(put_fault(409, "SkuNotAvailable"));
    assert_eq!(
        p.launch(&LaunchRequest::new("t", "3", "a", h100.clone())).await.unwrap_err().kind(),
        "insufficient-capacity"
    );
    emu.set_capacity("eastus", "Standard_ND96isr_H100_v5", 3);
    emu.set_cores_quota(96);
    match p.launch(&LaunchRequest::new("t", "4", "a", h100.clone())).await {
        Err(ProviderError::QuotaExceeded { offering, detail }) => {
            assert_eq!(offering, h100);
            assert!(detail.starts_with("OperationNotAllowed") && detail.contains("Cores quota"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    emu.set_cores_quota(1000);

    // 429 with Retry-After: the SDK waits as told and retries (1 retry allowed here) …
    let throttled = || Fault {
        method: "GET",
        path_contains: "/virtualMachines".into(),
        body_contains: "",
        status: 429,
        headers: vec![("retry-after".into(), "1".into()), ("x-ms-error-code".into(), "TooManyRequests".into())],
        body: error_body("TooManyRequests", "The request is being throttled."),
    };
    emu.clear_requests();
    emu.fail_next(throttled());
    assert_eq!(p.list().await.unwrap().len(), 1);
    assert_eq!(emu.requests_to("GET", "/virtualMachines").len(), 2, "one throttled, one retried");
    // … and past its retries the call is Throttled.
    emu.fail_next(throttled());
    emu.fail_next(throttled());
    assert_eq!(p.list().await.unwrap_err().kind(), "throttled");

    let e = provider(&emu.running.url, "wrong-token").list().await.unwrap_err();
    assert_eq!(e.kind(), "unauthorized", "{e}");
    assert!(!e.to_string().contains("wrong-token") && !e.to_string().contains(TOKEN));
    emu.fail_next(Fault {
        method: "GET",
        path_contains: "/virtualMachines".into(),
        body_contains: "",
        status: 403,
        headers: vec![("x-ms-error-code".into(), "AuthorizationFailed".into())],
        body: error_body(
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Compute/virtualMachines/read'.",
        ),
    });
    assert_eq!(p.list().await.unwrap_err().kind(), "unauthorized");
    match p.get("fleet-nothing").await {
        Err(ProviderError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }

    // A spot launch with fleet's cap sends it as billingProfile.maxPrice; a cap under the current
    // Spot price ($0.7346) is refused with SpotPriceGreaterThanProvidedMaxPrice: fail over.
    emu.set_capacity("eastus", "Standard_NC24ads_A100_v4", 1);
    let a100_spot = key("Standard_NC24ads_A100_v4", CapacityType::Spot);
    let mut spot = LaunchRequest::new("t", "5", "a", a100_spot.clone());
    spot.max_price = Some(Price::parse_decimal("0.55").unwrap());
    match p.launch(&spot).await {
        Err(ProviderError::InsufficientCapacity { offering, detail }) => {
            assert_eq!(offering, a100_spot);
            assert!(detail.starts_with("SpotPriceGreaterThanProvidedMaxPrice"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    spot.max_price = Some(Price::parse_decimal("0.80").unwrap());
    p.launch(&spot).await.unwrap();
    let put = emu.requests_to("PUT", &instance_name(&spot.idempotency_token)).pop().unwrap();
    assert_eq!(put.body["properties"]["billingProfile"]["maxPrice"].as_f64(), Some(0.8));
    for (code, kind) in [
        ("AzureSpotIsNotSupportedForThisVMSize", "insufficient-capacity"),
        ("AzureSpotFeatureNotEnabledForSubscriptionType", "quota-exceeded"),
        ("MaxPriceValueInvalid", "invalid-request"),
    ] {
        emu.fail_next(Fault {
            method: "PUT",
            path_contains: "/virtualMachines/".into(),
            body_contains: "",
            status: 400,
            headers: vec![],
            body: error_body(code, "m"),
        });
        let req = LaunchRequest::new("t", &format!("spot-{code}"), "a", a100_spot.clone());
        assert_eq!(p.launch(&req).await.unwrap_err().kind(), kind, "{code}");
    }
    fleet_providers::emulators::shapes::assert_conforms("azure", &emu.requests());
}

#[tokio::test]
async fn azure_prices_are_live_and_a_running_vm_has_its_addresses() {
    let emu = AzureEmulator::start(TOKEN, &[("eastus", "Standard_ND96isr_H100_v5", 1)]).await;
    let p = provider(&emu.running.url, TOKEN);
    let rows = p.offerings().await.unwrap();
    let find = |k: OfferingKey| rows.iter().find(|o| o.key() == k).cloned().unwrap_or_else(|| panic!("{k} missing"));
    let od = find(key("Standard_ND96isr_H100_v5", CapacityType::OnDemand));
    assert_eq!(
        (od.price.hourly().to_decimal_string(), od.source.name.as_str()),
        ("98.32".into(), "azure retail prices")
    );
    // The catalog has no Spot row for it: the live Spot meter adds one (Windows and Low Priority rows ignored).
    let spot = find(key("Standard_ND96isr_H100_v5", CapacityType::Spot));
    assert_eq!(spot.price.hourly().to_decimal_string(), "39.328");
    assert_eq!(find(key("Standard_NC24ads_A100_v4", CapacityType::Spot)).price.hourly().to_decimal_string(), "0.7346");
    let asked = emu.requests_to("GET", "/api/retail/prices");
    let f = asked[0].query_param("$filter").unwrap();
    assert!(f.contains("armRegionName eq 'eastus'") && f.contains("armSkuName eq 'Standard_ND96isr_H100_v5'"), "{f}");
    assert!(asked.iter().any(|r| r.query_param("$skip").is_some()), "NextPageLink was not followed");

    // A non-primary meter listed after the primary one does not overwrite it.
    emu.add_non_primary_retail_price("eastus", "Standard_ND96isr_H100_v5", false, 120.0);
    let again = p.offerings().await.unwrap();
    let od2 = again.iter().find(|o| o.key() == od.key()).unwrap();
    assert_eq!(od2.price.hourly().to_decimal_string(), "98.32", "the primary meter's price stays");

    // Prices move; a failed refresh keeps the last ones.
    emu.set_retail_price("eastus", "Standard_ND96isr_H100_v5", true, 41.5);
    let moved = p.offerings().await.unwrap();
    assert!(moved.iter().any(|o| o.key() == spot.key() && o.price.hourly().to_decimal_string() == "41.50"));
    emu.fail_next(Fault {
        method: "GET",
        path_contains: "/api/retail/prices".into(),
        body_contains: "",
        status: 500,
        headers: vec![],
        body: serde_json::json!({}),
    });
    assert_eq!(p.offerings().await.unwrap(), moved);

    // A running VM's addresses come from its NIC and public IP (Microsoft.Network), for bootstrap.
    let i = p
        .launch(&LaunchRequest::new("t", "1", "a", key("Standard_ND96isr_H100_v5", CapacityType::OnDemand)))
        .await
        .unwrap();
    let got = p.get(&i.id).await.unwrap();
    assert!(got.public_ip.is_some_and(|ip| ip.to_string().starts_with("20.1.2.")), "{got:?}");
    assert!(got.private_ip.is_some_and(|ip| ip.to_string().starts_with("10.1.0.")), "{got:?}");
    assert_eq!(emu.requests_to("GET", "/providers/Microsoft.Network/").len(), 2, "NIC, then public IP");
    p.terminate(&i.id).await.unwrap();
    fleet_providers::emulators::shapes::assert_conforms("azure", &emu.requests());
}

/// Without a network security group a VM's Standard public IP admits no SSH: fleet would pay for
/// a node it can never bootstrap, so the launch is refused before anything is created.
#[tokio::test]
async fn azure_refuses_to_launch_a_vm_nobody_can_ssh_into() {
    let emu = AzureEmulator::start(TOKEN, &[("eastus", "Standard_ND96isr_H100_v5", 1)]).await;
    let cfg = AzureConfig { network_security_group: None, ..config(&emu.running.url, TOKEN) };
    let p = AzureProvider::new(cfg, Arc::new(Catalog::builtin().clone())).unwrap();
    let e = p
        .launch(&LaunchRequest::new("t", "1", "a", key("Standard_ND96isr_H100_v5", CapacityType::OnDemand)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidRequest { detail } if detail.contains("network_security_group")),
        "{e:?}"
    );
    assert!(emu.requests_to("PUT", "/virtualMachines/").is_empty());
}
