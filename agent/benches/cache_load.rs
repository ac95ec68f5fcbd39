//! A runner restarted on a node that holds its model: the agent opens its cache (as after a
//! restart), finds the pinned model there and loads it with candle (safetensors memory-mapped,
//! on the CPU) while `cache::warm` reads the files ahead, as the agent does. Prints the model's
//! bytes over the load time against this disk's read speed (the faster of one sequential reader
//! and as many parallel readers as the load has threads), measured in the same run on the same
//! files, all from a cold page cache (the goal: ≥ 80%).
//!
//! `cargo bench -p fleet-agent --bench cache_load` (FLEET_LOAD_BENCH_LAYERS, default 16: a
//! ~1 GB f32 Llama; dropping the page cache needs root, else both figures are from memory and
//! the bench says so).

use std::sync::Arc;
use std::time::Instant;

use fleet_agent::cache::source::{ChunkSource, DirSource};
use fleet_agent::cache::{Cache, Direct};
use fleet_agent::llm::testmodel::{self, Shape};
use fleet_agent::llm::{Family, Llm};
use fleet_core::artifact::{DEFAULT_CHUNK_SIZE, Manifest, Origin};

/// Empties the page cache (root only); whether it could.
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let layers: usize = std::env::var("FLEET_LOAD_BENCH_LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let shape = Shape { hidden: 1024, intermediate: 4096, layers, heads: 16, kv_heads: 4, max_positions: 512 };
    testmodel::write(&src, Family::Llama, shape, 4, 7).unwrap();
    let origin_dir = t.path().join("origin");
    let origin = Origin::File { path: origin_dir.clone() };
    let m = Manifest::build(&src, DEFAULT_CHUNK_SIZE, |d, b| {
        let p = origin_dir.join(origin.chunk_key(d));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).map_err(|e| fleet_core::artifact::ArtifactError::Io(e.to_string()))
    })
    .unwrap();
    std::fs::remove_dir_all(&src).unwrap();
    let total = m.total_bytes();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let src: Arc<dyn ChunkSource> = Arc::new(DirSource { origin: origin.clone(), root: origin_dir.clone() });
    let cache_dir = t.path().join("cache");
    let dir = rt.block_on(async {
        let cache = Cache::open(&cache_dir, u64::MAX).unwrap();
        let (held, _) = cache.ensure(&m.digest(), &m, &Direct(vec![src.clone()])).await.unwrap();
        held.dir.clone()
    });
    println!("cache load bench: a {:.2} GB f32 Llama ({layers} layers) in the node's cache", total as f64 / 1e9);

    // The disk: every file of the cached model read once, sequentially.
    let cold = drop_page_cache();
    let t0 = Instant::now();
    for f in &m.files {
        std::hint::black_box(std::fs::read(dir.join(&f.path)).unwrap());
    }
    let one_reader = total as f64 / t0.elapsed().as_secs_f64() / 1e9;
    // And with as many readers as the load uses threads (each file split in contiguous parts):
    // a disk may give more to parallel reads, and the load reads in parallel.
    drop_page_cache();
    let readers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for r in 0..readers {
            let (dir, files) = (&dir, &m.files);
            s.spawn(move || {
                use std::io::{Read, Seek, SeekFrom};
                let mut buf = vec![0u8; 8 << 20];
                for f in files {
                    let part = f.size.div_ceil(readers as u64);
                    let (from, to) = (part * r as u64, (part * (r as u64 + 1)).min(f.size));
                    let mut file = std::fs::File::open(dir.join(&f.path)).unwrap();
                    file.seek(SeekFrom::Start(from)).unwrap();
                    let mut left = to.saturating_sub(from);
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let n = file.read(&mut buf[..want]).unwrap();
                        assert!(n > 0);
                        left -= n as u64;
                    }
                }
            });
        }
    });
    let parallel = total as f64 / t0.elapsed().as_secs_f64() / 1e9;
    // The goal's limit: the faster of the two.
    let disk = one_reader.max(parallel);

    // The restarted runner: the cache opened again, the model found, loaded.
    drop_page_cache();
    let t0 = Instant::now();
    let llm = rt.block_on(async {
        let cache = Cache::open(&cache_dir, u64::MAX).unwrap();
        let (held, r) = cache.ensure(&m.digest(), &m, &Direct(vec![])).await.unwrap();
        assert_eq!(r.fetched, 0, "found in the cache");
        let d = held.dir.clone();
        let warming = fleet_agent::cache::warm(&d);
        let llm = tokio::task::spawn_blocking(move || Llm::load(&d, &candle_core::Device::Cpu)).await.unwrap().unwrap();
        warming.join().unwrap();
        llm
    });
    let load = t0.elapsed();
    std::hint::black_box(&llm);
    let rate = total as f64 / load.as_secs_f64() / 1e9;
    drop(llm);
    // The same with the files in memory: what the load costs beyond reading.
    let t0 = Instant::now();
    let d = dir.clone();
    let warm_llm = Llm::load(&d, &candle_core::Device::Cpu).unwrap();
    let warm = t0.elapsed();
    drop(warm_llm);
    println!(
        "  page cache {}",
        if cold { "dropped before each measurement (cold reads)" } else { "NOT dropped (not root): both from memory" }
    );
    println!(
        "  disk read: {one_reader:.2} GB/s sequential by one reader, {parallel:.2} GB/s by {readers} in parallel; the limit: {disk:.2} GB/s"
    );
    println!("  the same load with the files in memory: {:.2} s", warm.as_secs_f64());
    println!(
        "  restarted runner: cache hit + load in {:.2} s = {rate:.2} GB/s = {:.2}× the disk's read speed (goal ≥ 0.8×)",
        load.as_secs_f64(),
        rate / disk
    );
}
