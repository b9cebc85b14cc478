//! The generation worker: safe under at-least-once delivery. A message claims its job with a
//! conditional update and a lease; a redelivery for a running or finished job does nothing.

use std::io::Cursor;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::instrument;

use crate::app::App;
use crate::domain::generation::{Job, JobMessage, StoredImage};
use crate::objects::generation_prefix;
use crate::provider::{ProviderError, ProviderRequest};
use crate::services::deletion;
use crate::store::ClaimOutcome;
use crate::store::DeletionRecord;
use crate::store::FailGuard;

/// A message that could not be processed now; the queue redelivers it (and after
/// `maxReceiveCount`, dead-letters it for the sweep to refund).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WorkerError {
    pub message: String,
    pub retryable: bool,
}

impl WorkerError {
    fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

impl From<anyhow::Error> for WorkerError {
    fn from(e: anyhow::Error) -> Self {
        Self::retry(format!("{e:#}"))
    }
}

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    Succeeded,
    Failed {
        code: String,
    },
    /// Running elsewhere, finished or deleted: nothing done.
    Skipped,
}

/// User-readable failure reasons.
pub const MODERATION_REASON: &str =
    "The image provider's safety system refused this prompt. Your credits were refunded.";
pub const PROVIDER_REASON: &str = "The image could not be generated. Your credits were refunded.";
pub const REFERENCE_REASON: &str =
    "A reference image was deleted before the generation ran. Your credits were refunded.";

/// The job's reference images, or the id of one that is gone.
async fn load_references(app: &App, job: &Job) -> anyhow::Result<Result<Vec<Vec<u8>>, String>> {
    let mut refs = Vec::with_capacity(job.settings.reference_ids.len());
    for id in &job.settings.reference_ids {
        // Deleted or expired meanwhile (its objects perhaps kept by a hold): not used.
        match app.store.get_upload(&job.user_id, id).await? {
            Some(u) if u.deleted_at.is_none() && u.status == crate::store::UPLOAD_READY => {}
            _ => return Ok(Err(id.clone())),
        }
        let key = crate::services::uploads::reference_key(&job.user_id, id);
        match app.objects().get(&key).await? {
            Some(bytes) => refs.push(bytes),
            None => return Ok(Err(id.clone())),
        }
    }
    Ok(Ok(refs))
}

const RETRY_BASE: Duration = Duration::from_millis(250);

#[instrument(skip_all, fields(user_id = %msg.user_id, job_id = %msg.job_id))]
pub async fn process(
    app: &App,
    msg: &JobMessage,
    worker_id: &str,
) -> Result<Processed, WorkerError> {
    let now = Utc::now();
    let job = match app
        .store
        .claim_job(
            &msg.user_id,
            &msg.job_id,
            worker_id,
            now,
            app.config.job_lease,
        )
        .await?
    {
        ClaimOutcome::Claimed(job) => *job,
        ClaimOutcome::NotClaimable(status) => {
            tracing::info!(status = ?status.map(|s| s.as_str()), "job not claimable; nothing to do");
            return Ok(Processed::Skipped);
        }
    };
    tracing::info!(attempt = job.attempts, "job claimed");

    // R2, U1: the re-encoded references, read just before use; one deleted meanwhile fails the
    // job (refunded): it would not be what the user asked for.
    let references = match load_references(app, &job).await? {
        Ok(refs) => refs,
        Err(missing) => {
            tracing::info!(upload_id = %missing, "a reference upload is gone");
            return fail(app, &job, worker_id, "reference_missing", REFERENCE_REASON).await;
        }
    };
    match call_provider(app, &job, &references).await {
        Ok(images) => store_images(app, &job, worker_id, images).await,
        Err(ProviderError::Moderation(detail)) => {
            tracing::info!(detail = %detail, "refused by the provider's moderation");
            // Failed and refunded first: a failure to record the violation never runs the
            // provider again.
            let failed = fail(
                app,
                &job,
                worker_id,
                "moderation_blocked",
                MODERATION_REASON,
            )
            .await;
            // U5: counts like a refusal of ours (recorded once per generation).
            let refusal = crate::moderation::Refusal {
                source: "image_provider".into(),
                category: "provider_moderation".into(),
                rule: format!("{} moderation", app.provider().name()),
            };
            if let Err(e) = crate::services::moderation::record(
                app,
                &job.user_id,
                &refusal,
                job.settings.prompt.as_str(),
                Some(&job.id),
                Utc::now(),
            )
            .await
            {
                tracing::error!(error = ?e, "the provider's refusal was not recorded as a violation");
            }
            failed
        }
        Err(ProviderError::Permanent(detail)) => {
            tracing::warn!(detail = %detail, "provider failed permanently");
            fail(app, &job, worker_id, "provider_error", PROVIDER_REASON).await
        }
        Err(ProviderError::Transient(detail)) => {
            tracing::warn!(detail = %detail, "provider still failing after retries; releasing the job");
            release(app, &job, worker_id, now).await?;
            Err(WorkerError::retry(format!(
                "transient provider failure: {detail}"
            )))
        }
    }
}

