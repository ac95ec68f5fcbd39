//! AWS EC2 through aws-sdk-ec2: one provider per region.
//!
//! - launch: RunInstances with a `ClientToken` (EC2's idempotency) *and* a lookup by the
//!   [`TAG_TOKEN`] tag first, so a relaunch after a crash finds its instance even where the token
//!   has expired or is ignored (moto ignores it); TagSpecifications on the instance and its volumes;
//!   spot through InstanceMarketOptions (one-time, terminate on interruption).
//! - list: DescribeInstances filtered by the fleet tag and live states, every page.
//! - offerings: the catalog's AWS rows for the region, on-demand prices from the AWS Price List
//!   Query API (GetProducts: Linux, shared tenancy; the last read kept when it fails), spot prices
//!   replaced by live DescribeSpotPriceHistory quotes, and rows DescribeInstanceTypeOfferings says
//!   the zone does not offer marked unavailable.
//! - credentials: the standard AWS chain (env, profile, SSO, IMDS …) unless static ones are given.

mod api;
mod errors;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use fleet_core::{Availability, CapacityType, Catalog, Cloud, Offering, OfferingKey, Price, Secret, Source};
use tokio::sync::OnceCell;

use self::api::{Ec2Api, Ec2Instance, PriceListApi, RunSpec, SdkEc2, SdkPricing};
use crate::{Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET, TAG_TOKEN};

/// Static credentials (tests, or where no credential chain is available).
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even the key id is shortened: it identifies the account in logs others can read.
        let tail: String = self.access_key_id.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &format!("…{tail}"))
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The fleet's name: every instance is tagged with it, and only such instances are listed.
    pub fleet: String,
    pub region: String,
    /// Another EC2 endpoint (moto in tests, a VPC endpoint in production).
    pub endpoint_url: Option<String>,
    /// The AMI nodes boot (a GPU image with drivers).
    pub image_id: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    /// `None`: the standard AWS credential chain.
    pub credentials: Option<StaticCredentials>,
    /// Attempts per API call including the first (the SDK's standard retry with backoff).
    pub max_attempts: u32,
    /// Another Price List Query API endpoint (a test server); the service itself lives in us-east-1.
    pub pricing_endpoint: Option<String>,
}

impl AwsConfig {
    pub fn new(fleet: &str, region: &str, image_id: &str) -> AwsConfig {
        AwsConfig {
            fleet: fleet.into(),
            region: region.into(),
            endpoint_url: None,
            image_id: image_id.into(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            credentials: None,
            max_attempts: 3,
            pricing_endpoint: None,
        }
    }
}

pub struct AwsProvider {
    cfg: AwsConfig,
    api: Arc<dyn Ec2Api>,
    pricing: Arc<dyn PriceListApi>,
    /// The last offerings gathered, kept when a refresh fails (EC2 unreachable, throttled …).
    prices: crate::prices::PriceBook,
    /// On-demand prices last read from the price list (type → price), kept when a refresh fails.
    on_demand: std::sync::Mutex<HashMap<String, (Price, chrono::NaiveDate)>>,
    catalog: Arc<Catalog>,
    /// Zone name ↔ zone id of the region (catalogs use ids, RunInstances takes names).
    zones: OnceCell<Vec<(String, String)>>,
}

impl fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsProvider").field("config", &self.cfg).finish_non_exhaustive()
    }
}

/// Static credentials as the SDKs take them (one credentials type serves every AWS client).
fn static_credentials(c: &StaticCredentials) -> aws_sdk_ec2::config::Credentials {
    aws_sdk_ec2::config::Credentials::new(
        &c.access_key_id,
        c.secret_access_key.expose(),
        c.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "fleet-static",
    )
}

/// A spot price and when it was quoted.
type Quote = (Price, Option<chrono::DateTime<chrono::Utc>>);

const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

