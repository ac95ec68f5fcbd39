//! The Lambda adapter against a local server answering as Lambda's API v1 does: the conformance
//! suite, what each request carried, every mapped error through the real HTTP path, and live
//! prices with their fallbacks.
#![cfg(all(feature = "lambda", feature = "emulators"))]

use std::sync::Arc;
use std::time::Duration;

use fleet_core::{Availability, CapacityType, Catalog, Cloud, OfferingKey, Secret};
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::emulators::Fault;
use fleet_providers::emulators::lambda::{LambdaEmulator, error_body, insufficient_capacity};
use fleet_providers::lambda::{LambdaConfig, LambdaProvider};
use fleet_providers::{LaunchRequest, Provider, ProviderError, TAG_FLEET, TAG_TOKEN};

const KEY: &str = "secret_lambda_key_0123456789";

fn provider(url: &str, key: &str) -> LambdaProvider {
    let mut cfg = LambdaConfig::new("t", Secret::new(key), "fleet");
    cfg.endpoint = url.into();
    LambdaProvider::new(cfg, Arc::new(Catalog::builtin().clone()))
}

fn h100x8(region: &str) -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Lambda,
        region: region.into(),
        zone: None,
        instance_type: "gpu_8x_h100_sxm5".into(),
        capacity: CapacityType::OnDemand,
    }
}

