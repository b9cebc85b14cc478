//! The S3 adapter: the private content bucket. Keys live under the owner's id; objects are
//! encrypted at rest and reached only through short-lived presigned URLs (S1). Content objects
//! are tagged `backstop=on`: the bucket's lifecycle backstop expires only tagged objects, and a
//! legal hold removes the tag from what it covers (R5).
//!
//! Callers use the [`Objects`] port, so tests can put a fault-injecting wrapper in front of the
//! real adapter.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption, Tag, Tagging};
use aws_sdk_s3::Client;

/// A stream of an object's bytes.
pub type ByteReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Multipart upload part size (S3's minimum is 5 MiB, except for the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// The tag the lifecycle backstop rule matches.
pub const BACKSTOP_TAG: (&str, &str) = ("backstop", "on");

/// The `Tagging` of a new object: the backstop tag unless it is held.
fn backstop_tagging(backstop: bool) -> Option<String> {
    backstop.then(|| format!("{}={}", BACKSTOP_TAG.0, BACKSTOP_TAG.1))
}

/// The content bucket, as the functions use it.
#[async_trait::async_trait]
pub trait Objects: Send + Sync {
    fn bucket(&self) -> &str;
    /// Stores an object with SSE, and the backstop tag unless `backstop` is false (content under
    /// a legal hold).
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()>;
    /// Copies an object within the bucket, server-side (no bytes through the function), as
    /// `put` would store it.
    async fn copy(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()>;
    async fn presign_get(&self, key: &str, ttl: Duration) -> anyhow::Result<String>;
    /// A short-lived download link that makes the browser save the object as `filename`.
    async fn presign_download(
        &self,
        key: &str,
        ttl: Duration,
        filename: &str,
    ) -> anyhow::Result<String>;
    /// A short-lived upload form for exactly `key`, of `content_type`, 1 to `max_size` bytes.
    async fn presign_post(
        &self,
        key: &str,
        content_type: &str,
        max_size: u64,
        ttl: Duration,
    ) -> anyhow::Result<crate::presigned_post::PresignedPost>;
    /// The object's bytes, or `None` when there is no such object.
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// The object's size, or `None` when there is no such object.
    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>>;
    /// The object as a stream (never held whole in memory), or `None` when there is none.
    async fn get_stream(&self, key: &str) -> anyhow::Result<Option<ByteReader>>;
    /// Stores what `reader` yields as one object by multipart upload, in parts of
    /// [`PART_SIZE`]: memory stays at one part whatever the size. The upload completes only
    /// when `commit` says so once the reader has ended; otherwise (or on any error) it is
    /// aborted and nothing is stored. Returns the size.
    async fn put_stream(
        &self,
        key: &str,
        content_type: &str,
        backstop: bool,
        reader: ByteReader,
        commit: tokio::sync::oneshot::Receiver<bool>,
    ) -> anyhow::Result<u64>;
    /// Deletes every object under `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize>;
    /// Keys under `prefix`.
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>>;
    /// Puts the backstop tag on (`true`) or takes it off every object under `prefix`.
    async fn set_backstop(&self, prefix: &str, on: bool) -> anyhow::Result<usize>;
    /// The object's tags (tests check the backstop tag).
    async fn tags(&self, key: &str) -> anyhow::Result<Vec<(String, String)>>;
    async fn ping(&self) -> anyhow::Result<()>;
}

#[derive(Clone)]
pub struct ObjectStore {
    s3: crate::lazy::Lazy<S3>,
    bucket: String,
}

struct S3 {
    client: Client,
    /// Where upload forms are posted: the bucket's virtual-hosted URL, or `<endpoint>/<bucket>`
    /// on a custom endpoint (the local emulator).
    post_url: String,
    /// What upload forms are signed with (the function's own credentials).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: String,
}

/// `users/<sub>/` : everything of one user.
pub fn user_prefix(user_id: &str) -> String {
    format!("users/{user_id}/")
}

/// `users/<sub>/uploads/<id>/` : one reference upload (as sent, and its re-encoded copy).
pub fn upload_prefix(user_id: &str, upload_id: &str) -> String {
    format!("users/{user_id}/uploads/{upload_id}/")
}

/// `users/<sub>/exports/<id>/` : one export's archive.
pub fn export_prefix(user_id: &str, export_id: &str) -> String {
    format!("users/{user_id}/exports/{export_id}/")
}

/// `public/<token>/` : the public copy of one published image (a random token per copy, so the
/// key names neither its owner nor anything guessable).
pub fn public_prefix(token: &str) -> String {
    format!("public/{token}/")
}

/// `users/<sub>/generations/<job>/` : everything of one generation.
pub fn generation_prefix(user_id: &str, job_id: &str) -> String {
    format!("users/{user_id}/generations/{job_id}/")
}

impl ObjectStore {
    /// With a client already built, forms addressed to the bucket's virtual-hosted URL and not
    /// signed (tests reading and writing objects).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        let bucket = bucket.into();
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Self {
            s3: crate::lazy::Lazy::ready(S3 {
                post_url: format!("https://{bucket}.s3.{region}.amazonaws.com/"),
                client,
                credentials: None,
                region,
            }),
            bucket,
        }
    }

    /// With the client built on first use. Upload forms are signed with the SDK
    /// configuration's credentials; on a custom endpoint (the local emulator) the bucket is
    /// addressed by path.
    pub fn lazy(sdk: &crate::lazy::SdkSource, bucket: impl Into<String>) -> Self {
        let bucket = bucket.into();
        let name = bucket.clone();
        Self {
            s3: crate::lazy::Lazy::new(sdk, move |sdk| {
                let conf = aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(sdk.endpoint_url().is_some())
                    .build();
                let region = sdk
                    .region()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "us-east-1".into());
                S3 {
                    client: Client::from_conf(conf),
                    post_url: match sdk.endpoint_url() {
                        Some(e) => format!("{}/{name}", e.trim_end_matches('/')),
                        None => format!("https://{name}.s3.{region}.amazonaws.com/"),
                    },
                    credentials: sdk.credentials_provider(),
                    region,
                }
            }),
            bucket,
        }
    }

    async fn s3(&self) -> &S3 {
        self.s3.get().await
    }
}

