//! Azure virtual machines through `azure_mgmt_compute` (+ `azure_identity` for credentials).
//!
//! - launch: `virtualMachines.createOrUpdate` (PUT, `If-None-Match: *` so a VM is never
//!   overwritten) of a VM named after the idempotency token and tagged with the fleet's tags; its
//!   NIC and public IP are created with it (`networkInterfaceConfigurations`, deleted with it);
//!   spot as `priority = Spot`, `evictionPolicy = Delete`, `billingProfile.maxPrice`. The
//!   long-running operation is polled at its `Azure-AsyncOperation` URL: the SDK's own loop
//!   re-sends the PUT and reduces a failed allocation to "Long running operation failed", losing
//!   the code (AllocationFailed, ZonalAllocationFailed …) placement needs.
//! - get / list: `virtualMachines.get` / `virtualMachines.list` in the fleet's resource group,
//!   keeping VMs tagged with this fleet; ids are VM names.
//! - terminate: `virtualMachines.delete`, polled the same way.
//! - throttling: the SDK's retry policy retries 429 honouring `Retry-After`; past its retries the
//!   call fails as Throttled.

mod errors;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::{AccessToken, TokenCredential};
use azure_mgmt_compute::package_2024_07_01::{Client, models};
use fleet_core::{CapacityType, Catalog, Cloud, Offering, OfferingKey, Secret};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{
    Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET, TAG_TOKEN,
    instance_name,
};

pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
pub const DEFAULT_PRICES_ENDPOINT: &str = "https://prices.azure.com/api/retail/prices";
/// Microsoft.Network's API version for reading a VM's NIC and public IP.
const NETWORK_API: &str = "2024-05-01";

/// A bearer token fixed in advance (tests against a local server; or a token fetched elsewhere).
pub struct FixedToken(pub Secret);

impl fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedToken(***)")
    }
}

#[async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(&self, _scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        Ok(AccessToken::new(self.0.expose().to_string(), later))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

/// A marketplace image: `publisher:offer:sku:version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p: Vec<&str> = s.split(':').collect();
        match p.as_slice() {
            [a, b, c, d] if p.iter().all(|x| !x.is_empty()) => {
                Ok(ImageRef { publisher: (*a).into(), offer: (*b).into(), sku: (*c).into(), version: (*d).into() })
            }
            _ => Err(format!("'{s}' is not an image URN; expected publisher:offer:sku:version")),
        }
    }
}

#[derive(Clone)]
pub struct AzureConfig {
    pub fleet: String,
    pub subscription_id: String,
    pub resource_group: String,
    /// Regions fleet may use; empty means every region the catalog lists.
    pub regions: Vec<String>,
    /// The subnet new VMs join (its full resource id), in the VM's region.
    pub subnet_id: String,
    /// The network security group put on each VM's NIC (its full resource id). Standard public
    /// IPs are closed to inbound traffic unless an NSG allows it, so this one must allow TCP 22
    /// from fleetd, or no node can be bootstrapped. Required to launch.
    pub network_security_group: Option<String>,
    pub image: ImageRef,
    pub admin_username: String,
    /// Required: Linux VMs are created with password login disabled.
    pub ssh_public_key: String,
    pub os_disk_gb: u32,
    /// ARM's endpoint ([`DEFAULT_ENDPOINT`]; a local server in tests).
    pub endpoint: String,
    /// `None`: the standard chain (environment, managed identity, Azure CLI).
    pub credential: Option<Arc<dyn TokenCredential>>,
    /// Retries of throttled or failed calls (the SDK's exponential policy, honouring Retry-After).
    pub max_retries: u32,
    /// Wait between polls of a long-running operation when Azure suggests none.
    pub poll_interval: Duration,
    /// The Azure Retail Prices API ([`DEFAULT_PRICES_ENDPOINT`]; public, no credential).
    pub prices_endpoint: String,
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("fleet", &self.fleet)
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("regions", &self.regions)
            .field("image", &self.image)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AzureConfig {
    pub fn new(
        fleet: &str,
        subscription_id: &str,
        resource_group: &str,
        subnet_id: &str,
        image: ImageRef,
        ssh_public_key: &str,
    ) -> Self {
        AzureConfig {
            fleet: fleet.into(),
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            regions: Vec::new(),
            subnet_id: subnet_id.into(),
            network_security_group: None,
            image,
            admin_username: "fleet".into(),
            ssh_public_key: ssh_public_key.into(),
            os_disk_gb: 256,
            endpoint: DEFAULT_ENDPOINT.into(),
            credential: None,
            max_retries: 4,
            poll_interval: Duration::from_secs(5),
            prices_endpoint: DEFAULT_PRICES_ENDPOINT.into(),
        }
    }
}

pub struct AzureProvider {
    prices: crate::prices::PriceBook,
    cfg: AzureConfig,
    client: Client,
    credential: Arc<dyn TokenCredential>,
    http: reqwest::Client,
    catalog: Arc<Catalog>,
}

impl fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProvider").field("config", &self.cfg).finish_non_exhaustive()
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

impl AzureProvider {
    pub fn new(cfg: AzureConfig, catalog: Arc<Catalog>) -> ProviderResult<AzureProvider> {
        let credential = match &cfg.credential {
            Some(c) => c.clone(),
            None => azure_identity::create_credential()
                .map_err(|e| ProviderError::Unauthorized { detail: format!("no Azure credential found: {e}") })?,
        };
        let endpoint = azure_core::Url::parse(&cfg.endpoint)
            .map_err(|e| ProviderError::InvalidRequest { detail: format!("azure endpoint '{}': {e}", cfg.endpoint) })?;
        let retry = azure_core::RetryOptions::exponential(
            azure_core::ExponentialRetryOptions::default()
                .max_retries(cfg.max_retries)
                .initial_delay(Duration::from_millis(200)),
        );
        let scope = format!("{}/.default", cfg.endpoint.trim_end_matches('/'));
        let client = Client::builder(credential.clone())
            .endpoint(endpoint)
            .scopes(&[scope.as_str()])
            .retry(retry)
            .build()
            .map_err(|e| ProviderError::InvalidRequest { detail: format!("azure client: {e}") })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ProviderError::Transient { detail: format!("http client: {e}") })?;
        Ok(AzureProvider { prices: crate::prices::PriceBook::new(), cfg, client, credential, http, catalog })
    }

