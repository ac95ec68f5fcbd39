//! Model origins: where `fleetctl model push` writes a model's chunks and manifest (see
//! [`fleet_core::artifact`] for the layout), and where fleetd signs short-lived reads of them for
//! agents, so no agent ever holds an origin credential.
//!
//! One small trait, [`OriginStore`]; one implementation per kind of origin: a directory
//! ([`file::FileOrigin`]), S3 through aws-sdk-s3 ([`s3::S3Origin`], feature `s3`), and plain HTTP
//! reads for `https://` and `gs://` ([`http::HttpOrigin`], read-only).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::artifact::{Digest, Manifest, Origin};

pub mod file;
pub mod http;
#[cfg(feature = "s3")]
pub mod s3;

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{origin}: `{key}` is not there")]
    NotFound { origin: String, key: String },
    #[error("{origin}: {op} `{key}` failed: {why}")]
    Failed { origin: String, op: &'static str, key: String, why: String },
    #[error("{origin}: {what}")]
    Unsupported { origin: String, what: String },
    #[error(transparent)]
    Artifact(#[from] fleet_core::artifact::ArtifactError),
}

/// The few things fleet asks of an object store. Keys are the ones [`Origin::chunk_key`] and
/// [`Origin::manifest_key`] make.
#[async_trait]
pub trait OriginStore: Send + Sync {
    /// Whether `key` is there (a chunk already pushed is not sent again).
    async fn exists(&self, key: &str) -> Result<bool, OriginError>;
    /// Writes `bytes` at `key`, whole: a reader never sees part of an object.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), OriginError>;
    /// Reads `key` whole; [`OriginError::NotFound`] when it is not there.
    async fn get(&self, key: &str) -> Result<Vec<u8>, OriginError>;
    /// A URL that any HTTP client can GET `key` from for the next `ttl`, without credentials;
    /// `None` where the origin has no such thing (a local directory: read it directly).
    async fn presign(&self, key: &str, ttl: Duration) -> Result<Option<String>, OriginError>;
}

impl std::fmt::Debug for dyn OriginStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginStore")
    }
}

/// The client for `origin`. S3 uses the standard AWS credential chain (and `AWS_ENDPOINT_URL`,
/// with path-style addressing, for S3-compatible stores).
pub async fn open(origin: &Origin) -> Result<Arc<dyn OriginStore>, OriginError> {
    match origin {
        Origin::File { path } => Ok(Arc::new(file::FileOrigin::new(path.clone()))),
        Origin::Http { .. } | Origin::Gcs { .. } => Ok(Arc::new(http::HttpOrigin::new(origin.clone()))),
        #[cfg(feature = "s3")]
        Origin::S3 { bucket, prefix } => Ok(Arc::new(s3::S3Origin::from_env(bucket, prefix).await)),
        #[cfg(not(feature = "s3"))]
        Origin::S3 { .. } => Err(OriginError::Unsupported {
            origin: origin.to_string(),
            what: "this binary was built without the `s3` feature".into(),
        }),
    }
}

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub digest: Digest,
    pub files: usize,
    pub chunks: usize,
    /// Chunks sent; the others were at the origin already (same bytes, same digest).
    pub uploaded: usize,
    pub bytes: u64,
    pub uploaded_bytes: u64,
}

/// Cuts `dir` into chunks of `chunk_size`, uploads each chunk the origin does not hold yet, then
/// the manifest, last: a manifest at the origin always has every chunk it names. The directory
/// is read once (chunks go to the uploader as they are hashed, a few in flight).
pub async fn push(
    dir: &Path,
    origin: &Origin,
    store: Arc<dyn OriginStore>,
    chunk_size: u64,
) -> Result<PushReport, OriginError> {
    if matches!(origin, Origin::Http { .. } | Origin::Gcs { .. }) {
        return Err(OriginError::Unsupported {
            origin: origin.to_string(),
            what: "fleet cannot write to an HTTP origin: push to s3:// or file:/// and serve that".into(),
        });
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Digest, Vec<u8>)>(2);
    let dir = dir.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        Manifest::build(&dir, chunk_size, |d, bytes| {
            // A closed channel means the uploader failed: stop reading; its error is reported.
            tx.blocking_send((*d, bytes.to_vec()))
                .map_err(|_| fleet_core::artifact::ArtifactError::Io("upload stopped".into()))
        })
    });
    let mut seen = std::collections::HashSet::new();
    let (mut uploaded, mut uploaded_bytes) = (0, 0);
    let mut failure = None;
    while let Some((d, bytes)) = rx.recv().await {
        if !seen.insert(d) {
            continue;
        }
        let key = origin.chunk_key(&d);
        let step = async {
            if !store.exists(&key).await? {
                uploaded_bytes += bytes.len() as u64;
                store.put(&key, bytes).await?;
                uploaded += 1;
            }
            Ok::<_, OriginError>(())
        };
        if let Err(e) = step.await {
            failure = Some(e);
            break;
        }
    }
    drop(rx);
    let built = reader.await.expect("the manifest builder does not panic");
    if let Some(e) = failure {
        return Err(e);
    }
    let manifest = built?;
    let digest = manifest.digest();
    store.put(&origin.manifest_key(&digest), manifest.to_bytes()).await?;
    Ok(PushReport {
        digest,
        files: manifest.files.len(),
        chunks: manifest.chunks().count(),
        uploaded,
        bytes: manifest.total_bytes(),
        uploaded_bytes,
    })
}

/// Reads and checks the manifest pinned by `digest`.
pub async fn manifest(origin: &Origin, store: &dyn OriginStore, digest: &Digest) -> Result<Manifest, OriginError> {
    let bytes = store.get(&origin.manifest_key(digest)).await?;
    Ok(Manifest::parse(&bytes, digest)?)
}
