//! fleetd's HTTP API (axum, JSON), used by `fleetctl`.
//!
//! ```text
//! GET  /healthz                          liveness
//! GET  /metrics                          Prometheus text
//! GET  /v1/spec                          the applied spec (TOML text + when)
//! PUT  /v1/spec[?dry_run=true]           apply a spec (body: TOML); 400 lists every problem
//! GET  /v1/clouds                        enabled clouds with their nodes and burn rate
//! GET  /v1/offerings                     what the enabled clouds sell now, cheapest $/GPU-h first
//! GET  /v1/nodes, /v1/nodes/{id}         node records
//! GET  /v1/nodes/{id}/logs               the last lines of the node agent's log
//! POST /v1/nodes/{id}/drain              drain a ready node (operator)
//! POST /v1/nodes/{id}/cordon|uncordon    stop / resume placing runners on it
//! GET  /v1/runners                       runner records
//! GET  /v1/apps                          per app: queue depth, in flight, runners, nodes
//! POST /v1/apps/{app}/requests           submit {"input": ...} → 202 {"id": N}
//! GET  /v1/apps/{app}/requests/{id}      a request's state and result
//! GET  /v1/cost                          month to date, $/hour now, forecast to month end
//! POST /v1/store/call                    the store gateway for agents without etcd (agent tokens)
//! POST /v1/store/watch                   a watch through it: one JSON line per event
//! POST /v1/store/sign                    {"app", "key"} → a URL reading one object of the app's
//!                                        model origin, signed for 15 minutes (agent tokens)
//! GET  /v1/tokens                        API tokens (names and scopes; admin)
//! POST /v1/tokens                        make one {"name", "scope"} → the token, shown once (admin)
//! DELETE /v1/tokens/{name}               revoke one (admin)
//! GET  /v1/whoami                        the token's name and scope
//! GET  /v1/dashboard…, /ui               the dashboard and what it reads ([`crate::dashboard`])
//! ```
//!
//! Every endpoint but `/healthz` and `/metrics` needs a bearer token whose scope allows it
//! ([`crate::auth`]): 401 without a valid one, 403 when its scope does not allow the call.
//!
//! Errors are JSON `{"error": "..."}` with a message that says what was wrong and what to do;
//! nothing is half-applied (every change is one compare-and-swap or one put).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleet_core::{Money, RequestId};
use fleet_state::lifecycle::node::{DrainReason, NodeEvent, NodePhase, transition};
use fleet_state::model::{AgentRecord, ApplyError, NodeRecord, RunnerRecord, StoredSpec, update};
use fleet_state::queue::{self, QueueError};
use fleet_state::store::{StoreError, get_json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actors::Ctx;
use crate::reconcile::{burn_per_hour, month_cost, unhealthy_nodes};

#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds to wait before trying again (429), sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = s.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match e {
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/spec", get(get_spec).put(put_spec))
        .route("/v1/clouds", get(clouds))
        .route("/v1/offerings", get(offerings))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", get(node))
        .route("/v1/nodes/{id}/logs", get(node_logs))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/cordon", post(cordon))
        .route("/v1/nodes/{id}/uncordon", post(uncordon))
        .route("/v1/runners", get(runners))
        .route("/v1/apps", get(apps))
        // The body may be as large as the largest input a spec may allow; each app's own
        // `max_input_bytes` is checked in `submit` (413 naming it).
        .route(
            "/v1/apps/{app}/requests",
            post(submit).layer(axum::extract::DefaultBodyLimit::max(
                fleet_core::spec::RequestLimits::MAX_INPUT_BYTES as usize + (64 << 10),
            )),
        )
        .route("/v1/apps/{app}/requests/{id}", get(request))
        .route("/v1/completions", post(crate::openai::completions))
        .route("/v1/chat/completions", post(crate::openai::chat_completions))
        .route("/v1/cost", get(cost))
        .route("/v1/events", get(events))
        .route("/v1/watch/{what}", get(watch))
        .route("/v1/store/call", post(gateway_call))
        .route("/v1/store/watch", post(gateway_watch))
        .route("/v1/store/sign", post(sign_origin_read))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/v1/whoami", get(crate::dashboard::whoami))
        .route("/v1/dashboard", get(crate::dashboard::get))
        .route("/v1/dashboard/nodes", get(crate::dashboard::nodes))
        .route("/v1/dashboard/offerings", get(crate::dashboard::offerings))
        .route("/ui", get(crate::ui::page))
        .route("/ui/", get(crate::ui::page))
        .route("/ui/{file}", get(crate::ui::asset))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see GET /v1/... in fleetd's docs")
        })
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), crate::auth::require))
        .with_state(ctx)
}

