//! Lambda Cloud through its REST API v1 (an API key; no official Rust SDK exists).
//!
//! - offerings: `GET /instance-types`: live prices (`price_cents_per_hour`) and the regions
//!   with capacity now (`regions_with_capacity_available`); other regions the catalog lists are
//!   offered as Unavailable. A failed refresh keeps the last prices ([`PriceBook`]).
//! - launch: Lambda has no idempotency token, so the instance is *named* after the token and
//!   tagged with it, and a launch first looks for an instance carrying the token; on-demand only
//!   (Lambda sells no spot).
//! - list: `GET /instances`, keeping those tagged with this fleet.
//! - terminate: `POST /instance-operations/terminate`, after checking the instance is ours.

mod errors;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::Secret;
use fleet_core::{
    Availability, CapacityType, Catalog, Cloud, GpuModel, InstanceType, Interconnect, Offering, OfferingKey, Price,
    Source,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::prices::PriceBook;
use crate::rest::{Auth, Rest};
use crate::{Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET, TAG_TOKEN};

pub const DEFAULT_ENDPOINT: &str = "https://cloud.lambda.ai/api/v1";

#[derive(Debug, Clone)]
pub struct LambdaConfig {
    pub fleet: String,
    pub api_key: Secret,
    /// The API's base URL, `…/api/v1` ([`DEFAULT_ENDPOINT`]; a local server in tests).
    pub endpoint: String,
    /// The name of an SSH key already in the Lambda account (the API takes exactly one).
    pub ssh_key_name: String,
    /// Regions fleet may use; empty means all.
    pub regions: Vec<String>,
    pub timeout: Duration,
}

impl LambdaConfig {
    pub fn new(fleet: &str, api_key: Secret, ssh_key_name: &str) -> LambdaConfig {
        LambdaConfig {
            fleet: fleet.into(),
            api_key,
            endpoint: DEFAULT_ENDPOINT.into(),
            ssh_key_name: ssh_key_name.into(),
            regions: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

pub struct LambdaProvider {
    cfg: LambdaConfig,
    rest: Rest,
    catalog: std::sync::Arc<Catalog>,
    prices: PriceBook,
}

impl fmt::Debug for LambdaProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaProvider").field("config", &self.cfg).finish_non_exhaustive()
    }
}

/// The GPU in Lambda's `gpu_description` ("H100 (80 GB SXM5)"); `None` for GPUs fleet does not place on.
fn gpu_of(desc: &str) -> Option<GpuModel> {
    let d = desc.to_ascii_uppercase();
    if d.contains("GH200") {
        return None;
    }
    if d.contains("H100") {
        return Some(if d.contains("PCIE") {
            GpuModel::H100Pcie
        } else if d.contains("NVL") {
            GpuModel::H100Nvl
        } else {
            GpuModel::H100Sxm
        });
    }
    if d.contains("A100") {
        return Some(if d.contains("80 GB") || d.contains("80GB") { GpuModel::A100_80GB } else { GpuModel::A100_40GB });
    }
    None
}

fn state_of(status: &str) -> InstanceState {
    match status {
        "booting" => InstanceState::Pending,
        "active" | "unhealthy" => InstanceState::Running,
        // terminating, terminated, preempted: no longer billed (or about to stop).
        _ => InstanceState::Terminated,
    }
}

fn tags_of(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter().filter_map(|t| Some((t["key"].as_str()?.to_string(), t["value"].as_str()?.to_string()))).collect()
        })
        .unwrap_or_default()
}

impl LambdaProvider {
    pub fn new(cfg: LambdaConfig, catalog: std::sync::Arc<Catalog>) -> LambdaProvider {
        let rest = Rest::new(&cfg.endpoint, cfg.api_key.clone(), Auth::Bearer, cfg.timeout);
        LambdaProvider { cfg, rest, catalog, prices: PriceBook::new() }
    }

    fn region_allowed(&self, r: &str) -> bool {
        self.cfg.regions.is_empty() || self.cfg.regions.iter().any(|x| x == r)
    }

    fn catalog_rows(&self) -> Vec<Offering> {
        self.catalog
            .offerings()
            .iter()
            .filter(|o| o.cloud == Cloud::Lambda && self.region_allowed(&o.region))
            .cloned()
            .collect()
    }

