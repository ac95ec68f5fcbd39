//! SSH bootstrap of the real `fleet-agent` binary onto localhost, through a real OpenSSH server
//! (Debian's openssh-server on a loopback port with temp host and user keys) with a real etcd:
//! it installs and starts the agent, which registers and passes burn-in on the CPU; a second
//! bootstrap changes nothing; a wrong host key is refused with a clear error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::model::write_mlp;
use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud, Secret};
use fleet_orchestrator::actors::Bootstrap;
use fleet_orchestrator::bootstrap::ssh::SshError;
use fleet_orchestrator::bootstrap::{BootstrapError, PushSetup, SshBootstrap, SshBootstrapConfig};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::harness::h100x8;
use fleet_orchestrator::testing::sshd::SshServer;
use fleet_providers::{Instance, InstanceState};
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{AgentRecord, CandidateRecord, NodeRecord, RunnerRecord};
use fleet_state::store::etcd::EtcdStore;
use fleet_state::store::{Store, get_json};

/// Stops the agent the test started on "the node" (this machine) when the test ends.
struct Supervisor(PathBuf);

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("supervisor.pid")) {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", pid.trim())]).status();
        }
    }
}

fn node(id: u64) -> NodeRecord {
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    NodeRecord {
        id,
        app: "mlp".into(),
        state: NodePhase::Bootstrapping {
            instance_id: format!("i-{id}"),
            offering: o.key(),
            since: chrono::Utc::now(),
        },
        candidates: vec![CandidateRecord { offering: o.key(), price: o.price, slots: 8 }],
        attempt: 0,
        slots: 8,
        price: Some(o.price),
        billing_since: None,
        billing_until: None,
        cordoned: false,
        leaving: None,
        created_at: chrono::Utc::now(),
    }
}

fn instance(id: u64, host_key: Option<String>) -> Instance {
    Instance {
        id: format!("i-{id}"),
        offering: h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand).key(),
        state: InstanceState::Running,
        public_ip: Some("127.0.0.1".parse().unwrap()),
        private_ip: None,
        ssh: Some("127.0.0.1:22".parse().unwrap()),
        ssh_host_keys: host_key.into_iter().collect(),
        launched_at: None,
        tags: Default::default(),
    }
}

fn bootstrapper(sshd: &SshServer, etcd: &str, store: Arc<dyn Store>, remote: &Path, model: &Path) -> SshBootstrap {
    let port = sshd.port;
    let mut cfg = config(sshd, etcd, remote, model);
    // The "instances" are this machine: every one is reached on the test's sshd.
    cfg.resolve = Some(Arc::new(move |_: &Instance| Some(SocketAddr::from(([127, 0, 0, 1], port)))));
    SshBootstrap::new(cfg, store).unwrap()
}

