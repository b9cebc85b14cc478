//! The retention sweep (R1 first part): refunds jobs stuck queued or running past their
//! deadline, refunds dead-lettered jobs, and deletes generations (items and objects) and
//! idempotency records whose deletion time has come. Everything is found by key-ordered
//! index queries; nothing scans the table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::instrument;

use crate::app::App;
use crate::domain::generation::{JobMessage, JobStatus};
use crate::objects::generation_prefix;
use crate::services::worker::publish;
use crate::store::keys::{user_from_pk, GEN_PREFIX};
use crate::store::FailGuard;

/// Most items handled per kind in one run; the next run continues.
pub const BATCH_LIMIT: usize = 500;

pub const STUCK_REASON: &str =
    "The job did not finish in time. Your credits were refunded; please try again.";

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub stale_jobs_refunded: usize,
    pub dead_letters_refunded: usize,
    pub dead_letters_removed: usize,
    pub items_deleted: usize,
    pub objects_deleted: usize,
}

#[instrument(skip_all)]
pub async fn run(app: &App, now: DateTime<Utc>) -> anyhow::Result<SweepReport> {
    let mut report = SweepReport::default();
    refund_stale(app, now, &mut report).await?;
    refund_dead_letters(app, now, &mut report).await?;
    delete_expired(app, now, &mut report).await?;
    tracing::info!(?report, "sweep done");
    Ok(report)
}

async fn refund_stale(
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.stale_jobs(now, BATCH_LIMIT).await? {
        let (Some(user_id), Some(job_id)) =
            (user_from_pk(&due.pk), due.sk.strip_prefix(GEN_PREFIX))
        else {
            continue;
        };
        let Some(job) = app.store.get_job(user_id, job_id).await? else {
            continue;
        };
        let code = match job.status {
            JobStatus::Queued => "not_started",
            JobStatus::Running => "timed_out",
            _ => continue,
        };
        if app
            .store
            .fail_and_refund(&job, FailGuard::Stale(now), code, STUCK_REASON, now)
            .await?
        {
            report.stale_jobs_refunded += 1;
            publish(
                app,
                "generation.failed",
                json!({"user_id": job.user_id, "generation_id": job.id, "code": code, "credits_refunded": job.cost}),
            )
            .await;
        }
    }
    Ok(())
}

async fn refund_dead_letters(
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for _ in 0..(BATCH_LIMIT / 10) {
        let letters = app.queue.receive_dead_letters().await?;
        if letters.is_empty() {
            break;
        }
        for letter in letters {
            match serde_json::from_str::<JobMessage>(&letter.body) {
                Ok(msg) => {
                    if let Some(job) = app.store.get_job(&msg.user_id, &msg.job_id).await? {
                        if matches!(job.status, JobStatus::Queued | JobStatus::Running)
                            && app
                                .store
                                .fail_and_refund(
                                    &job,
                                    FailGuard::Unfinished,
                                    "processing_failed",
                                    STUCK_REASON,
                                    now,
                                )
                                .await?
                        {
                            report.dead_letters_refunded += 1;
                            publish(
                                app,
                                "generation.failed",
                                json!({"user_id": job.user_id, "generation_id": job.id, "code": "processing_failed", "credits_refunded": job.cost}),
                            )
                            .await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dead letter is not a job message; removing it")
                }
            }
            app.queue.delete_dead_letter(&letter.receipt_handle).await?;
            report.dead_letters_removed += 1;
        }
    }
    Ok(())
}

async fn delete_expired(
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.due_for_deletion(now, BATCH_LIMIT).await? {
        if let (Some(user_id), Some(job_id)) =
            (user_from_pk(&due.pk), due.sk.strip_prefix(GEN_PREFIX))
        {
            // Objects first: if this run dies between the two, the item still points here.
            report.objects_deleted += app
                .objects
                .delete_prefix(&generation_prefix(user_id, job_id))
                .await?;
        }
        if app.store.delete_if_due(&due, now).await? {
            report.items_deleted += 1;
        }
    }
    Ok(())
}