    async fn live_offerings(&self) -> ProviderResult<Vec<Offering>> {
        let v = self.rest.call(Method::GET, "/instance-types", None).await.map_err(|e| errors::map(e, None))?;
        let Some(types) = v["data"].as_object() else {
            return Err(ProviderError::Transient { detail: "instance-types answer has no data object".into() });
        };
        let today = chrono::Utc::now().date_naive();
        let catalog = self.catalog_rows();
        let mut out = Vec::new();
        for (name, item) in types {
            let t = &item["instance_type"];
            let Some(gpu) = t["gpu_description"].as_str().and_then(gpu_of) else { continue };
            let Some(cents) = t["price_cents_per_hour"].as_u64() else { continue };
            let specs = &t["specs"];
            let gpus = specs["gpus"].as_u64().unwrap_or(0) as u32;
            if gpus == 0 {
                continue;
            }
            let known = catalog.iter().find(|o| &o.instance.name == name).map(|o| o.instance.clone());
            let instance = known.unwrap_or(InstanceType {
                name: name.clone(),
                gpu,
                gpu_count: gpus,
                vcpus: specs["vcpus"].as_u64().unwrap_or(0) as u32,
                memory_gib: specs["memory_gib"].as_u64().unwrap_or(0) as u32,
                interconnect: (gpus > 1 && gpu == GpuModel::H100Sxm).then_some(Interconnect::Nvswitch),
            });
            let price = Price::parse_decimal(&format!("{}.{:02}", cents / 100, cents % 100))
                .map_err(|e| ProviderError::Transient { detail: format!("price of {name}: {e}") })?;
            let with_capacity: Vec<String> = item["regions_with_capacity_available"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let mut regions: Vec<String> =
                catalog.iter().filter(|o| &o.instance.name == name).map(|o| o.region.clone()).collect();
            regions.extend(with_capacity.iter().cloned());
            regions.sort();
            regions.dedup();
            for region in regions.into_iter().filter(|r| self.region_allowed(r)) {
                let availability = if with_capacity.contains(&region) {
                    Availability::Available
                } else {
                    Availability::Unavailable { reason: format!("lambda reports no {name} capacity in {region}") }
                };
                out.push(Offering {
                    cloud: Cloud::Lambda,
                    region,
                    zone: None,
                    instance: instance.clone(),
                    capacity: CapacityType::OnDemand,
                    price,
                    source: Source { name: "lambda instance-types".into(), as_of: today },
                    availability,
                });
            }
        }
        Ok(out)
    }

    fn instance(&self, v: &Value) -> ProviderResult<Instance> {
        let id = v["id"].as_str().ok_or_else(|| ProviderError::Transient { detail: "instance without id".into() })?;
        let public_ip = v["ip"].as_str().and_then(|s| s.parse().ok());
        let private_ip = v["private_ip"].as_str().and_then(|s| s.parse().ok());
        Ok(Instance {
            id: id.to_string(),
            offering: OfferingKey {
                cloud: Cloud::Lambda,
                region: v["region"]["name"].as_str().unwrap_or("").to_string(),
                zone: None,
                instance_type: v["instance_type"]["name"].as_str().unwrap_or("").to_string(),
                capacity: CapacityType::OnDemand,
            },
            state: state_of(v["status"].as_str().unwrap_or("")),
            public_ip,
            private_ip,
            ssh: crate::ssh_on_22(public_ip, private_ip),
            ssh_host_keys: Vec::new(),
            launched_at: None, // the API does not say
            tags: tags_of(&v["tags"]),
        })
    }

    fn ours(&self, v: &Value) -> bool {
        tags_of(&v["tags"]).get(TAG_FLEET) == Some(&self.cfg.fleet)
    }

    async fn all(&self) -> ProviderResult<Vec<Value>> {
        let v = self.rest.call(Method::GET, "/instances", None).await.map_err(|e| errors::map(e, None))?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }
}

#[async_trait]
impl Provider for LambdaProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Lambda
    }

    fn name(&self) -> String {
        "lambda".into()
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        let live = self.live_offerings().await;
        self.prices.resolve(&self.name(), live, || self.catalog_rows()).map(|(rows, _)| rows)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        let o = &req.offering;
        req.check(Cloud::Lambda, &self.cfg.fleet)?;
        if o.capacity != CapacityType::OnDemand {
            return Err(ProviderError::InvalidRequest { detail: format!("lambda sells only on-demand, not {o}") });
        }
        if let Some(v) = self
            .all()
            .await?
            .into_iter()
            .find(|v| self.ours(v) && tags_of(&v["tags"]).get(TAG_TOKEN) == Some(&req.idempotency_token))
        {
            return self.instance(&v);
        }
        let tags: Vec<Value> = req.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let body = json!({
            "region_name": o.region,
            "instance_type_name": o.instance_type,
            "ssh_key_names": [self.cfg.ssh_key_name],
            "name": req.idempotency_token,
            "tags": tags,
        });
        let v = self
            .rest
            .call(Method::POST, "/instance-operations/launch", Some(&body))
            .await
            .map_err(|e| errors::map(e, Some(o)))?;
        let id = v["data"]["instance_ids"][0]
            .as_str()
            .ok_or_else(|| ProviderError::Transient { detail: "launch answered without an instance id".into() })?
            .to_string();
        match self.rest.call(Method::GET, &format!("/instances/{id}"), None).await {
            Ok(v) => self.instance(&v["data"]),
            // Launched, but not readable yet: report what was asked for; `get` will tell more.
            Err(_) => Ok(Instance {
                id,
                offering: o.clone(),
                state: InstanceState::Pending,
                public_ip: None,
                private_ip: None,
                ssh: None,
                ssh_host_keys: Vec::new(),
                launched_at: None,
                tags: req.tags.clone(),
            }),
        }
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let not_ours = || ProviderError::NotFound { what: format!("instance {id} of fleet {}", self.cfg.fleet) };
        let v =
            self.rest.call(Method::GET, &format!("/instances/{id}"), None).await.map_err(|e| errors::map(e, None))?;
        if !self.ours(&v["data"]) {
            return Err(not_ours());
        }
        self.instance(&v["data"])
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut out = Vec::new();
        for v in self.all().await?.iter().filter(|v| self.ours(v)) {
            let i = self.instance(v)?;
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
        let body = json!({ "instance_ids": [id] });
        match self
            .rest
            .call(Method::POST, "/instance-operations/terminate", Some(&body))
            .await
            .map_err(|e| errors::map(e, None))
        {
            Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_descriptions() {
        assert_eq!(gpu_of("H100 (80 GB SXM5)"), Some(GpuModel::H100Sxm));
        assert_eq!(gpu_of("H100 (80 GB PCIe)"), Some(GpuModel::H100Pcie));
        assert_eq!(gpu_of("A100 (80 GB SXM4)"), Some(GpuModel::A100_80GB));
        assert_eq!(gpu_of("A100 (40 GB PCIe)"), Some(GpuModel::A100_40GB));
        assert_eq!(gpu_of("GH200 (96 GB)"), None);
        assert_eq!(gpu_of("A10 (24 GB PCIe)"), None);
    }
}
