//! Failover across clouds through the real actor tree: the cheapest cloud (the fake, as AWS)
//! runs out of capacity at launch, the next (the Lambda adapter against a server answering as
//! Lambda's API) answers "insufficient-capacity" too, and the node is launched on the third (the
//! RunPod adapter against a server answering as RunPod's GraphQL API). Each cloud saw exactly the
//! launch the plan's failover order says, and the node's record names the RunPod pod.
//!
//! And fleetd itself: cloud accounts from the spec's `[clouds.*]` (API keys from its environment),
//! live prices through its API, and a spec that would change the accounts refused whole.
#![cfg(all(feature = "lambda", feature = "runpod"))]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Catalog, Cloud, Secret};
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::testing::harness::h100x8;
use fleet_orchestrator::testing::live::{fast_config, wait_for};
use fleet_providers::emulators::lambda::{LambdaEmulator, insufficient_capacity};
use fleet_providers::emulators::runpod::RunpodEmulator;
use fleet_providers::fake::{Call, FakeConfig, FakeProvider, Op};
use fleet_providers::lambda::{LambdaConfig, LambdaProvider};
use fleet_providers::runpod::{RunpodConfig, RunpodProvider};
use fleet_providers::{Provider, ProviderError};
use fleet_state::clock::Clock;
use fleet_state::model::{NodeRecord, apply_spec};
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;
use ractor::Actor;

const SPEC: &str = r#"
[fleet]
name = "t"
[apps.chat]
gpu = "H100"
gpus = 1
[apps.chat.placement]
spot = "on-demand"
[apps.chat.scaling]
min_concurrency = 1
max_concurrency = 1
keep_alive = "1h"
"#;

/// The fake as AWS selling a one-GPU H100 at $1/h (the cheapest), whose next launch finds no capacity.
fn fake_aws_refusing_once() -> Arc<FakeProvider> {
    let mut o = h100x8(Cloud::Aws, "us-east-1", "1.00", CapacityType::OnDemand);
    o.instance.name = "p5.4xlarge".into();
    o.instance.gpu_count = 1;
    let fake = Arc::new(FakeProvider::new(FakeConfig::new(Cloud::Aws, "t", vec![o.clone()])));
    let detail = "InsufficientInstanceCapacity".into();
    fake.fail_next(Op::Launch, ProviderError::InsufficientCapacity { offering: o.key(), detail });
    fake
}

/// The Lambda adapter on `api` (key "lk"), in us-east-1.
fn lambda_on(api: &LambdaEmulator) -> Arc<LambdaProvider> {
    let mut c = LambdaConfig::new("t", Secret::new("lk"), "fleet");
    c.endpoint = api.api_url();
    c.regions = vec!["us-east-1".into()];
    Arc::new(LambdaProvider::new(c, Arc::new(Catalog::builtin().clone())))
}

/// The RunPod adapter on `api` (key "rk"), in US-CA-1.
fn runpod_on(api: &RunpodEmulator) -> Arc<RunpodProvider> {
    let mut c = RunpodConfig::new("t", Secret::new("rk"), "runpod/base:0.6.2");
    c.endpoint = api.graphql_url();
    c.data_centers = vec!["US-CA-1".into()];
    Arc::new(RunpodProvider::new(c, Arc::new(Catalog::builtin().clone())))
}

/// The actor tree for fleet `t` on an embedded store with `spec` applied.
struct Running {
    store: Arc<dyn Store>,
    keys: Keys,
    ctx: Arc<Ctx>,
    root: ractor::ActorRef<fleet_orchestrator::actors::root::RootMsg>,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn run_fleet(providers: BTreeMap<Cloud, Arc<dyn Provider>>, config: Config, spec: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ctx = Arc::new(Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), config, Clock::System));
    let keys = Keys::new("t");
    apply_spec(&*store, &keys, "t", spec, chrono::Utc::now()).await.unwrap();
    let (root, handle) = Actor::spawn(None, RootActor, ctx.clone()).await.unwrap();
    Running { store, keys, ctx, root, handle, _dir: dir }
}

impl Running {
    async fn nodes(&self) -> Vec<NodeRecord> {
        match self.store.range(&self.keys.nodes()).await {
            Ok((kvs, _)) => kvs.iter().filter_map(|kv| kv.json::<NodeRecord>().ok()).collect(),
            Err(_) => vec![],
        }
    }

    /// Waits for a node with an instance on `cloud`, launched there (the candidate it is on).
    async fn node_launched_on(&self, cloud: Cloud) -> NodeRecord {
        wait_for(&format!("a node launched on {cloud}"), Duration::from_secs(30), || async {
            self.nodes().await.into_iter().find(|n| {
                n.state.instance_id().is_some()
                    && n.candidates.get(n.attempt).is_some_and(|c| c.offering.cloud == cloud)
            })
        })
        .await
    }