impl AwsProvider {
    /// Builds the EC2 and price-list clients. Nothing is called yet; a bad credential shows on
    /// the first call.
    pub async fn connect(cfg: AwsConfig, catalog: Arc<Catalog>) -> AwsProvider {
        use aws_sdk_ec2::config::{BehaviorVersion, Region};
        // The standard chain is resolved once and shared by both clients.
        let chain = match &cfg.credentials {
            Some(_) => None,
            None => {
                let region = Region::new(cfg.region.clone());
                Some(aws_config::defaults(BehaviorVersion::latest()).region(region).load().await)
            }
        };
        let mut b = match (&cfg.credentials, &chain) {
            (Some(c), _) => aws_sdk_ec2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(static_credentials(c)),
            (None, Some(shared)) => aws_sdk_ec2::config::Builder::from(shared),
            (None, None) => unreachable!("the chain is loaded when no static credentials are given"),
        };
        b = b.region(Region::new(cfg.region.clone()));
        if let Some(url) = &cfg.endpoint_url {
            b = b.endpoint_url(url);
        }
        b = b.retry_config(
            aws_sdk_ec2::config::retry::RetryConfig::standard().with_max_attempts(cfg.max_attempts.max(1)),
        );
        let client = aws_sdk_ec2::Client::from_conf(b.build());
        let pricing = Self::pricing_client(&cfg, chain.as_ref());
        AwsProvider {
            cfg,
            api: Arc::new(SdkEc2 { client }),
            pricing: Arc::new(SdkPricing { client: pricing }),
            on_demand: Default::default(),
            prices: crate::prices::PriceBook::new(),
            catalog,
            zones: OnceCell::new(),
        }
    }

    /// The Price List Query API client: the same credentials, in us-east-1 (where the API is).
    fn pricing_client(cfg: &AwsConfig, chain: Option<&aws_config::SdkConfig>) -> aws_sdk_pricing::Client {
        use aws_sdk_pricing::config::{BehaviorVersion, Region};
        let mut b = match (&cfg.credentials, chain) {
            (Some(c), _) => aws_sdk_pricing::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(static_credentials(c)),
            (None, Some(shared)) => aws_sdk_pricing::config::Builder::from(shared),
            (None, None) => unreachable!("the chain is loaded when no static credentials are given"),
        };
        b = b.region(Region::new("us-east-1"));
        if let Some(url) = &cfg.pricing_endpoint {
            b = b.endpoint_url(url);
        }
        // One attempt: a failed price refresh costs nothing (the last prices stay, the next
        // refresh tries again), while retries would hold up the offerings placement waits for.
        b = b.retry_config(aws_sdk_pricing::config::retry::RetryConfig::standard().with_max_attempts(1));
        aws_sdk_pricing::Client::from_conf(b.build())
    }

