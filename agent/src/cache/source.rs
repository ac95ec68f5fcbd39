//! Where a node's cache gets chunks from: the model's origin (a directory, or URLs fleetd signed
//! for it: the agent holds no origin credential), and peers ([`super::peers`]). Every chunk is checked
//! against its digest before it is written; a source that serves wrong bytes is skipped for the
//! next one and named in the error if none serves the chunk right.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::artifact::{Digest, MAX_MANIFEST_BYTES, Manifest, Origin};

use super::buffers::ChunkBytes;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{chunk} is not at {source_name}")]
    Missing { chunk: Digest, source_name: String },
    #[error("{source_name} served chunk {chunk} with other bytes (their SHA-256 is {got})")]
    Wrong { chunk: Digest, source_name: String, got: Digest },
    #[error("reading chunk {chunk} from {source_name}: {why}")]
    Failed { chunk: Digest, source_name: String, why: String },
    #[error("no source could serve chunk {chunk}: {}", .tried.join("; "))]
    Exhausted { chunk: Digest, tried: Vec<String> },
    #[error("writing a chunk: {0}")]
    Write(std::io::Error),
}

/// One chunk to fetch: the file it belongs to (its cache id, [`Manifest::file_id`]), where in
/// it, and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkAt {
    pub file: Digest,
    pub index: usize,
    pub offset: u64,
    pub len: u64,
    pub digest: Digest,
}

/// Something that serves chunks.
#[async_trait]
pub trait ChunkSource: Send + Sync {
    /// For errors and logs: the origin's URL, a peer's node id.
    fn name(&self) -> String;
    /// Whether this is a peer (bytes from it are not origin traffic).
    fn is_peer(&self) -> bool {
        false
    }
    /// The chunk's bytes (`at.len` of them); unchecked: the caller checks.
    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError>;
    /// The manifest's bytes (origins only); unchecked: [`Manifest::parse`] checks them.
    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, FetchError> {
        Err(FetchError::Missing { chunk: *digest, source_name: self.name() })
    }
}

/// The manifest pinned by `digest`, from the first source that has it, checked.
pub async fn fetch_manifest(sources: &[Arc<dyn ChunkSource>], digest: &Digest) -> Result<Manifest, String> {
    let mut tried = Vec::new();
    for s in sources {
        match s.manifest(digest).await {
            Ok(bytes) => match Manifest::parse(&bytes, digest) {
                Ok(m) => return Ok(m),
                Err(e) => tried.push(format!("{}: {e}", s.name())),
            },
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(format!("no source has manifest {digest}: {}", tried.join("; ")))
}

/// What went wrong with one source while fetching a chunk (a peer to avoid next time).
#[derive(Debug, Clone)]
pub struct Strike {
    pub source: String,
    pub wrong_bytes: bool,
}

/// Fetches a chunk from the first source that serves it right; returns its bytes, the source
/// that served them, and the sources that failed on the way.
pub async fn fetch_checked(
    sources: &[Arc<dyn ChunkSource>],
    at: &ChunkAt,
) -> Result<(ChunkBytes, Arc<dyn ChunkSource>, Vec<Strike>), (FetchError, Vec<Strike>)> {
    let mut tried = Vec::new();
    let mut strikes = Vec::new();
    for s in sources {
        match s.chunk(at).await {
            Ok(bytes) => {
                // Hashing a chunk takes tens of milliseconds: off the async threads.
                let (got, bytes) = tokio::task::spawn_blocking(move || (Digest::of(&bytes), bytes))
                    .await
                    .expect("hashing does not panic");
                if got == at.digest && bytes.len() as u64 == at.len {
                    return Ok((bytes, s.clone(), strikes));
                }
                let e = FetchError::Wrong { chunk: at.digest, source_name: s.name(), got };
                tracing::warn!("{e}");
                tried.push(e.to_string());
                strikes.push(Strike { source: s.name(), wrong_bytes: true });
            }
            Err(e) => {
                tried.push(e.to_string());
                strikes.push(Strike { source: s.name(), wrong_bytes: false });
            }
        }
    }
    Err((FetchError::Exhausted { chunk: at.digest, tried }, strikes))
}

/// A `file:///` origin, read directly.
pub struct DirSource {
    pub origin: Origin,
    pub root: PathBuf,
}

#[async_trait]
impl ChunkSource for DirSource {
    fn name(&self) -> String {
        self.origin.to_string()
    }

    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError> {
        let (path, len, d, name) = (self.root.join(self.origin.chunk_key(&at.digest)), at.len, at.digest, self.name());
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let failed = |e: std::io::Error| read_error(e, d, &name);
            let mut f = std::fs::File::open(&path).map_err(failed)?;
            if f.metadata().map_err(failed)?.len() != len {
                // Not the chunk's length: wrong bytes, which the caller's check reports.
                let mut all = Vec::new();
                f.read_to_end(&mut all).map_err(failed)?;
                return Ok(all.into());
            }
            let mut out = ChunkBytes::take(len as usize);
            f.read_exact(out.bytes_mut()).map_err(failed)?;
            Ok(out)
        })
        .await
        .expect("a read does not panic")
    }

    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, FetchError> {
        self.read(&self.origin.manifest_key(digest), digest).await
    }
}

