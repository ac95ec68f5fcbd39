//! Google Compute Engine through Google's official Rust client (`google-cloud-compute-v1`).
//!
//! - launch: `instances.insert` with a `requestId` per attempt (GCP dedupes a re-sent insert for a
//!   while, so the client's retries of one attempt are safe, and a later attempt is not answered
//!   with an earlier one's failed operation) and a name derived from the idempotency token (an
//!   instance name is unique in its zone, so a later re-send answers `alreadyExists` and fleet
//!   adopts the instance); the boot disk's type one the machine family supports;
//!   the fleet's tags as labels; spot through `scheduling.provisioningModel = SPOT` with
//!   `instanceTerminationAction = DELETE`; the long-running operation is awaited and its error
//!   (`ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED` …) mapped.
//! - get / terminate: `instances.get` / `instances.delete` (awaited). Instance ids are
//!   `{zone}/{name}`: every call on an instance needs its zone.
//! - list: `instances.aggregatedList` filtered by the fleet's label, every page.
//! - offerings: the catalog's GCP rows for the configured zones, priced live from the Cloud
//!   Billing Catalog (GPU + vCPU + memory SKUs of the machine family, on-demand and Spot; see
//!   `prices.rs`); a failed refresh keeps the last prices.
//! - credentials: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's,
//!   or the metadata server), unless told to be anonymous (a local server in tests).

mod errors;
mod prices;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::{CapacityType, Catalog, Cloud, Offering, OfferingKey};
use google_cloud_compute_v1::client::Instances;
use google_cloud_compute_v1::model::access_config::Type as AccessType;
use google_cloud_compute_v1::model::instance::Status;
use google_cloud_compute_v1::model::metadata::Items;
use google_cloud_compute_v1::model::scheduling::{InstanceTerminationAction, OnHostMaintenance, ProvisioningModel};
use google_cloud_compute_v1::model::{
    AccessConfig, AttachedDisk, AttachedDiskInitializeParams, Instance as GceInstance, Metadata, NetworkInterface,
    Scheduling,
};
use google_cloud_lro::Poller;

use self::errors::Failure;
use crate::{
    Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET, TAG_TOKEN,
    instance_name, token_uuid,
};

#[derive(Debug, Clone)]
pub struct GcpConfig {
    pub fleet: String,
    pub project: String,
    /// Zones fleet may launch in; empty means every zone the catalog lists.
    pub zones: Vec<String>,
    /// The boot image (a GPU image with drivers), e.g.
    /// `projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-with-nvidia-570`.
    pub image: String,
    pub boot_disk_gb: i64,
    /// `global/networks/default` when unset.
    pub network: Option<String>,
    pub subnetwork: Option<String>,
    /// Put in the instance metadata as `ssh-keys` (`{user}:{key}`), so fleet can bootstrap it.
    pub ssh_user: String,
    pub ssh_public_key: Option<String>,
    /// Another Compute endpoint (a local server in tests, a private one in production).
    pub endpoint: Option<String>,
    /// Send no credentials (only for a local test server).
    pub anonymous: bool,
    /// First wait between polls of a long-running operation (they back off to 10 s).
    pub poll_initial: Duration,
    /// The Cloud Billing API (live prices): `https://cloudbilling.googleapis.com`.
    pub billing_endpoint: String,
}

impl GcpConfig {
    pub fn new(fleet: &str, project: &str, image: &str) -> GcpConfig {
        GcpConfig {
            fleet: fleet.into(),
            project: project.into(),
            zones: Vec::new(),
            image: image.into(),
            boot_disk_gb: 200,
            network: None,
            subnetwork: None,
            ssh_user: "fleet".into(),
            ssh_public_key: None,
            endpoint: None,
            anonymous: false,
            poll_initial: Duration::from_secs(1),
            billing_endpoint: "https://cloudbilling.googleapis.com".into(),
        }
    }
}

pub struct GcpProvider {
    cfg: GcpConfig,
    client: Instances,
    catalog: std::sync::Arc<Catalog>,
    credentials: google_cloud_auth::credentials::Credentials,
    http: reqwest::Client,
    prices: crate::prices::PriceBook,
}

impl fmt::Debug for GcpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpProvider").field("config", &self.cfg).finish_non_exhaustive()
    }
}