    /// Live on-demand prices for `types`; a failed call keeps the last ones read (or the
    /// catalog's, for types never read), so a price-list outage never stops placement.
    async fn on_demand_prices(&self, types: &[String]) -> HashMap<String, (Price, chrono::NaiveDate)> {
        match self.pricing.on_demand_prices(&self.cfg.region, types).await {
            Ok(quotes) => {
                let today = chrono::Utc::now().date_naive();
                let mut cache = self.on_demand.lock().unwrap_or_else(|p| p.into_inner());
                for (t, prices) in distinct_prices(quotes) {
                    match prices.as_slice() {
                        [p] => {
                            cache.insert(t, (*p, today));
                        }
                        _ => {
                            // Two products, two prices, one offering: which is right cannot be
                            // told, so neither is used (the last good or the catalog's stays).
                            let listed: Vec<String> = prices.iter().map(|p| p.hourly().to_decimal_string()).collect();
                            tracing::error!(region = %self.cfg.region, instance_type = %t, prices = ?listed,
                                "the AWS price list gives several on-demand prices for one offering; keeping the last good price");
                        }
                    }
                }
                cache.clone()
            }
            Err(e) => {
                let e = errors::map(e, None);
                tracing::warn!(region = %self.cfg.region, error = %e, "AWS price list unavailable; keeping the last on-demand prices");
                self.on_demand.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }
    }

    async fn zones(&self) -> ProviderResult<&[(String, String)]> {
        let z =
            self.zones.get_or_try_init(|| async { self.api.zones().await.map_err(|e| errors::map(e, None)) }).await?;
        Ok(z)
    }

    async fn zone_id_of(&self, name: &str) -> ProviderResult<Option<String>> {
        Ok(self.zones().await?.iter().find(|(n, _)| n == name).map(|(_, id)| id.clone()))
    }

    async fn instance(&self, i: Ec2Instance) -> ProviderResult<Instance> {
        let zone = match &i.zone_name {
            Some(n) => self.zone_id_of(n).await?.or_else(|| Some(n.clone())),
            None => None,
        };
        let state = match i.state.as_str() {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            _ => InstanceState::Terminated, // shutting-down, terminated
        };
        let public_ip = i.public_ip.and_then(|s| s.parse().ok());
        let private_ip = i.private_ip.and_then(|s| s.parse().ok());
        Ok(Instance {
            offering: OfferingKey {
                cloud: Cloud::Aws,
                region: self.cfg.region.clone(),
                zone,
                instance_type: i.instance_type,
                capacity: if i.spot { CapacityType::Spot } else { CapacityType::OnDemand },
            },
            state,
            public_ip,
            private_ip,
            ssh: crate::ssh_on_22(public_ip, private_ip),
            ssh_host_keys: Vec::new(), // EC2 reports them in the console output, after boot: `host_keys`
            launched_at: i.launch_time,
            tags: i.tags,
            id: i.id,
        })
    }

    /// The catalog's rows for the region with live prices and zone availability (see the module doc).
    async fn live_offerings(&self) -> ProviderResult<Vec<Offering>> {
        let mut rows: Vec<Offering> = self
            .catalog
            .offerings()
            .iter()
            .filter(|o| o.cloud == Cloud::Aws && o.region == self.cfg.region)
            .cloned()
            .collect();
        let mut types: Vec<String> = rows.iter().map(|o| o.instance.name.clone()).collect();
        types.sort();
        types.dedup();
        if types.is_empty() {
            return Ok(rows);
        }
        let offered: Vec<(String, String)> = self.api.type_offerings(&types).await.map_err(|e| errors::map(e, None))?;
        let list = self.on_demand_prices(&types).await;
        for o in rows.iter_mut().filter(|o| o.capacity == CapacityType::OnDemand) {
            if let Some((price, as_of)) = list.get(&o.instance.name) {
                o.price = *price;
                o.source = Source { name: "aws price list".into(), as_of: *as_of };
            }
        }
        let quotes = self.api.spot_prices(&types).await.map_err(|e| errors::map(e, None))?;
        let zones = self.zones().await?;
        // The newest quote per (type, zone id).
        let mut latest: HashMap<(String, String), Quote> = HashMap::new();
        for q in quotes {
            let Some((_, zone_id)) = zones.iter().find(|(n, _)| *n == q.zone_name) else { continue };
            let Ok(price) = Price::parse_decimal(&q.price) else { continue };
            let e = latest.entry((q.instance_type, zone_id.clone())).or_insert((price, q.at));
            if q.at > e.1 {
                *e = (price, q.at);
            }
        }
        for o in &mut rows {
            let Some(zone) = o.zone.clone() else { continue };
            if !offered.iter().any(|(t, z)| *t == o.instance.name && *z == zone) {
                o.availability =
                    Availability::Unavailable { reason: format!("{} is not offered in {zone}", o.instance.name) };
            }
            if o.capacity == CapacityType::Spot
                && let Some((price, at)) = latest.remove(&(o.instance.name.clone(), zone))
            {
                o.price = price;
                o.source = Source {
                    name: "aws DescribeSpotPriceHistory".into(),
                    as_of: at.map(|t| t.date_naive()).unwrap_or(o.source.as_of),
                };
            }
        }
        // Live spot quotes for zones the catalog has no spot row for.
        let mut extra: Vec<Offering> = Vec::new();
        let mut remaining: Vec<_> = latest.into_iter().collect();
        remaining.sort_by(|a, b| a.0.cmp(&b.0));
        for ((t, zone), (price, at)) in remaining {
            let Some(template) = rows.iter().find(|o| o.instance.name == t) else { continue };
            let mut o = template.clone();
            o.zone = Some(zone.clone());
            o.capacity = CapacityType::Spot;
            o.price = price;
            o.source = Source {
                name: "aws DescribeSpotPriceHistory".into(),
                as_of: at.map(|t| t.date_naive()).unwrap_or(o.source.as_of),
            };
            o.availability = if offered.iter().any(|(ot, z)| *ot == t && *z == zone) {
                Availability::Unknown
            } else {
                Availability::Unavailable { reason: format!("{t} is not offered in {zone}") }
            };
            extra.push(o);
        }
        rows.extend(extra);
        Ok(rows)
    }

    fn ours(&self, i: &Ec2Instance) -> bool {
        i.tags.get(TAG_FLEET) == Some(&self.cfg.fleet)
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Aws
    }

    fn name(&self) -> String {
        format!("aws/{}", self.cfg.region)
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        let live = self.live_offerings().await;
        let catalog = || {
            self.catalog
                .offerings()
                .iter()
                .filter(|o| o.cloud == Cloud::Aws && o.region == self.cfg.region)
                .cloned()
                .collect()
        };
        self.prices.resolve(&self.name(), live, catalog).map(|(rows, _)| rows)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        let o = &req.offering;
        req.check(Cloud::Aws, &self.cfg.fleet)?;
        if o.region != self.cfg.region {
            return Err(ProviderError::InvalidRequest { detail: format!("{o} is not in aws/{}", self.cfg.region) });
        }
        let existing = self
            .api
            .describe_instances(&[], &[(&format!("tag:{TAG_TOKEN}"), vec![req.idempotency_token.clone()])])
            .await
            .map_err(|e| errors::map(e, None))?;
        if let Some(i) = existing.into_iter().find(|i| self.ours(i)) {
            return self.instance(i).await;
        }
        let zone_name = match &o.zone {
            Some(id) => {
                Some(self.zones().await?.iter().find(|(_, zid)| zid == id).map(|(n, _)| n.clone()).ok_or_else(
                    || ProviderError::InvalidRequest { detail: format!("no zone {id} in {}", self.cfg.region) },
                )?)
            }
            None => None,
        };
        let spot = match o.capacity {
            CapacityType::OnDemand => None,
            CapacityType::Spot => Some(req.max_price.map(|p| p.hourly().to_decimal_string())),
            CapacityType::Reserved => unreachable!("LaunchRequest::check refuses reserved capacity"),
        };
        let spec = RunSpec {
            image_id: self.cfg.image_id.clone(),
            instance_type: o.instance_type.clone(),
            zone_name,
            subnet_id: self.cfg.subnet_id.clone(),
            security_group_ids: self.cfg.security_group_ids.clone(),
            key_name: self.cfg.key_name.clone(),
            client_token: req.idempotency_token.clone(),
            tags: req.tags.clone(),
            spot,
        };
        let i = self.api.run_instance(&spec).await.map_err(|e| errors::map(e, Some(o)))?;
        self.instance(i).await
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let found = self.api.describe_instances(&[id.to_string()], &[]).await.map_err(|e| errors::map(e, None))?;
        match found.into_iter().find(|i| i.id == id && self.ours(i)) {
            Some(i) => self.instance(i).await,
            None => Err(ProviderError::NotFound { what: format!("instance {id} of fleet {}", self.cfg.fleet) }),
        }
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let filters = [
            (format!("tag:{TAG_FLEET}"), vec![self.cfg.fleet.clone()]),
            ("instance-state-name".to_string(), LIVE_STATES.map(String::from).to_vec()),
        ];
        let filters: Vec<(&str, Vec<String>)> = filters.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let found = self.api.describe_instances(&[], &filters).await.map_err(|e| errors::map(e, None))?;
        let mut out = Vec::with_capacity(found.len());
        for i in found.into_iter().filter(|i| self.ours(i)) {
            out.push(self.instance(i).await?);
        }
        Ok(out)
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        // Never terminate what is not this fleet's: look first.
        match self.get(id).await {
            Err(ProviderError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
            Ok(i) if i.state == InstanceState::Terminated => return Ok(()),
            Ok(_) => {}
        }
        match self.api.terminate_instance(id).await.map_err(|e| errors::map(e, None)) {
            Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// From the console output, where cloud-init prints the host keys at first boot (EC2 keeps
    /// the latest output; before boot finishes it has none: `Some(empty)`).
    async fn host_keys(&self, id: &str) -> ProviderResult<Option<Vec<String>>> {
        self.get(id).await?; // this fleet's, or NotFound
        let text = self.api.console_output(id).await.map_err(|e| errors::map(e, None))?;
        Ok(Some(text.map(|t| crate::host_keys_in_console(&t)).unwrap_or_default()))
    }
}

/// The price list's quotes, by instance type: the distinct prices each was quoted at (the list
/// writes ten decimals, "98.3200000000"; money keeps six).
fn distinct_prices(quotes: Vec<(String, String)>) -> std::collections::BTreeMap<String, Vec<Price>> {
    let mut out: std::collections::BTreeMap<String, Vec<Price>> = Default::default();
    for (t, usd) in quotes {
        let text = if usd.contains('.') { usd.trim_end_matches('0').trim_end_matches('.') } else { &usd };
        if let Ok(p) = Price::parse_decimal(text) {
            let v = out.entry(t).or_default();
            if !v.contains(&p) {
                v.push(p);
            }
        }
    }
    out
}
