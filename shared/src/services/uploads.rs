//! Reference uploads (C4, R2, S1): a short-lived presigned POST form for a server-chosen key
//! under the owner's prefix; the server-side check that makes an upload usable (or rejects it
//! and deletes what was sent); deletion through the pipeline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::app::App;
use crate::domain::upload::{parse_size, sanitize, UploadType, MAX_UPLOAD_BYTES};
use crate::error::ApiError;
use crate::http::Caller;
use crate::objects::upload_prefix;
use crate::presigned_post::PresignedPost;
use crate::services::accounts::require_onboarded;
use crate::services::deletion;
use crate::services::generations::is_job_id;
use crate::store::{Settled, UploadRecord};
use crate::store::{UPLOAD_PENDING as PENDING, UPLOAD_READY as READY, UPLOAD_REJECTED as REJECTED};

/// How long an upload form works.
pub const UPLOAD_FORM_TTL: Duration = Duration::from_secs(10 * 60);
/// R2: an upload is deleted this long after its last use (or its creation, while unused).
pub const REFERENCE_HOURS: i64 = 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadBody {
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct UploadView {
    pub id: String,
    /// `pending`, `ready` or `rejected`.
    pub status: String,
    pub content_type: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub created_at: String,
    pub upload_expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    pub delete_at: String,
    /// Only in the answer to `POST /v1/uploads`: where and how to send the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadForm>,
}

/// A `multipart/form-data` POST to `url` with `fields` (in order), then the file as `file`.
#[derive(Debug, Serialize)]
pub struct UploadForm {
    pub method: &'static str,
    pub url: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub expires_at: String,
}

impl From<PresignedPost> for UploadForm {
    fn from(p: PresignedPost) -> Self {
        Self {
            method: "POST",
            url: p.url,
            fields: p
                .fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
            expires_at: p.expires_at,
        }
    }
}

fn view(r: &UploadRecord, form: Option<UploadForm>) -> UploadView {
    UploadView {
        id: r.id.clone(),
        status: r.status.clone(),
        content_type: r.content_type.clone(),
        size: r.declared_size,
        reason: r.reason.clone(),
        width: r.width,
        height: r.height,
        created_at: r.created_at.clone(),
        upload_expires_at: r.upload_expires_at.clone(),
        last_used_at: r.last_used_at.clone(),
        delete_at: r.delete_at.clone(),
        upload: form,
    }
}

/// The key the file is sent to, and the key of its re-encoded copy.
pub fn original_key(user_id: &str, id: &str) -> String {
    format!("{}original", upload_prefix(user_id, id))
}

pub fn reference_key(user_id: &str, id: &str) -> String {
    format!("{}reference.png", upload_prefix(user_id, id))
}

/// R2: when an upload used (or created) at `at` is deleted: 24 hours later, and never after
/// the content retention (R1) counted from its creation.
pub fn reference_delete_at(app: &App, created: DateTime<Utc>, at: DateTime<Utc>) -> DateTime<Utc> {
    let r2 = at + chrono::Duration::hours(REFERENCE_HOURS);
    match app.config.retention.content_delete_at(created) {
        Some(r1) => r2.min(r1),
        None => r2,
    }
}

/// `POST /v1/uploads`: a pending upload and its form (201).
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn create(
    app: &App,
    caller: &Caller,
    body: CreateUploadBody,
    now: DateTime<Utc>,
) -> Result<UploadView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    if profile.suspension.is_some() {
        return Err(ApiError::forbidden(
            "account_suspended",
            "this account is suspended: it can read, export and delete its data, not upload",
        ));
    }
    crate::limits::take_for_user(
        app,
        crate::limits::Action::Upload,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    let kind = UploadType::parse(&body.content_type)?;
    let size = parse_size(body.size).map_err(|e| match body.size {
        0 => ApiError::from(e),
        _ => ApiError::client(
            413,
            "upload_too_large",
            format!("size must be 1 to {MAX_UPLOAD_BYTES} bytes"),
        ),
    })?;
    let user_id = caller.user_id.as_str();
    let id = ulid::Ulid::from_datetime(now.into())
        .to_string()
        .to_lowercase();
    let record = UploadRecord {
        id: id.clone(),
        user_id: user_id.into(),
        status: PENDING.into(),
        content_type: kind.content_type().into(),
        declared_size: size,
        created_at: now.to_rfc3339(),
        upload_expires_at: (now + chrono::Duration::from_std(UPLOAD_FORM_TTL).unwrap_or_default())
            .to_rfc3339(),
        delete_at: reference_delete_at(app, now, now).to_rfc3339(),
        reason: None,
        width: None,
        height: None,
        bytes: None,
        last_used_at: None,
        deleted_at: None,
    };
    // The item first: an object can only ever land under a key an item names.
    app.store.put_upload(&record).await?;
    let form = app
        .objects()
        .presign_post(
            &original_key(user_id, &id),
            kind.content_type(),
            size,
            UPLOAD_FORM_TTL,
        )
        .await?;
    tracing::info!(upload_id = %id, size, "upload form issued");
    Ok(view(&record, Some(form.into())))
}

async fn visible(app: &App, caller: &Caller, id: &str) -> Result<UploadRecord, ApiError> {
    if !is_job_id(id) {
        return Err(ApiError::not_found("upload"));
    }
    match app.store.get_upload(caller.user_id.as_str(), id).await? {
        Some(r) if r.deleted_at.is_none() => Ok(r),
        _ => Err(ApiError::not_found("upload")),
    }
}

/// `GET /v1/uploads/{id}`: checks a pending upload whose file has arrived.
pub async fn get(
    app: &App,
    caller: &Caller,
    id: &str,
    now: DateTime<Utc>,
) -> Result<UploadView, ApiError> {
    require_onboarded(app, caller).await?;
    let record = visible(app, caller, id).await?;
    if record.status != PENDING {
        return Ok(view(&record, None));
    }
    check(app, record, now).await?;
    Ok(view(&visible(app, caller, id).await?, None))
}

/// The server-side check of a pending upload (S1). Whatever it rejects is deleted at once.
#[instrument(skip_all, fields(upload_id = %record.id))]
async fn check(app: &App, record: UploadRecord, now: DateTime<Utc>) -> anyhow::Result<()> {
    let user_id = record.user_id.as_str();
    let original = original_key(user_id, &record.id);
    let expired = DateTime::parse_from_rfc3339(&record.upload_expires_at)
        .map(|t| t.with_timezone(&Utc) <= now)
        .unwrap_or(true);
    let outcome = match app.objects().size(&original).await? {
        None if !expired => return Ok(()),
        None => Settled::Rejected("no file was uploaded before the upload form expired".into()),
        Some(size) if size > record.declared_size || size > MAX_UPLOAD_BYTES => {
            Settled::Rejected(format!(
                "the file is {size} bytes, more than the {} declared",
                record.declared_size
            ))
        }
        Some(_) => {
            let Some(bytes) = app.objects().get(&original).await? else {
                return Ok(());
            };
            let declared = UploadType::parse(&record.content_type)
                .map_err(|e| anyhow::anyhow!("stored content type: {e}"))?;
            let size = record.declared_size;
            // CPU-bound decoding stays off the async threads.
            // A decoder panic is the file's doing: rejected, not retried on every poll.
            let checked = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(|| sanitize(&bytes, declared, size))
            })
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                Err(crate::domain::Invalid::new(
                    "upload_rejected",
                    "the image could not be decoded",
                ))
            });
            match checked {
                Ok(s) => {
                    let backstop = !app.store.holds_in_force(now).await?.covers(user_id, None);
                    let bytes = s.png.len() as u64;
                    app.objects()
                        .put(
                            &reference_key(user_id, &record.id),
                            s.png,
                            "image/png",
                            backstop,
                        )
                        .await?;
                    Settled::Ready {
                        width: s.width,
                        height: s.height,
                        bytes,
                    }
                }
                Err(e) => Settled::Rejected(e.detail),
            }
        }
    };
    // Under a legal hold (R5) what was sent is evidence: kept until the hold ends (the
    // upload's own deletion, parked meanwhile, removes it then).
    let held = app.store.holds_in_force(now).await?.covers(user_id, None);
    match &outcome {
        // The file as sent is never kept: only its re-encoded copy.
        Settled::Ready { .. } if !held => {
            app.objects().delete_prefix(&original).await?;
        }
        Settled::Rejected(reason) => {
            tracing::info!(reason = %reason, "upload rejected");
            if !held {
                app.objects()
                    .delete_prefix(&upload_prefix(user_id, &record.id))
                    .await?;
            }
        }
        Settled::Ready { .. } => {}
    }
    if !app
        .store
        .settle_upload(user_id, &record.id, &outcome)
        .await?
    {
        tracing::info!("upload settled or deleted meanwhile");
        // Deleted while it was checked: its deletion may have run before the copy was
        // written, so the copy goes now (under a hold, the parked record removes it later).
        let deleted = app
            .store
            .get_upload(user_id, &record.id)
            .await?
            .is_none_or(|r| r.deleted_at.is_some());
        if deleted && !held {
            app.objects()
                .delete_prefix(&upload_prefix(user_id, &record.id))
                .await?;
        }
    }
    Ok(())
}

