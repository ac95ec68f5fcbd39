//! Lambda Cloud's REST API v1 (`/api/v1/...`), as its OpenAPI document describes it: responses
//! wrapped in `{"data": …}`, errors as `{"error": {"code", "message", "suggestion"}}` with the
//! documented codes, API key as a bearer token.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Fault, Running, json as answer, new_id, serve};

/// One instance type the emulated account can see.
#[derive(Debug, Clone)]
pub struct LambdaType {
    pub name: &'static str,
    pub description: &'static str,
    pub gpu_description: &'static str,
    pub price_cents_per_hour: u64,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub gpus: u32,
}

/// The types fleet cares about, at Lambda's published prices.
pub fn default_types() -> Vec<LambdaType> {
    vec![
        LambdaType {
            name: "gpu_1x_h100_pcie",
            description: "1x H100 (80 GB PCIe)",
            gpu_description: "H100 (80 GB PCIe)",
            price_cents_per_hour: 249,
            vcpus: 26,
            memory_gib: 200,
            gpus: 1,
        },
        LambdaType {
            name: "gpu_8x_h100_sxm5",
            description: "8x H100 (80 GB SXM5)",
            gpu_description: "H100 (80 GB SXM5)",
            price_cents_per_hour: 2392,
            vcpus: 208,
            memory_gib: 1800,
            gpus: 8,
        },
        LambdaType {
            name: "gpu_8x_a100_80gb_sxm4",
            description: "8x A100 (80 GB SXM4)",
            gpu_description: "A100 (80 GB SXM4)",
            price_cents_per_hour: 1432,
            vcpus: 240,
            memory_gib: 1800,
            gpus: 8,
        },
        LambdaType {
            name: "gpu_1x_a10",
            description: "1x A10 (24 GB PCIe)",
            gpu_description: "A10 (24 GB PCIe)",
            price_cents_per_hour: 75,
            vcpus: 30,
            memory_gib: 200,
            gpus: 1,
        },
    ]
}

#[derive(Debug)]
struct St {
    key: String,
    types: Vec<LambdaType>,
    /// Instances each (type, region) can still take.
    capacity: HashMap<(String, String), u32>,
    ssh_keys: Vec<String>,
    /// Live instances the account may have at once (Lambda's quota for new accounts).
    quota: usize,
    instances: BTreeMap<String, Value>,
    next_ip: u32,
}

/// The emulator; dereferences to [`Running`] (url, recorded requests, injected faults).
#[derive(Debug)]
pub struct LambdaEmulator {
    pub running: Running,
    st: Arc<Mutex<St>>,
}

impl std::ops::Deref for LambdaEmulator {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// An error body as Lambda writes it.
pub fn error_body(code: &str, message: &str, suggestion: Option<&str>) -> Value {
    let mut e = json!({"code": code, "message": message});
    if let Some(s) = suggestion {
        e["suggestion"] = json!(s);
    }
    json!({ "error": e })
}

/// The documented error for a launch with no capacity.
pub fn insufficient_capacity() -> Fault {
    Fault {
        method: "POST",
        path_contains: "/instance-operations/launch".into(),
        body_contains: "",
        status: 400,
        headers: vec![],
        body: error_body(
            "instance-operations/launch/insufficient-capacity",
            "Not enough capacity to fulfill launch request.",
            Some("Choose an instance type with more availability, or try again later."),
        ),
    }
}

impl LambdaEmulator {
    /// `key`: the API key it accepts; `regions`: where every type has `capacity` instances.
    pub async fn start(key: &str, regions: &[&str], capacity: u32) -> LambdaEmulator {
        let types = default_types();
        let mut cap = HashMap::new();
        for t in &types {
            for r in regions {
                cap.insert((t.name.to_string(), r.to_string()), capacity);
            }
        }
        let st = Arc::new(Mutex::new(St {
            key: key.into(),
            types,
            capacity: cap,
            ssh_keys: vec!["fleet".into()],
            quota: 10,
            instances: BTreeMap::new(),
            next_ip: 10,
        }));
        let app = Router::new()
            .route("/api/v1/instance-types", get(instance_types))
            .route("/api/v1/instances", get(list))
            .route("/api/v1/instances/{id}", get(get_one))
            .route("/api/v1/instance-operations/launch", post(launch))
            .route("/api/v1/instance-operations/terminate", post(terminate))
            .with_state(st.clone());
        LambdaEmulator { running: serve(app).await, st }
    }