/// Calls the provider with a timeout and bounded retries on transient errors.
async fn call_provider(
    app: &App,
    job: &Job,
    references: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, ProviderError> {
    let s = &job.settings;
    let req = ProviderRequest {
        prompt: s.prompt.as_str(),
        size: s.size,
        quality: s.quality,
        n: s.n,
        seed: s.seed,
        output_format: s.output_format,
        references,
    };
    let mut attempt = 0;
    loop {
        let result =
            match tokio::time::timeout(app.config.provider_timeout, app.provider().generate(&req))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Transient("timed out".into())),
            };
        match result {
            Err(ProviderError::Transient(detail)) if attempt < app.config.provider_max_retries => {
                tracing::info!(attempt, detail = %detail, "transient provider error; retrying");
                tokio::time::sleep(RETRY_BASE * 2u32.pow(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Checks what the provider returned against what was asked for.
fn inspect(job: &Job, index: usize, bytes: &[u8]) -> Result<StoredImage, ProviderError> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ProviderError::Permanent(format!("unreadable image: {e}")))?;
    let format = reader.format();
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ProviderError::Permanent(format!("unreadable image: {e}")))?;
    let wanted = job.settings.output_format;
    let matches = matches!(
        (wanted, format),
        (
            crate::domain::generation::OutputFormat::Png,
            Some(image::ImageFormat::Png)
        ) | (
            crate::domain::generation::OutputFormat::Jpeg,
            Some(image::ImageFormat::Jpeg)
        ) | (
            crate::domain::generation::OutputFormat::Webp,
            Some(image::ImageFormat::WebP)
        )
    );
    if !matches {
        return Err(ProviderError::Permanent(format!(
            "provider returned {format:?}, not {}",
            wanted.as_str()
        )));
    }
    Ok(StoredImage {
        key: format!(
            "{}{index}.{}",
            generation_prefix(&job.user_id, &job.id),
            wanted.extension()
        ),
        width,
        height,
        format: wanted.as_str().to_string(),
        bytes: bytes.len() as u64,
        ..Default::default()
    })
}

async fn store_images(
    app: &App,
    job: &Job,
    worker_id: &str,
    images: Vec<Vec<u8>>,
) -> Result<Processed, WorkerError> {
    // Content under a legal hold is stored without the lifecycle backstop's tag (R5).
    let backstop = match app.store.holds_in_force(Utc::now()).await {
        Ok(holds) => !holds.covers(&job.user_id, Some(&job.id)),
        Err(e) => {
            tracing::warn!(error = ?e, "holds unreadable; storing without the backstop tag");
            false
        }
    };
    let mut stored = Vec::with_capacity(images.len());
    for (i, bytes) in images.into_iter().enumerate() {
        let meta = match inspect(job, i, &bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "provider output rejected");
                remove_objects(app, job).await;
                return fail(app, job, worker_id, "provider_error", PROVIDER_REASON).await;
            }
        };
        let content_type = job.settings.output_format.content_type();
        if let Err(e) = app
            .objects()
            .put(&meta.key, bytes, content_type, backstop)
            .await
        {
            // The job goes back to the queue and its retry writes the same keys: removed
            // directly, not through a record that could outlive the retry's success. If the
            // retries never succeed, the sweep's fail-and-refund records the cleanup.
            if let Err(e) = app
                .objects()
                .delete_prefix(&generation_prefix(&job.user_id, &job.id))
                .await
            {
                tracing::warn!(error = ?e, "partial images of a released job not removed yet");
            }
            release(app, job, worker_id, Utc::now()).await?;
            return Err(WorkerError::retry(format!("storing images: {e:#}")));
        }
        stored.push(meta);
    }
    let provider = app.provider().name();
    if !app
        .store
        .complete_job(
            &job.user_id,
            &job.id,
            worker_id,
            &stored,
            provider,
            Utc::now(),
        )
        .await?
    {
        // Deleted by its owner or failed by the sweep while we worked: keep nothing.
        tracing::info!("job lost while running; removing its images");
        remove_objects(app, job).await;
        return Ok(Processed::Skipped);
    }
    publish(
        app,
        "generation.completed",
        json!({"user_id": job.user_id, "generation_id": job.id, "images": stored.len()}),
    )
    .await;
    tracing::info!(images = stored.len(), "generation succeeded");
    Ok(Processed::Succeeded)
}

