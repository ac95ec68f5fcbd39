//! Model pushes to a directory and to S3 (moto's S3 API, through aws-sdk-s3): chunks once, the
//! manifest last, reads signed for agents, and what goes wrong said plainly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::artifact::{Digest, Origin};
use fleet_providers::moto::Moto;
use fleet_providers::origin::file::FileOrigin;
use fleet_providers::origin::s3::S3Origin;
use fleet_providers::origin::{self, OriginError, OriginStore};

fn model(dir: &Path, seed: u8) {
    std::fs::create_dir_all(dir.join("shards")).unwrap();
    // Not periodic: every chunk differs (repeated chunks are sent once, as the last check shows).
    let mut x = 0x9E37_79B9u32 ^ seed as u32;
    let weights: Vec<u8> = (0..50_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("shards/model-00001.safetensors"), &weights).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), vec![7u8; 9000]).unwrap();
}

async fn pushes_once_then_skips_and_reads_back(origin: &Origin, store: Arc<dyn OriginStore>) {
    let t = tempfile::tempdir().unwrap();
    model(t.path(), 1);
    let r = origin::push(t.path(), origin, store.clone(), 8192).await.unwrap();
    // 50,000 bytes = 7 chunks, 9,000 of sevens = 2 chunks (of different lengths), the config 1.
    assert_eq!((r.files, r.chunks, r.uploaded), (3, 10, 10), "{r:?}");
    assert_eq!(r.bytes, 50_000 + 9000 + 22);
    assert_eq!(r.uploaded_bytes, r.bytes);
    let m = origin::manifest(origin, store.as_ref(), &r.digest).await.unwrap();
    assert_eq!(m.digest(), r.digest);
    for c in m.chunks() {
        let bytes = store.get(&origin.chunk_key(&c.digest)).await.unwrap();
        assert_eq!(Digest::of(&bytes), c.digest);
    }
    // Pushed again: nothing new is sent; one shard changed: only its chunks are.
    let again = origin::push(t.path(), origin, store.clone(), 8192).await.unwrap();
    assert_eq!((again.digest, again.uploaded), (r.digest, 0));
    std::fs::write(t.path().join("config.json"), br#"{"model_type":"qwen2"}"#).unwrap();
    let changed = origin::push(t.path(), origin, store.clone(), 8192).await.unwrap();
    assert_ne!(changed.digest, r.digest);
    assert_eq!(changed.uploaded, 1);
    // A file of one repeated chunk: stored once.
    std::fs::write(t.path().join("tokenizer.json"), vec![9u8; 4 * 8192]).unwrap();
    let repeated = origin::push(t.path(), origin, store.clone(), 8192).await.unwrap();
    assert_eq!((repeated.chunks, repeated.uploaded), (12, 1), "{repeated:?}");
    // A pin that names no manifest, and a manifest whose bytes are not the pinned ones.
    let none = Digest::of(b"nothing");
    assert!(matches!(origin::manifest(origin, store.as_ref(), &none).await, Err(OriginError::NotFound { .. })));
    let good = store.get(&origin.manifest_key(&r.digest)).await.unwrap();
    store.put(&origin.manifest_key(&none), good).await.unwrap();
    let e = origin::manifest(origin, store.as_ref(), &none).await.unwrap_err();
    assert!(e.to_string().contains(&format!("the manifest's SHA-256 is {}", r.digest)), "{e}");
}

#[tokio::test]
async fn a_model_pushed_to_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let origin: Origin = format!("file://{}", t.path().display()).parse().unwrap();
    let store = Arc::new(FileOrigin::new(t.path().to_path_buf()));
    pushes_once_then_skips_and_reads_back(&origin, store.clone()).await;
    assert_eq!(store.presign("chunks/x", Duration::from_secs(60)).await.unwrap(), None);
    // A missing model directory is named.
    let e = origin::push(Path::new("/nonexistent/model"), &origin, store, 8192).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model"), "{e}");
}

fn s3_client(moto: &Moto) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_pushed_to_s3_is_read_back_through_signed_urls() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let client = s3_client(&moto);
    client.create_bucket().bucket("models").send().await.unwrap();
    let origin: Origin = "s3://models/llama/tiny".parse().unwrap();
    let store = Arc::new(S3Origin::new(client.clone(), "models", "llama/tiny"));
    pushes_once_then_skips_and_reads_back(&origin, store.clone()).await;

    // An agent holds no AWS credential: it reads a chunk through a URL fleetd signed.
    let t = tempfile::tempdir().unwrap();
    model(t.path(), 2);
    let r = origin::push(t.path(), &origin, store.clone(), 8192).await.unwrap();
    let m = origin::manifest(&origin, store.as_ref(), &r.digest).await.unwrap();
    let c = m.chunks().nth(3).unwrap();
    let url = store.presign(&origin.chunk_key(&c.digest), Duration::from_secs(300)).await.unwrap().unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let bytes = tokio::task::spawn_blocking(move || {
        ureq::get(&url).call().unwrap().body_mut().with_config().limit(1 << 20).read_to_vec().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(Digest::of(&bytes), c.digest);

    // A bucket that does not exist: the service's word for it, and where.
    let missing = S3Origin::new(client, "no-such-bucket", "m");
    let e = missing.put("chunks/x", vec![1]).await.unwrap_err();
    assert!(e.to_string().contains("s3://no-such-bucket/m: write `chunks/x` failed: NoSuchBucket"), "{e}");
}