async fn gateway_call(
    State(ctx): State<Arc<Ctx>>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    body: Result<Json<fleet_state::store::gateway::Request>, JsonRejection>,
) -> Response {
    use crate::access::gateway::{AgentGrant, handle};
    use fleet_state::store::http::GatewayError;
    let crate::auth::Scope::Agent { node, apps } = caller.0.scope else {
        return ApiError::new(StatusCode::FORBIDDEN, "the store gateway is for agent tokens").into_response();
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let grant = AgentGrant { node, apps };
    match handle(&*ctx.store, &ctx.keys, &ctx.gateway_leases, &grant, req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => {
            let status = match &e {
                StoreError::Denied(_) => StatusCode::FORBIDDEN,
                StoreError::LeaseNotFound(_) => StatusCode::NOT_FOUND,
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, Json(GatewayError::from_error(&e))).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    app: String,
    key: String,
}

/// How long a signed origin read stays valid: enough for one chunk, asked again for the next.
const SIGNED_READ_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// `POST /v1/store/sign`: agents hold no origin credential; fleetd signs each read. Only the
/// objects of the app's pinned model are signed: its manifest and chunks under its origin, for
/// an agent whose token names the app.
async fn sign_origin_read(
    State(ctx): State<Arc<Ctx>>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    body: Result<Json<SignRequest>, JsonRejection>,
) -> Response {
    let crate::auth::Scope::Agent { apps, .. } = caller.0.scope else {
        return ApiError::new(StatusCode::FORBIDDEN, "signed origin reads are for agent tokens").into_response();
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    if !apps.contains(&req.app) {
        return ApiError::new(StatusCode::FORBIDDEN, format!("this agent's token does not serve app `{}`", req.app))
            .into_response();
    }
    let spec = match applied_spec(&ctx).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Some(model) = spec.as_ref().and_then(|s| s.app(&req.app)).and_then(|a| a.model.clone()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("app `{}` pins no model ([apps.{}.model])", req.app, req.app),
        )
        .into_response();
    };
    let origin = &model.origin;
    let chunk =
        req.key.rsplit_once("/chunks/").map(|(_, h)| h).unwrap_or(req.key.strip_prefix("chunks/").unwrap_or(""));
    let allowed = req.key == origin.manifest_key(&model.digest)
        || fleet_core::artifact::Digest::from_hex(chunk).is_ok_and(|d| origin.chunk_key(&d) == req.key);
    if !allowed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("`{}` is neither the manifest nor a chunk of app `{}`'s model at {origin}", req.key, req.app),
        )
        .into_response();
    }
    let store = {
        let mut origins = ctx.origins.lock().await;
        match origins.get(origin) {
            Some(s) => s.clone(),
            None => match fleet_providers::origin::open(origin).await {
                Ok(s) => origins.entry(origin.clone()).or_insert(s).clone(),
                Err(e) => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
            },
        }
    };
    match store.presign(&req.key, SIGNED_READ_TTL).await {
        Ok(Some(url)) => Json(serde_json::json!({ "url": url })).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{origin} is a directory: the agent reads it directly, there is nothing to sign"),
        )
        .into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `POST /v1/store/watch`: the events under a prefix the agent may read, one JSON line each
/// (`fleet_state::store::gateway::WireWatchEvent`), a blank line every
/// [`WATCH_KEEPALIVE`](fleet_state::store::gateway::WATCH_KEEPALIVE) while quiet.
async fn gateway_watch(
    State(ctx): State<Arc<Ctx>>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    body: Result<Json<fleet_state::store::gateway::WatchRequest>, JsonRejection>,
) -> Response {
    use fleet_state::store::gateway::{WATCH_KEEPALIVE, WireWatchEvent};
    use fleet_state::store::http::GatewayError;
    let crate::auth::Scope::Agent { node, apps } = caller.0.scope else {
        return ApiError::new(StatusCode::FORBIDDEN, "the store gateway is for agent tokens").into_response();
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let grant = crate::access::gateway::AgentGrant { node, apps };
    if !grant.may_read(&ctx.keys, &req.prefix) {
        let e = StoreError::Denied(format!("this agent's token does not cover {}", req.prefix));
        return (StatusCode::FORBIDDEN, Json(GatewayError::from_error(&e))).into_response();
    }
    let w = match ctx.store.watch(&req.prefix, req.from).await {
        Ok(w) => w,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, Json(GatewayError::from_error(&e))).into_response(),
    };
    // Lines until the store's watch ends (its error goes out as the last line).
    let lines = futures_util::stream::unfold(Some(w), |w| async move {
        let mut w = w?;
        let line = match tokio::time::timeout(WATCH_KEEPALIVE, w.recv()).await {
            Err(_) => "\n".to_string(),
            Ok(None) => return None,
            Ok(Some(ev)) => {
                let end = ev.is_err();
                let line = serde_json::to_string(&WireWatchEvent::from_event(ev)).unwrap_or_default() + "\n";
                if end {
                    return Some((Ok::<_, std::convert::Infallible>(line), None));
                }
                line
            }
        };
        Some((Ok(line), Some(w)))
    });
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(lines)).into_response()
}

async fn list_tokens(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let tokens = crate::auth::list(&*ctx.store, &ctx.keys).await?;
    Ok(Json(
        tokens.into_iter().map(|t| json!({ "name": t.name, "scope": t.scope, "created_at": t.created_at })).collect(),
    ))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    scope: String,
}

async fn create_token(
    State(ctx): State<Arc<Ctx>>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    use crate::auth::TokenError;
    let Json(t) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{}: send {{\"name\": \"ci\", \"scope\": \"read\"}}", e.body_text()),
        )
    })?;
    let scope: crate::auth::Scope = t.scope.parse().map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    match crate::auth::issue(&*ctx.store, &ctx.keys, &t.name, scope.clone(), ctx.clock.now()).await {
        Ok(token) => {
            tracing::info!(name = %t.name, %scope, "API token made");
            Ok((StatusCode::CREATED, Json(json!({ "name": t.name, "scope": scope, "token": token }))))
        }
        Err(TokenError::Store(e)) => Err(e.into()),
        Err(TokenError::Exists(n)) => Err(ApiError::new(StatusCode::CONFLICT, TokenError::Exists(n).to_string())),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

async fn revoke_token(State(ctx): State<Arc<Ctx>>, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    if crate::auth::revoke(&*ctx.store, &ctx.keys, &name).await? {
        tracing::info!(%name, "API token revoked");
        Ok(Json(json!({ "revoked": name })))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no token named `{name}` (fleetctl get tokens, or GET /v1/tokens, lists them)"),
        ))
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ctx.metrics.encode())
        .into_response()
}

