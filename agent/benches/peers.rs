//! Cold start with peers: N agents of one region (8 by default) start the same model (2 GB by
//! default) at once, each with its own cache, peer endpoint (loopback) and lease on one store.
//!
//! Prints the bytes read from the origin against the model's size (the goal: ≤ 1.1×; without
//! peers it would be N×), and each node's fetch throughput against what this machine allows a
//! node when N fetch at once: loopback (one stream) and disk (the faster of one file written
//! through the page cache and N written at once with direct I/O, each synced) are measured
//! first, in the same run, and their smaller rate shared by the N nodes is the limit (the goal:
//! ≥ 50% of it).
//!
//! `cargo bench -p fleet-agent --bench peers` (FLEET_PEERS_BENCH_BYTES, FLEET_PEERS_BENCH_NODES;
//! needs ~(N + 2) × the model's size free under $TMPDIR).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleet_agent::cache::Cache;
use fleet_agent::cache::buffers::ChunkBytes;
use fleet_agent::cache::peers::{self, Served, Swarm};
use fleet_agent::cache::source::{ChunkAt, ChunkSource, DirSource, FetchError};
use fleet_core::Secret;
use fleet_core::artifact::{DEFAULT_CHUNK_SIZE, Manifest, Origin};
use fleet_core::keys::Keys;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

struct Counted {
    inner: DirSource,
    bytes: AtomicU64,
}

#[async_trait]
impl ChunkSource for Counted {
    fn name(&self) -> String {
        self.inner.name()
    }
    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError> {
        let b = self.inner.chunk(at).await?;
        self.bytes.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// A weights file of `size` pseudo-random bytes (no two chunks alike).
fn write_model(dir: &Path, size: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut f =
        std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(dir.join("model.safetensors")).unwrap());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
}

/// Loopback: one TCP stream carrying `bytes` to a reader that drops them.
async fn loopback_rate(bytes: u64) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).await.unwrap() {
                0 => return n,
                k => n += k as u64,
            }
        }
    });
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let buf = vec![7u8; 1 << 20];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf).await.unwrap();
        sent += buf.len() as u64;
    }
    s.shutdown().await.unwrap();
    let got = reader.await.unwrap();
    gbps(got, start.elapsed())
}

/// Disk: `bytes` written in chunk-sized writes and synced, as one file through the page cache,
/// and as `writers` files at once with direct I/O (how the cache writes whole chunks where it
/// can); both rates, in that order.
fn disk_rates(dir: &Path, bytes: u64, writers: u64) -> (f64, f64) {
    let p = dir.join("disk-probe");
    let buf = vec![3u8; DEFAULT_CHUNK_SIZE as usize];
    let start = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    let mut n = 0;
    while n < bytes {
        f.write_all(&buf).unwrap();
        n += buf.len() as u64;
    }
    f.sync_all().unwrap();
    let buffered = gbps(n, start.elapsed());
    std::fs::remove_file(&p).unwrap();
    let each = bytes.div_ceil(writers).next_multiple_of(DEFAULT_CHUNK_SIZE);
    let start = Instant::now();
    let wrote: u64 = std::thread::scope(|s| {
        let ws: Vec<_> = (0..writers)
            .map(|w| {
                let p = dir.join(format!("disk-probe-{w}"));
                s.spawn(move || {
                    let f = std::fs::File::create(&p).unwrap();
                    f.set_len(each).unwrap();
                    let d = fleet_agent::cache::buffers::open_direct(&p);
                    let mut buf = ChunkBytes::take(DEFAULT_CHUNK_SIZE as usize);
                    buf.bytes_mut().fill(3);
                    let mut at = 0;
                    while at < each {
                        let direct =
                            d.as_ref().is_some_and(|d| fleet_agent::cache::buffers::write_direct(d, &buf, at).unwrap());
                        if !direct {
                            std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
                        }
                        at += buf.len() as u64;
                    }
                    f.sync_all().unwrap();
                    std::fs::remove_file(&p).unwrap();
                    at
                })
            })
            .collect();
        ws.into_iter().map(|w| w.join().unwrap()).sum()
    });
    (buffered, gbps(wrote, start.elapsed()))
}

