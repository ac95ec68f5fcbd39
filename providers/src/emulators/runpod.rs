//! RunPod's GraphQL API (`POST /graphql`), the API its own SDKs and CLI use: `gpuTypes` with
//! per-GPU prices, `podFindAndDeployOnDemand`, `podRentInterruptable`, `podTerminate`,
//! `myself { pods }` and `pod(input)`, and `gpuTypes(input) { lowestPrice { minimumBidPrice } }`:
//! the minimum bid for interruptible pods, which moves ([`RunpodEmulator::set_min_bid`]); a bid
//! under it is refused as RunPod refuses it. A running pod's port 22 is mapped to another public
//! port (`runtime.ports[].publicPort`), as RunPod maps it. Errors come as GraphQL does: HTTP 200 with
//! `{"errors": [{"message": …}], "data": null}`, except a bad API key (HTTP 401).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::{Fault, Running, json as answer, new_id, serve};

/// The capacity error RunPod answers when no machine fits (its exact words).
pub const NO_INSTANCES: &str =
    "There are no longer any instances available with the requested specifications. Please refresh and try again.";

#[derive(Debug, Clone)]
pub struct GpuType {
    pub id: &'static str,
    pub display_name: &'static str,
    pub memory_gb: u32,
    pub secure_price: f64,
    pub secure_spot_price: f64,
    pub community_price: f64,
    pub community_spot_price: f64,
}

pub fn default_gpu_types() -> Vec<GpuType> {
    vec![
        GpuType {
            id: "NVIDIA H100 80GB HBM3",
            display_name: "H100 SXM",
            memory_gb: 80,
            secure_price: 2.69,
            secure_spot_price: 2.09,
            community_price: 2.49,
            community_spot_price: 1.99,
        },
        GpuType {
            id: "NVIDIA A100 80GB PCIe",
            display_name: "A100 PCIe",
            memory_gb: 80,
            secure_price: 1.64,
            secure_spot_price: 1.19,
            community_price: 1.19,
            community_spot_price: 0.99,
        },
        GpuType {
            id: "NVIDIA RTX A6000",
            display_name: "RTX A6000",
            memory_gb: 48,
            secure_price: 0.49,
            secure_spot_price: 0.39,
            community_price: 0.33,
            community_spot_price: 0.25,
        },
    ]
}

#[derive(Debug)]
struct St {
    key: String,
    gpu_types: Vec<GpuType>,
    /// GPUs free per (gpu type id, data center id).
    free: HashMap<(String, String), u32>,
    pods: BTreeMap<String, Value>,
    /// Dollars left in the account; a deploy needs at least an hour of the pod's cost.
    balance: f64,
    next_ip: u32,
    /// Minimum bid per GPU for interruptible pods, by GPU type (else its spot price).
    min_bid: HashMap<String, f64>,
    /// Where every pod's sshd is published: (public ip, public port) for the pod's port 22.
    ssh: Option<(String, u16)>,
}

#[derive(Debug)]
pub struct RunpodEmulator {
    pub running: Running,
    st: Arc<Mutex<St>>,
}

impl std::ops::Deref for RunpodEmulator {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

/// A GraphQL error answer with this message.
pub fn graphql_error(message: &str) -> Value {
    json!({"errors": [{"message": message, "path": ["podFindAndDeployOnDemand"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}}], "data": null})
}

/// The next deploy fails for want of capacity.
pub fn no_capacity() -> Fault {
    Fault {
        method: "POST",
        path_contains: "/graphql".into(),
        body_contains: "podFindAndDeployOnDemand",
        status: 200,
        headers: vec![],
        body: graphql_error(NO_INSTANCES),
    }
}

impl RunpodEmulator {
    /// `data_centers`: where each GPU type has `gpus` free GPUs.
    pub async fn start(key: &str, data_centers: &[&str], gpus: u32) -> RunpodEmulator {
        let gpu_types = default_gpu_types();
        let mut free = HashMap::new();
        for g in &gpu_types {
            for dc in data_centers {
                free.insert((g.id.to_string(), dc.to_string()), gpus);
            }
        }
        let st = Arc::new(Mutex::new(St {
            key: key.into(),
            gpu_types,
            free,
            pods: BTreeMap::new(),
            balance: 1000.0,
            next_ip: 10,
            min_bid: HashMap::new(),
            ssh: None,
        }));
        let app = Router::new().route("/graphql", post(graphql)).with_state(st.clone());
        RunpodEmulator { running: serve(app).await, st }
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.running.url)
    }