    fn region_allowed(&self, r: &str) -> bool {
        self.cfg.regions.is_empty() || self.cfg.regions.iter().any(|x| x.eq_ignore_ascii_case(r))
    }

    fn catalog_rows(&self) -> Vec<Offering> {
        self.catalog
            .offerings()
            .iter()
            .filter(|o| o.cloud == Cloud::Azure && self.region_allowed(&o.region))
            .cloned()
            .collect()
    }

    /// The catalog's rows priced from the Azure Retail Prices API (Linux, pay-as-you-go and
    /// Spot), one query per region; a Spot price the catalog has no row for adds one.
    async fn live_offerings(&self) -> ProviderResult<Vec<Offering>> {
        let rows = self.catalog_rows();
        let mut regions: Vec<&str> = rows.iter().map(|o| o.region.as_str()).collect();
        regions.sort();
        regions.dedup();
        let today = chrono::Utc::now().date_naive();
        let mut out = Vec::new();
        for region in regions {
            let mut sizes: Vec<&str> =
                rows.iter().filter(|o| o.region == region).map(|o| o.instance.name.as_str()).collect();
            sizes.sort();
            sizes.dedup();
            let skus: Vec<String> = sizes.iter().map(|s| format!("armSkuName eq '{s}'")).collect();
            let filter = format!(
                "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq '{region}' and ({})",
                skus.join(" or ")
            );
            // (size, spot) → $/h
            let mut quotes: std::collections::HashMap<(String, bool), fleet_core::Price> = Default::default();
            let mut next = Some(
                reqwest::Url::parse_with_params(
                    &self.cfg.prices_endpoint,
                    &[("api-version", "2023-01-01-preview"), ("$filter", &filter)],
                )
                .map_err(|e| ProviderError::InvalidRequest { detail: format!("prices endpoint: {e}") })?
                .to_string(),
            );
            while let Some(url) = next.take() {
                let resp = self.http.get(&url).send().await.map_err(|e| ProviderError::Transient {
                    detail: format!("azure retail prices: {}", e.without_url()),
                })?;
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                if status != 200 {
                    return Err(errors::map(
                        Some(status),
                        str_at(&body, &["error", "code"]).unwrap_or(""),
                        "azure retail prices",
                        None,
                    ));
                }
                for item in body["Items"].as_array().into_iter().flatten() {
                    let (Some(size), Some(sku), Some(price)) =
                        (item["armSkuName"].as_str(), item["skuName"].as_str(), item["retailPrice"].as_f64())
                    else {
                        continue;
                    };
                    let windows = item["productName"].as_str().is_some_and(|p| p.contains("Windows"));
                    // A meter that is not its region's primary one (billed through another
                    // region) must not overwrite the primary's price.
                    let primary = item["isPrimaryMeterRegion"].as_bool() != Some(false);
                    if windows || !primary || sku.ends_with(" Low Priority") || item["unitOfMeasure"] != "1 Hour" {
                        continue;
                    }
                    if let Ok(p) = fleet_core::Price::parse_decimal(&format!("{price:.6}")) {
                        quotes.insert((size.to_string(), sku.ends_with(" Spot")), p);
                    }
                }
                next = body["NextPageLink"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
            }
            for o in rows.iter().filter(|o| o.region == region) {
                let spot = o.capacity == CapacityType::Spot;
                let mut o = o.clone();
                match quotes.remove(&(o.instance.name.clone(), spot)) {
                    Some(p) => {
                        o.price = p;
                        o.source = fleet_core::Source { name: "azure retail prices".into(), as_of: today };
                    }
                    None => {
                        o.availability = fleet_core::Availability::Unavailable {
                            reason: format!("no retail price for {} in {region}", o.instance.name),
                        };
                    }
                }
                out.push(o);
            }
            // Spot prices for sizes the catalog lists only on demand.
            let mut extra: Vec<_> = quotes.into_iter().filter(|((_, spot), _)| *spot).collect();
            extra.sort_by(|a, b| a.0.cmp(&b.0));
            for ((size, _), p) in extra {
                let Some(template) = rows.iter().find(|o| o.region == region && o.instance.name == size) else {
                    continue;
                };
                let mut o = template.clone();
                o.capacity = CapacityType::Spot;
                o.price = p;
                o.source = fleet_core::Source { name: "azure retail prices".into(), as_of: today };
                o.availability = fleet_core::Availability::Unknown;
                out.push(o);
            }
        }
        Ok(out)
    }

    /// An ARM GET outside the compute SDK (Microsoft.Network), with the same credential.
    async fn arm_get(&self, id: &str, api_version: &str) -> ProviderResult<Value> {
        let scope = format!("{}/.default", self.cfg.endpoint.trim_end_matches('/'));
        let token = self.credential.get_token(&[scope.as_str()]).await.map_err(|e| errors::from_sdk(&e, None))?;
        let url = format!("{}{id}?api-version={api_version}", self.cfg.endpoint.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token.token.secret())
            .send()
            .await
            .map_err(|e| ProviderError::Transient { detail: format!("reading {id}: {}", e.without_url()) })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status != 200 {
            let code = str_at(&body, &["error", "code"]).unwrap_or("");
            return Err(errors::map(Some(status), code, str_at(&body, &["error", "message"]).unwrap_or(""), None));
        }
        Ok(body)
    }

    /// The VM's private and public addresses: its NIC, then the NIC's public IP resource.
    async fn addresses(&self, vm: &Value) -> ProviderResult<(Option<std::net::IpAddr>, Option<std::net::IpAddr>)> {
        let Some(nic_id) = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"].as_str() else {
            return Ok((None, None));
        };
        let nic = self.arm_get(nic_id, NETWORK_API).await?;
        let ipc = &nic["properties"]["ipConfigurations"][0]["properties"];
        let private = ipc["privateIPAddress"].as_str().and_then(|s| s.parse().ok());
        let public = match ipc["publicIPAddress"]["id"].as_str() {
            Some(pip) => {
                self.arm_get(pip, NETWORK_API).await?["properties"]["ipAddress"].as_str().and_then(|s| s.parse().ok())
            }
            None => None,
        };
        Ok((private, public))
    }