/// Dials where the instance says its sshd is (no override).
fn config(sshd: &SshServer, etcd: &str, remote: &Path, model: &Path) -> SshBootstrapConfig {
    SshBootstrapConfig {
        fleet: "t".into(),
        user: sshd.user.clone(),
        key: Secret::new(sshd.user_key.clone()),
        agent_binary: env!("CARGO_BIN_EXE_fleet-agent").into(),
        remote_dir: remote.display().to_string(),
        endpoints: vec![etcd.to_string()],
        lease_ttl: "2s".into(),
        models: [("mlp".to_string(), model.to_path_buf())].into(),
        extra_agent_config: "[burn_in]\ncpu_size = 128\niterations = 2\nmin_cpu_tflops = 0.00001\n".into(),
        connect_timeout: Duration::from_secs(10),
        max_concurrent: 4,
        resolve: None,
        credentials: None,
        // The "machines" are this CPU box: the [rented] check is the agent's own tests'.
        check_hardware: false,
        push: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_installs_the_agent_over_ssh_idempotently_and_refuses_a_wrong_host_key() {
    let etcd = EtcdServer::start();
    let sshd = SshServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
    );
    let keys = Keys::new("t");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 16, 2], 1).unwrap();
    let remote = dir.path().join("node-1");
    let _guard = Supervisor(remote.clone());
    // With pushed requests: the agent serves them on every address, over TLS.
    let push_key = Secret::new("k".repeat(64));
    let push_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let b = {
        let port = sshd.port;
        let mut cfg = config(&sshd, &etcd.client_url, &remote, &model);
        cfg.resolve = Some(Arc::new(move |_: &Instance| Some(SocketAddr::from(([127, 0, 0, 1], port)))));
        cfg.push = Some(PushSetup { key: push_key.clone(), port: push_port });
        // And a language model: a directory, uploaded file by file.
        let llm = dir.path().join("tiny-llama");
        fleet_agent::llm::testmodel::write(&llm, fleet_agent::llm::Family::Llama, Default::default(), 2, 1).unwrap();
        cfg.models.insert("chat".into(), llm);
        SshBootstrap::new(cfg, store.clone()).unwrap()
    };

    // First contact: trust on first use, install, start; ready once the agent reports healthy.
    let (n1, i1) = (node(1), instance(1, None));
    let t = Instant::now();
    loop {
        match b.bootstrap(&n1, &i1).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("bootstrap failed: {e}\nsshd:\n{}", sshd.log()),
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "agent not healthy in 60 s; its log:\n{}",
            std::fs::read_to_string(remote.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("bootstrap to a healthy agent: {:?}", t.elapsed());
    let (agent, _) = get_json::<AgentRecord>(&*store, &keys.agent(1)).await.unwrap().expect("agent registered");
    let burn = agent.health.burn_in.expect("burn-in figures");
    assert!(burn.passed && burn.device == "cpu", "{burn:?}");
    // What was installed, with which permissions.
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(remote.join(f)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode("fleet-agent"), 0o755);
    assert_eq!(mode("agent.toml"), 0o600);
    assert_eq!(mode("models/mlp.safetensors"), 0o644);
    assert_eq!(mode(""), 0o700, "the install dir is private");
    assert_eq!(mode("push.token"), 0o600);
    // The push endpoint: published at the address fleetd dialled, with the certificate to pin.
    assert_eq!(agent.health.push_addr, Some(format!("127.0.0.1:{push_port}")));
    let pin = agent.health.push_cert_sha256.clone().expect("a certificate to pin");
    let credential = fleet_orchestrator::push::credential(&push_key, 1).expose().to_string();
    let push_addr = format!("127.0.0.1:{push_port}");
    let config = std::fs::read_to_string(remote.join("agent.toml")).unwrap();
    assert!(config.contains("node = 1") && config.contains(&etcd.client_url), "{config}");
    let hello = r#"{"prompt": "hello world", "max_tokens": 3}"#;
    let (status, body) = push(&push_addr, &pin, &credential, 999, hello).await.unwrap();
    assert_eq!(status, 404, "TLS, pinned: the agent answers (no such runner): {body}");
    assert_eq!(push(&push_addr, &pin, &"x".repeat(64), 999, hello).await.unwrap().0, 401, "another credential");
    let e = push(&push_addr, &"0".repeat(64), &credential, 999, hello).await.unwrap_err();
    assert!(e.contains("is not the one its agent published"), "another certificate is refused: {e}");
    // The language model went file by file; a runner of it placed on the node loads it from
    // there and answers a pushed request.
    assert_eq!(mode("models/chat/config.json"), 0o644);
    assert!(remote.join("models/chat/model.safetensors.index.json").is_file(), "both shards and their index");
    assert!(config.contains(&format!("model = \"{}/models/chat\"", remote.display())), "{config}");
    let now = chrono::Utc::now();
    let r = RunnerRecord {
        state: RunnerPhase::Starting { node: 1, since: now },
        ..RunnerRecord::placed(7, "chat", 1, now)
    };
    store.txn(vec![], r.put_ops(&keys)).await.unwrap();
    let t = Instant::now();
    loop {
        let (r, _) = get_json::<RunnerRecord>(&*store, &keys.runner(7)).await.unwrap().unwrap();
        if matches!(r.state, RunnerPhase::Idle { .. }) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "runner not loaded: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = push(&push_addr, &pin, &credential, 7, hello).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let last: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"]["usage"]["completion_tokens"], 3, "{body}");
    store.txn(vec![], r.delete_ops(&keys)).await.unwrap();
    // The host key was recorded at first contact, and the node's events say so.
    let ev = fleet_state::events::list(&*store, &keys, &Default::default()).await.unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].kind, ev[0].node), (fleet_state::events::EventKind::HostKey, Some(1)));
    assert!(ev[0].message.contains("pinned at first contact: the cloud reports none"), "{}", ev[0].message);
    let pinned = store.get(&keys.host_key(1)).await.unwrap().expect("host key recorded");
    assert_eq!(
        String::from_utf8_lossy(&pinned.value).split_whitespace().nth(1),
        sshd.host_key.split_whitespace().nth(1)
    );

    // A second bootstrap changes nothing: no upload, no restart, the same supervisor.
    let pid = std::fs::read_to_string(remote.join("supervisor.pid")).unwrap();
    let binary_mtime = std::fs::metadata(remote.join("fleet-agent")).unwrap().modified().unwrap();
    let again = b.install(&n1, &i1).await.unwrap();
    assert!(again.uploaded.is_empty() && !again.restarted, "{again:?}");
    assert_eq!(std::fs::read_to_string(remote.join("supervisor.pid")).unwrap(), pid);
    assert_eq!(std::fs::metadata(remote.join("fleet-agent")).unwrap().modified().unwrap(), binary_mtime);

    // A wrong host key is refused: the one the cloud reported for the instance…
    let wrong = sshd.other_host_key();
    let err = b.install(&node(2), &instance(2, Some(wrong.clone()))).await.unwrap_err();
    assert!(matches!(err, BootstrapError::Ssh(SshError::HostKeyMismatch { .. })), "{err}");
    let msg = b.bootstrap(&node(2), &instance(2, Some(wrong.clone()))).await.unwrap_err();
    assert!(msg.contains("host key mismatch") && msg.contains("refusing"), "{msg}");
    // …and one recorded at an earlier first contact.
    store.put(&keys.host_key(3), wrong.into_bytes(), None).await.unwrap();
    let msg = b.bootstrap(&node(3), &instance(3, None)).await.unwrap_err();
    assert!(msg.contains("host key mismatch"), "{msg}");
    assert!(!remote.with_file_name("node-3").exists());
}

