//! The HTTP API on a fleet of fake clouds: good input works, bad input gets a 4xx that says what
//! was wrong, and nothing of a refused change is applied.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::Config;
use fleet_orchestrator::sim_agents::SimAgentConfig;
use fleet_orchestrator::testing::harness::{CloudSetup, Harness, h100x8};
use http_body_util::BodyExt;
use tower::ServiceExt;

const SPEC: &str = "[fleet]\nname = \"test\"\n[budget]\nmax_per_hour = \"100\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 8\n[apps.llm.scaling]\nmax_concurrency = 2\nkeep_alive = \"30s\"\n";

async fn harness() -> Harness {
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    let clouds = vec![CloudSetup::new(Cloud::Lambda, vec![o])];
    Harness::start(clouds, Config::default(), SimAgentConfig::default(), None).await
}

/// The admin token of the harness's store (made at the first call; a file per test process).
async fn admin(h: &Harness) -> String {
    let dir = std::env::temp_dir().join(format!("fleet-api-test-{}", std::process::id()));
    fleet_orchestrator::auth::admin_token(&*h.ctx.store, &h.ctx.keys, &dir, h.ctx.clock.now()).await.unwrap()
}

async fn call(h: &Harness, method: Method, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let token = admin(h).await;
    call_as(h, Some(&token), method, uri, body).await
}

async fn call_as(
    h: &Harness,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let app = fleet_orchestrator::api::router(h.ctx.clone());
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let req = if body.starts_with('{') {
        let (mut parts, b) = req.into_parts();
        parts.headers.insert("content-type", "application/json".parse().unwrap());
        Request::from_parts(parts, b)
    } else {
        req
    };
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

fn error_of(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("an error message in {v}"))
}