/// `DELETE /v1/uploads/{id}`: gone at once; its objects through the pipeline.
pub async fn delete(
    app: &App,
    caller: &Caller,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    require_onboarded(app, caller).await?;
    let upload = visible(app, caller, id).await?;
    let form_expires = DateTime::parse_from_rfc3339(&upload.upload_expires_at)
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let record = app
        .store
        .hide_upload(
            caller.user_id.as_str(),
            id,
            "user_request",
            None,
            form_expires,
            now,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("upload"))?;
    deletion::execute_now(app, &record, now).await;
    Ok(())
}

/// The references a generation may use: the caller's own ready uploads, with their new
/// deletion times (R2). Another user's id, a deleted or unknown one is 404.
pub async fn references_for_generation(
    app: &App,
    user_id: &str,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<crate::store::ReferenceUse>, ApiError> {
    let mut uses = Vec::with_capacity(ids.len());
    for id in ids {
        let record = match is_job_id(id) {
            true => app.store.get_upload(user_id, id).await?,
            false => None,
        };
        let record = match record {
            Some(r) if r.deleted_at.is_none() => r,
            _ => {
                return Err(ApiError::client(
                    404,
                    "upload_not_found",
                    format!("reference upload {id:?} not found"),
                ))
            }
        };
        match record.status.as_str() {
            READY => {}
            REJECTED => {
                return Err(ApiError::client(
                    409,
                    "upload_rejected",
                    format!(
                        "upload {id} was rejected: {}",
                        record.reason.unwrap_or_default()
                    ),
                ))
            }
            _ => {
                return Err(ApiError::client(
                    409,
                    "upload_not_ready",
                    format!("upload {id} has not been checked yet: send its file, then GET /v1/uploads/{id} until it is ready"),
                ))
            }
        }
        let created = DateTime::parse_from_rfc3339(&record.created_at)
            .map_err(|e| anyhow::anyhow!(e))?
            .with_timezone(&Utc);
        uses.push(crate::store::ReferenceUse {
            upload_id: id.clone(),
            delete_at: reference_delete_at(app, created, now),
        });
    }
    Ok(uses)
}

/// R2 in the sweep: an upload whose deletion time has come goes through the pipeline.
pub async fn expire(
    app: &App,
    holds: &crate::store::HoldSet,
    user_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<deletion::Executed>> {
    match app
        .store
        .hide_upload(user_id, id, "expiry", Some(now), None, now)
        .await?
    {
        Some(record) => Ok(Some(deletion::execute(app, &record.id, holds, now).await?)),
        None => Ok(None),
    }
}
