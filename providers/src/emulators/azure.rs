//! Azure Resource Manager for `Microsoft.Compute/virtualMachines` (api-version 2024-07-01):
//! create-or-update (PUT, `If-None-Match`), get, list in a resource group (paged by
//! `nextLink`), delete, and the async operations both return (`Azure-AsyncOperation`). A VM
//! size with no capacity left fails *in the operation* with `AllocationFailed` (or the code set),
//! leaving the VM in state Failed as Azure does; a region's cores quota refuses the PUT with
//! `OperationNotAllowed`. Errors are ARM's `{"error": {"code", "message"}}` with `x-ms-error-code`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Running, json as answer, new_id, serve};

const API: &str = "2024-07-01";

/// The VM an operation finishes: (resource group, name, succeeded — or, for a delete, whether
/// the VM held capacity).
type Finishes = (String, String, bool);

#[derive(Debug, Default)]
struct St {
    url: String,
    token: String,
    /// VMs each (region, size) can still take.
    capacity: HashMap<(String, String), u32>,
    /// The code a failed allocation ends with.
    exhaustion_code: String,
    /// vCPUs the subscription may run (all sizes together), like a family cores quota.
    cores_quota: u32,
    /// (resource group, name) → VM JSON.
    vms: BTreeMap<(String, String), Value>,
    /// operation id → (status JSON when polled, VM it finishes: (rg, name, succeeded — or, for a
    /// delete, whether the VM held capacity)).
    operations: HashMap<String, (Value, Option<Finishes>)>,
    page_size: usize,
}

#[derive(Debug)]
pub struct AzureEmulator {
    pub running: Running,
    st: Arc<Mutex<St>>,
}

impl std::ops::Deref for AzureEmulator {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// ARM's error answer, with the code also in `x-ms-error-code` as ARM sends it.
pub fn arm_error(status: u16, code: &str, message: &str) -> Response {
    let mut r = answer(status, json!({"error": {"code": code, "message": message}}));
    if let Ok(v) = code.parse() {
        r.headers_mut().insert("x-ms-error-code", v);
    }
    r
}

/// The body of an ARM error (for injected faults).
pub fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn vcpus_of(size: &str) -> u32 {
    // Standard_ND96isr_H100_v5 → 96, Standard_NC24ads_A100_v4 → 24
    let s = size.trim_start_matches("Standard_");
    let digits: String = s.chars().skip_while(|c| c.is_ascii_alphabetic()).take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

impl AzureEmulator {
    pub async fn start(token: &str, capacity: &[(&str, &str, u32)]) -> AzureEmulator {
        let st = Arc::new(Mutex::new(St {
            token: token.into(),
            capacity: capacity.iter().map(|(r, s, n)| ((r.to_string(), s.to_string()), *n)).collect(),
            exhaustion_code: "AllocationFailed".into(),
            cores_quota: 1000,
            page_size: 50,
            ..St::default()
        }));
        let vm = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}";
        let app = Router::new()
            .route(vm, get(get_vm).put(put_vm).delete(delete_vm))
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines",
                get(list_vms),
            )
            .route("/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}", get(operation))
            .with_state(st.clone());
        let running = serve(app).await;
        st.lock().unwrap().url = running.url.clone();
        AzureEmulator { running, st }
    }

    pub fn set_capacity(&self, region: &str, size: &str, n: u32) {
        self.st.lock().unwrap().capacity.insert((region.into(), size.into()), n);
    }

    /// The code allocation failures end with: AllocationFailed, ZonalAllocationFailed, OverconstrainedAllocationRequest.
    pub fn set_exhaustion_code(&self, code: &str) {
        self.st.lock().unwrap().exhaustion_code = code.into();
    }

    pub fn set_cores_quota(&self, n: u32) {
        self.st.lock().unwrap().cores_quota = n;
    }

    pub fn set_page_size(&self, n: usize) {
        self.st.lock().unwrap().page_size = n.max(1);
    }

    /// Every VM resource, whatever its state.
    pub fn vms(&self) -> Vec<Value> {
        self.st.lock().unwrap().vms.values().cloned().collect()
    }
}