    /// The base URL the adapter takes (`…/api/v1`).
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.running.url)
    }

    pub fn set_capacity(&self, instance_type: &str, region: &str, n: u32) {
        self.st.lock().unwrap().capacity.insert((instance_type.into(), region.into()), n);
    }

    /// Lambda changes a type's price.
    pub fn set_price(&self, instance_type: &str, cents_per_hour: u64) {
        for t in self.st.lock().unwrap().types.iter_mut().filter(|t| t.name == instance_type) {
            t.price_cents_per_hour = cents_per_hour;
        }
    }

    pub fn set_quota(&self, n: usize) {
        self.st.lock().unwrap().quota = n;
    }

    /// Every instance the account has, terminated ones included, as the API shows them.
    pub fn instances(&self) -> Vec<Value> {
        self.st.lock().unwrap().instances.values().cloned().collect()
    }

    /// Live (not terminated) instances.
    pub fn live(&self) -> Vec<Value> {
        self.instances()
            .into_iter()
            .filter(|i| !matches!(i["status"].as_str(), Some("terminated" | "terminating")))
            .collect()
    }
}

fn authorized(st: &St, h: &HeaderMap) -> Result<(), Box<Response>> {
    let ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", st.key));
    if ok {
        return Ok(());
    }
    Err(Box::new(answer(
        401,
        error_body(
            "global/invalid-api-key",
            "API key was invalid, expired, or deleted.",
            Some("Check your API key or create a new one, then try again."),
        ),
    )))
}

fn type_json(t: &LambdaType) -> Value {
    json!({
        "name": t.name,
        "description": t.description,
        "gpu_description": t.gpu_description,
        "price_cents_per_hour": t.price_cents_per_hour,
        "specs": {"vcpus": t.vcpus, "memory_gib": t.memory_gib, "storage_gib": 1024 * t.gpus, "gpus": t.gpus}
    })
}

async fn instance_types(State(st): State<Arc<Mutex<St>>>, h: HeaderMap) -> Response {
    let st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let mut data = serde_json::Map::new();
    for t in &st.types {
        let mut regions: Vec<&String> =
            st.capacity.iter().filter(|((ty, _), n)| ty == t.name && **n > 0).map(|((_, r), _)| r).collect();
        regions.sort();
        let regions: Vec<Value> = regions.into_iter().map(|r| json!({"name": r, "description": r})).collect();
        data.insert(t.name.into(), json!({"instance_type": type_json(t), "regions_with_capacity_available": regions}));
    }
    answer(200, json!({ "data": data }))
}

async fn list(State(st): State<Arc<Mutex<St>>>, h: HeaderMap) -> Response {
    let st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let data: Vec<&Value> = st.instances.values().filter(|i| i["status"] != "terminated").collect();
    answer(200, json!({ "data": data }))
}

async fn get_one(State(st): State<Arc<Mutex<St>>>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    match st.instances.get_mut(&id) {
        Some(i) => {
            // Booting instances are up by the time anyone looks twice.
            let now = i.clone();
            if i["status"] == "booting" {
                i["status"] = json!("active");
            }
            answer(200, json!({ "data": now }))
        }
        None => answer(404, error_body("global/object-does-not-exist", "Specified instance does not exist.", None)),
    }
}