    pub fn set_free_gpus(&self, gpu_type: &str, data_center: &str, n: u32) {
        self.st.lock().unwrap().free.insert((gpu_type.into(), data_center.into()), n);
    }

    /// RunPod's minimum bid per GPU for `gpu_type`'s interruptible pods moves to `per_gpu`.
    pub fn set_min_bid(&self, gpu_type: &str, per_gpu: f64) {
        self.st.lock().unwrap().min_bid.insert(gpu_type.into(), per_gpu);
    }

    /// Publishes every pod's sshd at `ip:port` (a test's own sshd), instead of a made-up address.
    pub fn set_ssh_endpoint(&self, ip: &str, port: u16) {
        self.st.lock().unwrap().ssh = Some((ip.into(), port));
    }

    pub fn set_balance(&self, dollars: f64) {
        self.st.lock().unwrap().balance = dollars;
    }

    /// Pods not terminated.
    pub fn live(&self) -> Vec<Value> {
        self.st.lock().unwrap().pods.values().filter(|p| p["desiredStatus"] != "TERMINATED").cloned().collect()
    }

    /// Every GraphQL operation received, as (operation field, variables).
    pub fn operations(&self) -> Vec<(String, Value)> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/graphql")
            .map(|r| (operation(r.body["query"].as_str().unwrap_or("")), r.body["variables"].clone()))
            .collect()
    }
}

/// The first field of a GraphQL document: `mutation { podTerminate(...) }` → `podTerminate`.
fn operation(q: &str) -> String {
    let body = q.split_once('{').map(|(_, b)| b).unwrap_or("");
    body.trim_start().split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("").to_string()
}

fn data(field: &str, v: Value) -> Response {
    answer(200, json!({ "data": { field: v } }))
}

fn error(message: &str) -> Response {
    answer(200, graphql_error(message))
}

