//! Cloud providers from the spec's `[clouds.*]` accounts: where fleetd turns an account's
//! settings (and the credentials in its environment) into adapters. Credentials never come from
//! the spec: `LAMBDA_API_KEY`, `RUNPOD_API_KEY`, the AWS chain, GCP's Application Default
//! Credentials, the Azure chain (or `AZURE_ACCESS_TOKEN`, a bearer token fetched elsewhere).

use std::collections::BTreeMap;
use std::sync::Arc;

use fleet_core::spec::CloudAccounts;
use fleet_core::{Catalog, Cloud};
use fleet_providers::Provider;

/// Why an account could not become a provider.
#[derive(Debug, thiserror::Error)]
pub enum CloudsError {
    #[error(
        "[clouds.{cloud}] is configured but {var} is not set in fleetd's environment; set it to the account's API key"
    )]
    MissingKey { cloud: Cloud, var: &'static str },
    #[error("[clouds.{cloud}] needs fleetd built with the `{cloud}` feature")]
    NotBuilt { cloud: Cloud },
    #[error("[clouds.{cloud}]: {detail}")]
    Provider { cloud: Cloud, detail: String },
}

#[cfg_attr(not(any(feature = "lambda", feature = "runpod")), allow(dead_code))]
fn env_secret(cloud: Cloud, var: &'static str) -> Result<fleet_core::Secret, CloudsError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(fleet_core::Secret::new(v.trim())),
        _ => Err(CloudsError::MissingKey { cloud, var }),
    }
}

/// One provider per configured account.
pub async fn build(
    fleet: &str,
    accounts: &CloudAccounts,
    catalog: Arc<Catalog>,
) -> Result<BTreeMap<Cloud, Arc<dyn Provider>>, CloudsError> {
    #[allow(unused_mut)] // without any cloud feature nothing is inserted
    let mut out: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    let _ = (&catalog, fleet);
    if let Some(a) = &accounts.aws {
        #[cfg(feature = "aws")]
        {
            use fleet_providers::aws::{AwsConfig, AwsProvider};
            let mut cfg = AwsConfig::new(fleet, &a.region, &a.image);
            cfg.subnet_id = a.subnet.clone();
            cfg.security_group_ids = a.security_groups.clone();
            cfg.key_name = a.key_name.clone();
            cfg.endpoint_url = a.endpoint.clone();
            out.insert(Cloud::Aws, Arc::new(AwsProvider::connect(cfg, catalog.clone()).await));
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = a;
            return Err(CloudsError::NotBuilt { cloud: Cloud::Aws });
        }
    }
    if let Some(a) = &accounts.gcp {
        #[cfg(feature = "gcp")]
        {
            use fleet_providers::gcp::{GcpConfig, GcpProvider};
            let mut cfg = GcpConfig::new(fleet, &a.project, &a.image);
            cfg.zones = a.zones.clone();
            cfg.network = a.network.clone();
            cfg.subnetwork = a.subnetwork.clone();
            cfg.ssh_public_key = a.ssh_public_key.clone();
            cfg.endpoint = a.endpoint.clone();
            // Only for a local test server: Google's API refuses anonymous calls.
            cfg.anonymous = std::env::var("FLEET_GCP_ANONYMOUS").is_ok_and(|v| v == "1");
            let p = GcpProvider::connect(cfg, catalog.clone())
                .await
                .map_err(|e| CloudsError::Provider { cloud: Cloud::Gcp, detail: e.to_string() })?;
            out.insert(Cloud::Gcp, Arc::new(p));
        }
        #[cfg(not(feature = "gcp"))]
        {
            let _ = a;
            return Err(CloudsError::NotBuilt { cloud: Cloud::Gcp });
        }
    }
    if let Some(a) = &accounts.azure {
        #[cfg(feature = "azure")]
        {
            use fleet_providers::azure::{AzureConfig, AzureProvider, FixedToken};
            let image = a.image.parse().map_err(|detail| CloudsError::Provider { cloud: Cloud::Azure, detail })?;
            let mut cfg =
                AzureConfig::new(fleet, &a.subscription_id, &a.resource_group, &a.subnet_id, image, &a.ssh_public_key);
            cfg.regions = a.regions.clone();
            cfg.network_security_group = Some(a.network_security_group.clone());
            cfg.admin_username = a.admin_username.clone();
            if let Some(e) = &a.endpoint {
                cfg.endpoint = e.clone();
            }
            if let Ok(t) = std::env::var("AZURE_ACCESS_TOKEN") {
                cfg.credential = Some(Arc::new(FixedToken(fleet_core::Secret::new(t.trim()))));
            }
            let p = AzureProvider::new(cfg, catalog.clone())
                .map_err(|e| CloudsError::Provider { cloud: Cloud::Azure, detail: e.to_string() })?;
            out.insert(Cloud::Azure, Arc::new(p));
        }
        #[cfg(not(feature = "azure"))]
        {
            let _ = a;
            return Err(CloudsError::NotBuilt { cloud: Cloud::Azure });
        }
    }
    if let Some(a) = &accounts.lambda {
        #[cfg(feature = "lambda")]
        {
            use fleet_providers::lambda::{LambdaConfig, LambdaProvider};
            let key = env_secret(Cloud::Lambda, "LAMBDA_API_KEY")?;
            let mut cfg = LambdaConfig::new(fleet, key, &a.ssh_key_name);
            cfg.regions = a.regions.clone();
            if let Some(e) = &a.endpoint {
                cfg.endpoint = e.clone();
            }
            out.insert(Cloud::Lambda, Arc::new(LambdaProvider::new(cfg, catalog.clone())));
        }
        #[cfg(not(feature = "lambda"))]
        {
            let _ = a;
            return Err(CloudsError::NotBuilt { cloud: Cloud::Lambda });
        }
    }
    if let Some(a) = &accounts.runpod {
        #[cfg(feature = "runpod")]
        {
            use fleet_providers::runpod::{RunpodConfig, RunpodProvider};
            let key = env_secret(Cloud::Runpod, "RUNPOD_API_KEY")?;
            let mut cfg = RunpodConfig::new(fleet, key, &a.image);
            cfg.data_centers = a.data_centers.clone();
            cfg.ssh_public_key = a.ssh_public_key.clone();
            if let Some(e) = &a.endpoint {
                cfg.endpoint = e.clone();
            }
            out.insert(Cloud::Runpod, Arc::new(RunpodProvider::new(cfg, catalog.clone())));
        }
        #[cfg(not(feature = "runpod"))]
        {
            let _ = a;
            return Err(CloudsError::NotBuilt { cloud: Cloud::Runpod });
        }
    }
    Ok(out)
}
