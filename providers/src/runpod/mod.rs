//! RunPod through its GraphQL API (the API its SDKs and CLI use; an API key, no official Rust SDK).
//!
//! - offerings: the catalog's RunPod rows (`{n}x_{GPU}_{SECURE|COMMUNITY}` per data center),
//!   priced live from `gpuTypes` (per-GPU secure/community prices; spot = interruptible, at the
//!   `…SpotPrice`); a failed refresh keeps the last prices ([`PriceBook`]).
//! - launch: `podFindAndDeployOnDemand` (on-demand) or `podRentInterruptable` (spot, bidding
//!   RunPod's live minimum bid, read just before, if it is within fleet's cap) in the offering's
//!   data center. Pods carry no
//!   tags, so the fleet's tags travel as environment variables (`FLEET_TAG_*`), with the offering;
//!   the pod is named after the idempotency token, and a launch first looks for a pod carrying it.
//! - list/get: `myself { pods }` / `pod(input)`, keeping this fleet's pods.
//! - terminate: `podTerminate`, after checking the pod is ours.

mod errors;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::{Availability, CapacityType, Catalog, Cloud, Offering, OfferingKey, Price, Secret, Source};
use reqwest::Method;
use serde_json::{Value, json};

use crate::prices::PriceBook;
use crate::rest::{Auth, Rest};
use crate::{Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET, TAG_TOKEN};

pub const DEFAULT_ENDPOINT: &str = "https://api.runpod.io/graphql";

#[derive(Debug, Clone)]
pub struct RunpodConfig {
    pub fleet: String,
    pub api_key: Secret,
    /// The GraphQL endpoint ([`DEFAULT_ENDPOINT`]; a local server in tests).
    pub endpoint: String,
    /// The container image pods run (it must start sshd; RunPod's images do, with `PUBLIC_KEY`).
    pub image_name: String,
    /// The SSH public key put in the pod (`PUBLIC_KEY`), so fleet can bootstrap it.
    pub ssh_public_key: Option<String>,
    pub container_disk_gb: u32,
    /// Data centers fleet may use (`US-CA-1`…, any case); empty means all.
    pub data_centers: Vec<String>,
    pub timeout: Duration,
}

impl RunpodConfig {
    pub fn new(fleet: &str, api_key: Secret, image_name: &str) -> RunpodConfig {
        RunpodConfig {
            fleet: fleet.into(),
            api_key,
            endpoint: DEFAULT_ENDPOINT.into(),
            image_name: image_name.into(),
            ssh_public_key: None,
            container_disk_gb: 50,
            data_centers: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The catalog's short GPU names → RunPod's GPU type ids.
const GPU_IDS: [(&str, &str); 5] = [
    ("H100-SXM", "NVIDIA H100 80GB HBM3"),
    ("H100", "NVIDIA H100 PCIe"),
    ("H100-NVL", "NVIDIA H100 NVL"),
    ("A100-80GB", "NVIDIA A100 80GB PCIe"),
    ("A100-80GB-SXM", "NVIDIA A100-SXM4-80GB"),
];

/// `2x_H100-SXM_SECURE` → (2, "NVIDIA H100 80GB HBM3", secure).
fn parse_type(name: &str) -> Option<(u32, &'static str, bool)> {
    let (count, rest) = name.split_once("x_")?;
    let (short, cloud) = rest.rsplit_once('_')?;
    let id = GPU_IDS.iter().find(|(s, _)| *s == short)?.1;
    Some((count.parse().ok()?, id, cloud == "SECURE"))
}

const ENV_TAG: &str = "FLEET_TAG_";
const ENV_OFFERING: &str = "FLEET_OFFERING";

fn tag_env_key(tag: &str) -> String {
    format!("{ENV_TAG}{}", tag.to_ascii_uppercase().replace('-', "_"))
}

/// Tags and the offering back from a pod's `env` (`["KEY=value", …]`).
fn from_env(env: &Value) -> (BTreeMap<String, String>, Option<String>) {
    let mut tags = BTreeMap::new();
    let mut offering = None;
    for kv in env.as_array().into_iter().flatten().filter_map(Value::as_str) {
        let Some((k, v)) = kv.split_once('=') else { continue };
        if let Some(t) = k.strip_prefix(ENV_TAG) {
            tags.insert(t.to_ascii_lowercase().replace('_', "-"), v.to_string());
        } else if k == ENV_OFFERING {
            offering = Some(v.to_string());
        }
    }
    (tags, offering)
}

/// The offering as a pod carries it: `us/us-ca-1/1x_H100-SXM_SECURE/spot`.
fn offering_env(o: &OfferingKey) -> String {
    format!("{}/{}/{}/{}", o.region, o.zone.as_deref().unwrap_or("-"), o.instance_type, o.capacity)
}

fn parse_offering(s: &str) -> Option<OfferingKey> {
    let mut it = s.split('/');
    let (region, zone, ty, cap) = (it.next()?, it.next()?, it.next()?, it.next()?);
    Some(OfferingKey {
        cloud: Cloud::Runpod,
        region: region.into(),
        zone: (zone != "-").then(|| zone.to_string()),
        instance_type: ty.into(),
        capacity: CapacityType::from_str(cap).ok()?,
    })
}

const POD_FIELDS: &str = "id name desiredStatus costPerHr gpuCount env machine { gpuTypeId dataCenterId } \
     runtime { ports { ip isIpPublic privatePort publicPort type } }";

pub struct RunpodProvider {
    cfg: RunpodConfig,
    rest: Rest,
    catalog: std::sync::Arc<Catalog>,
    prices: PriceBook,
}

impl fmt::Debug for RunpodProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunpodProvider").field("config", &self.cfg).finish_non_exhaustive()
    }
}

impl RunpodProvider {
    pub fn new(cfg: RunpodConfig, catalog: std::sync::Arc<Catalog>) -> RunpodProvider {
        // The endpoint is the full GraphQL URL: the client's base is it, the path empty.
        let rest = Rest::new(&cfg.endpoint, cfg.api_key.clone(), Auth::Bearer, cfg.timeout);
        RunpodProvider { cfg, rest, catalog, prices: PriceBook::new() }
    }

