//! An origin in a local directory (`file:///path`): tests, and models on a shared filesystem.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{OriginError, OriginStore};

pub struct FileOrigin {
    root: PathBuf,
}

impl FileOrigin {
    pub fn new(root: PathBuf) -> FileOrigin {
        FileOrigin { root }
    }

    fn failed(&self, op: &'static str, key: &str, e: std::io::Error) -> OriginError {
        if e.kind() == std::io::ErrorKind::NotFound && op == "read" {
            return OriginError::NotFound { origin: self.name(), key: key.into() };
        }
        OriginError::Failed { origin: self.name(), op, key: key.into(), why: e.to_string() }
    }

    fn name(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[async_trait]
impl OriginStore for FileOrigin {
    async fn exists(&self, key: &str) -> Result<bool, OriginError> {
        tokio::fs::try_exists(self.root.join(key)).await.map_err(|e| self.failed("check", key, e))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), OriginError> {
        let path = self.root.join(key);
        let dir = path.parent().expect("keys have a directory");
        tokio::fs::create_dir_all(dir).await.map_err(|e| self.failed("write", key, e))?;
        // Written aside, then renamed: a reader sees the whole object or none.
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        tokio::fs::write(&tmp, bytes).await.map_err(|e| self.failed("write", key, e))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| self.failed("write", key, e))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, OriginError> {
        tokio::fs::read(self.root.join(key)).await.map_err(|e| self.failed("read", key, e))
    }

    async fn presign(&self, _key: &str, _ttl: Duration) -> Result<Option<String>, OriginError> {
        Ok(None)
    }
}