async fn get_spec(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<StoredSpec>> {
    match get_json::<StoredSpec>(&*ctx.store, &ctx.keys.spec()).await? {
        Some((s, _)) => Ok(Json(s)),
        None => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no spec applied yet: PUT one to /v1/spec (fleetctl apply -f)"))
        }
    }
}

#[derive(Deserialize)]
struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

async fn put_spec(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<DryRun>,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    // Cloud accounts are built when fleetd starts: a spec that changes them is refused whole
    // rather than applied without them.
    if let Ok(s) = fleet_core::spec::FleetSpec::parse("spec", &body)
        && s.clouds != ctx.clouds
    {
        let names = |c: &fleet_core::spec::CloudAccounts| {
            let v: Vec<String> = c.clouds().iter().map(ToString::to_string).collect();
            if v.is_empty() { "none".to_string() } else { v.join(", ") }
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "this spec's [clouds] (accounts: {}) differ from those fleetd runs with ({}); cloud accounts change \
                 only when fleetd starts: restart it with --spec FILE; nothing was applied",
                names(&s.clouds),
                names(&ctx.clouds)
            ),
        ));
    }
    let spec = if q.dry_run {
        let spec = fleet_core::spec::FleetSpec::parse("spec", &body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        if spec.name != ctx.fleet {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ApplyError::WrongFleet { spec: spec.name, daemon: ctx.fleet.clone() }.to_string(),
            ));
        }
        spec
    } else {
        fleet_state::model::apply_spec(&*ctx.store, &ctx.keys, &ctx.fleet, &body, ctx.clock.now()).await.map_err(
            |e| match e {
                ApplyError::Store(s) => ApiError::from(s),
                e => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            },
        )?
    };
    if !q.dry_run {
        ctx.nudge.notify_one();
    }
    let apps: Vec<&str> = spec.apps.iter().map(|a| a.name.as_str()).collect();
    // Nodes of apps this spec no longer has: they drain and terminate (say which, and what they
    // cost, before and after applying).
    let (kvs, _) = ctx.store.range(&ctx.keys.nodes()).await?;
    let mut going = Vec::new();
    let mut burn = Money::ZERO;
    for kv in kvs {
        let Ok(n) = kv.json::<NodeRecord>() else { continue };
        let leaving = matches!(n.state, NodePhase::Terminated { .. } | NodePhase::Failed { instance_id: None, .. });
        if leaving || apps.contains(&n.app.as_str()) {
            continue;
        }
        let price = n.price.or_else(|| n.candidates.get(n.attempt).map(|c| c.price)).unwrap_or_default();
        burn += price.hourly();
        going.push(json!({
            "id": n.id,
            "app": n.app,
            "offering": n.offering().map(ToString::to_string),
            "state": n.state.name(),
            "price_per_hour": price.hourly(),
        }));
    }
    let warnings = unplaceable_apps(&ctx, &spec);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Json(json!({
        "fleet": spec.name,
        "apps": apps,
        "applied": !q.dry_run,
        "nodes_removed": going,
        "removed_per_hour": burn,
        "warnings": warnings,
    })))
}

