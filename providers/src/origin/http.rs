//! Read-only origins over plain HTTP: `https://…` (any web server or CDN holding the layout) and
//! `gs://bucket/prefix` read through Cloud Storage's XML endpoint (public objects). Pushing to
//! them is not something HTTP defines: push to a directory or S3 and serve that.

use std::time::Duration;

use async_trait::async_trait;
use fleet_core::artifact::Origin;

use super::{OriginError, OriginStore};

pub struct HttpOrigin {
    origin: Origin,
}

impl HttpOrigin {
    pub fn new(origin: Origin) -> HttpOrigin {
        HttpOrigin { origin }
    }

    fn url(&self, key: &str) -> String {
        self.origin.http_url(key).expect("an HTTP origin has URLs")
    }

    async fn request(&self, op: &'static str, key: &str, head: bool) -> Result<Option<Vec<u8>>, OriginError> {
        let url = self.url(key);
        let origin = self.origin.to_string();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::config::Config::builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(300)))
                    .build(),
            );
            let res = if head { agent.head(&url).call() } else { agent.get(&url).call() };
            let failed = |why: String| OriginError::Failed { origin: origin.clone(), op, key: key.clone(), why };
            let mut res = res.map_err(|e| failed(e.to_string()))?;
            match res.status().as_u16() {
                200 => {
                    if head {
                        return Ok(Some(Vec::new()));
                    }
                    let body = res.body_mut().with_config().limit(2 << 30).read_to_vec();
                    body.map(Some).map_err(|e| failed(e.to_string()))
                }
                404 => Ok(None),
                s => Err(failed(format!("HTTP {s}"))),
            }
        })
        .await
        .expect("the HTTP read does not panic")
    }
}

#[async_trait]
impl OriginStore for HttpOrigin {
    async fn exists(&self, key: &str) -> Result<bool, OriginError> {
        Ok(self.request("check", key, true).await?.is_some())
    }

    async fn put(&self, _key: &str, _bytes: Vec<u8>) -> Result<(), OriginError> {
        Err(OriginError::Unsupported {
            origin: self.origin.to_string(),
            what: "fleet cannot write to an HTTP origin: push to s3:// or file:/// and serve that directory".into(),
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, OriginError> {
        self.request("read", key, false)
            .await?
            .ok_or_else(|| OriginError::NotFound { origin: self.origin.to_string(), key: key.into() })
    }

    async fn presign(&self, key: &str, _ttl: Duration) -> Result<Option<String>, OriginError> {
        Ok(Some(self.url(key)))
    }
}
