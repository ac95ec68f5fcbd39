//! `fleetctl catalog refresh`: live prices through fleetd's cloud adapters (Lambda and RunPod
//! against servers answering as their APIs do) into the local catalog, with what changed; then
//! `fleetctl catalog` answers from it.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use fleet_core::{Catalog, Cloud, Secret};
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_providers::Provider;
use fleet_providers::emulators::lambda::LambdaEmulator;
use fleet_providers::emulators::runpod::RunpodEmulator;
use fleet_providers::lambda::{LambdaConfig, LambdaProvider};
use fleet_providers::runpod::{RunpodConfig, RunpodProvider};
use fleet_state::clock::Clock;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

fn fleetctl(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env_remove("FLEET_CONFIG")
        .env("HOME", "/nonexistent")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

async fn ctl(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || fleetctl(&env, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_writes_live_prices_and_says_what_changed() {
    let lambda_api = LambdaEmulator::start("lk", &["us-east-1"], 2).await;
    let runpod_api = RunpodEmulator::start("rk", &["US-CA-1"], 2).await;
    let catalog = Arc::new(Catalog::builtin().clone());
    let mut lc = LambdaConfig::new("t", Secret::new("lk"), "fleet");
    lc.endpoint = lambda_api.api_url();
    lc.regions = vec!["us-east-1".into()];
    let mut rc = RunpodConfig::new("t", Secret::new("rk"), "runpod/base");
    rc.endpoint = runpod_api.graphql_url();
    rc.data_centers = vec!["US-CA-1".into()];
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Lambda, Arc::new(LambdaProvider::new(lc, catalog.clone())));
    providers.insert(Cloud::Runpod, Arc::new(RunpodProvider::new(rc, catalog)));

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let ctx =
        Arc::new(Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), Config::default(), Clock::System));
    let token =
        fleet_orchestrator::auth::admin_token(&*store, &ctx.keys, dir.path(), chrono::Utc::now()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = fleet_orchestrator::api::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let file = dir.path().join("catalog.csv");
    let env = vec![
        ("FLEET_TOKEN".to_string(), token),
        ("FLEET_SERVER".to_string(), url),
        ("FLEET_CATALOG".to_string(), file.display().to_string()),
    ];

    // First refresh: compared with the built-in catalog.
    let (ok, out, err) = ctl(&env, &["catalog", "refresh"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("from lambda, runpod") && out.contains("vs the built-in catalog"), "{out}");
    assert!(
        out.contains("lambda/us-east-1/gpu_8x_h100_sxm5/on-demand"),
        "the live $23.92 differs from the catalog's: {out}"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("gpu_8x_h100_sxm5") && written.contains("23.92") && written.contains("runpod gpuTypes"),
        "{written}"
    );
    // The clouds fleetd was not asked about keep the built-in catalog's rows.
    let refreshed = native_offerings(&written);
    for cloud in Catalog::builtin().offerings().iter().map(|o| o.cloud).collect::<std::collections::BTreeSet<_>>() {
        if cloud == Cloud::Lambda || cloud == Cloud::Runpod {
            continue;
        }
        let want = Catalog::builtin().offerings().iter().filter(|o| o.cloud == cloud).count();
        let got = refreshed.iter().filter(|o| o.cloud == cloud).count();
        assert_eq!(got, want, "{cloud}: the built-in rows are kept");
    }

    // Lambda raises a price: the second refresh names exactly that change.
    lambda_api.set_price("gpu_8x_h100_sxm5", 2500);
    let (ok, out, err) = ctl(&env, &["catalog", "refresh"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(": 1 prices changed, 0 new, 0 gone"), "{out}");
    let line = out.lines().find(|l| l.contains("gpu_8x_h100_sxm5")).unwrap();
    assert!(line.contains("$23.92") && line.contains("$25.00") && line.contains("+4.5%"), "{line}");

    // `fleetctl catalog` now answers from the refreshed file.
    let (ok, out, err) = ctl(&env, &["catalog", "--cloud", "lambda", "--min-gpus", "8", "-o", "json"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("prices from"), "{err}");
    assert!(out.contains("\"25.00\""), "{out}");

    // JSON output of a refresh with nothing new.
    let (ok, out, _) = ctl(&env, &["catalog", "refresh", "-o", "json"]).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"], serde_json::json!([]), "{v}");

    // fleetd unreachable: one line, no file damage.
    let mut bad = env.clone();
    bad[1].1 = "http://127.0.0.1:9".into();
    let (ok, _, err) = ctl(&bad, &["catalog", "refresh"]).await;
    assert!(!ok && err.trim().lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), written.lines().count());
}

fn native_offerings(text: &str) -> Vec<fleet_core::Offering> {
    fleet_core::catalog::native::read("catalog.csv", text.as_bytes()).unwrap().offerings
}
