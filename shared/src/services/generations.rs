//! Generation requests (U1, G4, R1): create with credit reservation and idempotency, history,
//! details with short-lived download links, and deletion.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::instrument;

use crate::app::App;
use crate::domain::cursor;
use crate::domain::generation::{
    GenerationRequestBody, GenerationSettings, Job, JobMessage, JobStatus,
};
use crate::domain::pricing;
use crate::error::ApiError;
use crate::http::Caller;
use crate::services::accounts::require_onboarded;
use crate::services::deletion;
use crate::store::keys::GEN_PREFIX;
use crate::store::{CreateJob, CreateOutcome, IdempotencyRecord};

pub const DEFAULT_PAGE: i32 = 20;
pub const MAX_PAGE: i32 = 100;
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

#[derive(Debug, Serialize)]
pub struct ImageView {
    /// The image's id for `/v1/images/{id}`.
    pub id: String,
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub public: bool,
    pub copy_protected: bool,
}

#[derive(Debug, Serialize)]
pub struct FailureView {
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct GenerationView {
    pub id: String,
    pub status: JobStatus,
    pub prompt: String,
    pub size: String,
    pub quality: String,
    pub n: u8,
    pub seed: u64,
    pub output_format: String,
    pub reference_ids: Vec<String>,
    pub images: Vec<ImageView>,
    pub failure: Option<FailureView>,
    pub credits_charged: u64,
    pub credits_refunded: u64,
    pub created_at: String,
    pub updated_at: String,
    pub delete_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Renders a job, presigning a short-lived download URL per image.
pub async fn view(app: &App, job: &Job) -> Result<GenerationView, ApiError> {
    let mut images = Vec::with_capacity(job.images.len());
    for (index, img) in job.images.iter().enumerate() {
        if img.deleted_at.is_some() {
            continue;
        }
        images.push(ImageView {
            id: crate::domain::generation::image_id(&job.id, index),
            public: img.public,
            copy_protected: img.copy_protected,
            url: app
                .objects()
                .presign_get(&img.key, app.config.download_url_ttl)
                .await?,
            width: img.width,
            height: img.height,
            format: img.format.clone(),
        });
    }
    Ok(GenerationView {
        id: job.id.clone(),
        status: job.status,
        prompt: job.settings.prompt.as_str().to_string(),
        size: job.settings.size.as_str().into(),
        quality: job.settings.quality.as_str().into(),
        n: job.settings.n,
        seed: job.settings.seed,
        output_format: job.settings.output_format.as_str().into(),
        reference_ids: job.settings.reference_ids.clone(),
        images,
        failure: job.failure_code.as_ref().map(|code| FailureView {
            code: code.clone(),
            reason: job.failure_reason.clone().unwrap_or_default(),
        }),
        credits_charged: job.cost,
        credits_refunded: job.refunded,
        created_at: job.created_at.to_rfc3339(),
        updated_at: job.updated_at.to_rfc3339(),
        // R1: creation + the retention in force (a retention change reaches stored content).
        delete_at: app
            .config
            .retention
            .content_delete_at(job.created_at)
            .map(|d| d.to_rfc3339()),
    })
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters, or 400.
pub fn parse_idempotency_key(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(k)
            if !k.is_empty()
                && k.len() <= IDEMPOTENCY_KEY_MAX
                && k.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
        )),
    }
}