/// Apps of `spec` that no offering of the enabled clouds can host, each with why (the reasons
/// offerings were excluded, most common first): such an app's requests would wait forever.
pub fn unplaceable_apps(ctx: &Ctx, spec: &fleet_core::spec::FleetSpec) -> Vec<String> {
    let catalog = ctx.offerings();
    let enabled: Vec<String> = ctx.providers.keys().map(ToString::to_string).collect();
    let enabled = if enabled.is_empty() { "none".to_string() } else { enabled.join(", ") };
    let index = fleet_policies::placement::PlacementIndex::new(catalog.clone(), spec);
    let cache = fleet_policies::placement::UnavailableCache::default();
    let mut out = Vec::new();
    for (i, app) in spec.apps.iter().enumerate() {
        let input = fleet_policies::placement::RankInput::new(ctx.clock.now(), &cache);
        let explained = index.explain(i, &input);
        if !explained.ranked.is_empty() {
            continue;
        }
        // The reasons by kind, most common first, each with one example.
        let mut kinds: Vec<(&str, usize, String)> = Vec::new();
        for (_, r) in &explained.excluded {
            match kinds.iter_mut().find(|k| k.0 == r.kind()) {
                Some(k) => k.1 += 1,
                None => kinds.push((r.kind(), 1, r.to_string())),
            }
        }
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        let why: Vec<String> = kinds.iter().take(4).map(|(_, n, e)| format!("{n} × {e}")).collect();
        out.push(format!(
            "app {}: no offering of the enabled clouds ({enabled}; {} offerings) can host it, so its requests would wait: {}; change its gpu, gpus or placement, or run fleetd with the clouds it names",
            app.name,
            catalog.len(),
            if why.is_empty() { "there are no offerings".to_string() } else { why.join("; ") }
        ));
    }
    out
}

/// The records under `prefix` that decode; an unreadable one is logged and skipped (an agent can
/// write its runner records: one bad value must not take the listing down).
async fn readable<T: serde::de::DeserializeOwned>(ctx: &Ctx, prefix: &str) -> ApiResult<Vec<T>> {
    let (kvs, _) = ctx.store.range(prefix).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| match kv.json() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "unreadable record skipped");
                None
            }
        })
        .collect())
}

async fn all_nodes(ctx: &Ctx) -> ApiResult<Vec<NodeRecord>> {
    readable(ctx, &ctx.keys.nodes()).await
}

async fn all_runners(ctx: &Ctx) -> ApiResult<Vec<RunnerRecord>> {
    readable(ctx, &ctx.keys.runners()).await
}

/// A node as the API shows it: its record, what its agent reports, and why it is unfit to
/// serve (if it is).
#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: NodeRecord,
    pub agent: Option<AgentRecord>,
    pub unhealthy: Option<String>,
    /// What the node costs per hour now (0 unless it is live and billed) and has cost this month.
    pub burn_per_hour: Money,
    pub month_to_date: Money,
}

async fn node_views(ctx: &Ctx, nodes: Vec<NodeRecord>) -> ApiResult<Vec<NodeView>> {
    let (kvs, _) = ctx.store.range(&ctx.keys.agents()).await?;
    let agents: Vec<AgentRecord> = kvs.iter().filter_map(|kv| kv.json().ok()).collect();
    let unhealthy = unhealthy_nodes(&nodes, &agents, &Default::default(), ctx.clock.now(), ctx.config.agent_grace);
    let mut by_node: BTreeMap<u64, AgentRecord> = agents.into_iter().map(|a| (a.node, a)).collect();
    let now = ctx.clock.now();
    Ok(nodes
        .into_iter()
        .map(|n| NodeView {
            agent: by_node.remove(&n.id),
            unhealthy: unhealthy.get(&n.id).map(|u| u.to_string()),
            burn_per_hour: burn_per_hour(&n),
            month_to_date: month_cost(&n, now),
            node: n,
        })
        .collect())
}

fn parse_id(s: &str, what: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("`{s}` is not a {what} id (a number)")))
}

#[derive(Serialize)]
struct CloudView {
    cloud: String,
    provider: String,
    nodes: usize,
    burn_per_hour: Money,
}

async fn clouds(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<Vec<CloudView>>> {
    let nodes = all_nodes(&ctx).await?;
    let out = ctx
        .providers
        .iter()
        .map(|(cloud, p)| {
            let mine: Vec<&NodeRecord> =
                nodes.iter().filter(|n| n.is_live() && n.offering().is_some_and(|o| o.cloud == *cloud)).collect();
            CloudView {
                cloud: cloud.to_string(),
                provider: p.name(),
                nodes: mine.len(),
                burn_per_hour: mine.iter().map(|n| burn_per_hour(n)).sum(),
            }
        })
        .collect();
    Ok(Json(out))
}

#[derive(Deserialize)]
struct OfferingsQuery {
    /// Whole offerings (instance shape, price source and date, availability): `fleetctl catalog refresh`.
    #[serde(default)]
    full: bool,
}

async fn offerings(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<OfferingsQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let mut out = Vec::new();
    for (cloud, p) in &ctx.providers {
        let offerings = p
            .offerings()
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("{cloud}: cannot list offerings: {e}")))?;
        out.extend(offerings);
    }
    out.sort_by(|a, b| {
        a.price_per_gpu()
            .hourly()
            .cmp(&b.price_per_gpu().hourly())
            .then_with(|| a.key().to_string().cmp(&b.key().to_string()))
    });
    if q.full {
        return Ok(Json(out.iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect()));
    }
    Ok(Json(
        out.iter()
            .map(|o| {
                json!({
                    "offering": o.key().to_string(),
                    "gpus": o.instance.gpu_count,
                    "gpu": o.instance.gpu.to_string(),
                    "price_per_hour": o.price.hourly(),
                    "price_per_gpu_hour": o.price_per_gpu().hourly(),
                    "available": !matches!(o.availability, fleet_core::Availability::Unavailable { .. }),
                })
            })
            .collect(),
    ))
}

