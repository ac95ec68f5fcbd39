//! API bodies under mutated inputs (a short run; the engine is `core/tests/fuzz_engine.rs`):
//! spec uploads, submits, token creation and store-gateway calls answer every malformed body
//! with a 4xx that says what is wrong — never a panic, never a 5xx.

#[path = "../../core/tests/fuzz_engine.rs"]
mod fuzz_engine;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use fleet_core::keys::Keys;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::auth::{Scope, issue};
use fleet_state::clock::Clock;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_api_bodies_get_4xx_never_a_panic_or_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ctx = Arc::new(Ctx::new(
        "t",
        store.clone(),
        Default::default(),
        Arc::new(InstanceRunning),
        Config::default(),
        Clock::System,
    ));
    let keys = Keys::new("t");
    let now = chrono::Utc::now();
    let admin = issue(&*store, &keys, "admin", Scope::Admin, now).await.unwrap();
    let agent =
        issue(&*store, &keys, "agent-1", Scope::Agent { node: 1, apps: vec!["llm".into()] }, now).await.unwrap();
    let spec = "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H100\"\n[apps.llm.requests]\nrate_per_token = 100000\n";
    let targets: [(&str, &str, &str, &[&str]); 4] = [
        ("PUT", "/v1/spec", &admin, &[spec]),
        ("POST", "/v1/apps/llm/requests", &admin, &["{\"input\": {\"x\": [1, 2, 3]}}", "{\"input\": \"é\"}"]),
        (
            "POST",
            "/v1/tokens",
            &admin,
            &["{\"name\": \"dash\", \"scope\": \"read\"}", "{\"name\": \"c\", \"scope\": \"submit:llm\"}"],
        ),
        (
            "POST",
            "/v1/store/call",
            &agent,
            &[
                "{\"call\": \"get\", \"key\": \"/fleet/t/agents/1\"}",
                "{\"call\": \"range\", \"prefix\": \"/fleet/t/queue/llm/\"}",
                "{\"call\": \"put\", \"key\": \"/fleet/t/queue/llm/00000000000000000001\", \"value\": \"{}\", \"lease\": null}",
                "{\"call\": \"txn\", \"compares\": [[\"/fleet/t/agents/1\", 0]], \"ops\": [{\"op\": \"delete\", \"key\": \"/fleet/t/agents/1\"}]}",
                "{\"call\": \"grant\", \"ttl_ms\": 5000}",
                "{\"call\": \"keep_alive\", \"lease\": 1}",
            ],
        ),
    ];
    // The spec first, so submits reach their app.
    let router = fleet_orchestrator::api::router(ctx.clone());
    let put =
        Request::put("/v1/spec").header("authorization", format!("Bearer {admin}")).body(Body::from(spec)).unwrap();
    assert!(router.clone().oneshot(put).await.unwrap().status().is_success());
    for (i, (method, path, token, seeds)) in targets.iter().enumerate() {
        let mut rng = fuzz_engine::Rng::new(100 + i as u64);
        let mut statuses = std::collections::BTreeMap::new();
        for _ in 0..1_500 {
            let body = fuzz_engine::mutate(&mut rng, seeds);
            let req = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(*path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", if *path == "/v1/spec" { "text/plain" } else { "application/json" })
                .body(Body::from(body.clone()))
                .unwrap();
            let status = router.clone().oneshot(req).await.unwrap().status();
            assert!(status.as_u16() < 500, "{method} {path} answered {status} to {:?}", String::from_utf8_lossy(&body));
            *statuses.entry(status.as_u16()).or_insert(0u32) += 1;
        }
        println!("{method} {path}: {statuses:?}");
        assert!(statuses.keys().any(|s| *s >= 400), "{path}: no mutant was refused");
    }
}
