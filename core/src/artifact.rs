//! Model artefacts: a model directory cut into content-addressed chunks, named by a manifest.
//!
//! A model (config, tokenizer, weight shards) is stored at an [`Origin`] as
//!
//! ```text
//! {origin}/chunks/{sha256 of the chunk}        every chunk of every file, once (shared across models)
//! {origin}/manifests/{sha256 of the manifest}  the manifest: each file's path, size and chunk digests
//! ```
//!
//! The manifest's own SHA-256 is the model's identity: the spec pins an app's model by it, so
//! what a node loads is exactly what was pushed, whoever serves the bytes (the origin, a peer, the
//! node's own cache). Every chunk is checked against its digest when it arrives and when it is
//! served; the manifest is checked against the pinned digest before anything is fetched.
//!
//! A file is cut into chunks of `chunk_size` bytes (the last one shorter), so chunk `i` of a file
//! is its bytes `[i × chunk_size, min(size, (i+1) × chunk_size))`: a node that holds a file can
//! serve any of its chunks by a ranged read, and a node that fetches one can write each chunk in
//! place, so the finished file is memory-mapped as it lies on disk (no assembly copy).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Chunks are 64 MiB unless the pusher says otherwise: large enough that per-chunk overheads
/// (a request, a store entry) vanish beside the transfer, small enough that 8 nodes fetching
/// a 2 GB model have 32 chunks to share.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;
/// The smallest chunk a manifest may use (tests use small models and small chunks).
pub const MIN_CHUNK_SIZE: u64 = 4 << 10;
/// The largest: a chunk is held in memory while it is checked.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// A manifest larger than this is refused before it is parsed.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// A SHA-256 digest, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(b: [u8; 32]) -> Digest {
        Digest(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits alone (file and object names).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses 64 lower- or upper-case hex digits.
    pub fn from_hex(hex: &str) -> Result<Digest, ArtifactError> {
        let bad = || ArtifactError::BadDigest(hex.to_string());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl FromStr for Digest {
    type Err = ArtifactError;
    fn from_str(s: &str) -> Result<Digest, ArtifactError> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex),
            None => Err(ArtifactError::BadDigest(s.to_string())),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes a stream incrementally (files too large to hold).
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative, `/`-separated, no `.` or `..` segments (checked).
    pub path: String,
    pub size: u64,
    pub chunks: Vec<Digest>,
}

/// What a model is: its files, each as a list of chunk digests. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always 1 (a later layout would change it).
    pub version: u32,
    pub chunk_size: u64,
    /// Sorted by path.
    pub files: Vec<ManifestFile>,
}

/// Where chunk `index` of a file lies and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub file: usize,
    pub index: usize,
    pub offset: u64,
    pub len: u64,
    pub digest: Digest,
}