    /// Runs one GraphQL document; `Ok` is its `data.<field>`.
    async fn gql(
        &self,
        field: &str,
        query: &str,
        input: Option<Value>,
        offering: Option<&OfferingKey>,
    ) -> ProviderResult<Value> {
        let mut body = json!({ "query": query });
        if let Some(i) = input {
            body["variables"] = json!({ "input": i });
        }
        let v = self.rest.call(Method::POST, "", Some(&body)).await.map_err(|e| errors::map(e, offering))?;
        if let Some(m) = v["errors"][0]["message"].as_str() {
            return Err(errors::from_message(m, offering));
        }
        Ok(v["data"][field].clone())
    }

    fn zone_allowed(&self, zone: Option<&str>) -> bool {
        self.cfg.data_centers.is_empty()
            || zone.is_some_and(|z| self.cfg.data_centers.iter().any(|d| d.eq_ignore_ascii_case(z)))
    }

    fn catalog_rows(&self) -> Vec<Offering> {
        self.catalog
            .offerings()
            .iter()
            .filter(|o| {
                o.cloud == Cloud::Runpod
                    && self.zone_allowed(o.zone.as_deref())
                    && parse_type(&o.instance.name).is_some()
            })
            .cloned()
            .collect()
    }

    async fn live_offerings(&self) -> ProviderResult<Vec<Offering>> {
        let types = self
            .gql(
                "gpuTypes",
                "query { gpuTypes { id displayName memoryInGb securePrice communityPrice secureSpotPrice communitySpotPrice } }",
                None,
                None,
            )
            .await?;
        let types = types.as_array().cloned().unwrap_or_default();
        let today = chrono::Utc::now().date_naive();
        let mut rows = self.catalog_rows();
        for o in &mut rows {
            let Some((count, id, secure)) = parse_type(&o.instance.name) else { continue };
            let field = match (secure, o.capacity) {
                (true, CapacityType::Spot) => "secureSpotPrice",
                (true, _) => "securePrice",
                (false, CapacityType::Spot) => "communitySpotPrice",
                (false, _) => "communityPrice",
            };
            let per_gpu = types.iter().find(|t| t["id"] == id).and_then(|t| t[field].as_f64()).filter(|p| *p > 0.0);
            o.source = Source { name: "runpod gpuTypes".into(), as_of: today };
            match per_gpu {
                Some(p) => {
                    // The API's Float is a decimal with cents: read it as such, then multiply exactly.
                    let per = Price::parse_decimal(&format!("{p:.4}"))
                        .map_err(|e| ProviderError::Transient { detail: format!("{id} {field}: {e}") })?;
                    o.price = Price::per_hour(std::iter::repeat_n(per.hourly(), count as usize).sum());
                    o.availability = Availability::Unknown;
                }
                None => {
                    o.availability = Availability::Unavailable { reason: format!("runpod lists no {field} for {id}") };
                }
            }
        }
        Ok(rows)
    }