/// A label value GCP accepts: lower case letters, digits, `_` and `-`, at most 63 characters.
pub fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    v.truncate(63);
    v
}

fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// `us-central1-a` → `us-central1`.
fn region_of(zone: &str) -> String {
    zone.rsplit_once('-').map(|(r, _)| r.to_string()).unwrap_or_else(|| zone.to_string())
}

/// The boot disk type `machine_type` supports. Through the API an unset `diskType` means
/// `pd-standard`, which A3 machines refuse, so fleet always names one: `hyperdisk-balanced` where
/// the family supports Hyperdisk only (A3 Ultra, A4), `pd-balanced` elsewhere (A2, A3 High / Mega
/// / Edge, G2). Source: Compute Engine's "Machine series and disk types" table (GPU families).
pub fn boot_disk_type(machine_type: &str) -> &'static str {
    if machine_type.starts_with("a3-ultragpu") || machine_type.starts_with("a4") {
        "hyperdisk-balanced"
    } else {
        "pd-balanced"
    }
}

/// A `requestId` for one attempt of a mutating call. GCP remembers a request id for a while and
/// answers a re-send with the first request's operation, even a failed one; so each new attempt
/// (a launch tried again after a capacity failure, a delete tried again) gets its own id, while
/// the client's own retries of one attempt re-send the same one (the id is set once per call).
/// Duplicates across attempts are prevented by the instance name, unique in its zone.
fn attempt_request_id(what: &str) -> String {
    token_uuid(&format!("{what}/{:016x}", rand::random::<u64>()))
}

fn split_id(id: &str) -> ProviderResult<(&str, &str)> {
    id.split_once('/')
        .ok_or_else(|| ProviderError::NotFound { what: format!("{id} is not a GCP instance id (zone/name)") })
}