    fn vms(&self) -> azure_mgmt_compute::package_2024_07_01::virtual_machines::Client {
        self.client.virtual_machines_client()
    }

    fn ours(&self, v: &Value) -> bool {
        str_at(v, &["tags", TAG_FLEET]) == Some(self.cfg.fleet.as_str())
    }

    fn instance(&self, v: &Value) -> Instance {
        let tags: BTreeMap<String, String> = v["tags"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        let state = match str_at(v, &["properties", "provisioningState"]) {
            Some("Creating" | "Updating" | "Migrating") => InstanceState::Pending,
            Some("Succeeded") => InstanceState::Running,
            Some("Deleting") => InstanceState::Terminated,
            // Failed (allocation failed after creation started): the VM resource exists until deleted.
            _ => InstanceState::Stopped,
        };
        Instance {
            id: v["name"].as_str().unwrap_or("").to_string(),
            offering: OfferingKey {
                cloud: Cloud::Azure,
                region: v["location"].as_str().unwrap_or("").to_string(),
                zone: v["zones"][0].as_str().map(str::to_string),
                instance_type: str_at(v, &["properties", "hardwareProfile", "vmSize"]).unwrap_or("").to_string(),
                capacity: if str_at(v, &["properties", "priority"]) == Some("Spot") {
                    CapacityType::Spot
                } else {
                    CapacityType::OnDemand
                },
            },
            state,
            // Addresses are Microsoft.Network resources: `get` reads them.
            public_ip: None,
            private_ip: None,
            ssh: None,
            ssh_host_keys: Vec::new(),
            launched_at: str_at(v, &["properties", "timeCreated"])
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            tags,
        }
    }

    async fn fetch(&self, name: &str) -> ProviderResult<Option<Value>> {
        match self.vms().get(&self.cfg.resource_group, name, &self.cfg.subscription_id).await {
            Ok(vm) => Ok(Some(serde_json::to_value(vm).unwrap_or(Value::Null))),
            Err(e) => match errors::from_sdk(&e, None) {
                ProviderError::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    fn body(&self, req: &LaunchRequest, name: &str) -> Value {
        let o = &req.offering;
        let c = &self.cfg;
        let mut props = json!({
            "hardwareProfile": {"vmSize": o.instance_type},
            "storageProfile": {
                "imageReference": {"publisher": c.image.publisher, "offer": c.image.offer, "sku": c.image.sku, "version": c.image.version},
                "osDisk": {"createOption": "FromImage", "deleteOption": "Delete", "diskSizeGB": c.os_disk_gb, "managedDisk": {"storageAccountType": "Premium_LRS"}}
            },
            "osProfile": {
                "computerName": name,
                "adminUsername": c.admin_username,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": true,
                    "ssh": {"publicKeys": [{"path": format!("/home/{}/.ssh/authorized_keys", c.admin_username), "keyData": c.ssh_public_key.trim()}]}
                }
            },
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [{
                    "name": format!("{name}-nic"),
                    "properties": {
                        "primary": true,
                        "deleteOption": "Delete",
                        "enableAcceleratedNetworking": true,
                        "networkSecurityGroup": {"id": c.network_security_group},
                        "ipConfigurations": [{
                            "name": "ipconfig1",
                            "properties": {
                                "subnet": {"id": c.subnet_id},
                                // Azure refuses a Standard public IP that is not Static.
                                "publicIPAddressConfiguration": {"name": format!("{name}-ip"), "sku": {"name": "Standard", "tier": "Regional"},
                                    "properties": {"deleteOption": "Delete", "publicIPAllocationMethod": "Static"}}
                            }
                        }]
                    }
                }]
            },
            "priority": "Regular"
        });
        if o.capacity == CapacityType::Spot {
            props["priority"] = json!("Spot");
            props["evictionPolicy"] = json!("Delete");
            // -1: pay up to the on-demand price; otherwise fleet's cap, in dollars per hour.
            let max: Value = match req.max_price {
                Some(p) => serde_json::from_str(&p.hourly().to_decimal_string()).unwrap_or(json!(-1)),
                None => json!(-1),
            };
            props["billingProfile"] = json!({"maxPrice": max});
        }
        let mut vm = json!({"location": o.region, "tags": req.tags, "properties": props});
        if let Some(z) = &o.zone {
            vm["zones"] = json!([z]);
        }
        vm
    }

    /// Polls an `Azure-AsyncOperation` URL until the operation ends.
    async fn await_operation(&self, url: &str, offering: Option<&OfferingKey>) -> ProviderResult<()> {
        let scope = format!("{}/.default", self.cfg.endpoint.trim_end_matches('/'));
        loop {
            let token = self.credential.get_token(&[scope.as_str()]).await.map_err(|e| errors::from_sdk(&e, None))?;
            let resp = self.http.get(url).bearer_auth(token.token.secret()).send().await.map_err(|e| {
                ProviderError::Transient { detail: format!("polling an azure operation: {}", e.without_url()) }
            })?;
            let status = resp.status().as_u16();
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(self.cfg.poll_interval);
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status >= 400 {
                let code = str_at(&body, &["error", "code"]).unwrap_or("");
                return Err(errors::map(Some(status), code, str_at(&body, &["error", "message"]).unwrap_or(""), None));
            }
            match body["status"].as_str() {
                Some("Succeeded") => return Ok(()),
                Some("Failed" | "Canceled") => {
                    let code = str_at(&body, &["error", "code"]).unwrap_or("");
                    let message = str_at(&body, &["error", "message"]).unwrap_or("the operation failed");
                    return Err(errors::map(None, code, message, offering));
                }
                _ => tokio::time::sleep(wait).await,
            }
        }
    }

    fn async_url(raw: &azure_core::Response) -> Option<String> {
        let h = raw.headers();
        h.get_optional_string(&azure_core::headers::HeaderName::from_static("azure-asyncoperation"))
    }
}

#[async_trait]
impl Provider for AzureProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Azure
    }