    fn instance(&self, p: &Value) -> ProviderResult<Instance> {
        let id = p["id"].as_str().ok_or_else(|| ProviderError::Transient { detail: "pod without id".into() })?;
        let (tags, offering) = from_env(&p["env"]);
        let offering = offering
            .as_deref()
            .and_then(parse_offering)
            .ok_or_else(|| ProviderError::Transient { detail: format!("pod {id} carries no valid {ENV_OFFERING}") })?;
        let ports: Vec<&Value> = p["runtime"]["ports"].as_array().into_iter().flatten().collect();
        let public_ip = ports
            .iter()
            .find(|port| port["isIpPublic"] == true)
            .and_then(|port| port["ip"].as_str())
            .and_then(|s| s.parse().ok());
        // RunPod maps the pod's port 22 to another port on its public address (`publicPort`):
        // bootstrap must dial that one, never 22.
        let ssh = ports
            .iter()
            .find(|port| port["isIpPublic"] == true && port["privatePort"] == 22 && port["type"] == "tcp")
            .and_then(|port| {
                let ip: std::net::IpAddr = port["ip"].as_str()?.parse().ok()?;
                let public_port = u16::try_from(port["publicPort"].as_u64()?).ok()?;
                Some(std::net::SocketAddr::new(ip, public_port))
            });
        let state = match p["desiredStatus"].as_str() {
            Some("RUNNING") if p["runtime"].is_null() => InstanceState::Pending,
            Some("RUNNING") => InstanceState::Running,
            Some("EXITED") => InstanceState::Stopped,
            _ => InstanceState::Terminated,
        };
        Ok(Instance {
            id: id.to_string(),
            offering,
            state,
            public_ip,
            private_ip: None,
            ssh,
            ssh_host_keys: Vec::new(),
            launched_at: None,
            tags,
        })
    }

    fn ours(&self, p: &Value) -> bool {
        from_env(&p["env"]).0.get(TAG_FLEET) == Some(&self.cfg.fleet)
    }

    async fn pods(&self) -> ProviderResult<Vec<Value>> {
        let me = self.gql("myself", &format!("query {{ myself {{ pods {{ {POD_FIELDS} }} }} }}"), None, None).await?;
        Ok(me["pods"].as_array().cloned().unwrap_or_default())
    }

    /// What to bid per GPU for a spot pod: RunPod's live minimum bid for this GPU type, count and
    /// cloud (`gpuTypes { lowestPrice { minimumBidPrice } }`, as RunPod's own clients read it; it
    /// moves with demand, and a bid under it is refused). Interruptible pods are billed at the
    /// bid, so fleet bids the minimum, never more than its cap (`max_price`): a minimum above the
    /// cap means the offering cannot be had at the price fleet reserved for it.
    async fn bid_per_gpu(&self, req: &LaunchRequest, gpu_id: &str, gpus: u32, secure: bool) -> ProviderResult<String> {
        let o = &req.offering;
        let q = format!(
            "query LowestPrice($input: GpuTypeFilter) {{ gpuTypes(input: $input) {{ id lowestPrice(input: {{gpuCount: {gpus}, secureCloud: {secure}}}) {{ minimumBidPrice uninterruptablePrice }} }} }}"
        );
        let types = self.gql("gpuTypes", &q, Some(json!({"id": gpu_id})), Some(o)).await?;
        let min = types
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == gpu_id)
            .and_then(|t| t["lowestPrice"]["minimumBidPrice"].as_f64())
            .filter(|p| *p > 0.0)
            .ok_or_else(|| ProviderError::InsufficientCapacity {
                offering: o.clone(),
                detail: format!("runpod quotes no minimum bid for {gpus}x {gpu_id}: none interruptible now"),
            })?;
        let min = Price::parse_decimal(&format!("{min:.4}"))
            .map_err(|e| ProviderError::Transient { detail: format!("minimumBidPrice {min}: {e}") })?;
        if let Some(cap) = req.max_price {
            let cap = cap.per_gpu(gpus);
            if min.hourly() > cap.hourly() {
                return Err(ProviderError::InsufficientCapacity {
                    offering: o.clone(),
                    detail: format!(
                        "runpod's minimum bid {} per GPU is above fleet's cap {} per GPU",
                        min.hourly().to_decimal_string(),
                        cap.hourly().to_decimal_string()
                    ),
                });
            }
        }
        Ok(min.hourly().to_decimal_string())
    }
}