    async fn stop(self) {
        self.root.stop(None);
        let _ = self.handle.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_error_on_one_cloud_sends_the_launch_to_the_next() {
    // Cheapest: the fake "AWS", out of capacity at launch.
    let fake = fake_aws_refusing_once();
    // Next: Lambda's 1x H100 PCIe at $2.49/h in us-east-1; capacity is listed, then gone at launch.
    let lambda_api = LambdaEmulator::start("lk", &["us-east-1"], 4).await;
    lambda_api.fail_next(insufficient_capacity());
    // Then: RunPod's 1x H100 SXM at $2.69/h in US-CA-1, which has GPUs.
    let runpod_api = RunpodEmulator::start("rk", &["US-CA-1"], 4).await;
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Aws, fake.clone());
    providers.insert(Cloud::Lambda, lambda_on(&lambda_api));
    providers.insert(Cloud::Runpod, runpod_on(&runpod_api));
    let fleet = run_fleet(providers, fast_config(), SPEC).await;
    let node = fleet.node_launched_on(Cloud::Runpod).await;

    // The order: AWS tried once, then Lambda once (answered insufficient-capacity), then RunPod.
    let aws_launches = fake.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count();
    assert_eq!(aws_launches, 1, "{:?}", fake.calls());
    let lambda_launches = lambda_api.requests_to("POST", "/instance-operations/launch");
    assert_eq!(lambda_launches.len(), 1);
    assert_eq!(lambda_launches[0].body["instance_type_name"], "gpu_1x_h100_pcie");
    assert!(lambda_api.live().is_empty(), "lambda launched nothing");
    let deploys: Vec<_> =
        runpod_api.operations().into_iter().filter(|(op, _)| op == "podFindAndDeployOnDemand").collect();
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert_eq!(deploys[0].1["input"]["gpuTypeId"], "NVIDIA H100 80GB HBM3");
    let pods = runpod_api.live();
    assert_eq!(pods.len(), 1);
    assert_eq!(node.state.instance_id(), pods[0]["id"].as_str(), "the record names the pod");
    assert!(fake.live_instances().is_empty());
    fleet.stop().await;
}

fn spec_with_lambda(endpoint: &str) -> String {
    format!(
        "[fleet]\nname = \"t\"\n[apps.chat]\ngpu = \"H100\"\n[clouds.lambda]\nssh_key_name = \"fleet\"\nregions = [\"us-east-1\"]\nendpoint = \"{endpoint}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetd_takes_its_cloud_accounts_from_the_spec() {
    let api = LambdaEmulator::start("lk_secret_123", &["us-east-1"], 2).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("fleet.toml");
    std::fs::write(&spec, spec_with_lambda(&api.api_url())).unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = ["--fleet", "t", "--data-dir", data.to_str().unwrap(), "--spec", spec.to_str().unwrap()]
        .map(String::from)
        .to_vec();

    // Without the API key in the environment: a one-line refusal naming the variable.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["--listen", "127.0.0.1:0"])
        .args(&args)
        .env_remove("LAMBDA_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LAMBDA_API_KEY is not set"), "{err}");

    let f = tokio::task::spawn_blocking(move || {
        common::Fleetd::start_with_env(&args, None, &[("LAMBDA_API_KEY", "lk_secret_123")])
    })
    .await
    .unwrap();
    // Offerings through the API carry Lambda's live price (the emulator's $23.92, not the catalog's).
    let offerings = f.get("/v1/offerings");
    let row = offerings
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["offering"] == "lambda/us-east-1/gpu_8x_h100_sxm5/on-demand")
        .unwrap_or_else(|| panic!("{offerings}"));
    assert_eq!(row["price_per_hour"], "23.92");
    assert!(!api.requests_to("GET", "/instance-types").is_empty());
    assert!(!f.log().contains("lk_secret_123"), "the API key is in fleetd's log");

