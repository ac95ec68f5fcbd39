//! The AWS adapter against a real EC2 API server: moto (`pip install "moto[server]"`, which
//! `scripts/test` installs), started here on a free loopback port.
#![cfg(feature = "aws")]

use std::process::Command;
use std::sync::Arc;

use fleet_core::{Availability, CapacityType, Catalog, Cloud, OfferingKey, Secret};
use fleet_providers::aws::{AwsConfig, AwsProvider, StaticCredentials};
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::moto::Moto;
use fleet_providers::{InstanceState, LaunchRequest, Provider, ProviderError};

async fn moto() -> Moto {
    tokio::task::spawn_blocking(Moto::start).await.expect("moto starts")
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn config(fleet: &str, url: &str) -> AwsConfig {
    AwsConfig {
        endpoint_url: Some(url.to_string()),
        credentials: Some(StaticCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new(SECRET),
            session_token: None,
        }),
        max_attempts: 1,
        // No price list here unless a test starts one: nothing listens there, so prices stay the catalog's.
        pricing_endpoint: Some("http://127.0.0.1:9".into()),
        // moto's images include this one (any id moto knows works).
        ..AwsConfig::new(fleet, "us-east-1", "ami-03cf127a")
    }
}

async fn provider(fleet: &str, url: &str) -> AwsProvider {
    AwsProvider::connect(config(fleet, url), Arc::new(Catalog::builtin().clone())).await
}

