//! S3 (and S3-compatible stores) through aws-sdk-s3.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;

use super::{OriginError, OriginStore};

pub struct S3Origin {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Origin {
    /// The standard AWS credential chain and region; with `AWS_ENDPOINT_URL` set (an
    /// S3-compatible store, moto in the tests), path-style addressing.
    pub async fn from_env(bucket: &str, prefix: &str) -> S3Origin {
        let shared = aws_config::load_from_env().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            conf = conf.force_path_style(true);
        }
        if shared.region().is_none() {
            conf = conf.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        S3Origin::new(aws_sdk_s3::Client::from_conf(conf.build()), bucket, prefix)
    }

    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> S3Origin {
        S3Origin { client, bucket: bucket.into(), prefix: prefix.into() }
    }

    fn name(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn failed<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E, R>,
    ) -> OriginError {
        // The service's code and message (NoSuchBucket, AccessDenied …), not the SDK's wrapper.
        let why = match e.as_service_error() {
            Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("")),
            None => format!("{e:?}").chars().take(300).collect(),
        };
        OriginError::Failed { origin: self.name(), op, key: key.into(), why }
    }
}

#[async_trait]
impl OriginStore for S3Origin {
    async fn exists(&self, key: &str) -> Result<bool, OriginError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.failed("check", key, e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), OriginError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed("write", key, e))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, OriginError> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => o.body.collect().await.map(|b| b.to_vec()).map_err(|e| OriginError::Failed {
                origin: self.name(),
                op: "read",
                key: key.into(),
                why: e.to_string(),
            }),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(OriginError::NotFound { origin: self.name(), key: key.into() })
            }
            Err(e) => Err(self.failed("read", key, e)),
        }
    }

    async fn presign(&self, key: &str, ttl: Duration) -> Result<Option<String>, OriginError> {
        let conf = PresigningConfig::expires_in(ttl).map_err(|e| OriginError::Failed {
            origin: self.name(),
            op: "sign",
            key: key.into(),
            why: e.to_string(),
        })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| self.failed("sign", key, e))?;
        Ok(Some(req.uri().to_string()))
    }
}
