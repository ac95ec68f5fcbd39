//! The EC2 calls fleet uses, narrowed to a private trait over plain types. The SDK stays here:
//! the provider logic above it can be read (and tested) without SDK types.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest, LocationType,
    MarketType, Placement, ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use chrono::{DateTime, Utc};

use super::errors::ApiError;

/// What RunInstances is asked for.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub image_id: String,
    pub instance_type: String,
    pub zone_name: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    pub client_token: String,
    pub tags: BTreeMap<String, String>,
    /// `Some(max_price)` for spot; `Some(None)` is spot at the default max (on-demand) price.
    pub spot: Option<Option<String>>,
}

/// An instance as DescribeInstances / RunInstances report it.
#[derive(Debug, Clone)]
pub(crate) struct Ec2Instance {
    pub id: String,
    pub instance_type: String,
    pub zone_name: Option<String>,
    pub spot: bool,
    pub state: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub launch_time: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) struct SpotQuote {
    pub instance_type: String,
    pub zone_name: String,
    pub price: String,
    pub at: Option<DateTime<Utc>>,
}

#[async_trait]
pub(crate) trait Ec2Api: Send + Sync {
    async fn run_instance(&self, spec: &RunSpec) -> Result<Ec2Instance, ApiError>;
    /// All pages. `ids` empty means "any id".
    async fn describe_instances(
        &self,
        ids: &[String],
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<Ec2Instance>, ApiError>;
    async fn terminate_instance(&self, id: &str) -> Result<(), ApiError>;
    /// The instance's console output (decoded text; `None` while EC2 has none yet).
    async fn console_output(&self, id: &str) -> Result<Option<String>, ApiError>;
    /// Latest Linux/UNIX spot prices for these types, all pages.
    async fn spot_prices(&self, types: &[String]) -> Result<Vec<SpotQuote>, ApiError>;
    /// (zone name, zone id) of the region's zones.
    async fn zones(&self) -> Result<Vec<(String, String)>, ApiError>;
    /// (instance type, zone id) pairs the region offers.
    async fn type_offerings(&self, types: &[String]) -> Result<Vec<(String, String)>, ApiError>;
}

/// The AWS Price List Query API (GetProducts), narrowed to the one question fleet asks.
#[async_trait]
pub(crate) trait PriceListApi: Send + Sync {
    /// The on-demand Linux price per hour (USD, decimal text) of each type in `region_code`.
    async fn on_demand_prices(&self, region_code: &str, types: &[String]) -> Result<Vec<(String, String)>, ApiError>;
}

pub(crate) struct SdkPricing {
    pub client: aws_sdk_pricing::Client,
}

/// The USD price of a GetProducts entry's on-demand term (`terms.OnDemand.*.priceDimensions.*`):
/// an hourly dimension with a price above zero (the list carries $0 dimensions, e.g. for
/// reservations' unused hours, which are no price at all).
pub(crate) fn on_demand_usd(entry: &serde_json::Value) -> Option<String> {
    let terms = entry["terms"]["OnDemand"].as_object()?;
    let nonzero = |s: &str| s.bytes().any(|b| (b'1'..=b'9').contains(&b));
    terms.values().find_map(|t| {
        t["priceDimensions"].as_object()?.values().find_map(|d| {
            let usd = d["pricePerUnit"]["USD"].as_str()?;
            (d["unit"] == "Hrs" && nonzero(usd)).then(|| usd.to_string())
        })
    })
}

#[async_trait]
impl PriceListApi for SdkPricing {
    async fn on_demand_prices(&self, region_code: &str, types: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        use aws_sdk_pricing::types::{Filter as PFilter, FilterType};
        let mut out = Vec::new();
        for t in types {
            // Shared tenancy, Linux without pre-installed software, capacity used (not reserved),
            // bought on demand (not a Capacity Block), as the published pricing clients filter.
            let filters = [
                ("marketoption", "OnDemand"),
                ("instanceType", t.as_str()),
                ("regionCode", region_code),
                ("operatingSystem", "Linux"),
                ("tenancy", "Shared"),
                ("preInstalledSw", "NA"),
                ("capacitystatus", "Used"),
            ];
            let mut next: Option<String> = None;
            loop {
                let mut req = self.client.get_products().service_code("AmazonEC2").format_version("aws_v1");
                for (field, value) in filters {
                    let f =
                        PFilter::builder().r#type(FilterType::TermMatch).field(field).value(value).build().map_err(
                            |e| ApiError {
                                code: None,
                                message: e.to_string(),
                                status: None,
                                retry_after: None,
                                transport: false,
                            },
                        )?;
                    req = req.filters(f);
                }
                if let Some(n) = &next {
                    req = req.next_token(n);
                }
                let page = req.send().await.map_err(api_error)?;
                for entry in page.price_list() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(entry) else { continue };
                    if v["product"]["attributes"]["instanceType"] != t.as_str() {
                        continue;
                    }
                    if let Some(usd) = on_demand_usd(&v) {
                        out.push((t.clone(), usd));
                    }
                }
                match page.next_token() {
                    Some(n) if !n.is_empty() => next = Some(n.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

pub(crate) struct SdkEc2 {
    pub client: aws_sdk_ec2::Client,
}

fn api_error<E>(e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let raw = e.raw_response();
    let status = raw.map(|r| r.status().as_u16());
    let retry_after = raw
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // No credentials in the chain fails before sending, as a dispatch failure; it is not
    // transient (retrying will not find credentials), so it gets a code of its own.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    let mut no_credentials = false;
    while let Some(s) = source {
        no_credentials |= format!("{s:?}").starts_with("CredentialsNotLoaded");
        source = s.source();
    }
    let transport = !no_credentials && matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_));
    let code =
        if no_credentials { Some(super::errors::NO_CREDENTIALS.to_string()) } else { e.code().map(str::to_string) };
    let message = e.message().map(str::to_string).unwrap_or_else(|| {
        // The SDK's context ends with a debug dump of the error; the first line says it all.
        DisplayErrorContext(&e).to_string().split(" (").next().unwrap_or_default().to_string()
    });
    ApiError { code, message, status, retry_after, transport }
}

fn time(t: Option<&aws_sdk_ec2::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Ec2Instance {
    Ec2Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        zone_name: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
        spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        public_ip: i.public_ip_address().map(str::to_string),
        private_ip: i.private_ip_address().map(str::to_string),
        launch_time: time(i.launch_time()),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect(),
    }
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    async fn run_instance(&self, spec: &RunSpec) -> Result<Ec2Instance, ApiError> {
        let tags: Vec<Tag> = spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let mut req = self
            .client
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(spec.instance_type.as_str().into())
            .min_count(1)
            .max_count(1)
            .client_token(&spec.client_token)
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tags.clone())).build(),
            )
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Volume).set_tags(Some(tags)).build(),
            )
            .set_subnet_id(spec.subnet_id.clone())
            .set_key_name(spec.key_name.clone());
        for g in &spec.security_group_ids {
            req = req.security_group_ids(g);
        }
        if let Some(z) = &spec.zone_name {
            req = req.placement(Placement::builder().availability_zone(z).build());
        }
        if let Some(max) = &spec.spot {
            let opts = SpotMarketOptions::builder()
                .set_max_price(max.clone())
                .spot_instance_type(SpotInstanceType::OneTime)
                .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                .build();
            req = req.instance_market_options(
                InstanceMarketOptionsRequest::builder().market_type(MarketType::Spot).spot_options(opts).build(),
            );
        }
        let out = req.send().await.map_err(api_error)?;
        out.instances().first().map(instance).ok_or_else(|| ApiError {
            code: None,
            message: "RunInstances returned no instance".into(),
            status: None,
            retry_after: None,
            transport: false,
        })
    }

    async fn describe_instances(
        &self,
        ids: &[String],
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<Ec2Instance>, ApiError> {
        let mut req = self.client.describe_instances().set_instance_ids((!ids.is_empty()).then(|| ids.to_vec()));
        for (name, values) in filters {
            req = req.filters(Filter::builder().name(*name).set_values(Some(values.clone())).build());
        }
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(api_error)?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances()).map(instance));
        }
        Ok(out)
    }

    async fn terminate_instance(&self, id: &str) -> Result<(), ApiError> {
        self.client.terminate_instances().instance_ids(id).send().await.map_err(api_error)?;
        Ok(())
    }

    async fn console_output(&self, id: &str) -> Result<Option<String>, ApiError> {
        use base64::Engine as _;
        let out = self.client.get_console_output().instance_id(id).latest(true).send().await.map_err(api_error)?;
        let Some(encoded) = out.output() else { return Ok(None) };
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|e| ApiError {
            code: None,
            message: format!("console output of {id} is not base64: {e}"),
            status: None,
            retry_after: None,
            transport: false,
        })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn spot_prices(&self, types: &[String]) -> Result<Vec<SpotQuote>, ApiError> {
        let mut req = self.client.describe_spot_price_history().product_descriptions("Linux/UNIX");
        for t in types {
            req = req.instance_types(t.as_str().into());
        }
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(api_error)?;
            for p in page.spot_price_history() {
                let (Some(t), Some(z), Some(price)) = (p.instance_type(), p.availability_zone(), p.spot_price()) else {
                    continue;
                };
                out.push(SpotQuote {
                    instance_type: t.as_str().to_string(),
                    zone_name: z.to_string(),
                    price: price.to_string(),
                    at: time(p.timestamp()),
                });
            }
        }
        Ok(out)
    }

    async fn zones(&self) -> Result<Vec<(String, String)>, ApiError> {
        let out = self.client.describe_availability_zones().send().await.map_err(api_error)?;
        Ok(out
            .availability_zones()
            .iter()
            .filter_map(|z| Some((z.zone_name()?.to_string(), z.zone_id()?.to_string())))
            .collect())
    }

    async fn type_offerings(&self, types: &[String]) -> Result<Vec<(String, String)>, ApiError> {
        let req = self
            .client
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZoneId)
            .filters(Filter::builder().name("instance-type").set_values(Some(types.to_vec())).build());
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(api_error)?;
            for o in page.instance_type_offerings() {
                if let (Some(t), Some(l)) = (o.instance_type(), o.location()) {
                    out.push((t.as_str().to_string(), l.to_string()));
                }
            }
        }
        Ok(out)
    }
}