fn key(instance_type: &str, zone: Option<&str>, capacity: CapacityType) -> OfferingKey {
    OfferingKey {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: zone.map(Into::into),
        instance_type: instance_type.into(),
        capacity,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_against_moto() {
    let m = moto().await;
    let p = provider("conformance", &m.url).await;
    let env = ConformanceEnv {
        fleet: "conformance".into(),
        on_demand: key("p5.48xlarge", Some("use1-az1"), CapacityType::OnDemand),
        spot: Some(key("p4d.24xlarge", None, CapacityType::Spot)),
        missing_id: "i-0123456789abcdef0".into(),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;
    assert!(p.list().await.unwrap().is_empty(), "the suite left instances running");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_tagged_placed_and_isolated_by_fleet() {
    let m = moto().await;
    let a = provider("fleet-a", &m.url).await;
    let b = provider("fleet-b", &m.url).await;
    let ia = a
        .launch(&LaunchRequest::new(
            "fleet-a",
            "n1",
            "llm",
            key("p5.48xlarge", Some("use1-az1"), CapacityType::OnDemand),
        ))
        .await
        .unwrap();
    // use1-az1 is us-east-1b in moto: the zone id went in as a zone name and came back as the id.
    assert_eq!(ia.offering.zone.as_deref(), Some("use1-az1"));
    assert!(ia.private_ip.is_some());
    let mut spot_req =
        LaunchRequest::new("fleet-b", "n1", "llm", key("p4d.24xlarge", Some("use1-az6"), CapacityType::Spot));
    spot_req.max_price = Some(fleet_core::Price::parse_decimal("20").unwrap());
    let ib = b.launch(&spot_req).await.unwrap();
    assert_eq!(ib.offering.capacity, CapacityType::Spot);
    // Each fleet sees only its own.
    assert_eq!(a.list().await.unwrap().iter().map(|i| i.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&ia.id));
    assert_eq!(b.list().await.unwrap().iter().map(|i| i.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&ib.id));
    assert!(matches!(a.get(&ib.id).await, Err(ProviderError::NotFound { .. })));
    // Fleet a cannot terminate fleet b's instance, even by id.
    a.terminate(&ib.id).await.unwrap();
    assert!(b.get(&ib.id).await.unwrap().state.is_live());
    // Relaunching fleet-b's n1 (even asking for another type) finds the instance its token made.
    let ib2 = b
        .launch(&LaunchRequest::new("fleet-b", "n1", "llm", key("p5.48xlarge", None, CapacityType::OnDemand)))
        .await
        .unwrap();
    assert_eq!(ib2.id, ib.id, "fleet-b's n1 already exists: the token finds it");
    assert_ne!(ia.id, ib.id, "the same node id in two fleets is two instances");
    for (p, id) in [(&a, &ia.id), (&b, &ib.id)] {
        p.terminate(id).await.unwrap();
        assert_eq!(p.get(id).await.unwrap().state, InstanceState::Terminated);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn offerings_carry_live_spot_prices_and_availability() {
    use fleet_providers::emulators::aws_pricing::{PricingEmulator, capacity_block_entry, entry};
    let m = moto().await;
    // The price list: p5.48xlarge's Linux price (and a Windows one the query must not pick up),
    // then what a query without the market filter also matches, listed last: the Capacity Block
    // product and a $0 dimension. p4d.24xlarge is quoted twice at two prices: ambiguous.
    let mut zero = entry("p5.48xlarge", "us-east-1", "Linux", "Shared", "0.0000000000");
    zero["product"]["sku"] = serde_json::json!("ZEROSKU");
    let list = PricingEmulator::start(vec![
        entry("p5.48xlarge", "us-east-1", "Linux", "Shared", "55.0400000000"),
        entry("p5.48xlarge", "us-east-1", "Windows", "Shared", "63.8720000000"),
        entry("p5.48xlarge", "us-west-2", "Linux", "Shared", "55.0400000000"),
        capacity_block_entry("p5.48xlarge", "us-east-1", "31.4640000000"),
        zero,
        entry("p4d.24xlarge", "us-east-1", "Linux", "Shared", "21.9576000000"),
        entry("p4d.24xlarge", "us-east-1", "Linux", "Shared", "32.7726000000"),
    ])
    .await;
    let p = AwsProvider::connect(
        AwsConfig { pricing_endpoint: Some(list.running.url.clone()), ..config("prices", &m.url) },
        Arc::new(Catalog::builtin().clone()),
    )
    .await;
    let offerings = p.offerings().await.unwrap();
    // On-demand: the price list's, for the type it lists.
    let p5: Vec<_> =
        offerings.iter().filter(|o| o.instance.name == "p5.48xlarge" && o.capacity == CapacityType::OnDemand).collect();
    assert!(!p5.is_empty());
    for o in &p5 {
        assert_eq!((o.price.hourly().to_decimal_string(), o.source.name.as_str()), ("55.04".into(), "aws price list"));
    }
    let asked = list.requests_to("POST", "/");
    let p5_query = asked
        .iter()
        .find(|r| r.body["Filters"].as_array().unwrap().iter().any(|f| f["Value"] == "p5.48xlarge"))
        .expect("p5.48xlarge was asked for");
    assert_eq!(p5_query.body["ServiceCode"], "AmazonEC2");
    for (field, value) in [
        ("regionCode", "us-east-1"),
        ("operatingSystem", "Linux"),
        ("tenancy", "Shared"),
        ("capacitystatus", "Used"),
        ("marketoption", "OnDemand"),
    ] {
        assert!(
            p5_query.body["Filters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["Field"] == field && f["Value"] == value && f["Type"] == "TERM_MATCH"),
            "{field}={value} missing: {}",
            p5_query.body
        );
    }
    // Two different prices for one offering: neither is used (the catalog's stays, an error is logged).
    let p4d: Vec<_> = offerings
        .iter()
        .filter(|o| o.instance.name == "p4d.24xlarge" && o.capacity == CapacityType::OnDemand)
        .collect();
    assert!(!p4d.is_empty() && p4d.iter().all(|o| o.source.name != "aws price list"), "{p4d:?}");
    // The list fails next time: the last prices stay.
    list.fail_next(fleet_providers::emulators::Fault {
        method: "POST",
        path_contains: "/".into(),
        body_contains: "",
        status: 500,
        headers: vec![],
        body: serde_json::json!({"__type": "InternalErrorException", "message": "internal"}),
    });
    let again = p.offerings().await.unwrap();
    assert!(again.iter().any(|o| o.instance.name == "p5.48xlarge" && o.source.name == "aws price list"));
    assert!(offerings.iter().all(|o| o.cloud == Cloud::Aws && o.region == "us-east-1"));
    let live: Vec<_> = offerings.iter().filter(|o| o.source.name == "aws DescribeSpotPriceHistory").collect();
    assert!(!live.is_empty(), "no spot price came from DescribeSpotPriceHistory");
    // moto quotes a placeholder 0.00001 for every spot price.
    assert!(
        live.iter().all(
            |o| o.capacity == CapacityType::Spot && o.price == fleet_core::Price::parse_decimal("0.00001").unwrap()
        )
    );
    assert!(live.iter().any(|o| o.instance.name == "p5.48xlarge"));
    // Types the price list quotes ambiguously (p4d.24xlarge, above) keep the catalog's on-demand price.
    assert!(offerings.iter().any(|o| o.instance.name == "p4d.24xlarge"
        && o.capacity == CapacityType::OnDemand
        && o.source.name.starts_with("skypilot")));
    // moto offers p4de.24xlarge only in use1-az4 and use1-az6: elsewhere it is marked.
    let p4de: Vec<_> = offerings.iter().filter(|o| o.instance.name == "p4de.24xlarge").collect();
    assert!(p4de.iter().any(|o| matches!(o.availability, Availability::Unavailable { .. })), "{p4de:?}");
    assert!(p4de.iter().any(|o| !matches!(o.availability, Availability::Unavailable { .. })), "{p4de:?}");
    for o in p4de {
        let offered = matches!(o.zone.as_deref(), Some("use1-az4" | "use1-az6"));
        assert_eq!(matches!(o.availability, Availability::Unavailable { .. }), !offered, "{}", o.key());
    }
    fleet_providers::emulators::shapes::assert_conforms("aws-pricing", &list.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_never_shows_the_secret() {
    let m = moto().await;
    let p = provider("debug", &m.url).await;
    let d = format!("{p:?}");
    assert!(!d.contains(SECRET) && !d.contains("AKIAIOSFODNN7EXAMPLE"), "{d}");
    assert!(d.contains("…MPLE") && d.contains("Secret(***)"), "{d}");
    // Errors never carry it either.
    let e = p
        .launch(&LaunchRequest::new("other", "n", "a", key("p5.48xlarge", None, CapacityType::OnDemand)))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains(SECRET));
}

/// Runs only as the child of `standard_credential_chain_reads_the_environment`, with AWS's
/// environment variables set by the parent (setting them here would need `unsafe`).
#[tokio::test(flavor = "multi_thread")]
async fn credential_chain_child() {
    let Ok(url) = std::env::var("FLEET_TEST_CHAIN_ENDPOINT") else { return };
    let cfg =
        AwsConfig { endpoint_url: Some(url), max_attempts: 1, ..AwsConfig::new("chain", "us-east-1", "ami-03cf127a") };
    assert!(cfg.credentials.is_none());
    let p = AwsProvider::connect(cfg, Arc::new(Catalog::default())).await;
    if std::env::var("FLEET_TEST_CHAIN_EXPECT").as_deref() == Ok("unauthorized") {
        let e = p.list().await.unwrap_err();
        assert_eq!(e.kind(), "unauthorized", "{e}");
        assert!(e.to_string().contains("no credentials found in chain"), "{e}");
        return;
    }
    let i = p
        .launch(&LaunchRequest::new("chain", "n1", "a", key("p5.48xlarge", None, CapacityType::OnDemand)))
        .await
        .unwrap();
    assert_eq!(p.list().await.unwrap()[0].id, i.id);
    p.terminate(&i.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_credential_chain_reads_the_environment() {
    let m = moto().await;
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["credential_chain_child", "--exact", "--nocapture"])
        .env("FLEET_TEST_CHAIN_ENDPOINT", &m.url)
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home.path())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child test did not run: {text}");

    // With nothing in the chain: Unauthorized, not a transient error to retry forever.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["credential_chain_child", "--exact", "--nocapture"])
        .env("FLEET_TEST_CHAIN_ENDPOINT", &m.url)
        .env("FLEET_TEST_CHAIN_EXPECT", "unauthorized")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[tokio::test]
async fn offerings_fall_back_to_the_catalog_when_ec2_cannot_be_reached() {
    // Nothing listens on port 9: every EC2 call fails at once. Placement still gets the
    // region's catalog rows, not an error.
    let p = provider("down", "http://127.0.0.1:9").await;
    let rows = p.offerings().await.unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|o| o.cloud == Cloud::Aws && o.region == "us-east-1" && o.source.name.starts_with("skypilot"))
    );
}

/// `host_keys` reads the instance's console output through EC2's GetConsoleOutput (moto's is a
/// fixed boot log without cloud-init's key block: no keys yet, not an error), and is NotFound
/// for an instance that is not the fleet's. The block's parsing is `host_keys_in_console`'s test.
#[tokio::test(flavor = "multi_thread")]
async fn host_keys_are_read_from_the_console_output() {
    let m = moto().await;
    let p = provider("hostkeys", &m.url).await;
    let i = p
        .launch(&LaunchRequest::new("hostkeys", "1", "llm", key("p5.48xlarge", None, CapacityType::OnDemand)))
        .await
        .unwrap();
    assert_eq!(p.host_keys(&i.id).await.unwrap(), Some(vec![]), "a console without the key block");
    let other = provider("another-fleet", &m.url).await;
    let e = other.host_keys(&i.id).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotFound { .. }), "{e}");
}
