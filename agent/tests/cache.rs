//! The node's model cache against a real directory origin: checked chunks, resumed fetches,
//! restarts, LRU eviction under a byte cap, shared files, rotten bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use fleet_agent::cache::buffers::ChunkBytes;
use fleet_agent::cache::source::{self, ChunkAt, ChunkSource, DirSource, FetchError};
use fleet_agent::cache::{Cache, CacheError, Direct};
use fleet_core::artifact::{Digest, Manifest, Origin};

const CHUNK: u64 = 4096;

/// Writes a model directory and pushes it to a `file://` origin at `origin_dir` (the layout
/// `fleetctl model push` writes); returns its manifest.
fn push(model: &Path, origin_dir: &Path, weights: usize, seed: u8) -> Manifest {
    std::fs::create_dir_all(model).unwrap();
    let w: Vec<u8> = (0..weights).map(|i| ((i * 31) as u8).wrapping_add(seed)).collect();
    std::fs::write(model.join("model.safetensors"), w).unwrap();
    std::fs::write(model.join("config.json"), format!("{{\"seed\":{seed}}}")).unwrap();
    let origin = Origin::File { path: origin_dir.to_path_buf() };
    let m = Manifest::build(model, CHUNK, |d, b| {
        let p = origin_dir.join(origin.chunk_key(d));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
        Ok(())
    })
    .unwrap();
    let mp = origin_dir.join(origin.manifest_key(&m.digest()));
    std::fs::create_dir_all(mp.parent().unwrap()).unwrap();
    std::fs::write(mp, m.to_bytes()).unwrap();
    m
}

fn dir_source(origin_dir: &Path) -> Arc<dyn ChunkSource> {
    Arc::new(DirSource { origin: Origin::File { path: origin_dir.to_path_buf() }, root: origin_dir.to_path_buf() })
}

fn same_files(a: &Path, b: &Path, m: &Manifest) {
    for f in &m.files {
        assert_eq!(std::fs::read(a.join(&f.path)).unwrap(), std::fs::read(b.join(&f.path)).unwrap(), "{}", f.path);
    }
}

/// Serves wrong bytes for every chunk.
struct Liar;
#[async_trait]
impl ChunkSource for Liar {
    fn name(&self) -> String {
        "peer 7".into()
    }
    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError> {
        Ok(vec![0xEE; at.len as usize].into())
    }
}

/// Serves `left` chunks from `inner`, then fails (a connection lost mid-fetch).
struct Flaky {
    inner: Arc<dyn ChunkSource>,
    left: AtomicUsize,
    served: AtomicUsize,
}
#[async_trait]
impl ChunkSource for Flaky {
    fn name(&self) -> String {
        "flaky origin".into()
    }
    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(FetchError::Failed {
                chunk: at.digest,
                source_name: self.name(),
                why: "connection reset".into(),
            });
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        self.inner.chunk(at).await
    }
}

#[tokio::test]
async fn a_model_is_fetched_once_checked_and_kept_across_restarts() {
    let t = tempfile::tempdir().unwrap();
    let m = push(&t.path().join("src"), &t.path().join("origin"), 40_000, 1);
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let (held, r) = cache.ensure(&m.digest(), &m, &Direct(vec![dir_source(&t.path().join("origin"))])).await.unwrap();
    assert_eq!((r.fetched, r.reused), (m.total_bytes(), 0));
    same_files(&held.dir, &t.path().join("src"), &m);
    drop(held);
    // Another agent process on the same disk: nothing is fetched again.
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let (held, r) = cache.ensure(&m.digest(), &m, &Direct(vec![])).await.unwrap();
    assert_eq!(r.fetched, 0);
    same_files(&held.dir, &t.path().join("src"), &m);
    assert_eq!(cache.models(), vec![m.digest()]);
    assert_eq!(cache.bytes(), m.total_bytes());
}

#[tokio::test]
async fn a_peer_serving_wrong_bytes_is_passed_over_and_one_alone_leaves_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let m = push(&t.path().join("src"), &t.path().join("origin"), 20_000, 2);
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let e = cache.ensure(&m.digest(), &m, &Direct(vec![Arc::new(Liar)])).await.err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("peer 7 served chunk sha256:") && msg.contains("with other bytes"), "{msg}");
    assert!(cache.models().is_empty(), "no model directory for a fetch that failed");
    // The liar first, the origin after it: every chunk right.
    let (held, _) = cache
        .ensure(&m.digest(), &m, &Direct(vec![Arc::new(Liar), dir_source(&t.path().join("origin"))]))
        .await
        .unwrap();
    same_files(&held.dir, &t.path().join("src"), &m);
}

#[tokio::test]
async fn a_fetch_cut_short_resumes_with_the_chunks_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let m = push(&t.path().join("src"), &t.path().join("origin"), 100_000, 3);
    let chunks = m.chunks().count();
    let flaky =
        Arc::new(Flaky { inner: dir_source(&t.path().join("origin")), left: AtomicUsize::new(10), served: 0.into() });
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let e = cache.ensure(&m.digest(), &m, &Direct(vec![flaky.clone()])).await.err().unwrap();
    assert!(e.to_string().contains("connection reset"), "{e}");
    assert!(cache.models().is_empty());
    // The agent restarts; the rest comes from the origin, only what was not in place.
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let counting = Arc::new(Flaky {
        inner: dir_source(&t.path().join("origin")),
        left: AtomicUsize::new(usize::MAX),
        served: 0.into(),
    });
    let (held, r) = cache.ensure(&m.digest(), &m, &Direct(vec![counting.clone()])).await.unwrap();
    same_files(&held.dir, &t.path().join("src"), &m);
    let first = flaky.served.load(Ordering::SeqCst);
    assert_eq!(first, 10);
    assert_eq!(counting.served.load(Ordering::SeqCst), chunks - first, "each chunk fetched once in all");
    assert_eq!(r.fetched + r.reused, m.total_bytes());
    assert!(r.reused >= 9 * CHUNK, "{r:?}");
}

