//! The retention sweep (R1 first part): refunds jobs stuck queued or running past their
//! deadline, refunds dead-lettered jobs, and deletes generations (items and objects) and
//! idempotency records whose deletion time has come. Everything is found by key-ordered
//! index queries; nothing scans the table. One bad item never stops the rest: it is logged,
//! counted in `errors`, and tried again on the next run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::instrument;

use crate::app::App;
use crate::domain::generation::{Job, JobMessage, JobStatus};
use crate::objects::generation_prefix;
use crate::queue::DeadLetter;
use crate::services::worker::fail_and_announce;
use crate::store::keys::{user_from_pk, GEN_PREFIX};
use crate::store::{DueItem, FailGuard};

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
    /// Items or phases that failed this run (logged; retried next run).
    pub errors: usize,
}

#[instrument(skip_all)]
pub async fn run(app: &App, now: DateTime<Utc>) -> anyhow::Result<SweepReport> {
    let mut report = SweepReport::default();
    // The phases are independent: one failing does not keep the others from running.
    if let Err(e) = refund_stale(app, now, &mut report).await {
        tracing::error!(error = ?e, "stale-job phase failed");
        report.errors += 1;
    }
    if let Err(e) = refund_dead_letters(app, now, &mut report).await {
        tracing::error!(error = ?e, "dead-letter phase failed");
        report.errors += 1;
    }
    if let Err(e) = delete_expired(app, now, &mut report).await {
        tracing::error!(error = ?e, "expiry phase failed");
        report.errors += 1;
    }
    tracing::info!(?report, "sweep done");
    Ok(report)
}

fn job_key(due: &DueItem) -> Option<(&str, &str)> {
    Some((user_from_pk(&due.pk)?, due.sk.strip_prefix(GEN_PREFIX)?))
}

async fn refund(
    app: &App,
    job: &Job,
    guard: FailGuard<'_>,
    code: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    fail_and_announce(app, job, guard, code, STUCK_REASON, now).await
}

async fn refund_stale(
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.stale_jobs(now, BATCH_LIMIT).await? {
        let Some((user_id, job_id)) = job_key(&due) else {
            continue;
        };
        let outcome = async {
            let Some(job) = app.store.get_job(user_id, job_id).await? else {
                return Ok(false);
            };
            let code = match job.status {
                JobStatus::Queued => "not_started",
                JobStatus::Running => "timed_out",
                _ => return Ok(false),
            };
            refund(app, &job, FailGuard::Stale(now), code, now).await
        }
        .await;
        match outcome {
            Ok(true) => report.stale_jobs_refunded += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = ?e, job_id, "stale job not handled");
                report.errors += 1;
            }
        }
    }
    Ok(())
}

/// Refunds a dead-lettered message's job; `Ok` means the letter can be removed.
async fn settle_dead_letter(
    app: &App,
    letter: &DeadLetter,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let msg = match serde_json::from_str::<JobMessage>(&letter.body) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!(error = %e, "dead letter is not a job message; removing it");
            return Ok(false);
        }
    };
    match app.store.get_job(&msg.user_id, &msg.job_id).await? {
        Some(job) if matches!(job.status, JobStatus::Queued | JobStatus::Running) => {
            // A job a live worker still holds is left to it (and to the stale-job phase).
            refund(
                app,
                &job,
                FailGuard::DeadLettered(now),
                "processing_failed",
                now,
            )
            .await
        }
        _ => Ok(false),
    }
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
            match settle_dead_letter(app, &letter, now).await {
                Ok(refunded) => {
                    report.dead_letters_refunded += usize::from(refunded);
                    app.queue.delete_dead_letter(&letter.receipt_handle).await?;
                    report.dead_letters_removed += 1;
                }
                // Kept in the queue; visible again for the next run.
                Err(e) => {
                    tracing::error!(error = ?e, "dead letter not handled");
                    report.errors += 1;
                }
            }
        }
    }
    Ok(())
}

/// Deletes one due item; generations lose their objects first, and an unfinished job is left
/// for the stale-job phase to fail and refund.
async fn delete_due(
    app: &App,
    due: &DueItem,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    if let Some((user_id, job_id)) = job_key(due) {
        if let Some(job) = app.store.get_job(user_id, job_id).await? {
            if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
                return Ok(());
            }
        }
        // Objects first: if this run dies between the two, the item still points here.
        report.objects_deleted += app
            .objects
            .delete_prefix(&generation_prefix(user_id, job_id))
            .await?;
    }
    if app.store.delete_if_due(due, now).await? {
        report.items_deleted += 1;
    }
    Ok(())
}

async fn delete_expired(
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.due_for_deletion(now, BATCH_LIMIT).await? {
        if let Err(e) = delete_due(app, &due, now, report).await {
            tracing::error!(error = ?e, sk = %due.sk, "expired item not deleted");
            report.errors += 1;
        }
    }
    Ok(())
}
