//! Least privilege on real etcd with authentication on: the agent of a node logs in as its own
//! user, serves requests of its app through the real `fleet-agent` binary, and cannot touch
//! another node's keys, the spec, the pinned host keys or another app's queue.

use std::sync::Arc;
use std::time::Duration;

use fleet_agent::model::write_mlp;
use fleet_core::Secret;
use fleet_core::keys::Keys;
use fleet_orchestrator::access::AgentAccess;
use fleet_orchestrator::access::etcd::EtcdAgentAccess;
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::live::{LiveFleet, fast_config, wait_for};
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{NodeRecord, RequestState, RunnerRecord};
use fleet_state::queue;
use fleet_state::store::etcd::{EtcdAuth, EtcdStore};
use fleet_state::store::{Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_user_reaches_only_its_node_and_its_apps() {
    let etcd = EtcdServer::start();
    etcd.enable_auth("root-pw").await;
    let urls = std::slice::from_ref(&etcd.client_url);
    let root = EtcdAuth { user: "root".into(), password: Secret::new("root-pw") };
    let admin = EtcdStore::connect(urls, Some(root), Duration::from_secs(5)).await.unwrap();
    let access = Arc::new(EtcdAgentAccess::new(&admin, "t"));
    let store: Arc<dyn Store> = Arc::new(admin);
    let keys = Keys::new("t");

    let spec = "[fleet]\nname = \"t\"\n[apps.mlp]\ngpu = \"H100\"\ngpus = 1\n[apps.mlp.scaling]\nmin_concurrency = 2\nmax_concurrency = 2\nkeep_alive = \"1h\"\n\
                [apps.other]\ngpu = \"H100\"\ngpus = 1\n";
    let access_dyn: Arc<dyn AgentAccess> = access.clone();
    let _fleet = LiveFleet::start(store.clone(), fast_config(), Some(access_dyn), spec).await;
    let nodes: Vec<u64> = wait_for("two ready nodes", Duration::from_secs(20), || async {
        let (kvs, _) = store.range(&keys.nodes()).await.unwrap();
        let ready: Vec<u64> = kvs
            .iter()
            .map(|kv| kv.json::<NodeRecord>().unwrap())
            .filter(|n| matches!(n.state, NodePhase::Ready { .. }))
            .map(|n| n.id)
            .collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let (me, other) = (nodes[0], nodes[1]);

    // The agent of `me`, with its own user (what the bootstrap writes into its config).
    let (user, password) = access.credentials(me, &["mlp".to_string()]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.safetensors");
    write_mlp(&model, &[4, 8, 2], 2).unwrap();
    std::fs::write(dir.path().join("pw"), password.expose()).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "fleet = \"t\"\nnode = {me}\nendpoints = [\"{}\"]\nuser = \"{user}\"\npassword_file = \"{}\"\nlease_ttl = \"2s\"\npoll = \"50ms\"\n\
             [apps.mlp]\nmodel = \"{}\"\n[burn_in]\ncpu_size = 128\niterations = 2\nmin_cpu_tflops = 0.00001\n",
            etcd.client_url,
            dir.path().join("pw").display(),
            model.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // With only its permissions it registers, brings its runner up and serves a request.
    wait_for("runner idle on my node", Duration::from_secs(30), || async {
        let (kvs, _) = store.range(&keys.runners()).await.unwrap();
        kvs.iter()
            .map(|kv| kv.json::<RunnerRecord>().unwrap())
            .any(|r| r.node() == Some(me) && matches!(r.state, RunnerPhase::Idle { .. }))
            .then_some(())
    })
    .await;
    let id =
        queue::submit(&*store, &keys, "mlp", serde_json::json!({"x": [1, 2, 3, 4]}), chrono::Utc::now()).await.unwrap();
    wait_for("served under least privilege", Duration::from_secs(20), || async {
        matches!(queue::get(&*store, &keys, "mlp", id).await.unwrap().state, RequestState::Done { .. }).then_some(())
    })
    .await;
    assert!(!agent_log().contains("denied"), "{}", agent_log());

    // What that user may not do.
    let creds = EtcdAuth { user: user.clone(), password };
    let mine = EtcdStore::connect(urls, Some(creds.clone()), Duration::from_secs(5)).await.unwrap();
    let denied = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Denied(_)) => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    };
    denied(mine.put(&keys.agent(other), b"{}".to_vec(), None).await.map(|_| ()), "write another node's agent key");
    denied(mine.put(&keys.node(other), b"{}".to_vec(), None).await.map(|_| ()), "write another node's record");
    denied(mine.put(&keys.node(me), b"{}".to_vec(), None).await.map(|_| ()), "write its own node record");
    denied(mine.get(&keys.spec()).await.map(|_| ()), "read the spec");
    denied(mine.get(&keys.host_key(other)).await.map(|_| ()), "read the pinned host keys");
    denied(mine.range(&keys.nodes()).await.map(|_| ()), "list the nodes");
    denied(mine.put(&keys.queued("other", 1), b"{}".to_vec(), None).await.map(|_| ()), "write another app's queue");
    let (kvs, _) = store.range(&keys.runners()).await.unwrap();
    let runners: Vec<RunnerRecord> = kvs.iter().map(|kv| kv.json().unwrap()).collect();
    let theirs = runners.iter().find(|r| r.node() == Some(other)).expect("a runner on the other node");
    denied(mine.put(&keys.runner(theirs.id), b"{}".to_vec(), None).await.map(|_| ()), "write another node's runner");
    // What it may: its own health key and reading runner records.
    assert!(mine.get(&keys.agent(me)).await.unwrap().is_some());
    assert_eq!(mine.range(&keys.runners()).await.unwrap().0.len(), runners.len());

    // The node gone, its user goes.
    access.forget_node(me).await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let still_works = match EtcdStore::connect(urls, Some(creds), Duration::from_secs(5)).await {
        Err(_) => false,
        Ok(s) => s.get(&keys.agent(me)).await.is_ok(),
    };
    assert!(!still_works, "{user} still logs in after its node is gone");
}
