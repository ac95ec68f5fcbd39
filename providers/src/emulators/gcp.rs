//! Compute Engine's REST API v1 (`/compute/v1/projects/{project}/…`) for instances: insert
//! (deduplicated by `requestId`, `alreadyExists` for a taken name), get, delete, aggregatedList
//! with a `labels.KEY = "VALUE"` filter and pages, and zonal operations. Inserts answer a RUNNING
//! operation and fail *in the operation*, as GCP does, with `ZONE_RESOURCE_POOL_EXHAUSTED` when a
//! zone has no capacity left for the machine type or `QUOTA_EXCEEDED` past the GPU quota (or an
//! injected operation error, [`GcpEmulator::fail_next_operation`]). An insert whose boot disk type
//! the machine family does not support is refused as GCP refuses it — no `diskType` means
//! `pd-standard`, which A3 machines refuse; A3 Ultra and A4 take Hyperdisk only. A `requestId`
//! seen before (insert or delete) is answered with the first request's operation. HTTP
//! errors carry Google's JSON error body (`{"error": {"code", "message", "errors": [{"reason"}],
//! "status"}}`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{Running, json as answer, new_id, serve};

#[derive(Debug, Default)]
struct St {
    /// Instances each (zone, machine type) can still take; absent means none.
    capacity: HashMap<(String, String), u32>,
    /// GPUs the project may have; each a2/a3 machine type's count is in its name.
    gpu_quota: u32,
    /// (zone, name) → instance JSON.
    instances: BTreeMap<(String, String), Value>,
    /// operation name → operation JSON (DONE once polled).
    operations: HashMap<String, Value>,
    /// requestId → operation name.
    request_ids: HashMap<String, String>,
    page_size: usize,
    next_id: u64,
    /// The billing catalog's Compute Engine SKUs.
    skus: Vec<Value>,
    /// Errors the next inserts' operations end with: (code, message, HTTP status).
    op_faults: std::collections::VecDeque<(String, String, u16)>,
    /// Instance name → the SSH host keys its guest environment has published (`hostkeys/`).
    host_keys: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
pub struct GcpEmulator {
    pub running: Running,
    st: Arc<Mutex<St>>,
}

impl std::ops::Deref for GcpEmulator {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// Google's JSON error body.
pub fn error_body(code: u16, status: &str, reason: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}], "status": status}})
}