async fn nodes(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<Vec<NodeView>>> {
    let nodes = all_nodes(&ctx).await?;
    Ok(Json(node_views(&ctx, nodes).await?))
}

async fn node(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> ApiResult<Json<NodeView>> {
    let id = parse_id(&id, "node")?;
    match get_json::<NodeRecord>(&*ctx.store, &ctx.keys.node(id)).await? {
        Some((n, _)) => Ok(Json(node_views(&ctx, vec![n]).await?.remove(0))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {id} not found (fleetctl get nodes, or GET /v1/nodes, lists them)"),
        )),
    }
}

async fn node_logs(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id, "node")?;
    match ctx.store.get(&ctx.keys.agent_log(id)).await? {
        Some(kv) => Ok(Json(kv.json()?)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no log from node {id}'s agent: it has not reported yet, or the node is gone (fleetctl get nodes)"),
        )),
    }
}

async fn drain(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> ApiResult<Json<NodeRecord>> {
    let id = parse_id(&id, "node")?;
    let now = ctx.clock.now();
    let mut refused = None;
    let rec = update(&*ctx.store, &ctx.keys.node(id), |cur: &NodeRecord| {
        match transition(&cur.state, NodeEvent::Drain { reason: DrainReason::Operator }, now) {
            Ok(state) => Some(NodeRecord { state, ..cur.clone() }),
            Err(e) => {
                refused = Some(e.to_string());
                None
            }
        }
    })
    .await?;
    match (rec, refused) {
        (None, _) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, format!("node {id} not found (fleetctl get nodes lists them)")))
        }
        (Some(_), Some(why)) => Err(ApiError::new(StatusCode::CONFLICT, why)),
        (Some(r), None) => {
            crate::events::node(&ctx, &r, &NodeEvent::Drain { reason: DrainReason::Operator }).await;
            Ok(Json(r))
        }
    }
}

async fn set_cordon(ctx: &Ctx, id: &str, cordoned: bool) -> ApiResult<Json<NodeRecord>> {
    let id = parse_id(id, "node")?;
    let mut changed = false;
    let rec = update(&*ctx.store, &ctx.keys.node(id), |cur: &NodeRecord| {
        changed = cur.cordoned != cordoned;
        changed.then(|| NodeRecord { cordoned, ..cur.clone() })
    })
    .await?;
    if let Some(r) = &rec
        && changed
    {
        let what = if cordoned { "cordoned: no new runners go here" } else { "uncordoned: takes runners again" };
        crate::events::emit(
            ctx,
            fleet_state::events::NewEvent::node(fleet_state::events::EventKind::Operator, r, what),
        )
        .await;
    }
    rec.map(Json).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("node {id} not found (fleetctl get nodes lists them)"))
    })
}