async fn fail(
    app: &App,
    job: &Job,
    worker_id: &str,
    code: &str,
    reason: &str,
) -> Result<Processed, WorkerError> {
    fail_and_announce(
        app,
        job,
        FailGuard::Owner(worker_id),
        code,
        reason,
        Utc::now(),
    )
    .await?;
    Ok(Processed::Failed {
        code: code.to_string(),
    })
}

/// Fails and refunds a job under `guard` and, when that happened, announces
/// `generation.failed`. Returns whether this call refunded it.
pub(crate) async fn fail_and_announce(
    app: &App,
    job: &Job,
    guard: FailGuard<'_>,
    code: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let refunded = app
        .store
        .fail_and_refund(job, guard, code, reason, now)
        .await?;
    if refunded {
        // A refund may lift the balance back over the low-balance threshold.
        crate::services::billing_account::watch_low_balance(app, &job.user_id).await;
        publish(
            app,
            "generation.failed",
            json!({"user_id": job.user_id, "generation_id": job.id, "code": code, "credits_refunded": job.cost}),
        )
        .await;
    }
    Ok(refunded)
}

async fn release(
    app: &App,
    job: &Job,
    worker_id: &str,
    now: DateTime<Utc>,
) -> Result<(), WorkerError> {
    let deadline = now + chrono::Duration::from_std(app.config.queue_timeout).unwrap_or_default();
    app.store
        .release_job(&job.user_id, &job.id, worker_id, now, deadline)
        .await?;
    Ok(())
}

/// Removes what this worker stored for a job it no longer owns (or could not finish): a
/// deletion record first, so a failure or a crash here leaves the work to the sweep, then the
/// record is worked off at once.
async fn remove_objects(app: &App, job: &Job) {
    let now = Utc::now();
    let record = DeletionRecord::lost_job(&job.user_id, &job.id, now);
    if let Err(e) = app.store.put_deletion_record(&record, now).await {
        // Nothing durable names the objects: the job's own state does (the sweep fails a job
        // whose lease ran out and removes its objects then).
        tracing::error!(error = ?e, "could not record the cleanup of a lost job");
        return;
    }
    deletion::execute_now(app, &record, now).await;
}

/// Events are best effort: a failed publish is logged, never fails the job. An event naming a
/// user who restricts processing (D6) is left out: analytics never see them.
pub(crate) async fn publish(app: &App, detail_type: &str, detail: serde_json::Value) {
    if let Some(user_id) = detail.get("user_id").and_then(|v| v.as_str()) {
        match crate::services::consents::analytics_allowed(app, user_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(detail_type, "event left out: the user restricts processing");
                return;
            }
            Err(e) => {
                tracing::warn!(error = ?e, detail_type, "event left out: restriction unknown");
                return;
            }
        }
    }
    publish_unchecked(app, detail_type, detail).await;
}

/// Publishes without the restriction check (callers that checked already, opt-out signals).
pub(crate) async fn publish_unchecked(app: &App, detail_type: &str, detail: serde_json::Value) {
    if let Err(e) = app.events().publish(detail_type, &detail).await {
        tracing::warn!(error = ?e, detail_type, "event not published");
    }
}