impl DirSource {
    async fn read(&self, key: &str, digest: &Digest) -> Result<Vec<u8>, FetchError> {
        tokio::fs::read(self.root.join(key)).await.map_err(|e| read_error(e, *digest, &self.name()))
    }
}

/// A directory origin's read error: a file that is not there is a missing chunk or manifest.
fn read_error(e: std::io::Error, digest: Digest, source_name: &str) -> FetchError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FetchError::Missing { chunk: digest, source_name: source_name.to_string() },
        _ => FetchError::Failed { chunk: digest, source_name: source_name.to_string(), why: e.to_string() },
    }
}

/// Maps an object key to a URL to GET it from (fleetd's signature for S3).
pub type Signer = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// An origin read over HTTP(S): a plain `https://` or `gs://` URL, or an S3 object through a
/// URL fleetd signed (`sign` asks fleetd for it).
pub struct HttpSource {
    pub origin: Origin,
    /// Maps an object key to the URL to GET (fleetd's signature, or the origin's public URL).
    pub url: Signer,
}

#[async_trait]
impl ChunkSource for HttpSource {
    fn name(&self) -> String {
        self.origin.to_string()
    }

    async fn chunk(&self, at: &ChunkAt) -> Result<ChunkBytes, FetchError> {
        self.get(self.origin.chunk_key(&at.digest), &at.digest, at.len).await
    }

    async fn manifest(&self, digest: &Digest) -> Result<Vec<u8>, FetchError> {
        Ok(self.get(self.origin.manifest_key(digest), digest, MAX_MANIFEST_BYTES).await?.to_vec())
    }
}

impl HttpSource {
    async fn get(&self, key: String, digest: &Digest, len: u64) -> Result<ChunkBytes, FetchError> {
        let (name, d, sign) = (self.name(), *digest, self.url.clone());
        // Signing may ask fleetd (blocking HTTP): off the async threads with the read itself.
        tokio::task::spawn_blocking(move || {
            let url = sign(&key).map_err(|why| FetchError::Failed { chunk: d, source_name: name.clone(), why })?;
            let agent = ureq::Agent::new_with_config(
                ureq::config::Config::builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(300)))
                    .build(),
            );
            let failed = |why: String| FetchError::Failed { chunk: d, source_name: name.clone(), why };
            let mut res = agent.get(&url).call().map_err(|e| failed(e.to_string()))?;
            match res.status().as_u16() {
                200 => read_body(&mut res, len).map_err(|e| failed(e.to_string())),
                404 => Err(FetchError::Missing { chunk: d, source_name: name.clone() }),
                s => Err(failed(format!("HTTP {s}"))),
            }
        })
        .await
        .expect("an HTTP read does not panic")
    }
}

/// The origin source for `origin`: a directory read directly, an HTTP origin by its URLs. S3
/// needs fleetd's signatures (`signer`); without one, S3 is refused with what to do.
pub fn origin_source(origin: &Origin, signer: Option<Signer>) -> Result<Arc<dyn ChunkSource>, String> {
    match origin {
        Origin::File { path } => Ok(Arc::new(DirSource { origin: origin.clone(), root: path.clone() })),
        Origin::Http { .. } | Origin::Gcs { .. } => {
            let o = origin.clone();
            let url = Arc::new(move |key: &str| Ok(o.http_url(key).expect("HTTP origins have URLs")));
            Ok(Arc::new(HttpSource { origin: origin.clone(), url }))
        }
        Origin::S3 { .. } => match signer {
            Some(url) => Ok(Arc::new(HttpSource { origin: origin.clone(), url })),
            None => Err(format!(
                "{origin}: an agent reads S3 only through URLs fleetd signs, over fleetd's gateway: give the agent `gateway` in its config"
            )),
        },
    }
}

/// A response body of at most `len` bytes, read into one buffer of that size (no regrowth).
pub(crate) fn read_body(res: &mut ureq::http::Response<ureq::Body>, len: u64) -> std::io::Result<ChunkBytes> {
    use std::io::Read;
    // Into a reused buffer of `len` (super::buffers); one byte more is an error.
    let mut out = ChunkBytes::take(len as usize);
    let mut r = res.body_mut().with_config().limit(len + 1).reader();
    let buf = out.bytes_mut();
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let mut more = [0u8; 1];
    if got == buf.len() && r.read(&mut more)? > 0 {
        return Err(std::io::Error::other(format!("the body is longer than {len} bytes")));
    }
    out.truncate(got);
    Ok(out)
}