impl GcpProvider {
    /// Builds the client; credentials are looked up now (a missing ADC fails here, clearly).
    pub async fn connect(cfg: GcpConfig, catalog: std::sync::Arc<Catalog>) -> ProviderResult<GcpProvider> {
        let backoff = google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
            .with_initial_delay(cfg.poll_initial)
            .with_maximum_delay(Duration::from_secs(10).max(cfg.poll_initial))
            .build()
            .map_err(|e| ProviderError::InvalidRequest { detail: format!("poll backoff: {e}") })?;
        let credentials = if cfg.anonymous {
            google_cloud_auth::credentials::anonymous::Builder::new().build()
        } else {
            google_cloud_auth::credentials::Builder::default().build().map_err(|e| ProviderError::Unauthorized {
                detail: format!("no Application Default Credentials: {e}"),
            })?
        };
        let mut b = Instances::builder().with_polling_backoff_policy(backoff).with_credentials(credentials.clone());
        if let Some(url) = &cfg.endpoint {
            b = b.with_endpoint(url.clone());
        }
        let client = b.build().await.map_err(|e| ProviderError::Unauthorized {
            detail: format!("cannot build the Compute Engine client (Application Default Credentials?): {e}"),
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProviderError::Transient { detail: format!("http client: {e}") })?;
        Ok(GcpProvider { cfg, client, catalog, credentials, http, prices: crate::prices::PriceBook::new() })
    }

    fn catalog_rows(&self) -> Vec<Offering> {
        self.catalog
            .offerings()
            .iter()
            .filter(|o| o.cloud == Cloud::Gcp && self.zone_allowed(o.zone.as_deref()))
            .cloned()
            .collect()
    }

    /// Every Compute Engine SKU (all pages), then each catalog row priced from its parts.
    async fn live_offerings(&self) -> ProviderResult<Vec<Offering>> {
        let headers = match self.credentials.headers(Default::default()).await {
            Ok(google_cloud_auth::credentials::CacheableResource::New { data, .. }) => data,
            Ok(google_cloud_auth::credentials::CacheableResource::NotModified) => Default::default(),
            Err(e) => {
                return Err(ProviderError::Unauthorized {
                    detail: format!("no credentials for the billing catalog: {e}"),
                });
            }
        };
        let mut rates = prices::Rates::default();
        let mut token = String::new();
        loop {
            let url =
                format!("{}/v1/{}/skus", self.cfg.billing_endpoint.trim_end_matches('/'), prices::COMPUTE_SERVICE);
            let resp = self
                .http
                .get(&url)
                .headers(headers.clone())
                .query(&[("currencyCode", "USD"), ("pageSize", "5000"), ("pageToken", token.as_str())])
                .send()
                .await
                .map_err(|e| ProviderError::Transient {
                    detail: format!("gcp billing catalog: {}", e.without_url()),
                })?;
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if status != 200 {
                let reason =
                    body["error"]["errors"][0]["reason"].as_str().or(body["error"]["status"].as_str()).unwrap_or("");
                let detail = format!("gcp billing catalog: HTTP {status} {reason}");
                return Err(match status {
                    401 | 403 => ProviderError::Unauthorized { detail },
                    429 => ProviderError::Throttled { retry_after: Duration::from_secs(5), detail },
                    _ => ProviderError::Transient { detail },
                });
            }
            rates.add(&body["skus"]);
            match body["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => break,
            }
        }
        if rates.is_empty() {
            return Err(ProviderError::Transient { detail: "the billing catalog listed no GPU machine SKUs".into() });
        }
        let today = chrono::Utc::now().date_naive();
        let mut rows = self.catalog_rows();
        for o in &mut rows {
            if let Some(p) = rates.price(o) {
                o.price = p;
                o.source = fleet_core::Source { name: "gcp billing catalog".into(), as_of: today };
            }
        }
        Ok(rows)
    }

    fn zone_allowed(&self, zone: Option<&str>) -> bool {
        self.cfg.zones.is_empty() || zone.is_some_and(|z| self.cfg.zones.iter().any(|c| c == z))
    }

    fn ours(&self, i: &GceInstance) -> bool {
        i.labels.get(TAG_FLEET) == Some(&label_value(&self.cfg.fleet))
    }

    fn instance(&self, i: &GceInstance) -> Instance {
        let zone = i.zone.as_deref().map(last_segment).unwrap_or("").to_string();
        let name = i.name.clone().unwrap_or_default();
        let spot = i.scheduling.as_ref().and_then(|s| s.provisioning_model.as_ref()) == Some(&ProvisioningModel::Spot);
        let state = match &i.status {
            Some(Status::Provisioning | Status::Staging | Status::Pending) => InstanceState::Pending,
            Some(Status::Running | Status::Repairing) => InstanceState::Running,
            Some(Status::Stopping | Status::Suspending) => InstanceState::Stopping,
            // GCP's TERMINATED is a stopped VM: it still exists (its disks bill) until deleted.
            Some(Status::Stopped | Status::Suspended | Status::Terminated) => InstanceState::Stopped,
            Some(Status::Deprovisioning) => InstanceState::Terminated,
            _ => InstanceState::Pending,
        };
        let nic = i.network_interfaces.first();
        let public_ip =
            nic.and_then(|n| n.access_configs.first()).and_then(|a| a.nat_ip.as_deref()).and_then(|s| s.parse().ok());
        let private_ip = nic.and_then(|n| n.network_ip.as_deref()).and_then(|s| s.parse().ok());
        Instance {
            id: format!("{zone}/{name}"),
            offering: OfferingKey {
                cloud: Cloud::Gcp,
                region: region_of(&zone),
                zone: Some(zone),
                instance_type: i.machine_type.as_deref().map(last_segment).unwrap_or("").to_string(),
                capacity: if spot { CapacityType::Spot } else { CapacityType::OnDemand },
            },
            state,
            public_ip,
            private_ip,
            ssh: crate::ssh_on_22(public_ip, private_ip),
            ssh_host_keys: Vec::new(),
            launched_at: i
                .creation_timestamp
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            tags: i.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
        }
    }

    async fn fetch(&self, zone: &str, name: &str) -> ProviderResult<Option<GceInstance>> {
        let r = self.client.get().set_project(&self.cfg.project).set_zone(zone).set_instance(name).send().await;
        match r {
            Ok(i) => Ok(Some(i)),
            Err(e) => match errors::from_gax(&e, None) {
                Failure::Other(ProviderError::NotFound { .. }) => Ok(None),
                Failure::Other(e) => Err(e),
                Failure::AlreadyExists => Err(ProviderError::Transient { detail: "alreadyExists on a get".into() }),
            },
        }
    }

    fn body(&self, req: &LaunchRequest, zone: &str, name: &str) -> GceInstance {
        let o = &req.offering;
        let spot = o.capacity == CapacityType::Spot;
        let scheduling = Scheduling::new()
            .set_provisioning_model(if spot { ProvisioningModel::Spot } else { ProvisioningModel::Standard })
            // GPUs cannot live-migrate: GCP requires TERMINATE on host maintenance for them.
            .set_on_host_maintenance(OnHostMaintenance::Terminate)
            .set_automatic_restart(!spot);
        let scheduling = if spot {
            scheduling.set_instance_termination_action(InstanceTerminationAction::Delete)
        } else {
            scheduling
        };
        let disk = AttachedDisk::new().set_boot(true).set_auto_delete(true).set_initialize_params(
            AttachedDiskInitializeParams::new()
                .set_source_image(&self.cfg.image)
                .set_disk_size_gb(self.cfg.boot_disk_gb)
                .set_disk_type(format!("zones/{zone}/diskTypes/{}", boot_disk_type(&o.instance_type))),
        );
        let mut nic = NetworkInterface::new()
            .set_network(self.cfg.network.clone().unwrap_or_else(|| "global/networks/default".into()))
            .set_access_configs([AccessConfig::new().set_name("External NAT").set_type(AccessType::OneToOneNat)]);
        if let Some(s) = &self.cfg.subnetwork {
            nic = nic.set_subnetwork(s);
        }
        let i = GceInstance::new()
            .set_name(name)
            .set_machine_type(format!("zones/{zone}/machineTypes/{}", o.instance_type))
            .set_labels(req.tags.iter().map(|(k, v)| (k.clone(), label_value(v))))
            .set_scheduling(scheduling)
            .set_disks([disk])
            .set_network_interfaces([nic]);
        // The guest environment publishes the host keys as guest attributes (`hostkeys/`), which
        // fleet reads from outside the machine before it trusts the host (`host_keys`).
        let mut items = vec![Items::new().set_key("enable-guest-attributes").set_value("TRUE")];
        if let Some(key) = &self.cfg.ssh_public_key {
            items.push(Items::new().set_key("ssh-keys").set_value(format!("{}:{}", self.cfg.ssh_user, key.trim())));
        }
        i.set_metadata(Metadata::new().set_items(items))
    }
}

#[async_trait]
impl Provider for GcpProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Gcp
    }

    fn name(&self) -> String {
        format!("gcp/{}", self.cfg.project)
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        let live = self.live_offerings().await;
        self.prices.resolve(&self.name(), live, || self.catalog_rows()).map(|(rows, _)| rows)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        let o = &req.offering;
        req.check(Cloud::Gcp, &self.cfg.fleet)?;
        let Some(zone) = o.zone.as_deref() else {
            return Err(ProviderError::InvalidRequest { detail: format!("{o} names no zone") });
        };
        let name = instance_name(&req.idempotency_token);
        let adopt = |i: GceInstance| -> ProviderResult<Instance> {
            if self.ours(&i) && i.labels.get(TAG_TOKEN) == Some(&label_value(&req.idempotency_token)) {
                Ok(self.instance(&i))
            } else {
                Err(ProviderError::InvalidRequest {
                    detail: format!("an instance named {name} in {zone} is not this node's"),
                })
            }
        };
        if let Some(i) = self.fetch(zone, &name).await? {
            return adopt(i);
        }
        let op = self
            .client
            .insert()
            .set_project(&self.cfg.project)
            .set_zone(zone)
            .set_request_id(attempt_request_id(&req.idempotency_token))
            .set_body(self.body(req, zone, &name))
            .poller()
            .until_done()
            .await;
        let op = op.map_err(|e| match errors::from_gax(&e, Some(o)) {
            Failure::AlreadyExists => None,
            Failure::Other(e) => Some(e),
        });
        let failure = match op {
            Ok(op) => errors::from_operation(&op, Some(o)),
            Err(None) => Some(Failure::AlreadyExists),
            Err(Some(e)) => return Err(e),
        };
        match failure {
            None | Some(Failure::AlreadyExists) => match self.fetch(zone, &name).await? {
                Some(i) => adopt(i),
                None => Err(ProviderError::Transient { detail: format!("{zone}/{name} inserted but not found yet") }),
            },
            Some(Failure::Other(e)) => Err(e),
        }
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let (zone, name) = split_id(id)?;
        match self.fetch(zone, name).await? {
            Some(i) if self.ours(&i) => Ok(self.instance(&i)),
            _ => Err(ProviderError::NotFound { what: format!("instance {id} of fleet {}", self.cfg.fleet) }),
        }
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let filter = format!("labels.{TAG_FLEET} = \"{}\"", label_value(&self.cfg.fleet));
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .aggregated_list()
                .set_project(&self.cfg.project)
                .set_filter(&filter)
                .set_page_token(&token)
                .send()
                .await
                .map_err(|e| match errors::from_gax(&e, None) {
                    Failure::Other(e) => e,
                    Failure::AlreadyExists => ProviderError::Transient { detail: "alreadyExists on a list".into() },
                })?;
            let mut scopes: Vec<_> = page.items.into_iter().collect();
            scopes.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, scoped) in scopes {
                for i in scoped.instances.iter().filter(|i| self.ours(i)) {
                    let i = self.instance(i);
                    if i.state.is_live() {
                        out.push(i);
                    }
                }
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = t,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        let (zone, name) = split_id(id)?;
        match self.fetch(zone, name).await? {
            None => return Ok(()),
            Some(i) if !self.ours(&i) => return Ok(()),
            Some(_) => {}
        }
        let op = self
            .client
            .delete()
            .set_project(&self.cfg.project)
            .set_zone(zone)
            .set_instance(name)
            .set_request_id(attempt_request_id(&format!("delete-{id}")))
            .poller()
            .until_done()
            .await;
        let op = match op {
            Ok(op) => op,
            Err(e) => {
                return match errors::from_gax(&e, None) {
                    Failure::Other(ProviderError::NotFound { .. }) => Ok(()),
                    Failure::Other(e) => Err(e),
                    Failure::AlreadyExists => Ok(()),
                };
            }
        };
        match errors::from_operation(&op, None) {
            None | Some(Failure::Other(ProviderError::NotFound { .. })) => Ok(()),
            Some(Failure::Other(e)) => Err(e),
            Some(Failure::AlreadyExists) => Ok(()),
        }
    }

    /// From the `hostkeys/` guest attributes (key: the key type, value: its base64), which the
    /// guest environment writes once sshd has its keys. Until then Compute Engine answers 404:
    /// `Some(empty)`.
    async fn host_keys(&self, id: &str) -> ProviderResult<Option<Vec<String>>> {
        let (zone, name) = split_id(id)?;
        self.get(id).await?; // this fleet's, or NotFound
        let r = self
            .client
            .get_guest_attributes()
            .set_project(&self.cfg.project)
            .set_zone(zone)
            .set_instance(name)
            .set_query_path("hostkeys/")
            .send()
            .await;
        let attrs = match r {
            Ok(a) => a,
            Err(e) => {
                return match errors::from_gax(&e, None) {
                    Failure::Other(ProviderError::NotFound { .. }) => Ok(Some(Vec::new())),
                    Failure::Other(e) => Err(e),
                    Failure::AlreadyExists => Ok(Some(Vec::new())),
                };
            }
        };
        let items = attrs.query_value.map(|v| v.items).unwrap_or_default();
        let keys = items
            .into_iter()
            .filter(|e| e.namespace.as_deref() == Some("hostkeys"))
            .filter_map(|e| {
                let (kind, blob) = (e.key?, e.value?);
                crate::host_keys_in_console(&format!(
                    "-----BEGIN SSH HOST KEY KEYS-----\n{kind} {blob}\n-----END SSH HOST KEY KEYS-----"
                ))
                .pop()
            })
            .collect();
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert_eq!(label_value("Prod.Fleet"), "prod_fleet");
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(
            last_segment("https://www.googleapis.com/compute/v1/projects/p/zones/z/machineTypes/a3-highgpu-8g"),
            "a3-highgpu-8g"
        );
        assert!(split_id("no-zone").is_err());
    }
}