/// The request's fingerprint: a hash of the canonical JSON (sorted keys, no whitespace).
fn request_hash(body: &Value) -> String {
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

/// Whether `id` has the shape of the ids this service makes (lowercase ULIDs): anything else
/// is not found, and never reaches a key.
pub fn is_job_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// `POST /v1/generations`: returns the status code and body (202 with the job).
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn create(
    app: &App,
    caller: &Caller,
    body: &Value,
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(u16, Value), ApiError> {
    let user_id = caller.user_id.as_str();
    let profile = require_onboarded(app, caller).await?;
    if profile.suspension.is_some() {
        return Err(ApiError::forbidden(
            "account_suspended",
            "this account is suspended: it can read, export and delete its data, not generate",
        ));
    }
    let parsed: GenerationRequestBody = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))?;
    let settings = GenerationSettings::parse(&parsed)?;
    let idem_key = parse_idempotency_key(idempotency_key)?;
    let hash = request_hash(body);
    // A retry of an accepted request is answered (and finished) first: it takes no rate-limit
    // slot and is not screened again.
    if let Some(key) = &idem_key {
        if let Some(record) = app.store.get_idempotency(user_id, key).await? {
            // An expired record frees its key (the transaction treats it so too).
            let expired = record.expires_at.is_some_and(|t| t < now.timestamp());
            let live = !expired
                && match &record.job_id {
                    Some(job) => app.store.get_job(user_id, job).await?.is_some(),
                    None => true,
                };
            if live {
                return replay(app, user_id, record, &hash, now).await;
            }
        }
    }
    // S2: one conditional write takes this request's slot.
    crate::limits::take_for_user(app, crate::limits::Action::Generate, user_id, now).await?;
    // S2, U5: moderation before any credit is reserved; a refusal is recorded (and may suspend).
    crate::services::moderation::screen(app, user_id, settings.prompt.as_str(), now).await?;
    // The caller's own ready uploads (another user's id is 404); each one's deletion time moves
    // to 24 hours from now in the job's transaction (R2).
    let references = crate::services::uploads::references_for_generation(
        app,
        user_id,
        &settings.reference_ids,
        now,
    )
    .await?;

    let job_id = ulid::Ulid::from_datetime(now.into())
        .to_string()
        .to_lowercase();
    let cost = pricing::cost(settings.size, settings.quality, settings.n).get();
    let queue_deadline =
        now + chrono::Duration::from_std(app.config.queue_timeout).unwrap_or_default();
    let job = Job {
        id: job_id.clone(),
        user_id: user_id.to_string(),
        status: JobStatus::Queued,
        settings: settings.clone(),
        cost,
        refunded: 0,
        images: vec![],
        failure_code: None,
        failure_reason: None,
        created_at: now,
        updated_at: now,
        provider: None,
        attempts: 0,
        idempotency_key: idem_key.clone(),
    };
    let response =
        serde_json::to_value(view(app, &job).await?).map_err(|e| ApiError::Internal(e.into()))?;
    let created = app
        .store
        .create_job(CreateJob {
            user_id,
            job_id: &job_id,
            settings: &settings,
            cost,
            now,
            queue_deadline,
            idempotency: idem_key.map(|key| IdempotencyRecord {
                key,
                request_hash: hash.clone(),
                status: 202,
                body: response.to_string(),
                job_id: None,
                expires_at: None,
            }),
            references,
        })
        .await;
    let outcome = match created {
        Ok(outcome) => outcome,
        // The commit's outcome is unknown (timeout, connection lost after sending): the job's
        // item says whether it happened. If not (yet), 503: a retry with the same key replays.
        Err(e) if e.downcast_ref::<crate::store::Ambiguous>().is_some() => {
            if app.store.get_job_any(user_id, &job_id).await?.is_some() {
                tracing::info!(job_id = %job_id, "the ambiguous commit happened");
                CreateOutcome::Created
            } else {
                return Err(e.into());
            }
        }
        Err(e) => return Err(e.into()),
    };
    match outcome {
        CreateOutcome::Created => {}
        CreateOutcome::InsufficientCredits => {
            return Err(ApiError::client(
                402,
                "insufficient_credits",
                format!("this request costs {cost} credits; buy more or lower n, size or quality"),
            ))
        }
        CreateOutcome::ReferenceGone => {
            return Err(ApiError::client(
                404,
                "upload_not_found",
                "a reference upload was deleted or expired meanwhile",
            ))
        }
        CreateOutcome::AccountInactive => {
            // Deleted or suspended between the check above and the commit: the same answers.
            return Err(match require_onboarded(app, caller).await {
                Err(e) => e,
                Ok(_) => ApiError::forbidden(
                    "account_suspended",
                    "this account is suspended: it can read, export and delete its data, not generate",
                ),
            });
        }
        CreateOutcome::Existing(record) => return replay(app, user_id, record, &hash, now).await,
    }

    send_job(app, user_id, &job_id).await;
    crate::services::billing_account::watch_low_balance(app, user_id).await;
    tracing::info!(job_id = %job_id, cost, "generation accepted");
    Ok((202, response))
}

