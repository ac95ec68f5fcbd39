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
    /// Microsoft.Network resources made with VMs: id → JSON.
    network: HashMap<String, Value>,
    /// Retail price rows: (armRegionName, armSkuName, skuName, retailPrice, productName).
    retail: Vec<(String, String, String, f64, String, bool)>,
    next_ip: u32,
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
            retail: default_retail(),
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
            .route("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{kind}/{name}", get(network))
            .route("/api/retail/prices", get(retail_prices))
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

    /// The Retail Prices API's base URL on this server.
    pub fn prices_url(&self) -> String {
        format!("{}/api/retail/prices", self.running.url)
    }

    /// Sets the retail price of a Linux VM size (spot: its " Spot" meter).
    pub fn set_retail_price(&self, region: &str, arm_sku: &str, spot: bool, price: f64) {
        let mut st = self.st.lock().unwrap();
        let name = meter(arm_sku, spot);
        st.retail.retain(|r| !(r.0 == region && r.1 == arm_sku && r.2 == name && !r.4.contains("Windows") && r.5));
        st.retail.push((region.into(), arm_sku.into(), name, price, series(arm_sku), true));
    }

    /// Adds a meter for the size that is not its region's primary meter (`isPrimaryMeterRegion:
    /// false`: the same meter billed through another region), listed after the primary one.
    pub fn add_non_primary_retail_price(&self, region: &str, arm_sku: &str, spot: bool, price: f64) {
        let mut st = self.st.lock().unwrap();
        st.retail.push((region.into(), arm_sku.into(), meter(arm_sku, spot), price, series(arm_sku), false));
    }

    pub fn set_page_size(&self, n: usize) {
        self.st.lock().unwrap().page_size = n.max(1);
    }

    /// Every VM resource, whatever its state.
    pub fn vms(&self) -> Vec<Value> {
        self.st.lock().unwrap().vms.values().cloned().collect()
    }
}

/// "Standard_ND96isr_H100_v5" → "ND96isr H100 v5" (+ " Spot").
fn meter(arm_sku: &str, spot: bool) -> String {
    let base = arm_sku.trim_start_matches("Standard_").replace('_', " ");
    if spot { format!("{base} Spot") } else { base }
}

fn series(arm_sku: &str) -> String {
    format!(
        "Virtual Machines {} Series",
        arm_sku.trim_start_matches("Standard_").split('_').skip(1).collect::<Vec<_>>().join("")
    )
}