/// How often a watch looks for a change (the store is read; nothing is sent when nothing changed).
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `GET /v1/watch/{nodes|runners|apps|events}` (`fleetctl get … -w`): server-sent events. For
/// nodes, runners and apps, an event with the whole listing (as `GET /v1/{what}` answers) first
/// and again each time it changes; for events (`?app=&node=` as `GET /v1/events`), the events
/// recorded since the last one sent. A comment line every 15 s keeps idle connections open.
async fn watch(
    State(ctx): State<Arc<Ctx>>,
    Path(what): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    if what == "dashboard" {
        // Each overview the dashboard task takes (every couple of seconds), the newest first.
        let rx = ctx.dashboard.subscribe();
        let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
            loop {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let text = rx.borrow_and_update().clone();
                match text {
                    Some(t) => {
                        let ev = Event::default().event("dashboard").data(t.as_str());
                        return Some((Ok(ev), (rx, false)));
                    }
                    None if first && rx.changed().await.is_err() => return None,
                    None => {}
                }
            }
        });
        let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = _> + Send>> = Box::pin(stream);
        return Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))));
    }
    if !matches!(what.as_str(), "nodes" | "runners" | "apps" | "events") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("cannot watch '{what}': watch nodes, runners, apps, events or dashboard"),
        ));
    }
    let mut filter = fleet_state::events::EventFilter { last: Some(100), ..Default::default() };
    if let Some(a) = q.get("app") {
        filter.app = Some(a.clone());
    }
    if let Some(n) = q.get("node") {
        filter.node = Some(parse_id(n, "node")?);
    }
    // One snapshot: the listing as JSON text, and (events) the last id it holds.
    async fn snapshot(
        ctx: &Arc<Ctx>,
        what: &str,
        filter: &fleet_state::events::EventFilter,
    ) -> Option<(String, Option<u64>)> {
        let v = match what {
            "nodes" => serde_json::to_string(&nodes(State(ctx.clone())).await.ok()?.0),
            "runners" => serde_json::to_string(&runners(State(ctx.clone())).await.ok()?.0),
            "apps" => serde_json::to_string(&apps(State(ctx.clone())).await.ok()?.0),
            _ => {
                let list = fleet_state::events::list(&*ctx.store, &ctx.keys, filter).await.ok()?;
                let last = list.last().map(|e| e.id);
                return Some((serde_json::to_string(&list).ok()?, last));
            }
        };
        v.ok().map(|t| (t, None))
    }
    let state = (ctx, what, filter, None::<String>, true);
    let stream = futures_util::stream::unfold(state, |(ctx, what, mut filter, mut last, mut first)| async move {
        loop {
            if !first {
                tokio::time::sleep(WATCH_EVERY).await;
            }
            first = false;
            let Some((text, last_event)) = snapshot(&ctx, &what, &filter).await else { continue };
            if what == "events" {
                if last_event.is_none() {
                    continue;
                }
                filter.after = last_event;
                filter.last = None;
            } else if last.as_deref() == Some(text.as_str()) {
                continue;
            } else {
                last = Some(text.clone());
            }
            let ev = Event::default().event(what.clone()).data(text);
            return Some((Ok(ev), (ctx, what, filter, last, first)));
        }
    });
    let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = _> + Send>> = Box::pin(stream);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}

/// `GET /v1/events?app=A&node=N&after=ID&last=K`: the fleet's decisions with their reasons,
/// oldest first (`last`: only the newest K; default 1000).
async fn events(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Vec<fleet_state::events::EventRecord>>> {
    let mut filter = fleet_state::events::EventFilter { last: Some(1000), ..Default::default() };
    for (k, v) in &q {
        match k.as_str() {
            "app" => filter.app = Some(v.clone()),
            "node" => filter.node = Some(parse_id(v, "node")?),
            "after" => filter.after = Some(parse_id(v, "event")?),
            "last" => {
                filter.last = Some(
                    v.parse().ok().filter(|n| (1..=fleet_state::events::HISTORY as usize).contains(n)).ok_or_else(
                        || {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                format!("last={v}: give a number of events from 1 to {}", fleet_state::events::HISTORY),
                            )
                        },
                    )?,
                )
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': events take app, node, after and last"),
                ));
            }
        }
    }
    Ok(Json(fleet_state::events::list(&*ctx.store, &ctx.keys, &filter).await?))
}

async fn cordon(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> ApiResult<Json<NodeRecord>> {
    set_cordon(&ctx, &id, true).await
}

async fn uncordon(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> ApiResult<Json<NodeRecord>> {
    set_cordon(&ctx, &id, false).await
}

async fn runners(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<Vec<RunnerRecord>>> {
    Ok(Json(all_runners(&ctx).await?))
}

#[derive(Serialize, Default)]
struct AppView {
    queued: u32,
    in_flight: u32,
    runners: usize,
    nodes: usize,
    burn_per_hour: Money,
    month_to_date: Money,
    /// Serving figures from its finished requests since this fleetd started (none before one).
    #[serde(skip_serializing_if = "Option::is_none")]
    serving: Option<crate::serving::ServingView>,
}

async fn applied_apps(ctx: &Ctx) -> ApiResult<Vec<String>> {
    Ok(applied_spec(ctx).await?.map(|s| s.apps.iter().map(|a| a.name.clone()).collect()).unwrap_or_default())
}

/// The applied spec: read from the store each time (one key), parsed only when it changed.
pub(crate) async fn applied_spec(ctx: &Ctx) -> ApiResult<Option<Arc<fleet_core::spec::FleetSpec>>> {
    let Some(kv) = ctx.store.get(&ctx.keys.spec()).await? else { return Ok(None) };
    if let Some((rev, spec)) = ctx.spec_cache.lock().expect("spec cache").as_ref()
        && *rev == kv.mod_revision
    {
        return Ok(Some(spec.clone()));
    }
    let s: StoredSpec = kv.json()?;
    let spec = Arc::new(
        fleet_core::spec::FleetSpec::parse("spec", &s.toml)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    *ctx.spec_cache.lock().expect("spec cache") = Some((kv.mod_revision, spec.clone()));
    Ok(Some(spec))
}

async fn apps(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<BTreeMap<String, AppView>>> {
    let now = ctx.clock.now();
    let mut out: BTreeMap<String, AppView> =
        applied_apps(&ctx).await?.into_iter().map(|a| (a, AppView::default())).collect();
    for (app, d) in queue::depths(&*ctx.store, &ctx.keys).await? {
        let v = out.entry(app).or_default();
        v.queued = d.queued;
        v.in_flight = d.in_flight;
    }
    for r in all_runners(&ctx).await? {
        out.entry(r.app).or_default().runners += 1;
    }
    for n in all_nodes(&ctx).await? {
        let v = out.entry(n.app.clone()).or_default();
        v.month_to_date += month_cost(&n, now);
        v.burn_per_hour += burn_per_hour(&n);
        if n.is_live() {
            v.nodes += 1;
        }
    }
    for (app, v) in out.iter_mut() {
        v.serving = ctx.serving.view(app);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct SubmitBody {
    input: serde_json::Value,
}

async fn submit(
    State(ctx): State<Arc<Ctx>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    Path(app): Path<String>,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("{}; send a JSON object like {{\"input\": ...}}", e.body_text()))
    })?;
    let owner = caller.as_ref().map(|c| c.0.0.name.clone());
    let id = enqueue(&ctx, owner.as_deref(), &app, body.input).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "app": app }))))
}