#[async_trait::async_trait]
impl Objects for ObjectStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()> {
        self.s3()
            .await
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .set_tagging(backstop_tagging(backstop))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("storing object {key}"))?;
        Ok(())
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()> {
        // `CopySource` is `<bucket>/<key>`, URL-encoded.
        let source: String = format!("{}/{from}", self.bucket)
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        self.s3()
            .await
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
            .set_tagging(backstop_tagging(backstop))
            .send()
            .await
            .with_context(|| format!("copying object {from} to {to}"))?;
        Ok(())
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> anyhow::Result<String> {
        let req = self
            .s3()
            .await
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(PresigningConfig::expires_in(ttl)?)
            .await
            .context("presigning a download")?;
        Ok(req.uri().to_string())
    }

    async fn presign_download(
        &self,
        key: &str,
        ttl: Duration,
        filename: &str,
    ) -> anyhow::Result<String> {
        let req = self
            .s3()
            .await
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .presigned(PresigningConfig::expires_in(ttl)?)
            .await
            .context("presigning a download")?;
        Ok(req.uri().to_string())
    }

    async fn presign_post(
        &self,
        key: &str,
        content_type: &str,
        max_size: u64,
        ttl: Duration,
    ) -> anyhow::Result<crate::presigned_post::PresignedPost> {
        use aws_credential_types::provider::ProvideCredentials;
        let creds = self
            .s3()
            .await
            .credentials
            .as_ref()
            .context("no credentials to sign an upload with")?
            .provide_credentials()
            .await
            .context("reading the credentials to sign an upload")?;
        let region = self.s3().await.region.clone();
        Ok(crate::presigned_post::presign(
            self.s3().await.post_url.clone(),
            &crate::presigned_post::Signer {
                access_key_id: creds.access_key_id(),
                secret_access_key: creds.secret_access_key(),
                session_token: creds.session_token(),
                region: &region,
            },
            &crate::presigned_post::PostConditions {
                bucket: &self.bucket,
                key,
                content_type,
                min_size: 1,
                max_size,
            },
            chrono::Utc::now(),
            ttl,
        ))
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let Some(mut reader) = self.get_stream(key).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading object {key}"))?;
        Ok(Some(bytes))
    }

    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self
            .s3()
            .await
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("looking up object {key}"))),
        }
    }

    async fn get_stream(&self, key: &str) -> anyhow::Result<Option<ByteReader>> {
        match self
            .s3()
            .await
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Box::new(out.body.into_async_read()))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading object {key}"))),
        }
    }

    async fn put_stream(
        &self,
        key: &str,
        content_type: &str,
        backstop: bool,
        mut reader: ByteReader,
        commit: tokio::sync::oneshot::Receiver<bool>,
    ) -> anyhow::Result<u64> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        use tokio::io::AsyncReadExt;
        let upload_id = self
            .s3()
            .await
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .set_tagging(backstop_tagging(backstop))
            .send()
            .await
            .with_context(|| format!("starting the upload of {key}"))?
            .upload_id()
            .context("no upload id")?
            .to_string();
        let result: anyhow::Result<(Vec<CompletedPart>, u64)> = async {
            let mut parts = Vec::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                // Fill one part (or what is left).
                let mut filled = 0;
                while filled < PART_SIZE {
                    let n = reader.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 && !parts.is_empty() {
                    break;
                }
                let number = parts.len() as i32 + 1;
                let out = self
                    .s3()
                    .await
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(buf[..filled].to_vec()))
                    .send()
                    .await
                    .with_context(|| format!("uploading part {number} of {key}"))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
                total += filled as u64;
                if filled < PART_SIZE {
                    break;
                }
            }
            Ok((parts, total))
        }
        .await;
        // The reader goes first: a writer still writing into it then fails at once instead of
        // waiting on a full pipe; after a failed part, the commit is not waited for.
        drop(reader);
        let go = result.is_ok() && matches!(commit.await, Ok(true));
        match result {
            Ok((parts, total)) if go => {
                self.s3()
                    .await
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .with_context(|| format!("completing the upload of {key}"))?;
                Ok(total)
            }
            other => {
                // Nothing half-written stays (the bucket's lifecycle rule aborts what this
                // cannot).
                if let Err(e) = self
                    .s3()
                    .await
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(error = ?e, "multipart upload not aborted; the lifecycle rule will");
                }
                match other {
                    Err(e) => Err(e),
                    Ok(_) => anyhow::bail!("the upload of {key} was not committed"),
                }
            }
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        let keys = self.list(prefix).await?;
        // DeleteObjects takes up to 1,000 keys a call.
        for chunk in keys.chunks(1000) {
            let ids = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .s3()
                .await
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
        Ok(keys.len())
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .s3()
                .await
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .context("listing objects")?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    async fn set_backstop(&self, prefix: &str, on: bool) -> anyhow::Result<usize> {
        let keys = self.list(prefix).await?;
        for key in &keys {
            if on {
                let tag = Tag::builder()
                    .key(BACKSTOP_TAG.0)
                    .value(BACKSTOP_TAG.1)
                    .build()?;
                self.s3()
                    .await
                    .client
                    .put_object_tagging()
                    .bucket(&self.bucket)
                    .key(key)
                    .tagging(Tagging::builder().tag_set(tag).build()?)
                    .send()
                    .await
                    .with_context(|| format!("tagging {key}"))?;
            } else {
                self.s3()
                    .await
                    .client
                    .delete_object_tagging()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .with_context(|| format!("untagging {key}"))?;
            }
        }
        Ok(keys.len())
    }

    async fn tags(&self, key: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .s3()
            .await
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .with_context(|| format!("reading the tags of {key}"))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.s3()
            .await
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .context("reaching the content bucket")?;
        Ok(())
    }
}
