//! The node's model cache: content-addressed, every chunk checked, resumable, bounded.
//!
//! ```text
//! {dir}/files/{file id}           complete files, every chunk checked (id: Manifest::file_id)
//! {dir}/partial/{file id}         a file being fetched, each chunk written in place at its offset
//! {dir}/partial/{file id}.have    the chunks written and checked so far (one index per line)
//! {dir}/models/{manifest hex}/    the model laid out as its manifest says: hard links into files/
//! {dir}/manifests/{manifest hex}  the manifest's bytes; its mtime is the model's last use (LRU)
//! ```
//!
//! Why this shape:
//! - A file is written chunk by chunk *in place*, so once complete it is the file the runner
//!   reads its tensors from (`llm/weights.rs`: each tensor read once, into the memory the tensor
//!   keeps): nothing is assembled, nothing copied beside. A model directory is hard links, so
//!   two models that share a shard share its bytes.
//! - A fetch cut short (agent restart, network loss) resumes: the `.have` list says which
//!   chunks are in place, and only the others are fetched again.
//! - Every chunk is checked against its digest when it arrives (a wrong chunk is never written)
//!   and when it is served to a peer (a disk that rotted is not passed on).
//! - Under a byte cap, the least recently used models are evicted (never one in use); a fetch that
//!   cannot fit says so before it starts, and a disk that fills mid-fetch leaves the model absent,
//!   never half there.

pub mod buffers;
pub mod peers;
pub mod source;

use buffers::ChunkBytes;

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fleet_core::artifact::{Digest, Manifest};

pub use source::{ChunkAt, ChunkSource, FetchError};

/// How many chunks one fetch has in flight at once, by default ([`Exchange::in_flight`]): an
/// origin (one object store connection moves ~100 MB/s) is read four at a time.
const PARALLEL: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "model {model} needs {need} bytes in the cache at {dir}, which holds at most {cap} (with {held} in use that cannot be evicted): raise [cache] max_bytes"
    )]
    TooBig { model: Digest, need: u64, cap: u64, held: u64, dir: String },
    #[error(
        "the disk under the model cache at {dir} is full while fetching model {model}: {why}; nothing of it is used"
    )]
    DiskFull { model: Digest, dir: String, why: String },
    #[error("model cache at {dir}: {why}")]
    Io { dir: String, why: String },
    #[error("fetching model {model}: {source}")]
    Fetch { model: Digest, source: FetchError },
    #[error(
        "the cached chunk {index} of file {file} does not match its digest (the disk returned other bytes); the file was removed from the cache"
    )]
    Rotten { file: String, index: usize },
    #[error("file {0} is not in this node's cache")]
    NotHeld(String),
}

/// A model ready to load: its directory in the cache. While a `Held` lives, the model is not
/// evicted.
pub struct Held {
    pub dir: PathBuf,
    pub digest: Digest,
    cache: Arc<Inner>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut in_use = self.cache.in_use.lock().unwrap();
        if let Some(i) = in_use.iter().position(|d| *d == self.digest) {
            in_use.swap_remove(i);
        }
    }
}

struct Inner {
    dir: PathBuf,
    cap: u64,
    /// Models handed out and not dropped (a model may be held more than once).
    in_use: Mutex<Vec<Digest>>,
    /// One fetch at a time mutates the layout (chunks of one fetch still go in parallel).
    layout: tokio::sync::Mutex<()>,
    /// The chunks that landed last, still in memory: served to peers from here (see
    /// [`Cache::read_chunk`]).
    recent: Mutex<std::collections::VecDeque<Recent>>,
}

/// A chunk that landed here, its bytes checked against its digest when they arrived.
struct Recent {
    file: Digest,
    index: usize,
    digest: Digest,
    at: std::time::Instant,
    bytes: Arc<ChunkBytes>,
}

/// Chunks kept in memory after they land, and for how long: a region's nodes fetching a model
/// at once ask a node for a chunk soon after it lands, so most chunks are served from here.
pub const RECENT: usize = 4;
const RECENT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// What one [`Cache::ensure`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Bytes fetched from sources (not already in the cache).
    pub fetched: u64,
    /// Of those, bytes that peers served (the rest came from the origin).
    pub from_peers: u64,
    /// Bytes found in place (complete files, chunks of a fetch cut short).
    pub reused: u64,
    /// Models evicted to make room.
    pub evicted: Vec<Digest>,
}

