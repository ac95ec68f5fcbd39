//! A real etcd (Debian's `etcd-server`) on free loopback ports with a temporary data dir, killed
//! when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdServer {
    child: Child,
    pub client_url: String,
    peer_url: String,
    bin: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

/// A free loopback port below Linux's ephemeral range (32768+): a port from that range can be
/// taken by any outgoing connection while etcd is down, and a restart on it then fails to bind.
/// Random, so parallel test processes rarely pick the same one (and a port already bound is skipped).
fn free_port() -> u16 {
    for _ in 0..1000 {
        let p: u16 = rand::random_range(20_000..32_768);
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn spawn(bin: &str, dir: &std::path::Path, client_url: &str, peer_url: &str, log: &std::path::Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("etcd log file");
    Command::new(bin)
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", client_url, "--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `{bin}` ({e}): install Debian's etcd-server (scripts/test does) or set FLEET_ETCD_BIN")
        })
}

impl EtcdServer {
    /// Starts etcd and waits until it answers (30 s at most). Panics with what to do when the
    /// binary is missing: `scripts/test` installs it.
    pub fn start() -> EtcdServer {
        let bin = std::env::var("FLEET_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        // A port another test process took between our check and etcd's bind: new ports, again.
        for attempt in 0.. {
            let dir = tempfile::tempdir().expect("temp dir");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = dir.path().join("etcd.log");
            let child = spawn(&bin, dir.path(), &client_url, &peer_url, &log);
            let mut server = EtcdServer { child, client_url, peer_url, bin: bin.clone(), _dir: dir, log };
            match server.healthy_within(Duration::from_secs(30)) {
                Ok(()) => return server,
                Err(log) if attempt < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("etcd did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Kills etcd (as a crash would); [`EtcdServer::restart`] brings it back with its data.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same ports and data dir, and waits until it answers. Should a
    /// port be held by someone else for a moment, it tries again (for 10 s).
    pub fn restart(&mut self) {
        self.stop();
        let start = Instant::now();
        loop {
            self.child = spawn(&self.bin, self._dir.path(), &self.client_url, &self.peer_url, &self.log);
            std::thread::sleep(Duration::from_millis(300));
            match self.child.try_wait() {
                Ok(Some(_)) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                _ => break,
            }
        }
        self.wait_healthy(Duration::from_secs(30));
    }

    fn wait_healthy(&mut self, limit: Duration) {
        if let Err(log) = self.healthy_within(limit) {
            panic!("etcd not healthy:\n{log}");
        }
    }

    /// Ok once etcd answers healthy; Err(its log) when it exits or does not answer in `limit`.
    fn healthy_within(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let addr = self.client_url.trim_start_matches("http://").to_string();
        let log = |s: &Self| std::fs::read_to_string(&s.log).unwrap_or_default();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}:\n{}", log(self)));
            }
            // etcd answers /health once it has a leader.
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok() {
                    let mut body = String::new();
                    let _ = s.read_to_string(&mut body);
                    if body.contains("\"health\":\"true\"") {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("etcd not healthy after {limit:?}:\n{}", log(self)))
    }
}

impl EtcdServer {
    /// Turns authentication on with a `root` user (role root) whose password is `root_password`.
    pub async fn enable_auth(&self, root_password: &str) {
        let mut c = etcd_client::Client::connect([self.client_url.as_str()], None).await.expect("etcd client");
        c.user_add("root", root_password, None).await.expect("root user");
        c.user_grant_role("root", "root").await.expect("root role");
        c.auth_enable().await.expect("auth enable");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of real etcd members on loopback, each its own process with its own data dir.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    pub client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each answers healthy (a leader is elected).
    pub fn start(n: usize) -> EtcdCluster {
        let bin = std::env::var("FLEET_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
        let cluster = cluster.join(",");
        let mut members = Vec::new();
        let mut client_urls = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).expect("log");
            let child = Command::new(&bin)
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args([
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "fleet-test",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start `{bin}` ({e}): install Debian's etcd-server (scripts/test does)")
                });
            members.push(Some(child));
            client_urls.push(client);
        }
        let c = EtcdCluster { members, client_urls, _dir: dir };
        for url in &c.client_urls {
            let t = Instant::now();
            while !healthy(url) {
                assert!(t.elapsed() < Duration::from_secs(30), "etcd member {url} not healthy in 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        c
    }

    /// Kills member `i` (as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn healthy(client_url: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(client_url.trim_start_matches("http://")) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
