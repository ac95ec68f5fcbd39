//! The `local` provider passes the conformance suite every adapter passes (its nodes here are
//! plain `sleep` processes), finds its nodes again after a restart, and refuses a launch beyond
//! its capacity with InsufficientCapacity.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use fleet_core::CapacityType;
use fleet_providers::conformance::{self, ConformanceEnv};
use fleet_providers::local::{LocalConfig, LocalProvider, NodeStarter, local_offerings};
use fleet_providers::{InstanceState, LaunchRequest, Provider, ProviderError};

#[derive(Debug)]
struct Sleeper;

#[async_trait]
impl NodeStarter for Sleeper {
    async fn prepare(&self, _req: &LaunchRequest, _dir: &Path) -> Result<Command, String> {
        let mut c = Command::new("sleep");
        c.arg("300");
        Ok(c)
    }
}

fn provider(dir: &Path, capacity: usize) -> LocalProvider {
    let cfg = LocalConfig { fleet: "t".into(), dir: dir.to_path_buf(), offerings: local_offerings(), capacity };
    LocalProvider::new(cfg, Arc::new(Sleeper)).unwrap()
}

fn key(capacity: CapacityType) -> fleet_core::OfferingKey {
    local_offerings().into_iter().find(|o| o.capacity == capacity && o.instance.gpu_count == 1).unwrap().key()
}

#[tokio::test]
async fn local_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 8);
    let env = ConformanceEnv {
        fleet: "t".into(),
        on_demand: key(CapacityType::OnDemand),
        spot: Some(key(CapacityType::Spot)),
        missing_id: "local-nope".into(),
        run_id: "conf".into(),
    };
    conformance::run(&p, &env).await;
}

#[tokio::test]
async fn nodes_are_found_again_after_a_restart_and_capacity_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 1);
    let req = LaunchRequest::new("t", "1", "app", key(CapacityType::OnDemand));
    let a = p.launch(&req).await.unwrap();
    let full = p.launch(&LaunchRequest::new("t", "2", "app", key(CapacityType::OnDemand))).await.unwrap_err();
    assert!(matches!(full, ProviderError::InsufficientCapacity { .. }), "{full}");
    drop(p);

    // A new provider on the same directory (fleetd restarted): the node is still there, and a
    // launch re-sent with its token returns it instead of starting another.
    let p = provider(dir.path(), 1);
    assert_eq!(p.list().await.unwrap().iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![a.id.clone()]);
    assert_eq!(p.launch(&req).await.unwrap().id, a.id);
    p.terminate(&a.id).await.unwrap();
    let mut state = p.get(&a.id).await.unwrap().state;
    for _ in 0..50 {
        if state == InstanceState::Terminated {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state = p.get(&a.id).await.unwrap().state;
    }
    assert_eq!(state, InstanceState::Terminated);
    assert!(p.list().await.unwrap().is_empty());
}

/// A terminated node's process is reaped: no zombie is left under the process that launched it
/// (fleetd), which nothing else would ever wait for.
#[tokio::test]
async fn a_terminated_node_leaves_no_zombie() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(dir.path(), 1);
    let a = p.launch(&LaunchRequest::new("t", "1", "app", key(CapacityType::OnDemand))).await.unwrap();
    let records: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("instances.json")).unwrap()).unwrap();
    let pid = records[0]["pid"].as_u64().unwrap();
    p.terminate(&a.id).await.unwrap();
    let state = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()).map(str::to_string))
    };
    let mut last = state(pid);
    for _ in 0..100 {
        if last.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = state(pid);
    }
    assert_eq!(last, None, "process {pid} still there (state {last:?}: Z is a zombie)");
}