/// A RunPod pod publishes its sshd on a port RunPod picks (`runtime.ports[].publicPort`): the
/// adapter carries that endpoint and bootstrap dials it, with no override. (Before, bootstrap
/// dialled port 22 of the pod's address, where nothing of the pod answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_dials_the_ssh_port_runpod_maps() {
    use fleet_providers::emulators::runpod::RunpodEmulator;
    use fleet_providers::runpod::{RunpodConfig, RunpodProvider};
    use fleet_providers::{LaunchRequest, Provider};

    let etcd = EtcdServer::start();
    let sshd = SshServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
    );
    let emu = RunpodEmulator::start("rpa_KEY", &["US-CA-1"], 8).await;
    emu.set_ssh_endpoint("127.0.0.1", sshd.port);
    let mut rc = RunpodConfig::new("t", Secret::new("rpa_KEY"), "runpod/base:0.6.2-cuda12.4.1");
    rc.endpoint = emu.graphql_url();
    let runpod = RunpodProvider::new(rc, Arc::new(fleet_core::Catalog::builtin().clone()));
    let offering = fleet_core::OfferingKey {
        cloud: Cloud::Runpod,
        region: "us".into(),
        zone: Some("us-ca-1".into()),
        instance_type: "1x_H100-SXM_SECURE".into(),
        capacity: CapacityType::OnDemand,
    };
    let launched = runpod.launch(&LaunchRequest::new("t", "1", "mlp", offering)).await.unwrap();
    let pod = runpod.get(&launched.id).await.unwrap();
    assert_eq!(pod.ssh.map(|a| a.port()), Some(sshd.port));

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 16, 2], 1).unwrap();
    let remote = dir.path().join("node-1");
    let _guard = Supervisor(remote.clone());
    let b = SshBootstrap::new(config(&sshd, &etcd.client_url, &remote, &model), store).unwrap();
    // Port 22 of the pod's address is not the pod's sshd: what dialling it used to do fails.
    let mut at_22 = pod.clone();
    at_22.ssh = Some(SocketAddr::new(pod.ssh.unwrap().ip(), 22));
    let r = b.bootstrap(&node(2), &at_22).await;
    assert!(!matches!(r, Ok(true)) && !remote.join("fleet-agent").exists(), "nothing of the pod answers on 22: {r:?}");
    let t = Instant::now();
    loop {
        match b.bootstrap(&node(1), &pod).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("bootstrap of the pod failed: {e}\nsshd:\n{}", sshd.log()),
        }
        assert!(t.elapsed() < Duration::from_secs(60), "agent not healthy in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(remote.join("fleet-agent").exists(), "installed through the mapped port");
}