async fn launch(State(st): State<Arc<Mutex<St>>>, h: HeaderMap, body: axum::Json<Value>) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let b = body.0;
    let invalid = |m: &str| answer(400, error_body("global/invalid-parameters", m, None));
    let (Some(region), Some(ty)) = (b["region_name"].as_str(), b["instance_type_name"].as_str()) else {
        return invalid("region_name and instance_type_name are required.");
    };
    let keys: Vec<&str> =
        b["ssh_key_names"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if keys.len() != 1 {
        return invalid("Exactly one SSH key must be specified.");
    }
    if !st.ssh_keys.iter().any(|k| k == keys[0]) {
        return answer(
            404,
            error_body(
                "global/object-does-not-exist",
                &format!("SSH key '{}' does not exist.", keys[0]),
                Some("Check the name of the SSH key."),
            ),
        );
    }
    let Some(t) = st.types.iter().find(|t| t.name == ty).cloned() else {
        return invalid(&format!("Instance type '{ty}' does not exist."));
    };
    if let Some(tags) = b.get("tags") {
        let valid = tags.as_array().is_some_and(|a| {
            a.iter().all(|t| {
                let k = t["key"].as_str().unwrap_or("");
                k.len() <= 55
                    && k.starts_with(|c: char| c.is_ascii_lowercase())
                    && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':')
                    && t["value"].as_str().is_some_and(|v| v.len() <= 128)
            })
        });
        if !valid {
            return invalid("Invalid tags.");
        }
    }
    let live = st.instances.values().filter(|i| i["status"] != "terminated").count();
    if live >= st.quota {
        return answer(
            400,
            error_body("global/quota-exceeded", "Quota exceeded.", Some("Contact Support to increase your quota.")),
        );
    }
    let cap = st.capacity.entry((ty.to_string(), region.to_string())).or_insert(0);
    if *cap == 0 {
        return insufficient_capacity_response();
    }
    *cap -= 1;
    let id = new_id(32);
    st.next_ip += 1;
    let ip = format!("198.51.100.{}", st.next_ip);
    let inst = json!({
        "id": id,
        "name": b.get("name").cloned().unwrap_or(Value::Null),
        "ip": ip,
        "private_ip": format!("10.0.2.{}", st.next_ip),
        "status": "booting",
        "ssh_key_names": keys,
        "file_system_names": b.get("file_system_names").cloned().unwrap_or(json!([])),
        "region": {"name": region, "description": region},
        "instance_type": type_json(&t),
        "hostname": ip,
        "jupyter_token": new_id(32),
        "jupyter_url": "https://jupyter.example/",
        "is_reserved": false,
        "actions": {
            "migrate": {"available": false}, "rebuild": {"available": false}, "restart": {"available": true},
            "cold_reboot": {"available": true}, "terminate": {"available": true}
        },
        "tags": b.get("tags").cloned().unwrap_or(json!([])),
    });
    st.instances.insert(id.clone(), inst);
    answer(200, json!({ "data": { "instance_ids": [id] } }))
}

fn insufficient_capacity_response() -> Response {
    let f = insufficient_capacity();
    answer(f.status, f.body)
}

async fn terminate(State(st): State<Arc<Mutex<St>>>, h: HeaderMap, body: axum::Json<Value>) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let ids: Vec<String> = body.0["instance_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return answer(400, error_body("global/invalid-parameters", "instance_ids is required.", None));
    }
    if let Some(missing) = ids.iter().find(|id| st.instances.get(*id).is_none_or(|i| i["status"] == "terminated")) {
        return answer(
            404,
            error_body("global/object-does-not-exist", &format!("Instance {missing} does not exist."), None),
        );
    }
    let mut out = Vec::new();
    for id in ids {
        let i = st.instances.get_mut(&id).expect("checked above");
        i["status"] = json!("terminated");
        let mut shown = i.clone();
        shown["status"] = json!("terminating");
        out.push(shown);
        let key = (
            i["instance_type"]["name"].as_str().unwrap_or("").to_string(),
            i["region"]["name"].as_str().unwrap_or("").to_string(),
        );
        *st.capacity.entry(key).or_insert(0) += 1;
    }
    answer(200, json!({ "data": { "terminated_instances": out } }))
}