fn gpus_of(machine_type: &str) -> u32 {
    // a3-highgpu-8g, a2-ultragpu-1g, a3-megagpu-8g …
    machine_type.rsplit('-').next().and_then(|s| s.strip_suffix('g')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl GcpEmulator {
    /// `capacity`: instances of each (zone, machine type).
    pub async fn start(capacity: &[(&str, &str, u32)]) -> GcpEmulator {
        let st = St {
            capacity: capacity.iter().map(|(z, t, n)| ((z.to_string(), t.to_string()), *n)).collect(),
            gpu_quota: 64,
            page_size: 500,
            next_id: 8_123_456_789_000,
            skus: default_skus(),
            ..St::default()
        };
        let st = Arc::new(Mutex::new(st));
        let app = Router::new()
            .route("/compute/v1/projects/{project}/zones/{zone}/instances", axum::routing::post(insert))
            .route("/compute/v1/projects/{project}/zones/{zone}/instances/{name}", get(get_one).delete(delete))
            .route(
                "/compute/v1/projects/{project}/zones/{zone}/instances/{name}/getGuestAttributes",
                get(guest_attributes),
            )
            .route("/compute/v1/projects/{project}/zones/{zone}/operations/{op}", get(operation))
            .route("/compute/v1/projects/{project}/aggregated/instances", get(aggregated))
            .route("/v1/services/{service}/skus", get(skus))
            .with_state(st.clone());
        GcpEmulator { running: serve(app).await, st }
    }

    pub fn set_capacity(&self, zone: &str, machine_type: &str, n: u32) {
        self.st.lock().unwrap().capacity.insert((zone.into(), machine_type.into()), n);
    }

    pub fn set_gpu_quota(&self, n: u32) {
        self.st.lock().unwrap().gpu_quota = n;
    }

    /// Instances per aggregatedList page (to exercise paging).
    pub fn set_page_size(&self, n: usize) {
        self.st.lock().unwrap().page_size = n.max(1);
    }

    /// The next insert is accepted and its operation ends with this error (e.g.
    /// `UNSUPPORTED_OPERATION`), as GCP does for failures found after the request was accepted.
    pub fn fail_next_operation(&self, code: &str, message: &str, http: u16) {
        self.st.lock().unwrap().op_faults.push_back((code.into(), message.into(), http));
    }

    pub fn instances(&self) -> Vec<Value> {
        self.st.lock().unwrap().instances.values().cloned().collect()
    }

    /// What instance `name`'s guest environment publishes as its SSH host keys (OpenSSH lines),
    /// readable as `hostkeys/` guest attributes where the instance enables them.
    pub fn set_host_keys(&self, name: &str, keys: &[&str]) {
        self.st.lock().unwrap().host_keys.insert(name.into(), keys.iter().map(|k| k.to_string()).collect());
    }
}

/// `instances.getGuestAttributes`: the instance's guest attributes under `queryPath`. Compute
/// Engine refuses the call where the instance's metadata does not set `enable-guest-attributes`
/// to TRUE, and answers 404 for a namespace the guest has not written yet.
async fn guest_attributes(
    State(st): State<Arc<Mutex<St>>>,
    Path((project, zone, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = st.lock().unwrap();
    let Some(i) = st.instances.get(&(zone.clone(), name.clone())) else { return not_found(&project, &zone, &name) };
    let enabled = i["metadata"]["items"].as_array().into_iter().flatten().any(|it| {
        it["key"] == "enable-guest-attributes" && it["value"].as_str().is_some_and(|v| v.eq_ignore_ascii_case("true"))
    });
    if !enabled {
        let msg = format!(
            "Guest attributes are disabled for instance '{name}'. Set the metadata key enable-guest-attributes to TRUE."
        );
        return answer(400, error_body(400, "INVALID_ARGUMENT", "badRequest", &msg));
    }
    let path = q.get("queryPath").cloned().unwrap_or_default();
    let keys = st.host_keys.get(&name).filter(|k| !k.is_empty() && path == "hostkeys/");
    let Some(keys) = keys else {
        let msg = format!(
            "The resource 'projects/{project}/zones/{zone}/instances/{name}/guestAttributes/{path}' was not found"
        );
        return answer(404, error_body(404, "NOT_FOUND", "notFound", &msg));
    };
    let items: Vec<Value> = keys
        .iter()
        .filter_map(|k| {
            let mut w = k.split_whitespace();
            Some(json!({"namespace": "hostkeys", "key": w.next()?, "value": w.next()?}))
        })
        .collect();
    answer(
        200,
        json!({
            "kind": "compute#guestAttributes",
            "queryPath": path,
            "queryValue": {"items": items},
            "selfLink": format!("{}/zones/{zone}/instances/{name}/guestAttributes/{path}", base(&project)),
        }),
    )
}

/// One billing catalog SKU, as the Cloud Billing API shows it.
pub fn sku(description: &str, usage: &str, regions: &[&str], units: i64, nanos: i64) -> Value {
    let group = if description.contains("GPU") {
        "GPU"
    } else if description.contains("Local Storage") {
        "LocalSSD"
    } else if description.contains("Ram") {
        "RAM"
    } else {
        "CPU"
    };
    json!({
        "name": format!("services/6F81-5844-456A/skus/{}", new_id(12).to_uppercase()),
        "skuId": new_id(12).to_uppercase(),
        "description": description,
        "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute", "resourceGroup": group, "usageType": usage},
        "serviceRegions": regions,
        "pricingInfo": [{
            "effectiveTime": "2026-11-01T00:00:00Z",
            "pricingExpression": {
                "usageUnit": match group { "RAM" => "GiBy.h", "LocalSSD" => "GiBy.mo", _ => "h" },
                "displayQuantity": 1,
                "tieredRates": [{"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": units.to_string(), "nanos": nanos}}],
                "usageUnitDescription": match group { "RAM" => "gibibyte hour", "LocalSSD" => "gibibyte month", _ => "hour" },
            },
            "currencyConversionRate": 1
        }],
        "serviceProviderName": "Google"
    })
}

/// us-central1's H100 (A3) and A100 80 GB (A2 ultra) parts, on demand and Spot, plus SKUs a
/// client must not use (a commitment, another family).
pub fn default_skus() -> Vec<Value> {
    let r = ["us-central1"];
    vec![
        sku("Nvidia H100 80GB GPU running in Americas", "OnDemand", &r, 2, 934_000_000),
        sku(
            "Nvidia H100 80GB GPU attached to Spot Preemptible VMs running in Americas",
            "Preemptible",
            &r,
            1,
            200_000_000,
        ),
        sku("A3 Instance Core running in Americas", "OnDemand", &r, 0, 29_000_000),
        sku("Spot Preemptible A3 Instance Core running in Americas", "Preemptible", &r, 0, 11_600_000),
        sku("A3 Instance Ram running in Americas", "OnDemand", &r, 0, 3_900_000),
        sku("Spot Preemptible A3 Instance Ram running in Americas", "Preemptible", &r, 0, 1_560_000),
        // The billing catalog's own words for A2 Ultra's GPU ("Tesla", unlike the H100's).
        sku("Nvidia Tesla A100 80GB GPU running in Americas", "OnDemand", &r, 3, 500_000_000),
        sku(
            "Nvidia Tesla A100 80GB GPU attached to Spot Preemptible VMs running in Americas",
            "Preemptible",
            &r,
            1,
            400_000_000,
        ),
        sku("A2 Instance Core running in Americas", "OnDemand", &r, 0, 31_500_000),
        sku("Spot Preemptible A2 Instance Core running in Americas", "Preemptible", &r, 0, 12_600_000),
        sku("A2 Instance Ram running in Americas", "OnDemand", &r, 0, 4_200_000),
        sku("Spot Preemptible A2 Instance Ram running in Americas", "Preemptible", &r, 0, 1_680_000),
        // Local SSD, bundled with A2 Ultra and A3 machines, per GiB-month.
        sku("SSD backed Local Storage", "OnDemand", &r, 0, 80_000_000),
        sku("SSD backed Local Storage attached to Spot Preemptible VMs", "Preemptible", &r, 0, 48_000_000),
        sku("Commitment v1: A3 Cpu in Americas for 1 Year", "Commit1Yr", &r, 0, 18_000_000),
        sku("N1 Predefined Instance Core running in Americas", "OnDemand", &r, 0, 31_611_000),
    ]
}

fn base(project: &str) -> String {
    format!("https://www.googleapis.com/compute/v1/projects/{project}")
}

fn new_operation(st: &mut St, project: &str, zone: &str, kind: &str, target: &str, error: Option<Value>) -> Value {
    st.next_id += 1;
    let name = format!("operation-{}-{}", st.next_id, new_id(8));
    let zone_url = format!("{}/zones/{zone}", base(project));
    let mut op = json!({
        "kind": "compute#operation",
        "id": st.next_id.to_string(),
        "name": name,
        "zone": zone_url,
        "operationType": kind,
        "targetLink": format!("{zone_url}/instances/{target}"),
        "status": "RUNNING",
        "progress": 0,
        "insertTime": chrono::Utc::now().to_rfc3339(),
        "selfLink": format!("{zone_url}/operations/{name}"),
    });
    let mut done = op.clone();
    done["status"] = json!("DONE");
    done["progress"] = json!(100);
    done["endTime"] = json!(chrono::Utc::now().to_rfc3339());
    if let Some(e) = error {
        done["error"] = json!({"errors": [e["error"].clone()]});
        done["httpErrorStatusCode"] = e["http"].clone();
        done["httpErrorMessage"] = e["httpMessage"].clone();
    }
    st.operations.insert(name.clone(), done);
    op["status"] = json!("RUNNING");
    op
}

async fn insert(
    State(st): State<Arc<Mutex<St>>>,
    Path((project, zone)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::Json<Value>,
) -> Response {
    let mut st = st.lock().unwrap();
    let b = body.0;
    if let Some(name) = q.get("requestId").and_then(|rid| st.request_ids.get(rid)) {
        // The same request again: GCP answers the first request's operation.
        let mut op = st.operations[name].clone();
        op["status"] = json!("RUNNING");
        return answer(200, op);
    }
    let Some(name) = b["name"].as_str().map(str::to_string) else {
        return answer(
            400,
            error_body(400, "INVALID_ARGUMENT", "invalid", "Invalid value for field 'resource.name': ''."),
        );
    };
    let valid_name = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return answer(
            400,
            error_body(
                400,
                "INVALID_ARGUMENT",
                "invalid",
                &format!(
                    "Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'"
                ),
            ),
        );
    }
    if st.instances.contains_key(&(zone.clone(), name.clone())) {
        return answer(
            409,
            error_body(
                409,
                "ALREADY_EXISTS",
                "alreadyExists",
                &format!("The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"),
            ),
        );
    }
    let mt = b["machineType"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
    for disk in b["disks"].as_array().into_iter().flatten() {
        // Through the API, no diskType is pd-standard.
        let t = disk["initializeParams"]["diskType"].as_str().unwrap_or("pd-standard").rsplit('/').next().unwrap_or("");
        let hyperdisk_only = mt.starts_with("a3-ultragpu") || mt.starts_with("a4");
        let refused =
            if hyperdisk_only { !t.starts_with("hyperdisk-") } else { mt.starts_with("a3-") && t == "pd-standard" };
        if refused {
            return answer(
                400,
                error_body(
                    400,
                    "INVALID_ARGUMENT",
                    "badRequest",
                    &format!("[{t}] features are not compatible for creating instance."),
                ),
            );
        }
    }
    let gpus = gpus_of(&mt);
    let used: u32 = st
        .instances
        .values()
        .map(|i| gpus_of(i["machineType"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("")))
        .sum();
    let error = if let Some((code, message, http)) = st.op_faults.pop_front() {
        Some(json!({"error": {"code": code, "message": message}, "http": http, "httpMessage": "BAD REQUEST"}))
    } else if used + gpus > st.gpu_quota {
        Some(json!({
            "error": {"code": "QUOTA_EXCEEDED", "message": format!("Quota 'NVIDIA_H100_GPUS' exceeded.  Limit: {}.0 in region {}.", st.gpu_quota, zone.rsplit_once('-').map(|x| x.0).unwrap_or(&zone))},
            "http": 403, "httpMessage": "FORBIDDEN"
        }))
    } else if st.capacity.get(&(zone.clone(), mt.clone())).copied().unwrap_or(0) == 0 {
        Some(json!({
            "error": {"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": format!("The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later.")},
            "http": 503, "httpMessage": "SERVICE UNAVAILABLE"
        }))
    } else {
        None
    };
    if error.is_none() {
        *st.capacity.get_mut(&(zone.clone(), mt.clone())).expect("checked") -= 1;
        st.next_id += 1;
        let mut i = b.clone();
        let zone_url = format!("{}/zones/{zone}", base(&project));
        i["kind"] = json!("compute#instance");
        i["id"] = json!(st.next_id.to_string());
        i["zone"] = json!(zone_url);
        i["machineType"] = json!(format!("{zone_url}/machineTypes/{mt}"));
        i["status"] = json!("PROVISIONING");
        i["creationTimestamp"] = json!(chrono::Utc::now().to_rfc3339());
        i["selfLink"] = json!(format!("{zone_url}/instances/{name}"));
        let n = st.next_id % 250;
        if let Some(nics) = i["networkInterfaces"].as_array_mut() {
            for nic in nics {
                nic["networkIP"] = json!(format!("10.128.0.{n}"));
                if let Some(acs) = nic["accessConfigs"].as_array_mut() {
                    for ac in acs {
                        ac["natIP"] = json!(format!("34.70.0.{n}"));
                    }
                }
            }
        }
        st.instances.insert((zone.clone(), name.clone()), i);
    }
    let op = new_operation(&mut st, &project, &zone, "insert", &name, error);
    if let Some(rid) = q.get("requestId") {
        st.request_ids.insert(rid.clone(), op["name"].as_str().unwrap_or("").to_string());
    }
    answer(200, op)
}

fn not_found(project: &str, zone: &str, name: &str) -> Response {
    answer(
        404,
        error_body(
            404,
            "NOT_FOUND",
            "notFound",
            &format!("The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found"),
        ),
    )
}

async fn get_one(
    State(st): State<Arc<Mutex<St>>>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> Response {
    let mut st = st.lock().unwrap();
    match st.instances.get_mut(&(zone.clone(), name.clone())) {
        Some(i) => {
            let shown = i.clone();
            if i["status"] == "PROVISIONING" {
                i["status"] = json!("RUNNING");
            }
            answer(200, shown)
        }
        None => not_found(&project, &zone, &name),
    }
}

async fn delete(
    State(st): State<Arc<Mutex<St>>>,
    Path((project, zone, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(op) = q.get("requestId").and_then(|rid| st.request_ids.get(rid)) {
        return answer(200, st.operations[op].clone());
    }
    let Some(i) = st.instances.remove(&(zone.clone(), name.clone())) else {
        return not_found(&project, &zone, &name);
    };
    let mt = i["machineType"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
    *st.capacity.entry((zone.clone(), mt)).or_insert(0) += 1;
    let op = new_operation(&mut st, &project, &zone, "delete", &name, None);
    if let Some(rid) = q.get("requestId") {
        st.request_ids.insert(rid.clone(), op["name"].as_str().unwrap_or("").to_string());
    }
    answer(200, op)
}

async fn operation(
    State(st): State<Arc<Mutex<St>>>,
    Path((project, zone, op)): Path<(String, String, String)>,
) -> Response {
    let st = st.lock().unwrap();
    match st.operations.get(&op) {
        Some(o) => answer(200, o.clone()),
        None => answer(
            404,
            error_body(
                404,
                "NOT_FOUND",
                "notFound",
                &format!("The resource 'projects/{project}/zones/{zone}/operations/{op}' was not found"),
            ),
        ),
    }
}

/// `labels.fleet-name = "t"` (quotes and spaces optional) → ("fleet-name", "t").
fn label_filter(f: &str) -> Option<(String, String)> {
    let (k, v) = f.split_once('=')?;
    let k = k.trim().strip_prefix("labels.")?;
    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
}

async fn aggregated(
    State(st): State<Arc<Mutex<St>>>,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = st.lock().unwrap();
    let filter = q.get("filter").filter(|f| !f.is_empty());
    let wanted = match filter.map(|f| label_filter(f)) {
        Some(None) => {
            return answer(400, error_body(400, "INVALID_ARGUMENT", "invalid", "Invalid list filter expression."));
        }
        Some(Some(kv)) => Some(kv),
        None => None,
    };
    let all: Vec<&Value> = st
        .instances
        .values()
        .filter(|i| wanted.as_ref().is_none_or(|(k, v)| i["labels"][k].as_str() == Some(v)))
        .collect();
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<&Value> = all.iter().skip(start).take(st.page_size).copied().collect();
    let mut items = serde_json::Map::new();
    for i in &page {
        let zone = i["zone"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
        let e = items.entry(format!("zones/{zone}")).or_insert_with(|| json!({"instances": []}));
        e["instances"].as_array_mut().expect("array").push((*i).clone());
    }
    let mut out = json!({
        "kind": "compute#instanceAggregatedList",
        "id": format!("projects/{project}/aggregated/instances"),
        "items": items,
        "selfLink": format!("{}/aggregated/instances", base(&project)),
    });
    if start + page.len() < all.len() {
        out["nextPageToken"] = json!((start + page.len()).to_string());
    }
    answer(200, out)
}

async fn skus(
    State(st): State<Arc<Mutex<St>>>,
    Path(service): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = st.lock().unwrap();
    if service != "6F81-5844-456A" {
        return answer(404, error_body(404, "NOT_FOUND", "notFound", &format!("Service {service} not found")));
    }
    // Five a page, whatever pageSize says, so clients must follow nextPageToken.
    let start: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = st.skus.iter().skip(start).take(5).cloned().collect();
    let next = if start + 5 < st.skus.len() { (start + 5).to_string() } else { String::new() };
    answer(200, json!({"skus": page, "nextPageToken": next}))
}
