//! The S3 adapter: the private content bucket. Keys live under the owner's id; objects are
//! encrypted at rest and reached only through short-lived presigned URLs (S1).

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption};
use aws_sdk_s3::Client;

#[derive(Clone)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
}

/// `users/<sub>/generations/<job>/` : everything of one generation.
pub fn generation_prefix(user_id: &str, job_id: &str) -> String {
    format!("users/{user_id}/generations/{job_id}/")
}

impl ObjectStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("storing object {key}"))?;
        Ok(())
    }

    pub async fn presign_get(&self, key: &str, ttl: Duration) -> anyhow::Result<String> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(PresigningConfig::expires_in(ttl)?)
            .await
            .context("presigning a download")?;
        Ok(req.uri().to_string())
    }

    /// Deletes every object under `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut deleted = 0;
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .context("listing objects to delete")?;
            let ids = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()?;
            if !ids.is_empty() {
                deleted += ids.len();
                let out = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(
                        Delete::builder()
                            .set_objects(Some(ids))
                            .quiet(true)
                            .build()?,
                    )
                    .send()
                    .await
                    .context("deleting objects")?;
                if let Some(err) = out.errors().first() {
                    anyhow::bail!("deleting {:?}: {:?}", err.key(), err.message());
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(deleted)
    }

    /// Keys under `prefix` (tests and the data overview use it).
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .context("listing objects")?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .context("reaching the content bucket")?;
        Ok(())
    }
}