fn authorized(st: &St, h: &HeaderMap) -> Result<(), Box<Response>> {
    if h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", st.token)) {
        return Ok(());
    }
    Err(Box::new(arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")))
}

fn new_operation(st: &mut St, sub: &str, loc: &str, done: Value, finishes: Option<Finishes>) -> String {
    let id = format!("{}-{}-{}", new_id(8), new_id(4), new_id(12));
    st.operations.insert(id.clone(), (done, finishes));
    format!(
        "{}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}?p={}&api-version={API}",
        st.url,
        new_id(8)
    )
}

async fn put_vm(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((sub, rg, name)): Path<(String, String, String)>,
    body: axum::Json<Value>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let key = (rg.clone(), name.clone());
    if h.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("*") && st.vms.contains_key(&key) {
        return arm_error(
            412,
            "PreconditionFailed",
            &format!("The resource '{name}' already exists and If-None-Match is '*'."),
        );
    }
    let b = body.0;
    let location = b["location"].as_str().unwrap_or("").to_string();
    let size = b["properties"]["hardwareProfile"]["vmSize"].as_str().unwrap_or("").to_string();
    if location.is_empty() || size.is_empty() {
        return arm_error(
            400,
            "InvalidParameter",
            "Required parameter 'location' or 'hardwareProfile.vmSize' is missing (null).",
        );
    }
    if b["properties"]["priority"] == "Spot" && b["properties"]["evictionPolicy"].is_null() {
        return arm_error(400, "InvalidParameter", "Eviction policy must be set for Spot priority virtual machines.");
    }
    let used: u32 = st
        .vms
        .values()
        .filter(|v| v["properties"]["provisioningState"] != "Failed")
        .map(|v| vcpus_of(v["properties"]["hardwareProfile"]["vmSize"].as_str().unwrap_or("")))
        .sum();
    let need = vcpus_of(&size);
    if used + need > st.cores_quota {
        return arm_error(
            409,
            "OperationNotAllowed",
            &format!(
                "Operation could not be completed as it results in exceeding approved standardNDSH100v5Family Cores quota. Additional details - Deployment Model: Resource Manager, Location: {location}, Current Limit: {}, Current Usage: {used}, Additional Required: {need}, (Minimum) New Limit Required: {}.",
                st.cores_quota,
                used + need
            ),
        );
    }
    let free = st.capacity.get(&(location.clone(), size.clone())).copied().unwrap_or(0);
    let ok = free > 0;
    if ok {
        *st.capacity.get_mut(&(location.clone(), size.clone())).expect("checked") -= 1;
    }
    let mut vm = b.clone();
    vm["id"] =
        json!(format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"));
    vm["name"] = json!(name);
    vm["type"] = json!("Microsoft.Compute/virtualMachines");
    vm["properties"]["provisioningState"] = json!("Creating");
    vm["properties"]["vmId"] = json!(format!("{}-{}", new_id(8), new_id(12)));
    vm["properties"]["timeCreated"] = json!(chrono::Utc::now().to_rfc3339());
    st.vms.insert(key, vm.clone());
    let done = if ok {
        json!({"startTime": chrono::Utc::now().to_rfc3339(), "status": "Succeeded", "name": "op"})
    } else {
        let code = st.exhaustion_code.clone();
        json!({"startTime": chrono::Utc::now().to_rfc3339(), "status": "Failed", "name": "op", "error": {"code": code,
            "message": format!("Allocation failed. We do not have sufficient capacity for the requested VM size in this region. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance")}})
    };
    let url = new_operation(&mut st, &sub, &location, done, Some((rg, name, ok)));
    let mut r = (axum::http::StatusCode::CREATED, axum::Json(vm)).into_response();
    r.headers_mut().insert("azure-asyncoperation", url.parse().expect("header"));
    r.headers_mut().insert("retry-after", "0".parse().expect("header"));
    r
}

fn not_found(rg: &str, name: &str) -> Response {
    arm_error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

async fn get_vm(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((_sub, rg, name)): Path<(String, String, String)>,
) -> Response {
    let st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    match st.vms.get(&(rg.clone(), name.clone())) {
        Some(v) => answer(200, v.clone()),
        None => not_found(&rg, &name),
    }
}

async fn delete_vm(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let Some(vm) = st.vms.get_mut(&(rg.clone(), name.clone())) else {
        // ARM answers 204 to a DELETE of what is not there.
        return axum::http::StatusCode::NO_CONTENT.into_response();
    };
    // A VM whose allocation failed holds no capacity to give back.
    let held = vm["properties"]["provisioningState"] != "Failed";
    vm["properties"]["provisioningState"] = json!("Deleting");
    let loc = vm["location"].as_str().unwrap_or("").to_string();
    let done = json!({"startTime": chrono::Utc::now().to_rfc3339(), "status": "Succeeded", "name": "op"});
    let url = new_operation(&mut st, &sub, &loc, done, Some((rg, name, held)));
    let mut r = axum::http::StatusCode::ACCEPTED.into_response();
    r.headers_mut().insert("azure-asyncoperation", url.parse().expect("header"));
    r.headers_mut().insert("retry-after", "0".parse().expect("header"));
    r
}

async fn operation(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((_sub, _loc, id)): Path<(String, String, String)>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let Some((done, finishes)) = st.operations.get(&id).cloned() else {
        return arm_error(404, "NotFound", "The operation was not found.");
    };
    if let Some((rg, name, succeeded)) = finishes {
        let key = (rg, name);
        let deleting = st.vms.get(&key).is_some_and(|v| v["properties"]["provisioningState"] == "Deleting");
        if deleting {
            if let Some(vm) = st.vms.remove(&key) {
                let region = vm["location"].as_str().unwrap_or("").to_string();
                let size = vm["properties"]["hardwareProfile"]["vmSize"].as_str().unwrap_or("").to_string();
                if succeeded {
                    *st.capacity.entry((region, size)).or_insert(0) += 1;
                }
            }
        } else if let Some(vm) = st.vms.get_mut(&key) {
            vm["properties"]["provisioningState"] = json!(if succeeded { "Succeeded" } else { "Failed" });
        }
    }
    answer(200, done)
}

async fn list_vms(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((sub, rg)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let all: Vec<&Value> = st.vms.iter().filter(|((g, _), _)| *g == rg).map(|(_, v)| v).collect();
    let start: usize = q.get("$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(start).take(st.page_size).map(|v| (*v).clone()).collect();
    let mut out = json!({ "value": page });
    if start + st.page_size < all.len() {
        out["nextLink"] = json!(format!(
            "{}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines?api-version={API}&$skiptoken={}",
            st.url,
            start + st.page_size
        ));
    }
    answer(200, out)
}