#[tokio::test]
async fn the_least_recently_used_model_not_in_use_is_evicted_and_shared_files_stay() {
    let t = tempfile::tempdir().unwrap();
    let o = t.path().join("origin");
    let a = push(&t.path().join("a"), &o, 30_000, 10);
    let b = push(&t.path().join("b"), &o, 30_000, 11);
    let c = push(&t.path().join("c"), &o, 30_000, 12);
    let size = a.total_bytes();
    // Room for two models.
    let cache = Cache::open(&t.path().join("cache"), 2 * size + 100).unwrap();
    let src = Direct(vec![dir_source(&o)]);
    drop(cache.ensure(&a.digest(), &a, &src).await.unwrap());
    drop(cache.ensure(&b.digest(), &b, &src).await.unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20)); // distinct mtimes
    let held_a = cache.ensure(&a.digest(), &a, &src).await.unwrap().0; // a used last, and in use
    let (_, r) = cache.ensure(&c.digest(), &c, &src).await.unwrap();
    assert_eq!(r.evicted, vec![b.digest()]);
    assert_eq!(cache.models(), {
        let mut v = vec![a.digest(), c.digest()];
        v.sort();
        v
    });
    assert!(cache.bytes() <= 2 * size + 100);
    // b again: c is not in use (its Held was dropped), a is: c goes.
    let (_, r) = cache.ensure(&b.digest(), &b, &src).await.unwrap();
    assert_eq!(r.evicted, vec![c.digest()]);
    same_files(&held_a.dir, &t.path().join("a"), &a);
    // A model larger than the cap is refused before anything is fetched.
    let small = Cache::open(&t.path().join("small"), size / 2).unwrap();
    let e = small.ensure(&a.digest(), &a, &src).await.err().unwrap();
    assert!(matches!(e, CacheError::TooBig { .. }) && e.to_string().contains("raise [cache] max_bytes"), "{e}");
    assert_eq!(small.bytes(), 0);

    // Two models sharing the weights file: the second fetches only its config; evicting one
    // keeps the shared file for the other.
    let shared = t.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::copy(t.path().join("a/model.safetensors"), shared.join("model.safetensors")).unwrap();
    std::fs::write(shared.join("config.json"), "{\"other\":1}").unwrap();
    let s = Manifest::build(&shared, CHUNK, |d, bytes| {
        std::fs::write(o.join(Origin::File { path: o.clone() }.chunk_key(d)), bytes).unwrap();
        Ok(())
    })
    .unwrap();
    let big = Cache::open(&t.path().join("big"), 1 << 30).unwrap();
    drop(big.ensure(&a.digest(), &a, &src).await.unwrap());
    let (held_s, r) = big.ensure(&s.digest(), &s, &src).await.unwrap();
    assert_eq!(r.fetched, 11, "only the 11-byte config: {r:?}");
    assert_eq!(big.bytes(), a.total_bytes() + 11);
    same_files(&held_s.dir, &shared, &s);
}

#[tokio::test]
async fn a_chunk_served_from_the_cache_is_checked_and_rotten_bytes_are_dropped() {
    let t = tempfile::tempdir().unwrap();
    // Three chunks of weights and one of config: no more than the cache keeps in memory
    // ([`RECENT`]), whatever order the fetches land in.
    let m = push(&t.path().join("src"), &t.path().join("origin"), 12_000, 4);
    assert!(m.chunks().count() <= fleet_agent::cache::RECENT);
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    drop(cache.ensure(&m.digest(), &m, &Direct(vec![dir_source(&t.path().join("origin"))])).await.unwrap());
    let fi = m.files.iter().position(|f| f.path == "model.safetensors").unwrap();
    let c = m.chunks().filter(|c| c.file == fi).nth(2).unwrap();
    let id = m.file_id(fi);
    let at = ChunkAt { file: id, index: c.index, offset: c.offset, len: c.len, digest: c.digest };
    assert_eq!(Digest::of(&cache.read_chunk(&at).unwrap()), c.digest);
    // Flip a byte on disk.
    let path = cache.dir().join("files").join(id.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[c.offset as usize + 5] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // Just landed: served from memory, the bytes checked when they arrived (not the disk's).
    assert_eq!(Digest::of(&cache.read_chunk(&at).unwrap()), c.digest);
    // After a restart (nothing in memory), from the disk: checked, and the rot found.
    drop(cache);
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let e = cache.read_chunk(&at).unwrap_err();
    assert!(matches!(e, CacheError::Rotten { .. }), "{e}");
    assert!(!path.exists(), "the rotten file is removed so it is fetched again");
}

#[tokio::test]
async fn a_chunk_missing_at_the_origin_is_named() {
    let t = tempfile::tempdir().unwrap();
    let o = t.path().join("origin");
    let m = push(&t.path().join("src"), &o, 20_000, 5);
    let gone = m.files[1].chunks[1];
    std::fs::remove_file(o.join(Origin::File { path: o.clone() }.chunk_key(&gone))).unwrap();
    let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
    let e = cache.ensure(&m.digest(), &m, &Direct(vec![dir_source(&o)])).await.err().unwrap();
    assert!(
        e.to_string().contains(&format!("no source could serve chunk {gone}: {gone} is not at file://{}", o.display())),
        "{e}"
    );
    assert!(cache.models().is_empty());
    // S3 without fleetd's signatures is refused with what to do.
    let s3: Origin = "s3://models/x".parse().unwrap();
    assert!(source::origin_source(&s3, None).err().unwrap().contains("give the agent `gateway`"));
}