/// Compute Engine relays the host keys the guest publishes (guest attributes): bootstrap insists
/// on them before sending anything, and says so in the node's events; a server presenting
/// another key gets nothing, and nothing is pinned for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_verifies_the_host_key_gcp_reports_before_sending_secrets() {
    use fleet_providers::emulators::gcp::GcpEmulator;
    use fleet_providers::gcp::{GcpConfig, GcpProvider};
    use fleet_providers::{LaunchRequest, Provider};

    let etcd = EtcdServer::start();
    let sshd = SshServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
    );
    let keys = Keys::new("t");
    let zone = "us-central1-a";
    let emu = GcpEmulator::start(&[(zone, "a3-highgpu-8g", 2)]).await;
    let mut cfg = GcpConfig::new("t", "fleet-test", "projects/p/global/images/family/f");
    cfg.endpoint = Some(emu.running.url.clone());
    cfg.billing_endpoint = emu.running.url.clone();
    cfg.anonymous = true;
    cfg.zones = vec![zone.into()];
    cfg.poll_initial = Duration::from_millis(10);
    let gcp = GcpProvider::connect(cfg, Arc::new(fleet_core::Catalog::builtin().clone())).await.unwrap();
    let offering = fleet_core::OfferingKey {
        cloud: Cloud::Gcp,
        region: "us-central1".into(),
        zone: Some(zone.into()),
        instance_type: "a3-highgpu-8g".into(),
        capacity: CapacityType::OnDemand,
    };
    let launch = |n: &str| LaunchRequest::new("t", n, "mlp", offering.clone());
    let (one, two) = (gcp.launch(&launch("1")).await.unwrap(), gcp.launch(&launch("2")).await.unwrap());
    let name = |id: &str| id.rsplit('/').next().unwrap().to_string();
    emu.set_host_keys(&name(&one.id), &[&sshd.host_key]);
    let other = sshd.other_host_key();
    emu.set_host_keys(&name(&two.id), &[&other]);

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 16, 2], 1).unwrap();
    let remote = dir.path().join("node-1");
    let _guard = Supervisor(remote.clone());
    let b = bootstrapper(&sshd, &etcd.client_url, store.clone(), &remote, &model);

    // Node 2: the cloud vouches for another key than the one the server presents.
    let mut i2 = gcp.get(&two.id).await.unwrap();
    i2.ssh_host_keys = gcp.host_keys(&two.id).await.unwrap().unwrap();
    assert_eq!(i2.ssh_host_keys.len(), 1);
    let err = b.bootstrap(&node(2), &i2).await.unwrap_err();
    assert!(err.contains("host key mismatch") && err.contains("refusing"), "{err}");
    assert!(!remote.join("agent.toml").exists(), "nothing was sent");
    assert!(store.get(&keys.host_key(2)).await.unwrap().is_none(), "nothing pinned for a refused host");

    // Node 1: the key the cloud reports is the server's: verified, installed, said once.
    let mut i1 = gcp.get(&one.id).await.unwrap();
    i1.ssh_host_keys = gcp.host_keys(&one.id).await.unwrap().unwrap();
    let t = Instant::now();
    loop {
        match b.bootstrap(&node(1), &i1).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("bootstrap failed: {e}\nsshd:\n{}", sshd.log()),
        }
        assert!(t.elapsed() < Duration::from_secs(60), "agent not healthy in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(remote.join("agent.toml").exists());
    let ev = fleet_state::events::list(&*store, &keys, &Default::default()).await.unwrap();
    assert_eq!(ev.len(), 1, "said once however many polls: {ev:?}");
    assert_eq!(ev[0].node, Some(1));
    assert!(ev[0].message.contains("verified against the 1 key the cloud reports"), "{}", ev[0].message);
    let pinned = store.get(&keys.host_key(1)).await.unwrap().expect("the verified key is recorded");
    assert_eq!(
        String::from_utf8_lossy(&pinned.value).split_whitespace().nth(1),
        sshd.host_key.split_whitespace().nth(1)
    );
}

/// A pushed request as fleetd sends it: TLS accepting only the pinned certificate, HTTP/2, the
/// node's credential. Its status and body.
async fn push(addr: &str, pin: &str, credential: &str, runner: u64, input: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("fleet-agent").unwrap();
    let tls = fleet_orchestrator::push::pinned_connector(pin)?.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}/v1/runners/{runner}/generate"))
        .header("authorization", format!("Bearer {credential}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(input.to_string())))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