/// The first response to an `Idempotency-Key`, for a retry with the same body (422 with another).
/// A retry also finishes what the key names: a job still queued may have lost its message (the
/// send failed, or the function stopped after the commit), so it is sent again; the worker
/// claims a job once, so a duplicate changes nothing. A retry that sends takes a rate-limit
/// slot; one that only answers does not.
async fn replay(
    app: &App,
    user_id: &str,
    record: IdempotencyRecord,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(u16, Value), ApiError> {
    if record.request_hash != hash {
        return Err(ApiError::client(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        ));
    }
    let body = serde_json::from_str(&record.body).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(existing) = &record.job_id {
        if let Some(job) = app.store.get_job(user_id, existing).await? {
            // A re-send takes a generation slot (S2): repeating one keyed request cannot flood
            // the queue; past the limit the replay still answers, without sending.
            if job.status == JobStatus::Queued
                && crate::limits::take_for_user(app, crate::limits::Action::Generate, user_id, now)
                    .await
                    .is_ok()
            {
                send_job(app, user_id, existing).await;
            }
        }
    }
    Ok((record.status, body))
}

/// Sends a job's message (one retry). On failure the job stays queued and charged: a retry of
/// the request with its `Idempotency-Key` sends it again, and otherwise the sweep refunds it at
/// its queue deadline.
async fn send_job(app: &App, user_id: &str, job_id: &str) {
    let msg = JobMessage {
        user_id: user_id.to_string(),
        job_id: job_id.to_string(),
    };
    let mut enqueued = app.queue().enqueue(&msg).await;
    if enqueued.is_err() {
        enqueued = app.queue().enqueue(&msg).await;
    }
    if let Err(e) = enqueued {
        tracing::error!(error = ?e, job_id = %job_id, "enqueue failed; a retry with the key or the sweep finishes the job");
    }
}

/// `GET /v1/generations/{id}`: another user's id is simply not found.
pub async fn get(app: &App, caller: &Caller, id: &str) -> Result<GenerationView, ApiError> {
    require_onboarded(app, caller).await?;
    if !is_job_id(id) {
        return Err(ApiError::not_found("generation"));
    }
    let job = app
        .store
        .get_job(caller.user_id.as_str(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("generation"))?;
    view(app, &job).await
}

/// A page size: 1 to 100, 20 when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<i32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => match raw.parse::<i32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be an integer from 1 to {MAX_PAGE}"),
            )),
        },
    }
}

/// `GET /v1/generations`: newest first, `limit` 1 to 100, opaque cursor.
pub async fn list(
    app: &App,
    caller: &Caller,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<GenerationView>, ApiError> {
    require_onboarded(app, caller).await?;
    let limit = parse_limit(limit)?;
    let start = after.map(|c| cursor::decode(c, GEN_PREFIX)).transpose()?;
    let (jobs, last) = app
        .store
        .list_jobs(caller.user_id.as_str(), limit, start)
        .await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in &jobs {
        items.push(view(app, job).await?);
    }
    Ok(Page {
        items,
        next_cursor: last.map(|sk| cursor::encode(&sk)),
    })
}

/// `DELETE /v1/generations/{id}` (D3, R3): gone from the API at once, its objects deleted; a
/// queued job is cancelled and refunded.
#[instrument(skip_all, fields(user_id = %caller.user_id, job_id = %id))]
pub async fn delete(
    app: &App,
    caller: &Caller,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    require_onboarded(app, caller).await?;
    if !is_job_id(id) {
        return Err(ApiError::not_found("generation"));
    }
    let user_id = caller.user_id.as_str();
    let (record, status) = app
        .store
        .hide_job(user_id, id, "user_request", true, now)
        .await?
        .ok_or_else(|| ApiError::not_found("generation"))?;
    let refunded = matches!(status, JobStatus::Queued | JobStatus::Running);
    if refunded {
        crate::services::billing_account::watch_low_balance(app, user_id).await;
    }
    // Gone from the API already; its item, objects and idempotency record go now, or (held,
    // or on a failure) are left to the sweep by the committed record.
    deletion::execute_now(app, &record, now).await;
    tracing::info!(refunded, "generation deleted");
    Ok(())
}