impl Manifest {
    /// The bytes stored at the origin, whose SHA-256 is the model's identity. Deterministic:
    /// the same files give the same bytes on every machine.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Reads a manifest fetched from anywhere: refused unless its bytes hash to `expected`
    /// (the spec's pin), then checked as [`Manifest::validate`] does.
    pub fn parse(bytes: &[u8], expected: &Digest) -> Result<Manifest, ArtifactError> {
        let got = Digest::of(bytes);
        if got != *expected {
            return Err(ArtifactError::ManifestMismatch { expected: *expected, got });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ArtifactError::BadManifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Every rule a manifest obeys: version 1, a chunk size in bounds, safe unique sorted paths,
    /// and each file's chunk count matching its size.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        let bad = |why: String| Err(ArtifactError::BadManifest(why));
        if self.version != 1 {
            return bad(format!("version {} (this fleet reads version 1)", self.version));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return bad(format!("chunk_size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}", self.chunk_size));
        }
        if self.files.is_empty() {
            return bad("no files".into());
        }
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path)?;
            if i > 0 && self.files[i - 1].path >= f.path {
                return bad(format!("files are not sorted by path, or `{}` is listed twice", f.path));
            }
            let want = f.size.div_ceil(self.chunk_size);
            if f.chunks.len() as u64 != want {
                return bad(format!(
                    "`{}` is {} bytes, which is {want} chunks of {}, but {} are listed",
                    f.path,
                    f.size,
                    self.chunk_size,
                    f.chunks.len()
                ));
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every chunk of every file, in order.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.files.iter().enumerate().flat_map(move |(fi, f)| {
            f.chunks.iter().enumerate().map(move |(ci, d)| {
                let offset = ci as u64 * self.chunk_size;
                ChunkRef { file: fi, index: ci, offset, len: (f.size - offset).min(self.chunk_size), digest: *d }
            })
        })
    }

    /// A file's identity in a node's cache: the digest of its size and chunk list, so two models
    /// sharing a shard share its cached copy.
    pub fn file_id(&self, file: usize) -> Digest {
        let f = &self.files[file];
        let mut h = Hasher::new();
        h.update(&self.chunk_size.to_be_bytes());
        h.update(&f.size.to_be_bytes());
        for c in &f.chunks {
            h.update(c.as_bytes());
        }
        h.finish()
    }

    /// Cuts the files under `dir` (recursively; symlinks followed, hidden files included) into
    /// chunks, hashing each. `each_chunk` sees every chunk's bytes as it is read (the pusher
    /// uploads them), so a model is read once.
    pub fn build(
        dir: &Path,
        chunk_size: u64,
        mut each_chunk: impl FnMut(&Digest, &[u8]) -> Result<(), ArtifactError>,
    ) -> Result<Manifest, ArtifactError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ArtifactError::BadManifest(format!(
                "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            )));
        }
        let mut paths = Vec::new();
        walk(dir, dir, &mut paths)?;
        paths.sort();
        let mut files = Vec::new();
        let mut buf = vec![0u8; chunk_size as usize];
        for rel in paths {
            let full = dir.join(&rel);
            let io = |e: std::io::Error| ArtifactError::Io(format!("{}: {e}", full.display()));
            let mut f = std::fs::File::open(&full).map_err(io)?;
            let mut chunks = Vec::new();
            let mut size = 0u64;
            loop {
                let n = read_full(&mut f, &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                let d = Digest::of(&buf[..n]);
                each_chunk(&d, &buf[..n])?;
                chunks.push(d);
                size += n as u64;
                if n < buf.len() {
                    break;
                }
            }
            files.push(ManifestFile { path: rel, size, chunks });
        }
        let m = Manifest { version: 1, chunk_size, files };
        m.validate()?;
        Ok(m)
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ArtifactError> {
    let io = |e: std::io::Error| ArtifactError::Io(format!("{}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let meta = std::fs::metadata(&path).map_err(|e| ArtifactError::Io(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).expect("walked under root");
            let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
            let rel = parts.ok_or_else(|| ArtifactError::BadPath(rel.display().to_string()))?.join("/");
            check_path(&rel)?;
            out.push(rel);
        }
    }
    Ok(())
}

/// A manifest path must stay inside the model's directory wherever it is written.
fn check_path(p: &str) -> Result<(), ArtifactError> {
    let bad = p.is_empty()
        || p.len() > 1024
        || p.starts_with('/')
        || p.contains('\\')
        || p.contains('\0')
        || p.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad { Err(ArtifactError::BadPath(p.to_string())) } else { Ok(()) }
}

/// Where a model's chunks and manifests are kept (the spec's `source`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
    /// `gs://bucket/prefix`, read over Google Cloud Storage's XML API (plain HTTP range reads).
    Gcs { bucket: String, prefix: String },
    /// `https://host/path` (or `http://` on loopback, for tests): `{url}/chunks/…` by GET.
    Http { url: String },
    /// `file:///absolute/path`
    File { path: PathBuf },
}

impl Origin {
    /// The object key (or path below the root) of a chunk.
    pub fn chunk_key(&self, d: &Digest) -> String {
        self.key(&format!("chunks/{}", d.hex()))
    }

    pub fn manifest_key(&self, d: &Digest) -> String {
        self.key(&format!("manifests/{}", d.hex()))
    }

    fn key(&self, rest: &str) -> String {
        match self {
            Origin::S3 { prefix, .. } | Origin::Gcs { prefix, .. } if !prefix.is_empty() => format!("{prefix}/{rest}"),
            _ => rest.to_string(),
        }
    }

    /// A URL a plain HTTP client can GET `key` from, for the origins that have one without
    /// credentials (public or presigned access is the caller's matter).
    pub fn http_url(&self, key: &str) -> Option<String> {
        match self {
            Origin::Http { url } => Some(format!("{}/{key}", url.trim_end_matches('/'))),
            Origin::Gcs { bucket, .. } => Some(format!("https://storage.googleapis.com/{bucket}/{key}")),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Origin::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Origin::Http { url } => f.write_str(url),
            Origin::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

impl FromStr for Origin {
    type Err = ArtifactError;
    fn from_str(s: &str) -> Result<Origin, ArtifactError> {
        let bad = |why: &str| ArtifactError::BadOrigin { origin: s.to_string(), why: why.to_string() };
        let bucket_and_prefix = |rest: &str| -> Result<(String, String), ArtifactError> {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(bad("a bucket name is 3–63 lower-case letters, digits, '-' or '.'"));
            }
            let prefix = prefix.trim_end_matches('/').to_string();
            if prefix.split('/').any(|p| p == ".." || p == ".") || prefix.contains("//") {
                return Err(bad("the prefix has an empty, '.' or '..' segment"));
            }
            Ok((bucket.to_string(), prefix))
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = bucket_and_prefix(rest)?;
            Ok(Origin::S3 { bucket, prefix })
        } else if let Some(rest) = s.strip_prefix("gs://") {
            let (bucket, prefix) = bucket_and_prefix(rest)?;
            Ok(Origin::Gcs { bucket, prefix })
        } else if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("a file origin is an absolute path: file:///path/to/dir"));
            }
            Ok(Origin::File { path: PathBuf::from(rest) })
        } else if s.starts_with("https://") || s.starts_with("http://") {
            let host = s.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
            if host.is_empty() {
                return Err(bad("the URL has no host"));
            }
            let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
            if s.starts_with("http://") && !loopback {
                return Err(bad("plain http is allowed on loopback only; use https://"));
            }
            if s.contains(['?', '#']) {
                return Err(bad("the URL has a query or fragment; give the directory the chunks are under"));
            }
            Ok(Origin::Http { url: s.trim_end_matches('/').to_string() })
        } else {
            Err(bad("the scheme is none of s3://, gs://, https://, file://"))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{0}` is not a digest: write sha256: and 64 hex digits")]
    BadDigest(String),
    #[error(
        "the manifest's SHA-256 is {got}, not {expected} as pinned: the origin holds another model under that name, or the pin is wrong"
    )]
    ManifestMismatch { expected: Digest, got: Digest },
    #[error("the manifest is malformed: {0}")]
    BadManifest(String),
    #[error("`{0}` cannot be a model file's path: relative, `/`-separated, no empty, `.` or `..` segments")]
    BadPath(String),
    #[error("model origin `{origin}`: {why}")]
    BadOrigin { origin: String, why: String },
    #[error("{0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn a_directory_is_cut_into_chunks_and_its_manifest_digest_is_stable() {
        let t = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write(t.path(), "model.safetensors", &big);
        write(t.path(), "config.json", b"{}");
        write(t.path(), "sub/tokenizer.json", &big[..4096]);
        let mut seen = Vec::new();
        let m = Manifest::build(t.path(), 4096, |d, b| {
            assert_eq!(*d, Digest::of(b));
            seen.push(b.len());
            Ok(())
        })
        .unwrap();
        let paths: Vec<_> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["config.json", "model.safetensors", "sub/tokenizer.json"]);
        assert_eq!(m.files[1].chunks.len(), 3); // 4096 + 4096 + 1808
        assert_eq!(seen, [2, 4096, 4096, 1808, 4096]);
        assert_eq!(m.total_bytes(), 10_000 + 2 + 4096);
        let c: Vec<_> = m.chunks().filter(|c| c.file == 1).map(|c| (c.offset, c.len)).collect();
        assert_eq!(c, [(0, 4096), (4096, 4096), (8192, 1808)]);
        // The first chunk of the weights and the tokenizer are the same bytes: the same digest.
        assert_eq!(m.files[1].chunks[0], m.files[2].chunks[0]);
        let again = Manifest::build(t.path(), 4096, |_, _| Ok(())).unwrap();
        assert_eq!(again.digest(), m.digest());
        let parsed = Manifest::parse(&m.to_bytes(), &m.digest()).unwrap();
        assert_eq!(parsed, m);
        // One byte changed anywhere changes the identity.
        write(t.path(), "config.json", b"{ }");
        assert_ne!(Manifest::build(t.path(), 4096, |_, _| Ok(())).unwrap().digest(), m.digest());
    }

    #[test]
    fn a_manifest_that_does_not_hash_to_its_pin_or_breaks_a_rule_is_refused() {
        let d = Digest::of(b"x");
        let m = Manifest {
            version: 1,
            chunk_size: 4096,
            files: vec![ManifestFile { path: "a".into(), size: 5000, chunks: vec![d, d] }],
        };
        let e = Manifest::parse(&m.to_bytes(), &Digest::of(b"other")).unwrap_err();
        assert!(matches!(e, ArtifactError::ManifestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("not sha256:"), "{e}");
        let mut short = m.clone();
        short.files[0].chunks.pop();
        let e = Manifest::parse(&short.to_bytes(), &short.digest()).unwrap_err();
        assert!(e.to_string().contains("5000 bytes, which is 2 chunks of 4096, but 1 are listed"), "{e}");
        for p in ["../etc/passwd", "/abs", "a//b", "a/./b", ""] {
            let mut evil = m.clone();
            evil.files[0].path = p.into();
            let e = Manifest::parse(&evil.to_bytes(), &evil.digest()).unwrap_err();
            assert!(matches!(e, ArtifactError::BadPath(_)), "{p}: {e}");
        }
        let mut twice = m.clone();
        twice.files.push(twice.files[0].clone());
        assert!(Manifest::parse(&twice.to_bytes(), &twice.digest()).unwrap_err().to_string().contains("twice"));
        let extra = br#"{"version":1,"chunk_size":4096,"files":[],"evil":1}"#;
        assert!(matches!(Manifest::parse(extra, &Digest::of(extra)), Err(ArtifactError::BadManifest(_))));
    }

    #[test]
    fn digests_and_origins_parse_with_errors_that_say_what_to_write() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        for bad in ["2cf2", "md5:abc", "sha256:zz"] {
            assert!(bad.parse::<Digest>().unwrap_err().to_string().contains("sha256: and 64 hex"));
        }
        assert_eq!(
            "s3://models/llama/3/".parse::<Origin>().unwrap(),
            Origin::S3 { bucket: "models".into(), prefix: "llama/3".into() }
        );
        let o: Origin = "gs://b-1/p".parse().unwrap();
        assert_eq!(o.chunk_key(&d), format!("p/chunks/{}", d.hex()));
        assert_eq!(
            o.http_url(&o.chunk_key(&d)).unwrap(),
            format!("https://storage.googleapis.com/b-1/p/chunks/{}", d.hex())
        );
        assert_eq!("file:///m".parse::<Origin>().unwrap(), Origin::File { path: "/m".into() });
        let e = |s: &str| s.parse::<Origin>().unwrap_err().to_string();
        assert!(e("ftp://x/y").contains("none of s3://"));
        assert!(e("s3://Bad_Bucket/x").contains("bucket name"));
        assert!(e("s3://bkt/../x").contains("'..'"));
        assert!(e("file://rel/dir").contains("absolute path"));
        assert!(e("http://example.com/m").contains("loopback only"));
        assert!("http://127.0.0.1:9000/m".parse::<Origin>().is_ok());
    }
}