    fn name(&self) -> String {
        format!("azure/{}", self.cfg.resource_group)
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        let live = self.live_offerings().await;
        self.prices.resolve(&self.name(), live, || self.catalog_rows()).map(|(rows, _)| rows)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        let o = &req.offering;
        req.check(Cloud::Azure, &self.cfg.fleet)?;
        if self.cfg.network_security_group.is_none() {
            // A VM nobody can SSH into bills without ever serving: refuse before creating it.
            return Err(ProviderError::InvalidRequest {
                detail: "no network security group configured ([clouds.azure] network_security_group): a Standard public IP admits no SSH without one".into(),
            });
        }
        let name = instance_name(&req.idempotency_token);
        let adopt = |v: Value| -> ProviderResult<Instance> {
            if self.ours(&v) && str_at(&v, &["tags", TAG_TOKEN]) == Some(req.idempotency_token.as_str()) {
                Ok(self.instance(&v))
            } else {
                Err(ProviderError::InvalidRequest { detail: format!("a VM named {name} is not this node's") })
            }
        };
        if let Some(v) = self.fetch(&name).await? {
            return adopt(v);
        }
        let vm: models::VirtualMachine = serde_json::from_value(self.body(req, &name))
            .map_err(|e| ProviderError::InvalidRequest { detail: format!("VM body: {e}") })?;
        let sent = self
            .vms()
            .create_or_update(&self.cfg.resource_group, &name, vm, &self.cfg.subscription_id)
            .if_none_match("*")
            .send()
            .await;
        match sent {
            Ok(resp) => {
                if let Some(url) = Self::async_url(resp.as_raw_response())
                    && let Err(e) = self.await_operation(&url, Some(o)).await
                {
                    // A VM whose allocation failed stays behind in state Failed (with its NIC and
                    // disk): delete it now, so a failed launch leaves nothing; the next try of
                    // this node creates it afresh.
                    if let Err(cleanup) = self.terminate(&name).await {
                        tracing::warn!(vm = %name, error = %cleanup, "could not delete a VM whose creation failed; orphan collection will");
                    }
                    return Err(e);
                }
            }
            // If-None-Match refused: a VM of that name exists (an earlier launch of this node).
            Err(e) if e.as_http_error().is_some_and(|h| u16::from(h.status()) == 412) => {}
            Err(e) => return Err(errors::from_sdk(&e, Some(o))),
        }
        match self.fetch(&name).await? {
            Some(v) => adopt(v),
            None => Err(ProviderError::Transient { detail: format!("VM {name} created but not found yet") }),
        }
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        match self.fetch(id).await? {
            Some(v) if self.ours(&v) => {
                let mut i = self.instance(&v);
                // Addresses live in Microsoft.Network: read them once the VM is up (bootstrap needs one).
                if i.state == InstanceState::Running {
                    (i.private_ip, i.public_ip) = self.addresses(&v).await?;
                    i.ssh = crate::ssh_on_22(i.public_ip, i.private_ip);
                }
                Ok(i)
            }
            _ => Err(ProviderError::NotFound { what: format!("VM {id} of fleet {}", self.cfg.fleet) }),
        }
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut out = Vec::new();
        let mut pages = self.vms().list(&self.cfg.resource_group, &self.cfg.subscription_id).into_stream();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| errors::from_sdk(&e, None))?;
            for vm in page.value {
                let v = serde_json::to_value(vm).unwrap_or(Value::Null);
                if self.ours(&v) {
                    let i = self.instance(&v);
                    if i.state.is_live() {
                        out.push(i);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        match self.fetch(id).await? {
            None => return Ok(()),
            Some(v) if !self.ours(&v) => return Ok(()),
            Some(_) => {}
        }
        match self.vms().delete(&self.cfg.resource_group, id, &self.cfg.subscription_id).send().await {
            Ok(resp) => match Self::async_url(resp.as_raw_response()) {
                Some(url) => match self.await_operation(&url, None).await {
                    Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            Err(e) => match errors::from_sdk(&e, None) {
                ProviderError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }
}