#[tokio::test(start_paused = true)]
async fn malformed_spec_is_refused_with_its_problems_and_nothing_is_applied() {
    let h = harness().await;
    let (s, v) = call(&h, Method::GET, "/v1/spec", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("no spec applied"));

    let bad = format!("{}[apps.llm.placement]\nclouds = [\"awz\"]\n", SPEC.replace("\"H100\"", "\"H1000\""));
    let (s, v) = call(&h, Method::PUT, "/v1/spec", &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = error_of(&v);
    assert!(msg.contains("H1000") && msg.contains("awz"), "every problem named: {msg}");
    assert!(msg.contains("spec:"), "with its position: {msg}");
    let (s, _) = call(&h, Method::GET, "/v1/spec", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing applied");

    let other = SPEC.replace("name = \"test\"", "name = \"prod\"");
    let (s, v) = call(&h, Method::PUT, "/v1/spec", &other).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("--fleet prod"), "{v}");

    let (s, v) = call(&h, Method::PUT, "/v1/spec?dry_run=true", SPEC).await;
    assert_eq!((s, v["applied"].as_bool()), (StatusCode::OK, Some(false)));
    let (s, _) = call(&h, Method::GET, "/v1/spec", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a dry run applies nothing");

    let (s, v) = call(&h, Method::PUT, "/v1/spec", SPEC).await;
    assert_eq!((s, v["apps"][0].as_str()), (StatusCode::OK, Some("llm")));
    let (s, v) = call(&h, Method::GET, "/v1/spec", "").await;
    assert_eq!((s, v["toml"].as_str()), (StatusCode::OK, Some(SPEC)));
}

#[tokio::test(start_paused = true)]
async fn requests_are_validated_submitted_and_served() {
    let h = harness().await;
    let (s, v) = call(&h, Method::POST, "/v1/apps/llm/requests", r#"{"input": 1}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("no spec is applied"), "{v}");
    call(&h, Method::PUT, "/v1/spec", SPEC).await;

    for (body, what) in [("{not json", "JSON"), (r#"{"prompt": "hi"}"#, "input"), ("[1, 2]", "input")] {
        let (s, v) = call(&h, Method::POST, "/v1/apps/llm/requests", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let msg = error_of(&v);
        assert!(msg.contains(what) && msg.contains("{\"input\": ...}"), "{body}: {msg}");
    }
    let (s, v) = call(&h, Method::POST, "/v1/apps/lm/requests", r#"{"input": 1}"#).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&v).contains("did you mean `llm`"), "{v}");
    assert!(h.ctx.store.range(&h.ctx.keys.queues()).await.unwrap().0.is_empty(), "refused requests queue nothing");

    let (s, v) = call(&h, Method::POST, "/v1/apps/llm/requests", r#"{"input": {"prompt": "hi"}}"#).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = v["id"].as_u64().unwrap();
    let uri = format!("/v1/apps/llm/requests/{id}");
    let (_, v) = call(&h, Method::GET, &uri, "").await;
    assert_eq!(v["state"]["state"], "queued");
    h.run_for(Duration::from_secs(120)).await;
    let (s, v) = call(&h, Method::GET, &uri, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"]["state"], "done", "{v}");
    assert_eq!(v["state"]["output"]["echo"]["prompt"], "hi");

    let (s, v) = call(&h, Method::GET, "/v1/apps/llm/requests/x1", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("not a request id"));
    let (s, _) = call(&h, Method::GET, "/v1/apps/llm/requests/999", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn nodes_can_be_listed_cordoned_and_drained_and_cost_is_reported() {
    let h = harness().await;
    call(&h, Method::PUT, "/v1/spec", SPEC).await;
    call(&h, Method::POST, "/v1/apps/llm/requests", r#"{"input": 1}"#).await;
    h.run_for(Duration::from_secs(60)).await;
    let (s, nodes) = call(&h, Method::GET, "/v1/nodes", "").await;
    assert_eq!(s, StatusCode::OK);
    let id = nodes[0]["id"].as_u64().unwrap();
    assert_eq!(nodes[0]["state"]["state"], "ready", "{nodes}");

    let (s, v) = call(&h, Method::POST, &format!("/v1/nodes/{id}/cordon"), "").await;
    assert_eq!((s, v["cordoned"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = call(&h, Method::POST, &format!("/v1/nodes/{id}/drain"), "").await;
    assert_eq!((s, v["state"]["state"].as_str()), (StatusCode::OK, Some("draining")));
    let (s, v) = call(&h, Method::POST, &format!("/v1/nodes/{id}/drain"), "").await;
    assert_eq!(s, StatusCode::OK, "a second drain is a no-op: {v}");
    let (s, v) = call(&h, Method::POST, "/v1/nodes/424242/drain", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    h.run_for(Duration::from_secs(60)).await;
    let (_, v) = call(&h, Method::GET, &format!("/v1/nodes/{id}"), "").await;
    assert_eq!(v["state"]["state"], "terminated", "{v}");
    let (s, v) = call(&h, Method::POST, &format!("/v1/nodes/{id}/drain"), "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(error_of(&v).contains("gone"), "{v}");

    let (s, cost) = call(&h, Method::GET, "/v1/cost", "").await;
    assert_eq!(s, StatusCode::OK);
    let mtd: f64 = cost["month_to_date"].as_str().unwrap().parse().unwrap();
    assert!(mtd > 0.0 && mtd < 20.0, "under an hour of a $20/h node: {cost}");
    assert_eq!(cost["by_cloud"]["lambda"], cost["month_to_date"]);
    let (s, clouds) = call(&h, Method::GET, "/v1/clouds", "").await;
    assert_eq!((s, clouds[0]["cloud"].as_str()), (StatusCode::OK, Some("lambda")));
    let (s, v) = call(&h, Method::GET, "/v1/nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, m) = call(&h, Method::GET, "/metrics", "").await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap().to_string();
    for name in [
        "fleet_nodes",
        "fleet_queue_depth",
        "fleet_launches_total",
        "fleet_burn_dollars_per_hour",
        "fleet_budget_headroom",
    ] {
        assert!(m.contains(name), "{name} in {m}");
    }
    assert!(m.contains("fleet_budget_headroom_dollars_per_hour{scope=\"fleet\"} 100.0"), "{m}");
}

/// The API spends money: no token → 401, a token whose scope does not allow the call → 403;
/// scoped tokens do what their scope says; revoked tokens stop working; health and metrics stay
/// open; the token itself is never stored or listed.
#[tokio::test(start_paused = true)]
async fn every_call_needs_a_token_whose_scope_allows_it() {
    let h = harness().await;
    let (s, _) = call(&h, Method::PUT, "/v1/spec", SPEC).await;
    assert_eq!(s, StatusCode::OK);
    for (method, uri) in
        [(Method::GET, "/v1/nodes"), (Method::PUT, "/v1/spec"), (Method::POST, "/v1/apps/llm/requests")]
    {
        let (s, b) = call_as(&h, None, method.clone(), uri, "{}").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}: {b}");
        assert!(b["error"].as_str().unwrap().contains("needs a token"), "{b}");
    }
    let (s, b) = call_as(&h, Some("flt_forged"), Method::GET, "/v1/nodes", "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    // The admin token's name with another secret.
    let admin_token = admin(&h).await;
    let (name, _) = admin_token.rsplit_once(':').unwrap();
    let forged = format!("{name}:{}", "0".repeat(64));
    assert_eq!(call_as(&h, Some(&forged), Method::GET, "/v1/nodes", "").await.0, StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/metrics"] {
        assert_eq!(call_as(&h, None, Method::GET, open, "").await.0, StatusCode::OK, "{open}");
    }

    // Scoped tokens, made by the admin.
    let mut tokens = std::collections::BTreeMap::new();
    for (name, scope) in [("dash", "read"), ("llm-client", "submit:llm"), ("llm-other", "submit:llm")] {
        let (s, b) =
            call(&h, Method::POST, "/v1/tokens", &format!(r#"{{"name": "{name}", "scope": "{scope}"}}"#)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        tokens.insert(name, b["token"].as_str().unwrap().to_string());
    }
    let (s, b) = call(&h, Method::POST, "/v1/tokens", r#"{"name": "dash", "scope": "read"}"#).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = call(&h, Method::POST, "/v1/tokens", r#"{"name": "x", "scope": "root"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["error"].as_str().unwrap().contains("use admin, read, or submit:APP"), "{b}");
    let (read, submit) = (tokens["dash"].as_str(), tokens["llm-client"].as_str());

    assert_eq!(call_as(&h, Some(read), Method::GET, "/v1/nodes", "").await.0, StatusCode::OK);
    let (s, b) = call_as(&h, Some(read), Method::POST, "/v1/nodes/1/drain", "").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b["error"].as_str().unwrap().contains("token `dash` has scope read"), "{b}");
    assert_eq!(call_as(&h, Some(read), Method::PUT, "/v1/spec", SPEC).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call_as(&h, Some(read), Method::GET, "/v1/tokens", "").await.0, StatusCode::FORBIDDEN);

    let (s, b) = call_as(&h, Some(submit), Method::POST, "/v1/apps/llm/requests", r#"{"input": 1}"#).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_u64().unwrap();
    let (s, _) = call_as(&h, Some(submit), Method::GET, &format!("/v1/apps/llm/requests/{id}"), "").await;
    assert_eq!(s, StatusCode::OK);
    // Another client of the same app cannot read it (ids are sequential: one guess away); to it
    // the request does not exist. Read and admin tokens can.
    let other = tokens["llm-other"].as_str();
    let (s, b) = call_as(&h, Some(other), Method::GET, &format!("/v1/apps/llm/requests/{id}"), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(!b.to_string().contains("input"), "{b}");
    assert_eq!(
        call_as(&h, Some(read), Method::GET, &format!("/v1/apps/llm/requests/{id}"), "").await.0,
        StatusCode::OK
    );
    let (s, b) = call(&h, Method::GET, &format!("/v1/apps/llm/requests/{id}"), "").await;
    assert_eq!((s, b["owner"].as_str()), (StatusCode::OK, Some("llm-client")), "{b}");
    assert_eq!(call_as(&h, Some(submit), Method::GET, "/v1/nodes", "").await.0, StatusCode::FORBIDDEN);
    let (s, _) = call_as(&h, Some(submit), Method::POST, "/v1/apps/other/requests", r#"{"input": 1}"#).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Listed by name and scope only; revoked → 401.
    let (s, b) = call(&h, Method::GET, "/v1/tokens", "").await;
    assert_eq!(s, StatusCode::OK);
    let text = b.to_string();
    assert!(text.contains("\"dash\"") && text.contains("submit:llm") && !text.contains("flt_"), "{text}");
    assert_eq!(call(&h, Method::DELETE, "/v1/tokens/dash", "").await.0, StatusCode::OK);
    assert_eq!(call(&h, Method::DELETE, "/v1/tokens/dash", "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call_as(&h, Some(read), Method::GET, "/v1/nodes", "").await.0, StatusCode::UNAUTHORIZED);
    // The store holds digests, never a token.
    let (kvs, _) = h.ctx.store.range(&h.ctx.keys.tokens()).await.unwrap();
    assert!(kvs.iter().all(|kv| !String::from_utf8_lossy(&kv.value).contains(submit)));
}

/// Each app's `[apps.X.requests]` limits: an input over `max_input_bytes` is 413, a full queue
/// and a token past its rate are 429 with `Retry-After`, each answer naming the field to change;
/// results past `result_ttl` are removed.
#[tokio::test(start_paused = true)]
async fn requests_past_an_apps_limits_are_refused_saying_which_limit() {
    let h = harness().await;
    // Nothing can place these apps (AWS only, the harness has Lambda): their requests stay queued.
    let spec = "[fleet]\nname = \"test\"\n\
        [apps.q]\ngpu = \"H100\"\n[apps.q.placement]\nclouds = [\"aws\"]\n[apps.q.requests]\nmax_queue = 2\nmax_input_bytes = 64\n\
        [apps.r]\ngpu = \"H100\"\n[apps.r.placement]\nclouds = [\"aws\"]\n[apps.r.requests]\nrate_per_token = 2\n";
    let (s, v) = call(&h, Method::PUT, "/v1/spec", spec).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(100));
    let (s, v) = call(&h, Method::POST, "/v1/apps/q/requests", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(error_of(&v).contains("max_input_bytes of 64") && error_of(&v).contains("[apps.q.requests]"), "{v}");

    for _ in 0..2 {
        let (s, v) = call(&h, Method::POST, "/v1/apps/q/requests", "{\"input\": [1]}").await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let (s, v) = call(&h, Method::POST, "/v1/apps/q/requests", "{\"input\": [1]}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(error_of(&v).contains("queue is full (2 requests") && error_of(&v).contains("max_queue"), "{v}");
    // Read again from the store a second later: still full (nothing serves app q).
    tokio::time::advance(Duration::from_secs(2)).await;
    let (s, _) = call(&h, Method::POST, "/v1/apps/q/requests", "{\"input\": [1]}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);

    // Rate: two at once, then 429 with Retry-After; another second, room again.
    for _ in 0..2 {
        let (s, v) = call(&h, Method::POST, "/v1/apps/r/requests", "{\"input\": [1]}").await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let token = admin(&h).await;
    let app = fleet_orchestrator::api::router(h.ctx.clone());
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/apps/r/requests")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"input\": [1]}"))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("rate_per_token"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let (s, _) = call(&h, Method::POST, "/v1/apps/r/requests", "{\"input\": [1]}").await;
    assert_eq!(s, StatusCode::ACCEPTED);

    // Results past their TTL go; newer ones stay.
    use fleet_state::model::{RequestRecord, RequestState};
    let now = chrono::Utc::now();
    for (id, age_h) in [(901, 30), (902, 1)] {
        let finished_at = now - chrono::Duration::hours(age_h);
        let r = RequestRecord {
            id,
            app: "q".into(),
            input: serde_json::json!(null),
            submitted_at: finished_at,
            attempts: 1,
            state: RequestState::Done { output: serde_json::json!(1), runner: 1, finished_at, started_at: None },
            owner: None,
        };
        h.ctx.store.put(&h.ctx.keys.result("q", id), fleet_state::store::to_json(&r), None).await.unwrap();
    }
    let gone = fleet_state::queue::expire_results(&*h.ctx.store, &h.ctx.keys, "q", now - chrono::Duration::hours(24))
        .await
        .unwrap();
    assert_eq!(gone, 1);
    assert!(h.ctx.store.get(&h.ctx.keys.result("q", 901)).await.unwrap().is_none());
    assert!(h.ctx.store.get(&h.ctx.keys.result("q", 902)).await.unwrap().is_some());
}

/// Money per thing: each node's and each app's $/hour now and month to date, in `/v1/nodes`,
/// `/v1/apps`, `/v1/cost` and the metrics, adding up to the fleet's figures; a terminated node
/// burns nothing and keeps what it cost.
#[tokio::test(start_paused = true)]
async fn money_is_shown_per_node_and_per_app_now_and_this_month() {
    use fleet_core::Money;
    let usd = |v: &serde_json::Value| -> Money {
        v.as_str().unwrap_or_else(|| panic!("money as a string: {v}")).parse().unwrap()
    };
    let h = harness().await;
    call(&h, Method::PUT, "/v1/spec", SPEC).await;
    call(&h, Method::POST, "/v1/apps/llm/requests", r#"{"input": 1}"#).await;
    h.run_for(Duration::from_secs(60)).await;
    let (_, nodes) = call(&h, Method::GET, "/v1/nodes", "").await;
    let node = &nodes[0];
    let id = node["id"].as_u64().unwrap();
    assert_eq!(usd(&node["burn_per_hour"]), Money::from_dollars(20), "a ready $20/h node: {node}");
    let node_mtd = usd(&node["month_to_date"]);
    assert!(node_mtd > Money::ZERO && node_mtd < Money::from_dollars(1), "under a minute billed: {node}");

    let (_, apps) = call(&h, Method::GET, "/v1/apps", "").await;
    assert_eq!(usd(&apps["llm"]["burn_per_hour"]), Money::from_dollars(20), "{apps}");
    assert_eq!(usd(&apps["llm"]["month_to_date"]), node_mtd, "{apps}");

    let (_, cost) = call(&h, Method::GET, "/v1/cost", "").await;
    assert_eq!(usd(&cost["burn_by_app"]["llm"]), Money::from_dollars(20), "{cost}");
    assert_eq!(usd(&cost["burn_by_cloud"]["lambda"]), Money::from_dollars(20), "{cost}");
    let listed = cost["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{cost}");
    assert_eq!((listed[0]["id"].as_u64(), listed[0]["app"].as_str()), (Some(id), Some("llm")));
    assert_eq!(usd(&listed[0]["burn_per_hour"]), Money::from_dollars(20));
    assert_eq!(usd(&listed[0]["month_to_date"]), usd(&cost["month_to_date"]), "one node: it is the whole bill");

    let metrics = || async { call(&h, Method::GET, "/metrics", "").await.1.as_str().unwrap().to_string() };
    let m = metrics().await;
    assert!(m.contains("fleet_app_burn_dollars_per_hour{app=\"llm\"} 20.0"), "{m}");
    assert!(
        m.contains(&format!("fleet_node_burn_dollars_per_hour{{node=\"{id}\",app=\"llm\",cloud=\"lambda\"}} 20.0")),
        "{m}"
    );
    assert!(m.contains("fleet_app_month_to_date_dollars{app=\"llm\"}"), "{m}");
    assert!(m.contains(&format!("fleet_node_month_to_date_dollars{{node=\"{id}\"")), "{m}");

    // Drained and terminated: no burn, the month's cost kept (and no longer growing).
    call(&h, Method::POST, &format!("/v1/nodes/{id}/drain"), "").await;
    h.run_for(Duration::from_secs(60)).await;
    let (_, v) = call(&h, Method::GET, &format!("/v1/nodes/{id}"), "").await;
    assert_eq!(v["state"]["state"], "terminated", "{v}");
    let (_, nodes) = call(&h, Method::GET, "/v1/nodes", "").await;
    assert_eq!(usd(&nodes[0]["burn_per_hour"]), Money::ZERO, "{nodes}");
    let final_mtd = usd(&nodes[0]["month_to_date"]);
    assert!(final_mtd >= node_mtd, "{nodes}");
    h.run_for(Duration::from_secs(600)).await;
    let (_, apps) = call(&h, Method::GET, "/v1/apps", "").await;
    assert_eq!(usd(&apps["llm"]["burn_per_hour"]), Money::ZERO, "{apps}");
    assert_eq!(usd(&apps["llm"]["month_to_date"]), final_mtd, "a terminated node's bill stops: {apps}");
    let m = metrics().await;
    assert!(!m.contains(&format!("fleet_node_burn_dollars_per_hour{{node=\"{id}\"")), "no series for a gone node: {m}");
    assert!(m.contains("fleet_app_burn_dollars_per_hour{app=\"llm\"} 0.0"), "{m}");
}

/// What the dashboard reads: the node table a page at a time (sorted, filtered, counted), the
/// overview, the price book, the caller's scope; the page itself loads without a token, under a
/// policy that lets it talk to nothing but fleetd.
#[tokio::test(start_paused = true)]
async fn the_dashboard_reads_pages_of_tables_and_its_page_needs_no_token() {
    let h = harness().await;
    let spec = SPEC.replace("max_concurrency = 2", "min_concurrency = 3\nmax_concurrency = 3");
    let (s, v) = call(&h, Method::PUT, "/v1/spec", &spec).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.run_for(Duration::from_secs(60)).await;

    let (s, page) = call(&h, Method::GET, "/v1/dashboard/nodes?limit=2", "").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!((page["total"].as_u64(), page["matched"].as_u64()), (Some(3), Some(3)), "{page}");
    let ids: Vec<u64> = page["rows"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "by id by default: {ids:?}");
    let row = &page["rows"][0];
    assert_eq!(
        (row["cloud"].as_str(), row["state"].as_str(), row["health"].as_str()),
        (Some("lambda"), Some("ready"), Some("ok")),
        "{row}"
    );
    assert_eq!(row["price_per_hour"], "20.00");
    let (_, rest) = call(&h, Method::GET, "/v1/dashboard/nodes?limit=2&offset=2", "").await;
    assert_eq!(rest["rows"].as_array().unwrap().len(), 1, "the last page: {rest}");
    let (_, desc) = call(&h, Method::GET, "/v1/dashboard/nodes?sort=id&order=desc", "").await;
    let last = rest["rows"][0]["id"].as_u64().unwrap();
    assert_eq!(desc["rows"][0]["id"].as_u64(), Some(last), "descending starts with the largest id");
    let (_, none) = call(&h, Method::GET, "/v1/dashboard/nodes?q=gcp", "").await;
    assert_eq!((none["matched"].as_u64(), none["total"].as_u64()), (Some(0), Some(3)), "{none}");
    let (_, all) = call(&h, Method::GET, "/v1/dashboard/nodes?q=LAMBDA", "").await;
    assert_eq!(all["matched"].as_u64(), Some(3), "filters ignore case: {all}");
    for (bad, says) in [
        ("limit=100000", "page size from 1 to 500"),
        ("sort=colour", "sort by one of"),
        ("page=2", "unknown parameter 'page'"),
        ("live=maybe", "true or false"),
    ] {
        let (s, v) = call(&h, Method::GET, &format!("/v1/dashboard/nodes?{bad}"), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(error_of(&v).contains(says), "{bad}: {v}");
    }

    let (s, d) = call(&h, Method::GET, "/v1/dashboard?history=5", "").await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let o = &d["overview"];
    assert_eq!(o["nodes"]["live"], 3, "{o}");
    assert_eq!(o["nodes"]["by_cloud"]["lambda"], 3, "{o}");
    assert_eq!(o["nodes"]["by_capacity"]["on-demand"], 3, "{o}");
    assert_eq!(o["apps"]["llm"]["nodes"], 3, "{o}");
    let cold = &o["apps"]["llm"]["cold_starts"];
    assert_eq!(cold["nodes"], 3, "every ready node's provision and bootstrap: {cold}");
    assert!(cold["bootstrap_p50_s"].as_f64().unwrap() > 0.0, "{cold}");
    assert_eq!(o["cost"]["burn_per_hour"], "60.00", "{o}");
    assert_eq!(o["cost"]["budget_per_hour"], "100.00", "{o}");
    let (s, v) = call(&h, Method::GET, "/v1/dashboard?history=999999", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    let (s, offers) = call(&h, Method::GET, "/v1/dashboard/offerings?limit=1", "").await;
    assert_eq!(s, StatusCode::OK, "{offers}");
    assert_eq!(offers["rows"].as_array().unwrap().len(), 1, "{offers}");
    assert!(offers["total"].as_u64().unwrap() >= 1);
    assert_eq!(offers["rows"][0]["cloud"], "lambda");

    // Who is calling: any valid token; the page shows actions to admins only.
    let (s, me) = call(&h, Method::GET, "/v1/whoami", "").await;
    assert_eq!((s, me["scope"].as_str()), (StatusCode::OK, Some("admin")), "{me}");
    let (_, t) = call(&h, Method::POST, "/v1/tokens", r#"{"name": "viewer", "scope": "read"}"#).await;
    let read = t["token"].as_str().unwrap().to_string();
    let (s, me) = call_as(&h, Some(&read), Method::GET, "/v1/whoami", "").await;
    assert_eq!((s, me["scope"].as_str()), (StatusCode::OK, Some("read")), "{me}");
    let (s, _) = call_as(&h, Some(&read), Method::GET, "/v1/dashboard/nodes", "").await;
    assert_eq!(s, StatusCode::OK, "a read token reads the tables");
    let (s, _) = call_as(&h, None, Method::GET, "/v1/dashboard", "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the figures need a token");

    // The page and its files: no token, our policy, nothing else served from /ui.
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/charts.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let app = fleet_orchestrator::api::router(h.ctx.clone());
        let resp = app.oneshot(Request::builder().uri(path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
    }
    let (s, _) = call_as(&h, None, Method::GET, "/ui/admin.token", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