    // Simulated clouds beside a real account: refused at start (simulated agents must never serve
    // or vouch for machines that bill).
    let data2 = dir.path().join("data2");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["--listen", "127.0.0.1:0", "--fleet", "t", "--fake-clouds", "runpod"])
        .args(["--data-dir", data2.to_str().unwrap(), "--spec", spec.to_str().unwrap()])
        .env("LAMBDA_API_KEY", "lk_secret_123")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--fake-clouds cannot run beside real cloud accounts (the spec's [clouds.lambda])"), "{err}");

    // A spec without the [clouds] fleetd runs with: refused, nothing applied.
    let (status, body) = f.call("PUT", "/v1/spec", "[fleet]\nname = \"t\"\n[apps.other]\ngpu = \"H100\"\n");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("restart it with --spec FILE") && body.contains("nothing was applied"), "{body}");
    let stored = f.get("/v1/spec");
    assert!(stored.to_string().contains("chat") && !stored.to_string().contains("other"), "{stored}");
    // The same accounts: applied.
    let (status, body) = f.call("PUT", "/v1/spec", &spec_with_lambda(&api.api_url()).replace("chat", "chat2"));
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_prices_are_gathered_again_while_the_fleet_runs() {
    let api = LambdaEmulator::start("lk", &["us-east-1"], 4).await;
    let lambda: Arc<dyn Provider> = lambda_on(&api);
    let config = Config { prices_every: Duration::from_millis(300), ..fast_config() };
    let spec = |n: u32| {
        format!(
            "[fleet]\nname = \"t\"\n[apps.chat]\ngpu = \"H100-PCIe\"\ngpus = 1\n[apps.chat.placement]\nspot = \"on-demand\"\n[apps.chat.scaling]\nmin_concurrency = {n}\nmax_concurrency = {n}\nkeep_alive = \"1h\"\n"
        )
    };
    let fleet = run_fleet(BTreeMap::from([(Cloud::Lambda, lambda)]), config, &spec(1)).await;
    let nodes = || async { Some(fleet.nodes().await) };
    let first =
        wait_for("the first node", Duration::from_secs(20), || async { nodes().await.filter(|n| n.len() == 1) }).await;
    assert_eq!(first[0].candidates[0].price.hourly().to_decimal_string(), "2.49", "Lambda's live price at start");

    // Lambda lowers the price; the fleet hears of it without a restart.
    api.set_price("gpu_1x_h100_pcie", 199);
    let asked = api.requests_to("GET", "/instance-types").len();
    wait_for("two more price refreshes", Duration::from_secs(10), || async {
        (api.requests_to("GET", "/instance-types").len() >= asked + 2).then_some(())
    })
    .await;
    apply_spec(&*fleet.store, &fleet.keys, "t", &spec(2), chrono::Utc::now()).await.unwrap();
    fleet.ctx.nudge.notify_one();
    let both =
        wait_for("the second node", Duration::from_secs(20), || async { nodes().await.filter(|n| n.len() == 2) }).await;
    let second = both.iter().find(|n| n.id != first[0].id).unwrap();
    assert_eq!(second.candidates[0].price.hourly().to_decimal_string(), "1.99", "planned at the refreshed price");
    // The move is in the fleet's events, once (later refreshes found nothing new to say).
    let events = fleet_state::events::list(&*fleet.store, &fleet.keys, &fleet_state::events::EventFilter::default())
        .await
        .unwrap();
    let moved: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == fleet_state::events::EventKind::PriceChanged)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0].contains("(1 down, 0 up)") && moved[0].contains("gpu_1x_h100_pcie"), "{moved:?}");
    assert!(moved[0].contains("$2.49/h -> $1.99/h"), "{moved:?}");
    fleet.stop().await;
}