#[async_trait]
impl Provider for RunpodProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Runpod
    }

    fn name(&self) -> String {
        "runpod".into()
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        let live = self.live_offerings().await;
        self.prices.resolve(&self.name(), live, || self.catalog_rows()).map(|(rows, _)| rows)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        let o = &req.offering;
        let invalid = |detail: String| Err(ProviderError::InvalidRequest { detail });
        req.check(Cloud::Runpod, &self.cfg.fleet)?;
        let Some((count, gpu_id, secure)) = parse_type(&o.instance_type) else {
            return invalid(format!("{} is not a RunPod instance type fleet knows", o.instance_type));
        };
        let Some(zone) = o.zone.as_deref() else { return invalid(format!("{o} names no data center")) };
        if let Some(p) = self
            .pods()
            .await?
            .into_iter()
            .find(|p| self.ours(p) && from_env(&p["env"]).0.get(TAG_TOKEN) == Some(&req.idempotency_token))
        {
            return self.instance(&p);
        }
        let mut env: Vec<Value> = req.tags.iter().map(|(k, v)| json!({"key": tag_env_key(k), "value": v})).collect();
        env.push(json!({"key": ENV_OFFERING, "value": offering_env(o)}));
        if let Some(k) = &self.cfg.ssh_public_key {
            env.push(json!({"key": "PUBLIC_KEY", "value": k}));
        }
        let mut input = json!({
            "name": req.idempotency_token,
            "imageName": self.cfg.image_name,
            "gpuTypeId": gpu_id,
            "gpuCount": count,
            "cloudType": if secure { "SECURE" } else { "COMMUNITY" },
            "dataCenterId": zone.to_ascii_uppercase(),
            "containerDiskInGb": self.cfg.container_disk_gb,
            "volumeInGb": 0,
            "ports": "22/tcp",
            "supportPublicIp": true,
            "startSsh": true,
            "env": env,
        });
        let field = match o.capacity {
            CapacityType::OnDemand => "podFindAndDeployOnDemand",
            CapacityType::Spot => {
                let bid = self.bid_per_gpu(req, gpu_id, count, secure).await?;
                // GraphQL Float: the decimal text as a JSON number.
                input["bidPerGpu"] = serde_json::from_str(&bid).unwrap_or(json!(0));
                "podRentInterruptable"
            }
            CapacityType::Reserved => unreachable!("LaunchRequest::check refuses reserved capacity"),
        };
        let input_type =
            if field == "podRentInterruptable" { "PodRentInterruptableInput" } else { "PodFindAndDeployOnDemandInput" };
        let q = format!("mutation Deploy($input: {input_type}!) {{ {field}(input: $input) {{ {POD_FIELDS} }} }}");
        let p = self.gql(field, &q, Some(input), Some(o)).await?;
        if p.is_null() {
            // RunPod's way of saying "nothing fits" on some paths: data null, no error.
            return Err(ProviderError::InsufficientCapacity {
                offering: o.clone(),
                detail: "runpod deployed no pod".into(),
            });
        }
        self.instance(&p)
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let q = format!("query Pod($input: PodFilter!) {{ pod(input: $input) {{ {POD_FIELDS} }} }}");
        let p = self.gql("pod", &q, Some(json!({"podId": id})), None).await?;
        if p.is_null() || !self.ours(&p) {
            return Err(ProviderError::NotFound { what: format!("pod {id} of fleet {}", self.cfg.fleet) });
        }
        self.instance(&p)
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut out = Vec::new();
        for p in self.pods().await?.iter().filter(|p| self.ours(p)) {
            let i = self.instance(p)?;
            if i.state.is_live() {
                out.push(i);
            }
        }
        Ok(out)
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        match self.get(id).await {
            Err(ProviderError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
            Ok(i) if i.state == InstanceState::Terminated => return Ok(()),
            Ok(_) => {}
        }
        let q = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }";
        match self.gql("podTerminate", q, Some(json!({"podId": id})), None).await {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_type_names_parse() {
        assert_eq!(parse_type("2x_H100-SXM_SECURE"), Some((2, "NVIDIA H100 80GB HBM3", true)));
        assert_eq!(parse_type("1x_A100-80GB-SXM_COMMUNITY"), Some((1, "NVIDIA A100-SXM4-80GB", false)));
        assert_eq!(parse_type("1x_RTX4090_SECURE"), None);
        assert_eq!(tag_env_key("fleet-name"), "FLEET_TAG_FLEET_NAME");
        let (tags, off) =
            from_env(&json!(["FLEET_TAG_FLEET_NAME=prod", "FLEET_OFFERING=us/us-ca-1/1x_H100_SECURE/spot", "X=1"]));
        assert_eq!(tags.get("fleet-name").map(String::as_str), Some("prod"));
        assert_eq!(off.as_deref(), Some("us/us-ca-1/1x_H100_SECURE/spot"));
    }
}