async fn graphql(State(st): State<Arc<Mutex<St>>>, h: HeaderMap, body: axum::Json<Value>) -> Response {
    let mut st = st.lock().unwrap();
    let bearer = h.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    if bearer.as_deref() != Some(&format!("Bearer {}", st.key)) {
        // RunPod answers a bad key before GraphQL runs: plain 401.
        return answer(401, json!({"error": "Unauthorized", "status": 401}));
    }
    let q = body.0["query"].as_str().unwrap_or("").to_string();
    let input = &body.0["variables"]["input"];
    match operation(&q).as_str() {
        "gpuTypes" if q.contains("lowestPrice") => {
            // `lowestPrice(input: {gpuCount: N, secureCloud: B})`, read from the document's text.
            let secure = !q.contains("secureCloud: false");
            let types: Vec<Value> = st
                .gpu_types
                .iter()
                .filter(|g| input["id"].as_str().is_none_or(|id| id == g.id))
                .map(|g| {
                    let spot = if secure { g.secure_spot_price } else { g.community_spot_price };
                    let min = st.min_bid.get(g.id).copied().unwrap_or(spot);
                    let on_demand = if secure { g.secure_price } else { g.community_price };
                    json!({"id": g.id, "lowestPrice": {"minimumBidPrice": min, "uninterruptablePrice": on_demand}})
                })
                .collect();
            data("gpuTypes", json!(types))
        }
        "gpuTypes" => {
            let types: Vec<Value> = st
                .gpu_types
                .iter()
                .map(|g| {
                    json!({
                        "id": g.id, "displayName": g.display_name, "memoryInGb": g.memory_gb,
                        "securePrice": g.secure_price, "communityPrice": g.community_price,
                        "secureSpotPrice": g.secure_spot_price, "communitySpotPrice": g.community_spot_price
                    })
                })
                .collect();
            data("gpuTypes", json!(types))
        }
        op @ ("podFindAndDeployOnDemand" | "podRentInterruptable") => {
            let spot = op == "podRentInterruptable";
            let (Some(gpu), Some(count)) = (input["gpuTypeId"].as_str(), input["gpuCount"].as_u64()) else {
                return error("gpuTypeId and gpuCount are required");
            };
            let Some(g) = st.gpu_types.iter().find(|g| g.id == gpu).cloned() else {
                return error(&format!("Invalid GPU type: {gpu}"));
            };
            let secure = input["cloudType"].as_str() != Some("COMMUNITY");
            let per_gpu = match (secure, spot) {
                (true, false) => g.secure_price,
                (true, true) => g.secure_spot_price,
                (false, false) => g.community_price,
                (false, true) => g.community_spot_price,
            };
            if spot {
                let Some(bid) = input["bidPerGpu"].as_f64() else { return error("bidPerGpu is required") };
                let min = st.min_bid.get(gpu).copied().unwrap_or(per_gpu);
                if bid + 1e-9 < min {
                    return error(&format!("Your bid price of {bid} is below the minimum bid of {min}."));
                }
            }
            // Interruptible pods are billed at their bid.
            let cost = if spot { input["bidPerGpu"].as_f64().unwrap_or(per_gpu) } else { per_gpu } * count as f64;
            if st.balance < cost {
                return error("You do not have enough funds to deploy this pod. Please add funds to your account.");
            }
            let dc = input["dataCenterId"].as_str().unwrap_or("").to_string();
            let free = st.free.entry((gpu.to_string(), dc.clone())).or_insert(0);
            if u64::from(*free) < count {
                return error(NO_INSTANCES);
            }
            *free -= count as u32;
            let id = new_id(14);
            st.next_ip += 1;
            let env: Vec<Value> = input["env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|kv| {
                            json!(format!(
                                "{}={}",
                                kv["key"].as_str().unwrap_or(""),
                                kv["value"].as_str().unwrap_or("")
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (ssh_ip, ssh_port) = st.ssh.clone().unwrap_or((format!("203.0.113.{}", st.next_ip), 22022));
            let pod = json!({
                "id": id,
                "name": input["name"],
                "imageName": input["imageName"],
                "desiredStatus": "RUNNING",
                "costPerHr": cost,
                "gpuCount": count,
                "interruptible": spot,
                "env": env,
                "machineId": new_id(12),
                "machine": {"gpuTypeId": gpu, "dataCenterId": dc},
                "runtime": null,
                "publicIp": ssh_ip,
                "sshPort": ssh_port,
            });
            st.pods.insert(id.clone(), pod.clone());
            data(op, pod)
        }
        "podTerminate" => {
            let id = input["podId"].as_str().unwrap_or("");
            let Some(p) = st.pods.get_mut(id).filter(|p| p["desiredStatus"] != "TERMINATED") else {
                return error(&format!("Pod {id} not found"));
            };
            p["desiredStatus"] = json!("TERMINATED");
            let key = (
                p["machine"]["gpuTypeId"].as_str().unwrap_or("").to_string(),
                p["machine"]["dataCenterId"].as_str().unwrap_or("").to_string(),
            );
            let n = p["gpuCount"].as_u64().unwrap_or(0) as u32;
            *st.free.entry(key).or_insert(0) += n;
            data("podTerminate", Value::Null)
        }
        "myself" => {
            let pods: Vec<Value> = st.pods.values().filter(|p| p["desiredStatus"] != "TERMINATED").map(shown).collect();
            answer(200, json!({"data": {"myself": {"pods": pods}}}))
        }
        "pod" => {
            let id = input["podId"].as_str().unwrap_or("");
            // RunPod answers an unknown (or long terminated) pod with null.
            let p = st.pods.get(id).filter(|p| p["desiredStatus"] != "TERMINATED").map(shown).unwrap_or(Value::Null);
            data("pod", p)
        }
        other => error(&format!("Cannot query field \"{other}\" on type \"Query\".")),
    }
}

/// A pod as queries show it: the runtime (ports) appears once the container runs.
fn shown(p: &Value) -> Value {
    let mut p = p.clone();
    let ip = p["publicIp"].clone();
    let port = p["sshPort"].clone();
    p["runtime"] = json!({"ports": [
        {"ip": ip, "isIpPublic": true, "privatePort": 22, "publicPort": port, "type": "tcp"},
        {"ip": "10.0.0.2", "isIpPublic": false, "privatePort": 22, "publicPort": 22, "type": "tcp"}
    ]});
    if let Some(o) = p.as_object_mut() {
        o.remove("publicIp");
        o.remove("sshPort");
    }
    p
}