/// Every cloud in one failover chain, cheapest per GPU first: every H100 offering of the fake (as
/// AWS), Lambda, RunPod and GCP (priced from its billing catalog) fails for want of capacity, each
/// the way that cloud does (an EC2 code, Lambda's error body, RunPod's GraphQL message, an
/// operation ending in ZONE_RESOURCE_POOL_EXHAUSTED); Azure's NC40ads H100 v5 launches the node.
#[cfg(all(feature = "gcp", feature = "azure"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fails_over_through_every_cloud_until_one_has_capacity() {
    use fleet_providers::azure::{AzureConfig, AzureProvider, FixedToken};
    use fleet_providers::emulators::azure::AzureEmulator;
    use fleet_providers::emulators::gcp::GcpEmulator;
    use fleet_providers::gcp::{GcpConfig, GcpProvider};

    let catalog = Arc::new(Catalog::builtin().clone());
    let fake = fake_aws_refusing_once();
    let lambda_api = LambdaEmulator::start("lk", &["us-east-1"], 4).await;
    // Listed with capacity, gone at launch: both of its H100 types.
    lambda_api.fail_next(insufficient_capacity());
    lambda_api.fail_next(insufficient_capacity());
    let runpod_api = RunpodEmulator::start("rk", &["US-CA-1"], 4).await;
    runpod_api.set_free_gpus("NVIDIA H100 80GB HBM3", "US-CA-1", 0);
    // GCP prices its A3 machines, but the zone has none left.
    let gcp_api = GcpEmulator::start(&[]).await;
    let mut gc = GcpConfig::new("t", "fleet-test", "img");
    gc.endpoint = Some(gcp_api.running.url.clone());
    gc.billing_endpoint = gcp_api.running.url.clone();
    gc.anonymous = true;
    gc.zones = vec!["us-central1-a".into()];
    gc.poll_initial = Duration::from_millis(10);
    let azure_api = AzureEmulator::start("tok", &[("eastus", "Standard_NC40ads_H100_v5", 1)]).await;
    azure_api.set_retail_price("eastus", "Standard_NC40ads_H100_v5", false, 6.98);
    let subnet = "/subscriptions/s/resourceGroups/fleet/providers/Microsoft.Network/virtualNetworks/v/subnets/n";
    let mut ac = AzureConfig::new("t", "s", "fleet", subnet, "a:b:c:latest".parse().unwrap(), "ssh-ed25519 AAAA fleet");
    ac.endpoint = azure_api.running.url.clone();
    ac.network_security_group = Some(
        "/subscriptions/s/resourceGroups/fleet/providers/Microsoft.Network/networkSecurityGroups/fleet-ssh".into(),
    );
    ac.prices_endpoint = azure_api.prices_url();
    ac.credential = Some(Arc::new(FixedToken(Secret::new("tok"))));
    ac.regions = vec!["eastus".into()];
    ac.poll_interval = Duration::from_millis(10);

    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Aws, fake.clone());
    providers.insert(Cloud::Lambda, lambda_on(&lambda_api));
    providers.insert(Cloud::Runpod, runpod_on(&runpod_api));
    providers.insert(Cloud::Gcp, Arc::new(GcpProvider::connect(gc, catalog.clone()).await.unwrap()));
    providers.insert(Cloud::Azure, Arc::new(AzureProvider::new(ac, catalog).unwrap()));
    let fleet = run_fleet(providers, fast_config(), SPEC).await;
    let node = fleet.node_launched_on(Cloud::Azure).await;
    let tried = &node.candidates[..node.attempt];
    let launched = &node.candidates[node.attempt];
    assert_eq!(launched.offering.instance_type, "Standard_NC40ads_H100_v5");
    let mut first_seen: Vec<Cloud> = Vec::new();
    for c in node.candidates.iter().take(node.attempt + 1) {
        if !first_seen.contains(&c.offering.cloud) {
            first_seen.push(c.offering.cloud);
        }
    }
    assert_eq!(
        first_seen,
        [Cloud::Aws, Cloud::Lambda, Cloud::Runpod, Cloud::Gcp, Cloud::Azure],
        "{:?}",
        node.candidates
    );
    let gcp_1g = node.candidates.iter().find(|c| c.offering.instance_type == "a3-highgpu-1g").unwrap();
    // GPU + vCPU + memory parts ($4.6006) and the bundled 750 GiB of Local SSD ($60 / 730 h).
    assert_eq!(gcp_1g.price.hourly().to_decimal_string(), "4.682792", "GCP priced from its billing catalog");
    // Each cloud was asked once per offering tried there, and only Azure has a machine.
    let tried_on = |cloud: Cloud| tried.iter().filter(|c| c.offering.cloud == cloud).count();
    assert_eq!(fake.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count(), tried_on(Cloud::Aws));
    assert_eq!(lambda_api.requests_to("POST", "/instance-operations/launch").len(), tried_on(Cloud::Lambda));
    let deploys = runpod_api.operations().iter().filter(|(op, _)| op == "podFindAndDeployOnDemand").count();
    assert_eq!(deploys, tried_on(Cloud::Runpod));
    assert_eq!(gcp_api.requests_to("POST", "/zones/us-central1-a/instances").len(), tried_on(Cloud::Gcp));
    assert!(tried_on(Cloud::Runpod) >= 1 && tried_on(Cloud::Gcp) >= 1);
    assert!(gcp_api.instances().is_empty() && lambda_api.live().is_empty() && runpod_api.live().is_empty());
    let vms = azure_api.vms();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["properties"]["hardwareProfile"]["vmSize"], "Standard_NC40ads_H100_v5");
    assert_eq!(node.state.instance_id(), vms[0]["name"].as_str());
    fleet.stop().await;
    // What the running fleet exchanged with each cloud is what each cloud's definition allows.
    use fleet_providers::emulators::shapes::assert_conforms;
    assert_conforms("gcp", &gcp_api.requests());
    assert_conforms("azure", &azure_api.requests());
    assert_conforms("lambda", &lambda_api.requests());
    assert_conforms("runpod", &runpod_api.requests());
}