/// Puts `input` on `app`'s durable queue for the token named `owner`: the app must be in the
/// applied spec, the input within its size, the token within its rate and the queue within its
/// bound (each refusal says which limit to change). Shared by the queue API and the
/// OpenAI-compatible endpoints.
pub(crate) async fn enqueue(
    ctx: &Ctx,
    owner: Option<&str>,
    app: &str,
    input: serde_json::Value,
) -> ApiResult<RequestId> {
    let limits = admit(ctx, owner, app, &input).await?.requests;
    enqueue_admitted(ctx, owner, app, input, limits).await
}

/// The checks every request passes whichever way it goes (queue or push): the app is in the
/// applied spec, the input within its size, the token within its rate. Returns the app's spec.
pub(crate) async fn admit(
    ctx: &Ctx,
    owner: Option<&str>,
    app: &str,
    input: &serde_json::Value,
) -> ApiResult<fleet_core::spec::AppSpec> {
    let spec = applied_spec(ctx).await?;
    let Some(app_spec) = spec.as_ref().and_then(|s| s.apps.iter().find(|a| a.name == app)).cloned() else {
        let known: Vec<String> = spec.iter().flat_map(|s| s.apps.iter().map(|a| a.name.clone())).collect();
        let hint = match fleet_core::names::closest(app, known.iter().map(String::as_str)) {
            Some(c) => format!("; did you mean `{c}`?"),
            None if known.is_empty() => "; no spec is applied yet".to_string(),
            None => format!("; apps: {}", known.join(", ")),
        };
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("app `{app}` is not in the applied spec{hint}")));
    };
    let limits = app_spec.requests;
    let size = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > limits.max_input_bytes as usize {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the input is {size} bytes, over app `{app}`'s max_input_bytes of {}; send a smaller input or raise [apps.{app}.requests] max_input_bytes",
                limits.max_input_bytes
            ),
        ));
    }
    let refused = |r: crate::admission::Refused| match r {
        crate::admission::Refused::RateLimited { rate, retry_after } => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "this token may submit {rate} requests per second to app `{app}`; slow down, or raise [apps.{app}.requests] rate_per_token"
            ),
            retry_after: Some(retry_after.as_secs().max(1)),
        },
        crate::admission::Refused::QueueFull { queued, max } => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "app `{app}`'s queue is full ({queued} requests queued or in flight, max_queue {max}); retry later, or raise [apps.{app}.requests] max_queue"
            ),
            retry_after: Some(1),
        },
    };
    ctx.admission.take(owner.unwrap_or("anonymous"), app, limits.rate_per_token).map_err(refused)?;
    Ok(app_spec)
}

/// Puts an admitted request ([`admit`]) on the queue, within the queue's bound.
pub(crate) async fn enqueue_admitted(
    ctx: &Ctx,
    owner: Option<&str>,
    app: &str,
    input: serde_json::Value,
    limits: fleet_core::spec::RequestLimits,
) -> ApiResult<RequestId> {
    let refused = |r: crate::admission::Refused| match r {
        crate::admission::Refused::QueueFull { queued, max } => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "app `{app}`'s queue is full ({queued} requests queued or in flight, max_queue {max}); retry later, or raise [apps.{app}.requests] max_queue"
            ),
            retry_after: Some(1),
        },
        other => ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("{other:?}")),
    };
    ctx.admission.queue_room(&ctx.store, &ctx.keys, app, limits.max_queue).await?.map_err(refused)?;
    let id = match &ctx.submitter {
        Some(s) => {
            s.submit(queue::Submission { app: app.to_string(), input, owner: owner.map(str::to_string) }).await?
        }
        None => queue::submit_as(&*ctx.store, &ctx.keys, app, input, ctx.clock.now(), owner).await?,
    };
    *ctx.arrivals.lock().expect("arrivals lock").entry(app.to_string()).or_default() += 1;
    ctx.nudge.notify_one();
    Ok(id)
}