/// Published-looking rows for two sizes in eastus: Linux pay-as-you-go and Spot, plus the rows a
/// client must skip (Windows, Low Priority).
fn default_retail() -> Vec<(String, String, String, f64, String, bool)> {
    let mut v = Vec::new();
    for (sku, od, spot) in [("Standard_ND96isr_H100_v5", 98.32, 39.3280), ("Standard_NC24ads_A100_v4", 3.673, 0.7346)] {
        v.push(("eastus".into(), sku.into(), meter(sku, false), od, series(sku), true));
        v.push(("eastus".into(), sku.into(), meter(sku, true), spot, series(sku), true));
        v.push(("eastus".into(), sku.into(), meter(sku, false), od * 1.1, format!("{} Windows", series(sku)), true));
        v.push((
            "eastus".into(),
            sku.into(),
            format!("{} Low Priority", meter(sku, false)),
            od * 0.2,
            series(sku),
            true,
        ));
    }
    v
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
    // Standard public IPs (the only kind since Basic's retirement) must be Static.
    for nic in b["properties"]["networkProfile"]["networkInterfaceConfigurations"].as_array().into_iter().flatten() {
        for ipc in nic["properties"]["ipConfigurations"].as_array().into_iter().flatten() {
            let pip = &ipc["properties"]["publicIPAddressConfiguration"];
            if pip.is_object() && pip["properties"]["publicIPAllocationMethod"] != "Static" {
                let id = format!(
                    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/publicIPAddresses/{}",
                    pip["name"].as_str().unwrap_or("")
                );
                return arm_error(
                    400,
                    "StandardSkuPublicIPAddressesMustBeStatic",
                    &format!("Standard sku publicIp {id} must have AllocationMethod set to Static."),
                );
            }
        }
    }
    // A Spot VM whose max price is under the current Spot price is refused (-1: up to on-demand).
    if let Some(max) = b["properties"]["billingProfile"]["maxPrice"].as_f64().filter(|m| *m >= 0.0) {
        let current = st
            .retail
            .iter()
            .find(|r| r.0 == location && r.1 == size && r.2 == meter(&size, true) && r.5 && !r.4.contains("Windows"))
            .map(|r| r.3);
        if let Some(current) = current.filter(|c| max < *c) {
            return arm_error(
                409,
                "SpotPriceGreaterThanProvidedMaxPrice",
                &format!(
                    "Unable to perform operation 'Create VM' since the provided max price '{max} USD' is lower than the current spot price '{current} USD' for Azure Spot VM size '{size}'. For more information, see http://aka.ms/AzureSpot/errormessages."
                ),
            );
        }
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
    // The NIC and public IP the VM's networkInterfaceConfigurations ask for.
    let net = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network");
    let (nic_id, pip_id) =
        (format!("{net}/networkInterfaces/{name}-nic"), format!("{net}/publicIPAddresses/{name}-ip"));
    st.next_ip += 1;
    let n = st.next_ip % 250;
    st.network.insert(
        nic_id.clone(),
        json!({"id": nic_id, "name": format!("{name}-nic"), "properties": {"ipConfigurations": [{"name": "ipconfig1",
            "properties": {"privateIPAddress": format!("10.1.0.{n}"), "publicIPAddress": {"id": pip_id}}}]}}),
    );
    st.network.insert(pip_id.clone(), json!({"id": pip_id, "sku": {"name": "Standard", "tier": "Regional"}, "properties": {"ipAddress": format!("20.1.2.{n}"), "publicIPAllocationMethod": "Static"}}));
    vm["properties"]["networkProfile"]["networkInterfaces"] =
        json!([{"id": nic_id, "properties": {"primary": true, "deleteOption": "Delete"}}]);
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
                // The NIC and IP go with the VM (deleteOption Delete).
                let prefix = format!("/{}-", key.1);
                st.network.retain(|id, _| {
                    !id.ends_with(&format!("{}nic", prefix)) && !id.ends_with(&format!("{}ip", prefix))
                });
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

async fn network(
    State(st): State<Arc<Mutex<St>>>,
    h: HeaderMap,
    Path((sub, rg, kind, name)): Path<(String, String, String, String)>,
) -> Response {
    let st = st.lock().unwrap();
    if let Err(r) = authorized(&st, &h) {
        return *r;
    }
    let id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{kind}/{name}");
    match st.network.get(&id) {
        Some(v) => answer(200, v.clone()),
        None => arm_error(
            404,
            "ResourceNotFound",
            &format!("The Resource 'Microsoft.Network/{kind}/{name}' under resource group '{rg}' was not found."),
        ),
    }
}

/// `armRegionName eq 'eastus' and (armSkuName eq 'A' or armSkuName eq 'B')` → region, skus.
fn retail_filter(f: &str) -> (Option<String>, Vec<String>) {
    let values = |field: &str| -> Vec<String> {
        f.split(field)
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix("eq '")?.split('\'').next().map(str::to_string))
            .collect()
    };
    (values("armRegionName").into_iter().next(), values("armSkuName"))
}

async fn retail_prices(State(st): State<Arc<Mutex<St>>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let st = st.lock().unwrap();
    let (region, skus) = retail_filter(q.get("$filter").map(String::as_str).unwrap_or(""));
    let rows: Vec<Value> = st
        .retail
        .iter()
        .filter(|r| region.as_ref().is_none_or(|x| *x == r.0) && (skus.is_empty() || skus.contains(&r.1)))
        .map(|(region, arm, sku, price, product, primary)| {
            json!({"currencyCode": "USD", "tierMinimumUnits": 0.0, "retailPrice": price, "unitPrice": price,
                "armRegionName": region, "location": "US East", "effectiveStartDate": "2026-01-01T00:00:00Z",
                "meterName": sku, "productName": product, "skuName": sku, "serviceName": "Virtual Machines",
                "serviceFamily": "Compute", "unitOfMeasure": "1 Hour", "type": "Consumption", "isPrimaryMeterRegion": primary,
                "armSkuName": arm})
        })
        .collect();
    // Two items a page, so clients must follow NextPageLink.
    let skip: usize = q.get("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = rows.iter().skip(skip).take(2).cloned().collect();
    let next = (skip + 2 < rows.len()).then(|| {
        let filter = q.get("$filter").cloned().unwrap_or_default();
        encode_url(
            &format!("{}/api/retail/prices", st.url),
            &[("$filter", &filter), ("$skip", &(skip + 2).to_string())],
        )
    });
    answer(
        200,
        json!({"BillingCurrency": "USD", "CustomerEntityId": "Default", "CustomerEntityType": "Retail",
        "Items": page, "NextPageLink": next, "Count": rows.len()}),
    )
}

fn encode_url(base: &str, params: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    format!("{base}?{}", q.join("&"))
}