/// This process's CPU time so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let size = env("FLEET_PEERS_BENCH_BYTES", 2_000_000_000);
    let n = env("FLEET_PEERS_BENCH_NODES", 8);
    // The N agents share this process: each keeps the chunk buffers an agent keeps.
    fleet_agent::cache::buffers::keep(12 * n as usize);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let t = tempfile::tempdir().unwrap();
    println!("peers bench: {n} nodes of one region start a {:.2} GB model at once", size as f64 / 1e9);

    write_model(&t.path().join("src"), size);
    let origin_dir = t.path().join("origin");
    let origin = Origin::File { path: origin_dir.clone() };
    let m = Manifest::build(&t.path().join("src"), DEFAULT_CHUNK_SIZE, |d, b| {
        let p = origin_dir.join(origin.chunk_key(d));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).map_err(|e| fleet_core::artifact::ArtifactError::Io(e.to_string()))
    })
    .unwrap();
    std::fs::remove_dir_all(t.path().join("src")).unwrap();
    let total = m.total_bytes();
    println!("  model: {} bytes in {} chunks of {} MiB", total, m.chunks().count(), DEFAULT_CHUNK_SIZE >> 20);

    // What this machine allows, measured now.
    let probe = total.min(1 << 30);
    let loopback = rt.block_on(loopback_rate(probe));
    let (buffered, direct) = disk_rates(t.path(), probe, n);
    let disk = buffered.max(direct);
    let machine = loopback.min(disk);
    let per_node_limit = machine / n as f64;
    println!(
        "  limit: loopback {loopback:.2} GB/s, disk write {disk:.2} GB/s (one file through the page cache {buffered:.2}, {n} at once direct {direct:.2}): {machine:.2} GB/s for the machine, {per_node_limit:.3} GB/s per node with {n} fetching"
    );

    // One node alone, from the origin directory (no peers, no store): the pipeline's own pace.
    let alone = rt.block_on(async {
        let cache = Cache::open(&t.path().join("alone"), u64::MAX).unwrap();
        let src: Arc<dyn ChunkSource> = Arc::new(DirSource { origin: origin.clone(), root: origin_dir.clone() });
        let t0 = Instant::now();
        cache.ensure(&m.digest(), &m, &fleet_agent::cache::Direct(vec![src])).await.unwrap();
        t0.elapsed()
    });
    std::fs::remove_dir_all(t.path().join("alone")).unwrap();
    println!(
        "  one node alone from the origin directory: {:.2} s, {:.3} GB/s = {:.2}× the machine's limit",
        alone.as_secs_f64(),
        gbps(total, alone),
        gbps(total, alone) / machine
    );

    let cpu0 = cpu_seconds();
    let (origin_bytes, times, from_peers, wall) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&t.path().join("store")).unwrap());
        let counted = Arc::new(Counted {
            inner: DirSource { origin: origin.clone(), root: origin_dir.clone() },
            bytes: 0.into(),
        });
        let token = Secret::new("bench-region-credential");
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now();
        for id in 1..=n {
            let cache = Cache::open(&t.path().join(format!("node-{id}")), u64::MAX).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(peers::serve(listener, cache.clone(), token.clone(), None, Arc::new(Served::default())));
            let lease = store.grant_lease(Duration::from_secs(3600)).await.unwrap();
            let swarm = Swarm::new(
                store.clone(),
                Keys::new("bench"),
                "llm",
                "local-1",
                id,
                lease,
                addr,
                token.clone(),
                counted.clone(),
                None,
            );
            let m = m.clone();
            tasks.spawn(async move {
                let t0 = Instant::now();
                let (_held, r) = cache.ensure(&m.digest(), &m, &swarm).await.unwrap();
                (id, t0.elapsed(), r.from_peers)
            });
        }
        let mut times = Vec::new();
        let mut from_peers = 0;
        while let Some(done) = tasks.join_next().await {
            let (id, d, p) = done.unwrap();
            from_peers += p;
            times.push((id, d));
        }
        times.sort();
        (counted.bytes.load(Ordering::SeqCst), times, from_peers, start.elapsed())
    });
    if std::env::var_os("FLEET_PEERS_BENCH_PROBE").is_some() {
        // Where a peer transfer's time goes: the serving side's checked read, then the whole GET.
        let cache = Cache::open(&t.path().join("node-1"), u64::MAX).unwrap();
        let chunks: Vec<ChunkAt> = m
            .chunks()
            .map(|c| ChunkAt {
                file: m.file_id(c.file),
                index: c.index,
                offset: c.offset,
                len: c.len,
                digest: c.digest,
            })
            .collect();
        let t0 = Instant::now();
        for c in &chunks {
            cache.read_chunk(c).unwrap();
        }
        println!("  probe: checked reads {:.3} GB/s", gbps(total, t0.elapsed()));
        let buf = vec![1u8; 64 << 20];
        let t0 = Instant::now();
        for _ in 0..16 {
            std::hint::black_box(fleet_core::artifact::Digest::of(&buf));
        }
        println!("  probe: SHA-256 in memory {:.3} GB/s", gbps(16 * buf.len() as u64, t0.elapsed()));
        let addr = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(peers::serve(
                l,
                cache.clone(),
                Secret::new("bench-region-credential"),
                None,
                Arc::new(Served::default()),
            ));
            a
        });
        let agent = ureq::Agent::config_builder().build().new_agent();
        let t0 = Instant::now();
        for c in &chunks {
            let url = format!(
                "http://{addr}/v1/chunks/{}/{}?offset={}&len={}&digest={}",
                c.file.hex(),
                c.index,
                c.offset,
                c.len,
                c.digest.hex()
            );
            let mut r = agent.get(&url).header("authorization", "Bearer bench-region-credential").call().unwrap();
            let mut out = Vec::with_capacity(c.len as usize);
            use std::io::Read;
            r.body_mut().with_config().limit(c.len + 1).reader().read_to_end(&mut out).unwrap();
        }
        println!("  probe: GETs from a peer, one at a time {:.3} GB/s", gbps(total, t0.elapsed()));
    }
    let cpu = cpu_seconds() - cpu0;
    let ratio = origin_bytes as f64 / total as f64;
    println!(
        "  origin: {origin_bytes} bytes read = {ratio:.3}× the model (goal ≤ 1.1×; {n}× without peers); peers served {from_peers} bytes"
    );
    let mut worst = f64::MAX;
    for (id, d) in &times {
        let rate = gbps(total, *d);
        worst = worst.min(rate);
        println!(
            "  node {id}: {:.2} s, {rate:.3} GB/s = {:.2}× its share of the machine's limit",
            d.as_secs_f64(),
            rate / per_node_limit
        );
    }
    println!(
        "  all {n} nodes done in {:.2} s ({:.2} GB/s written in all = {:.2}× the machine's limit); slowest node {:.2}× its share (goal ≥ 0.5×)",
        wall.as_secs_f64(),
        gbps(total * n, wall),
        gbps(total * n, wall) / machine,
        worst / per_node_limit
    );
    println!(
        "  CPU: {cpu:.1} s over the {:.1} s all nodes took ({:.2} of this machine's {} cores busy)",
        wall.as_secs_f64(),
        cpu / wall.as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
}