#[derive(Clone)]
pub struct Cache(Arc<Inner>);

impl Cache {
    /// Opens (or makes) the cache at `dir`; what an earlier agent left there is kept.
    pub fn open(dir: &Path, cap: u64) -> Result<Cache, CacheError> {
        for sub in ["files", "partial", "models", "manifests"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| io(dir, e))?;
        }
        // A model directory being linked when the agent stopped is redone on demand.
        for e in fs::read_dir(dir.join("models")).map_err(|e| io(dir, e))? {
            let p = e.map_err(|e| io(dir, e))?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_dir_all(&p);
            }
        }
        Ok(Cache(Arc::new(Inner {
            dir: dir.to_path_buf(),
            cap,
            in_use: Mutex::new(Vec::new()),
            layout: tokio::sync::Mutex::new(()),
            recent: Mutex::new(std::collections::VecDeque::new()),
        })))
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// Bytes the cache holds (complete and partial files).
    pub fn bytes(&self) -> u64 {
        let mut n = 0;
        for sub in ["files", "partial"] {
            if let Ok(rd) = fs::read_dir(self.0.dir.join(sub)) {
                for e in rd.flatten() {
                    if let Ok(m) = e.metadata() {
                        // Allocated bytes, not the length: a partial file is sparse.
                        n += if sub == "partial" { m.blocks() * 512 } else { m.len() };
                    }
                }
            }
        }
        n
    }

    /// The models whose every file is here.
    pub fn models(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.0.dir.join("models")) {
            for e in rd.flatten() {
                if let Some(d) = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                    out.push(d);
                }
            }
        }
        out.sort();
        out
    }

    /// The model pinned by `digest`, from this cache if it is complete here, otherwise fetched
    /// (the chunks missing only) from where `exchange` routes each chunk.
    pub async fn ensure(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        exchange: &dyn Exchange,
    ) -> Result<(Held, FetchReport), CacheError> {
        let _layout = self.0.layout.lock().await;
        let inner = &self.0;
        let hex = digest.hex();
        let model_dir = inner.dir.join("models").join(&hex);
        let mut report = FetchReport::default();
        if model_dir.is_dir() && inner.dir.join("manifests").join(&hex).is_file() {
            self.touch(digest);
            return Ok((self.hold(digest, model_dir), report));
        }
        // Room first: what is missing, against the cap, evicting the least recently used.
        let ids: Vec<Digest> = (0..manifest.files.len()).map(|i| manifest.file_id(i)).collect();
        let missing: u64 = manifest
            .files
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !inner.dir.join("files").join(id.hex()).exists())
            .map(|(f, _)| f.size)
            .sum();
        report.evicted = self.make_room(missing, digest)?;

        let mut fetched_files = HashSet::new();
        for (fi, id) in ids.iter().enumerate() {
            let done = inner.dir.join("files").join(id.hex());
            if done.exists() {
                report.reused += manifest.files[fi].size;
                continue;
            }
            if !fetched_files.insert(*id) {
                continue; // the same file twice in one model (same bytes, two paths)
            }
            self.fetch_file(digest, manifest, fi, id, exchange, &mut report).await?;
        }
        // Link the model's layout, then publish it with one rename.
        let tmp = inner.dir.join("models").join(format!("{hex}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        for (f, id) in manifest.files.iter().zip(&ids) {
            let to = tmp.join(&f.path);
            fs::create_dir_all(to.parent().expect("inside the model dir")).map_err(|e| io(&inner.dir, e))?;
            fs::hard_link(inner.dir.join("files").join(id.hex()), &to).map_err(|e| io(&inner.dir, e))?;
        }
        let manifest_path = inner.dir.join("manifests").join(&hex);
        write_synced(&manifest_path, &manifest.to_bytes()).map_err(|e| io(&inner.dir, e))?;
        fs::rename(&tmp, &model_dir).map_err(|e| io(&inner.dir, e))?;
        Ok((self.hold(digest, model_dir), report))
    }

    fn hold(&self, digest: &Digest, dir: PathBuf) -> Held {
        self.0.in_use.lock().unwrap().push(*digest);
        Held { dir, digest: *digest, cache: self.0.clone() }
    }

    /// Marks the model used now (its manifest's mtime orders eviction, across restarts).
    fn touch(&self, digest: &Digest) {
        let p = self.0.dir.join("manifests").join(digest.hex());
        if let Ok(f) = File::options().write(true).open(p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Evicts least recently used models not in use until `need` more bytes fit under the cap.
    fn make_room(&self, need: u64, for_model: &Digest) -> Result<Vec<Digest>, CacheError> {
        let inner = &self.0;
        let mut evicted = Vec::new();
        let in_use: BTreeSet<Digest> = inner.in_use.lock().unwrap().iter().copied().collect();
        let mut candidates: Vec<(SystemTime, Digest)> = self
            .models()
            .into_iter()
            .filter(|d| !in_use.contains(d) && d != for_model)
            .map(|d| {
                let t = fs::metadata(inner.dir.join("manifests").join(d.hex()))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, d)
            })
            .collect();
        candidates.sort();
        let mut candidates = candidates.into_iter();
        while self.bytes() + need > inner.cap {
            let Some((_, victim)) = candidates.next() else {
                return Err(CacheError::TooBig {
                    model: *for_model,
                    need,
                    cap: inner.cap,
                    held: self.bytes(),
                    dir: inner.dir.display().to_string(),
                });
            };
            self.evict(&victim)?;
            evicted.push(victim);
        }
        Ok(evicted)
    }

    /// Removes a model's layout, and each of its files no other model links.
    fn evict(&self, d: &Digest) -> Result<(), CacheError> {
        let inner = &self.0;
        let hex = d.hex();
        let manifest = fs::read(inner.dir.join("manifests").join(&hex)).ok().and_then(|b| Manifest::parse(&b, d).ok());
        fs::remove_dir_all(inner.dir.join("models").join(&hex)).map_err(|e| io(&inner.dir, e))?;
        let _ = fs::remove_file(inner.dir.join("manifests").join(&hex));
        if let Some(m) = manifest {
            for i in 0..m.files.len() {
                let f = inner.dir.join("files").join(m.file_id(i).hex());
                // A link count of one: only files/ holds it now.
                if fs::metadata(&f).is_ok_and(|md| md.nlink() == 1) {
                    let _ = fs::remove_file(&f);
                }
            }
        }
        tracing::info!(model = %d, "evicted from the model cache (least recently used)");
        Ok(())
    }

    /// Fetches the chunks of one file that are not in place yet, each from where `exchange`
    /// routes it; counts what it fetched and found into `report`.
    async fn fetch_file(
        &self,
        model: &Digest,
        manifest: &Manifest,
        fi: usize,
        id: &Digest,
        exchange: &dyn Exchange,
        report: &mut FetchReport,
    ) -> Result<(), CacheError> {
        let inner = &self.0;
        let f = &manifest.files[fi];
        let partial = inner.dir.join("partial").join(id.hex());
        let have_path = inner.dir.join("partial").join(format!("{}.have", id.hex()));
        let file = OpenOptions::new().create(true).truncate(false).write(true).read(true).open(&partial);
        let file = file.map_err(|e| self.full_or_io(model, e))?;
        file.set_len(f.size).map_err(|e| self.full_or_io(model, e))?;
        let have: BTreeSet<usize> = fs::read_to_string(&have_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|i| *i < f.chunks.len())
            .collect();
        let mut have_log =
            OpenOptions::new().create(true).append(true).open(&have_path).map_err(|e| self.full_or_io(model, e))?;
        let file = Arc::new(file);
        // Whole chunks go around the page cache where the file system allows (buffers.rs).
        let direct = buffers::open_direct(&partial).map(Arc::new);
        let at = |c: fleet_core::artifact::ChunkRef| ChunkAt {
            file: *id,
            index: c.index,
            offset: c.offset,
            len: c.len,
            digest: c.digest,
        };
        for c in manifest.chunks().filter(|c| c.file == fi && have.contains(&c.index)) {
            report.reused += c.len;
            exchange.landed(&at(c), false).await;
        }
        let mut todo: Vec<ChunkAt> =
            manifest.chunks().filter(|c| c.file == fi && !have.contains(&c.index)).map(at).collect();
        // Nodes fetching the same file start at different chunks, so they fetch different ones first.
        if !todo.is_empty() {
            let start = exchange.start(todo.len()) % todo.len();
            todo.rotate_left(start);
        }
        let mut pending: std::collections::VecDeque<ChunkAt> = todo.into();
        let mut later: Vec<ChunkAt> = Vec::new();
        let mut running = tokio::task::JoinSet::new();
        // On a failure, no new chunk starts, but those in flight finish and are recorded: a
        // resumed fetch does not take them again.
        let mut failure: Option<CacheError> = None;
        loop {
            while running.len() < exchange.in_flight() && failure.is_none() {
                let Some(c) = pending.pop_front() else { break };
                let sources = match exchange.route(&c).await {
                    Route::From(sources) => sources,
                    Route::Later => {
                        later.push(c);
                        continue;
                    }
                };
                let (file, direct, cache) = (file.clone(), direct.clone(), self.clone());
                running.spawn(async move {
                    let (bytes, from, strikes) = match source::fetch_checked(&sources, &c).await {
                        Ok(x) => x,
                        Err((e, strikes)) => return (c, Err(e), strikes),
                    };
                    let n = bytes.len() as u64;
                    let wrote = tokio::task::spawn_blocking(move || {
                        let done = match &direct {
                            Some(d) => buffers::write_direct(d, &bytes, c.offset)?,
                            None => false,
                        };
                        if !done {
                            file.write_all_at(&bytes, c.offset)?;
                        }
                        cache.remember(&c, bytes);
                        Ok::<_, std::io::Error>(())
                    })
                    .await
                    .expect("a write does not panic");
                    (c, wrote.map(|_| (n, from.is_peer())).map_err(FetchError::Write), strikes)
                });
            }
            if running.is_empty() {
                if later.is_empty() || failure.is_some() {
                    break;
                }
                // Every chunk left is being fetched from the origin by another node: ask again
                // shortly (it will be at a peer, or its fetcher gone and its claim with it).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                pending.extend(later.drain(..));
                continue;
            }
            let Some(done) = running.join_next().await else { break };
            let (c, result, strikes) = done.expect("a chunk fetch does not panic");
            for s in &strikes {
                exchange.strike(s);
            }
            match result {
                Ok((n, from_peer)) => {
                    report.fetched += n;
                    if from_peer {
                        report.from_peers += n;
                    }
                    writeln!(have_log, "{}", c.index).map_err(|e| self.full_or_io(model, e))?;
                    exchange.landed(&c, true).await;
                    // Something landed: chunks put off may be at a peer now.
                    pending.extend(later.drain(..));
                }
                Err(FetchError::Write(e)) => {
                    exchange.failed(&c).await;
                    failure.get_or_insert(self.full_or_io(model, e));
                }
                Err(e) => {
                    exchange.failed(&c).await;
                    failure.get_or_insert(CacheError::Fetch { model: *model, source: e });
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        file.sync_all().map_err(|e| self.full_or_io(model, e))?;
        fs::rename(&partial, inner.dir.join("files").join(id.hex())).map_err(|e| io(&inner.dir, e))?;
        let _ = fs::remove_file(&have_path);
        Ok(())
    }

    fn full_or_io(&self, model: &Digest, e: std::io::Error) -> CacheError {
        let dir = self.0.dir.display().to_string();
        if e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded {
            CacheError::DiskFull { model: *model, dir, why: e.to_string() }
        } else {
            CacheError::Io { dir, why: e.to_string() }
        }
    }

    /// Chunk `at` of a file this cache holds (complete, or with that chunk in place), read and
    /// checked: what peers are served. A chunk whose bytes no longer match removes the file: it is
    /// fetched again when next needed.
    ///
    /// A chunk that landed moments ago is served from memory ([`RECENT`] of them, for
    /// `RECENT_FOR`): its bytes were checked when they arrived and have not been to the disk
    /// and back, so there is nothing to check again; it saves the read and the hash that
    /// otherwise bound what a node can serve.
    pub fn read_chunk(&self, at: &ChunkAt) -> Result<Arc<ChunkBytes>, CacheError> {
        if let Some(r) =
            self.recent().iter().find(|r| r.file == at.file && r.index == at.index && r.digest == at.digest)
        {
            return Ok(r.bytes.clone());
        }
        let done = self.0.dir.join("files").join(at.file.hex());
        let (path, f) = match File::open(&done) {
            Ok(f) => (done, f),
            Err(_) => {
                let partial = self.0.dir.join("partial").join(at.file.hex());
                let have = fs::read_to_string(partial.with_extension("have")).unwrap_or_default();
                if !have.lines().any(|l| l.trim().parse::<usize>() == Ok(at.index)) {
                    return Err(CacheError::NotHeld(at.file.to_string()));
                }
                match File::open(&partial) {
                    Ok(f) => (partial, f),
                    // Completed in between: the partial file became the complete one.
                    Err(_) => match File::open(&done) {
                        Ok(f) => (done, f),
                        Err(_) => return Err(CacheError::NotHeld(at.file.to_string())),
                    },
                }
            }
        };
        let mut buf = ChunkBytes::take(at.len as usize);
        if !buffers::read_direct(&path, &mut buf, at.offset).map_err(|e| io(&self.0.dir, e))? {
            f.read_exact_at(buf.bytes_mut(), at.offset).map_err(|e| io(&self.0.dir, e))?;
        }
        if Digest::of(&buf) != at.digest {
            let _ = fs::remove_file(&path);
            return Err(CacheError::Rotten { file: at.file.to_string(), index: at.index });
        }
        Ok(Arc::new(buf))
    }

    /// The chunks in memory, those kept past [`RECENT_FOR`] dropped.
    fn recent(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Recent>> {
        let mut recent = self.0.recent.lock().expect("recent chunks");
        recent.retain(|r| r.at.elapsed() < RECENT_FOR);
        recent
    }

    /// Keeps a chunk that just landed (checked) in memory for peers that ask soon.
    fn remember(&self, at: &ChunkAt, bytes: ChunkBytes) {
        let mut recent = self.recent();
        while recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Recent {
            file: at.file,
            index: at.index,
            digest: at.digest,
            at: std::time::Instant::now(),
            bytes: Arc::new(bytes),
        });
    }
}

/// Where each chunk of a fetch comes from, decided chunk by chunk while it runs, and what is
/// told as chunks land. [`Direct`]: fixed sources in order; [`peers::Swarm`]: the peers of the
/// node's region that hold the chunk, else the origin, once per region.
#[async_trait::async_trait]
pub trait Exchange: Send + Sync {
    async fn route(&self, at: &ChunkAt) -> Route;
    /// The chunk is in place here (`fetched`: just now; else found from an earlier run).
    async fn landed(&self, at: &ChunkAt, fetched: bool);
    /// Fetching it failed here.
    async fn failed(&self, at: &ChunkAt);
    /// A source failed on the way (wrong bytes, or not answering).
    fn strike(&self, _strike: &source::Strike) {}
    /// Where in a file's `n` missing chunks this node starts.
    fn start(&self, _n: usize) -> usize {
        0
    }
    /// How many chunks this fetch has in flight at once (each holds a chunk-sized buffer).
    fn in_flight(&self) -> usize {
        PARALLEL
    }
}

pub enum Route {
    /// Try these, in order.
    From(Vec<Arc<dyn ChunkSource>>),
    /// Not now: another node is fetching it from the origin.
    Later,
}

/// Fixed sources, tried in order for every chunk.
pub struct Direct(pub Vec<Arc<dyn ChunkSource>>);

#[async_trait::async_trait]
impl Exchange for Direct {
    async fn route(&self, _at: &ChunkAt) -> Route {
        Route::From(self.0.clone())
    }
    async fn landed(&self, _at: &ChunkAt, _fetched: bool) {}
    async fn failed(&self, _at: &ChunkAt) {}
}

/// Reads a model directory's files front to back in large reads, on a thread of its own, so
/// the page cache fills ahead of the loader (`llm/weights.rs`, one read per tensor on each
/// core, in file order): one more request in flight keeps the disk busy while the loaders copy.
/// Measured with `cargo bench -p fleet-agent --bench cache_load`: 0.36–0.41 s with it, 0.39–0.44 s
/// without; two read-ahead threads, or `posix_fadvise(WILLNEED)` instead, were slower.
pub fn warm(dir: &Path) -> std::thread::JoinHandle<()> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut files: Vec<PathBuf> = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() { stack.push(p) } else { files.push(p) }
            }
        }
        // The largest first: the weights, which the loader needs most.
        files.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
        let mut buf = vec![0u8; 8 << 20];
        for p in files {
            if let Ok(mut f) = File::open(&p) {
                while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    })
}

fn io(dir: &Path, e: std::io::Error) -> CacheError {
    CacheError::Io { dir: dir.display().to_string(), why: e.to_string() }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}