async fn request(
    State(ctx): State<Arc<Ctx>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Json<fleet_state::model::RequestRecord>> {
    let id: RequestId = parse_id(&id, "request")?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("request {id} of app `{app}` not found"));
    match queue::get(&*ctx.store, &ctx.keys, &app, id).await {
        // A submit-scoped token reads only the requests it submitted (ids are sequential: another
        // client's would otherwise be one guess away); to it, others' do not exist.
        Ok(r) => match caller.as_ref().map(|c| &c.0.0) {
            Some(c)
                if matches!(c.scope, crate::auth::Scope::Submit(_)) && r.owner.as_deref() != Some(c.name.as_str()) =>
            {
                Err(not_found())
            }
            _ => Ok(Json(r)),
        },
        Err(QueueError::NotFound(_)) => Err(not_found()),
        Err(QueueError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

#[derive(Serialize)]
struct CostView {
    month_to_date: Money,
    burn_per_hour: Money,
    /// Month to date plus the current burn until the month ends.
    forecast_month_end: Money,
    by_app: BTreeMap<String, Money>,
    by_cloud: BTreeMap<String, Money>,
    /// What each app's and each cloud's live nodes cost per hour now.
    burn_by_app: BTreeMap<String, Money>,
    burn_by_cloud: BTreeMap<String, Money>,
    /// Every node that cost anything this month or is live, dearest per hour first.
    nodes: Vec<NodeCost>,
    /// The fleet's budgets from the applied spec, and what is left of them (negative: over).
    budget_per_hour: Option<Money>,
    headroom_per_hour: Option<Money>,
    budget_per_month: Option<Money>,
    headroom_month: Option<Money>,
}

#[derive(Serialize)]
struct NodeCost {
    id: u64,
    app: String,
    offering: Option<String>,
    state: &'static str,
    burn_per_hour: Money,
    month_to_date: Money,
}

async fn cost(State(ctx): State<Arc<Ctx>>) -> ApiResult<Json<CostView>> {
    let now = ctx.clock.now();
    let nodes = all_nodes(&ctx).await?;
    let mut by_app: BTreeMap<String, Money> = BTreeMap::new();
    let mut by_cloud: BTreeMap<String, Money> = BTreeMap::new();
    let mut burn_by_app: BTreeMap<String, Money> = BTreeMap::new();
    let mut burn_by_cloud: BTreeMap<String, Money> = BTreeMap::new();
    let mut per_node = Vec::new();
    let mut mtd = Money::ZERO;
    let mut burn = Money::ZERO;
    for n in &nodes {
        let c = month_cost(n, now);
        let b = burn_per_hour(n);
        mtd += c;
        burn += b;
        let cloud = n.offering().map(|o| o.cloud.to_string());
        if c > Money::ZERO || b > Money::ZERO {
            *by_app.entry(n.app.clone()).or_default() += c;
            *burn_by_app.entry(n.app.clone()).or_default() += b;
            if let Some(cloud) = &cloud {
                *by_cloud.entry(cloud.clone()).or_default() += c;
                *burn_by_cloud.entry(cloud.clone()).or_default() += b;
            }
        }
        if c > Money::ZERO || n.is_live() {
            per_node.push(NodeCost {
                id: n.id,
                app: n.app.clone(),
                offering: n.offering().map(|o| o.to_string()),
                state: n.state.name(),
                burn_per_hour: b,
                month_to_date: c,
            });
        }
    }
    per_node.sort_by(|a, b| b.burn_per_hour.cmp(&a.burn_per_hour).then(b.month_to_date.cmp(&a.month_to_date)));
    let forecast = mtd + fleet_core::Price::per_hour(burn).cost_for(crate::reconcile::month_left(now));
    let budget = match get_json::<StoredSpec>(&*ctx.store, &ctx.keys.spec()).await? {
        Some((s, _)) => fleet_core::spec::FleetSpec::parse("spec", &s.toml).ok().map(|s| s.budget),
        None => None,
    }
    .unwrap_or(fleet_core::spec::Budget { max_per_hour: None, max_per_month: None });
    Ok(Json(CostView {
        month_to_date: mtd,
        burn_per_hour: burn,
        forecast_month_end: forecast,
        by_app,
        by_cloud,
        burn_by_app,
        burn_by_cloud,
        nodes: per_node,
        budget_per_hour: budget.max_per_hour,
        headroom_per_hour: budget.max_per_hour.map(|b| b - burn),
        budget_per_month: budget.max_per_month,
        headroom_month: budget.max_per_month.map(|b| b - forecast),
    }))
}
