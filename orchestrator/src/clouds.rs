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

/// Nodes that may hold an instance on a cloud this fleetd has no provider for (its account was
/// removed from the spec, or a flag's cloud not given again): nothing could drain, check or
/// terminate them, so fleetd refuses to start while there are any, naming them, unless the
/// operator has `forget` them (terminated by hand): their records are then closed, with an event.
pub async fn check_stranded(
    store: &dyn fleet_state::store::Store,
    keys: &fleet_core::keys::Keys,
    enabled: &std::collections::BTreeSet<Cloud>,
    forget: &std::collections::BTreeSet<Cloud>,
    now: fleet_core::Time,
) -> Result<Vec<fleet_core::NodeId>, String> {
    use fleet_state::lifecycle::node::NodePhase;
    use fleet_state::model::NodeRecord;
    let (kvs, _) = store.range(&keys.nodes()).await.map_err(|e| e.to_string())?;
    let stranded: Vec<NodeRecord> = kvs
        .iter()
        .filter_map(|kv| kv.json::<NodeRecord>().ok())
        .filter(|n| {
            n.is_live() && !matches!(n.state, NodePhase::Requested { .. } | NodePhase::Failed { instance_id: None, .. })
        })
        .filter(|n| n.offering().is_some_and(|o| !enabled.contains(&o.cloud)))
        .collect();
    let (forgotten, kept): (Vec<NodeRecord>, Vec<NodeRecord>) =
        stranded.into_iter().partition(|n| n.offering().is_some_and(|o| forget.contains(&o.cloud)));
    if !kept.is_empty() {
        let lines: Vec<String> = kept
            .iter()
            .map(|n| {
                let o = n.offering().expect("filtered on its offering");
                format!(
                    "  node {} of {} on {o}, instance {}, {}",
                    n.id,
                    n.app,
                    n.state.instance_id().unwrap_or("(launch in flight)"),
                    n.price.map_or_else(|| "price unknown".to_string(), |p| p.to_string())
                )
            })
            .collect();
        let clouds: std::collections::BTreeSet<String> =
            kept.iter().filter_map(|n| n.offering()).map(|o| o.cloud.to_string()).collect();
        let clouds: Vec<String> = clouds.into_iter().collect();
        return Err(format!(
            "{} node{} may still bill on {}, which this fleetd has no account for, so nothing would drain or terminate {}:\n{}\n\
             Start fleetd with the [clouds.*] account again (the fleet drains and terminates what it no longer plans for), \
             or terminate those instances in the cloud's console and start with --forget-cloud {} to close their records.",
            kept.len(),
            if kept.len() == 1 { "" } else { "s" },
            clouds.join(", "),
            if kept.len() == 1 { "it" } else { "them" },
            lines.join("\n"),
            clouds.join(",")
        ));
    }
    let mut closed = Vec::new();
    for n in forgotten {
        let done = fleet_state::model::update(store, &keys.node(n.id), |cur: &NodeRecord| {
            cur.is_live().then(|| NodeRecord {
                state: NodePhase::Terminated { since: now },
                billing_until: cur.billing_since.map(|_| now),
                ..cur.clone()
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(rec) = done {
            let message = format!(
                "record closed by the operator (--forget-cloud {}): its instance {} is no longer fleet's to manage",
                n.offering().map(|o| o.cloud.to_string()).unwrap_or_default(),
                n.state.instance_id().unwrap_or("-")
            );
            let ev = fleet_state::events::NewEvent::node(fleet_state::events::EventKind::Operator, &rec, message);
            fleet_state::events::record(store, keys, now, ev).await.map_err(|e| e.to_string())?;
            closed.push(n.id);
        }
    }
    Ok(closed)
}

#[cfg(test)]
mod stranded_tests {
    use std::collections::BTreeSet;

    use fleet_core::CapacityType;
    use fleet_core::keys::Keys;
    use fleet_state::lifecycle::node::NodePhase;
    use fleet_state::model::{CandidateRecord, NodeRecord};
    use fleet_state::store::Store;
    use fleet_state::store::embedded::EmbeddedStore;

    use super::*;

    fn node(id: u64, cloud: Cloud, state: NodePhase) -> NodeRecord {
        let o = crate::testing::harness::h100x8(cloud, "us-east-1", "20", CapacityType::OnDemand);
        NodeRecord {
            id,
            app: "llm".into(),
            state,
            candidates: vec![CandidateRecord { offering: o.key(), price: o.price, slots: 8 }],
            attempt: 0,
            slots: 8,
            price: Some(o.price),
            billing_since: Some(chrono::Utc::now()),
            billing_until: None,
            cordoned: false,
            leaving: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn fleetd_refuses_to_leave_nodes_on_a_cloud_it_has_no_account_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let keys = Keys::new("t");
        let now = chrono::Utc::now();
        let o = crate::testing::harness::h100x8(Cloud::Aws, "us-east-1", "20", CapacityType::OnDemand).key();
        let ready = NodePhase::Ready { instance_id: "i-0abc".into(), offering: o.clone(), since: now };
        let gone = NodePhase::Terminated { since: now };
        for n in [node(1, Cloud::Aws, ready.clone()), node(2, Cloud::Lambda, ready), node(3, Cloud::Aws, gone)] {
            store.put(&keys.node(n.id), fleet_state::store::to_json(&n), None).await.unwrap();
        }
        let lambda: BTreeSet<Cloud> = [Cloud::Lambda].into();
        let e = check_stranded(&store, &keys, &lambda, &BTreeSet::new(), now).await.unwrap_err();
        assert!(e.starts_with("1 node may still bill on aws"), "{e}");
        assert!(e.contains("node 1 of llm") && e.contains("i-0abc") && e.contains("$20.00/h"), "{e}");
        assert!(e.contains("--forget-cloud aws") && !e.contains("node 2") && !e.contains("node 3"), "{e}");
        // With both accounts nothing is stranded; forgetting closes the record with an event.
        let both: BTreeSet<Cloud> = [Cloud::Lambda, Cloud::Aws].into();
        assert_eq!(check_stranded(&store, &keys, &both, &BTreeSet::new(), now).await, Ok(vec![]));
        let aws: BTreeSet<Cloud> = [Cloud::Aws].into();
        assert_eq!(check_stranded(&store, &keys, &lambda, &aws, now).await, Ok(vec![1]));
        let (n1, _) = fleet_state::store::get_json::<NodeRecord>(&store, &keys.node(1)).await.unwrap().unwrap();
        assert!(matches!(n1.state, NodePhase::Terminated { .. }) && n1.billing_until == Some(now));
        let ev = fleet_state::events::list(&store, &keys, &Default::default()).await.unwrap();
        assert!(ev[0].message.contains("--forget-cloud aws") && ev[0].message.contains("i-0abc"), "{ev:?}");
        assert_eq!(check_stranded(&store, &keys, &lambda, &BTreeSet::new(), now).await, Ok(vec![]));
    }
}