#[tokio::test]
async fn lambda_passes_the_conformance_suite_and_sends_what_lambda_expects() {
    let emu = LambdaEmulator::start(KEY, &["us-east-1", "us-west-1"], 4).await;
    let p = provider(&emu.api_url(), KEY);
    let env = ConformanceEnv {
        fleet: "t".into(),
        on_demand: h100x8("us-east-1"),
        spot: None,
        missing_id: "0920582c7ff041399e34823a0be62549".into(),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;

    // Two launches reached Lambda (the relaunch found its instance by token), each as asked.
    let launches = emu.requests_to("POST", "/instance-operations/launch");
    assert_eq!(launches.len(), 2, "{launches:#?}");
    let b = &launches[0].body;
    assert_eq!(b["instance_type_name"], "gpu_8x_h100_sxm5");
    assert_eq!(b["region_name"], "us-east-1");
    assert_eq!(b["ssh_key_names"], serde_json::json!(["fleet"]));
    assert_eq!(b["name"], "t-conf-a", "the instance is named after its idempotency token");
    assert!(b.get("quantity").is_none(), "the current launch spec has no quantity: {b}");
    let tags = b["tags"].as_array().unwrap();
    for (k, v) in [(TAG_FLEET, "t"), (TAG_TOKEN, "t-conf-a"), ("fleet-node", "conf-a"), ("fleet-app", "conformance")] {
        assert!(tags.iter().any(|t| t["key"] == k && t["value"] == v), "tag {k}={v} missing in {tags:?}");
    }
    assert!(emu.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}"))));
    let terminates = emu.requests_to("POST", "/instance-operations/terminate");
    assert!(terminates.iter().all(|r| r.body["instance_ids"].as_array().map(Vec::len) == Some(1)));
    assert!(emu.live().is_empty(), "the suite left {:?}", emu.live());
    fleet_providers::emulators::shapes::assert_conforms("lambda", &emu.requests());
}

#[tokio::test]
async fn lambda_errors_map_to_what_the_orchestrator_acts_on() {
    let emu = LambdaEmulator::start(KEY, &["us-east-1"], 4).await;
    let p = provider(&emu.api_url(), KEY);
    let o = h100x8("us-east-1");

    emu.fail_next(insufficient_capacity());
    match p.launch(&LaunchRequest::new("t", "1", "a", o.clone())).await {
        Err(ProviderError::InsufficientCapacity { offering, detail }) => {
            assert_eq!(offering, o);
            assert!(detail.contains("insufficient-capacity"), "{detail}");
        }
        other => panic!("{other:?}"),
    }

    // Upstream providers' errors (`provider/…`, per the published spec): unavailable and quota
    // are about this offering, whatever the HTTP status; neither is a bad request.
    for (status, code, kind) in [
        (503, "provider/internal-unavailable", "insufficient-capacity"),
        (400, "provider/quota-exceeded", "quota-exceeded"),
    ] {
        emu.fail_next(Fault {
            method: "POST",
            path_contains: "/instance-operations/launch".into(),
            body_contains: "",
            status,
            headers: vec![],
            body: error_body(code, "Provider unavailable", Some("Try again shortly")),
        });
        let e = p.launch(&LaunchRequest::new("t", code, "a", o.clone())).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{code}: {e}");
        assert_eq!(e.unavailable_offering(), Some(&o));
    }

    emu.set_quota(0);
    match p.launch(&LaunchRequest::new("t", "2", "a", o.clone())).await {
        Err(ProviderError::QuotaExceeded { offering, .. }) => assert_eq!(offering, o),
        other => panic!("{other:?}"),
    }
    emu.set_quota(10);

    // Capacity runs out for real (not injected): the type's last instance is taken.
    emu.set_capacity("gpu_8x_h100_sxm5", "us-east-1", 1);
    p.launch(&LaunchRequest::new("t", "3", "a", o.clone())).await.unwrap();
    let e = p.launch(&LaunchRequest::new("t", "4", "a", o.clone())).await.unwrap_err();
    assert_eq!(e.kind(), "insufficient-capacity", "{e}");

    emu.fail_next(Fault {
        method: "GET",
        path_contains: "/instances".into(),
        body_contains: "",
        status: 429,
        headers: vec![("retry-after".into(), "5".into())],
        body: error_body("global/too-many-requests", "Too many requests.", None),
    });
    match p.list().await {
        Err(ProviderError::Throttled { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(5)),
        other => panic!("{other:?}"),
    }

    // A missing SSH key is the operator's to fix, not a missing instance.
    let mut cfg = LambdaConfig::new("t", Secret::new(KEY), "no-such-key");
    cfg.endpoint = emu.api_url();
    let bad_key_name = LambdaProvider::new(cfg, Arc::new(Catalog::builtin().clone()));
    let e = bad_key_name.launch(&LaunchRequest::new("t", "5", "a", o.clone())).await.unwrap_err();
    assert_eq!(e.kind(), "invalid-request", "{e}");

    // A wrong key: Unauthorized, and the key is in no message or debug output.
    let wrong = provider(&emu.api_url(), "wrong_key_abcdef");
    let e = wrong.list().await.unwrap_err();
    assert_eq!(e.kind(), "unauthorized", "{e}");
    for text in [e.to_string(), format!("{e:?}"), format!("{wrong:?}")] {
        assert!(!text.contains("wrong_key_abcdef") && !text.contains(KEY), "{text}");
    }

    // Nothing answering: transient.
    let gone = provider("http://127.0.0.1:9/api/v1", KEY);
    assert_eq!(gone.list().await.unwrap_err().kind(), "transient");

    // Sessions' instances: only the two that launched, both still ours to list.
    assert_eq!(p.list().await.unwrap().len(), 1);
    fleet_providers::emulators::shapes::assert_conforms("lambda", &emu.requests());
}

#[tokio::test]
async fn lambda_prices_are_live_and_survive_a_failed_refresh() {
    let emu = LambdaEmulator::start(KEY, &["us-east-1"], 2).await;
    let p = provider(&emu.api_url(), KEY);
    let rows = p.offerings().await.unwrap();
    let east = rows.iter().find(|o| o.key() == h100x8("us-east-1")).expect("gpu_8x_h100_sxm5 in us-east-1");
    assert_eq!(east.price.hourly().to_decimal_string(), "23.92", "the API's price, not the catalog's");
    assert_eq!(east.source.name, "lambda instance-types");
    assert_eq!(east.availability, Availability::Available);
    // A region the catalog lists but the API reports no capacity in.
    let west = rows.iter().find(|o| o.key() == h100x8("us-west-1")).expect("catalog region kept");
    assert!(matches!(west.availability, Availability::Unavailable { .. }), "{west:?}");
    // GPUs fleet does not place on are not offered.
    assert!(!rows.iter().any(|o| o.instance.name == "gpu_1x_a10"));

    // The API fails: the last prices stay.
    emu.fail_next(Fault {
        method: "GET",
        path_contains: "/instance-types".into(),
        body_contains: "",
        status: 503,
        headers: vec![],
        body: serde_json::json!({"error": {"code": "global/unknown", "message": "unavailable"}}),
    });
    let again = p.offerings().await.unwrap();
    assert_eq!(again, rows);

    // A provider that never reached the API: the built-in catalog's Lambda rows.
    let cold = provider("http://127.0.0.1:9/api/v1", KEY);
    let rows = cold.offerings().await.unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|o| o.cloud == Cloud::Lambda && o.source.name != "lambda instance-types")
    );
    fleet_providers::emulators::shapes::assert_conforms("lambda", &emu.requests());
}
