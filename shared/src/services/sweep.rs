//! The retention sweep, one run per schedule tick (every 5 minutes, one run at a time). In order:
//!
//! 1. the deletion pipeline: every due deletion record is executed (R3, R4), under the holds in
//!    force (R5);
//! 2. jobs stuck queued or running past their deadline or lease are failed and refunded;
//! 3. dead-lettered jobs are refunded;
//! 4. items stamped with a deletion time that has come go (idempotency records, ended holds,
//!    expired billing and admin records, counters);
//! 5. content older than the retention in force enters the pipeline (R1): found by creation
//!    time, so shortening the retention reaches content already stored.
//!
//! Everything is found by key-ordered index queries; nothing scans the table. If the holds in
//! force cannot be read, nothing is deleted this run. One bad item never stops the rest: it is
//! logged and counted in `errors` (published as a metric), and tried again on the next run. The
//! run itself succeeds, so the scheduler never retries it on top of the next one.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tracing::instrument;

use crate::app::App;
use crate::domain::generation::{Job, JobMessage, JobStatus};
use crate::queue::DeadLetter;
use crate::services::deletion::{self, Executed};
use crate::services::worker::fail_and_announce;
use crate::store::keys::{self, user_from_pk, GEN_PREFIX, HOLD_PK};
use crate::store::{DueItem, FailGuard, HoldSet};

/// Most items handled per kind in one run; the next run continues.
pub const BATCH_LIMIT: usize = 500;

/// A run starts no new item after this (the function's timeout is 300 s): what is left waits
/// for the next run, and the run still ends normally with its report and metrics.
pub const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(240);

impl SweepReport {
    fn count(&mut self, executed: Executed) {
        match executed {
            Executed::Done => self.deletions_completed += 1,
            Executed::Rechecking => self.deletions_rechecking += 1,
            Executed::Held => self.deletions_held += 1,
            Executed::Missing => {}
        }
    }
}

fn out_of_time(started: std::time::Instant, report: &mut SweepReport) -> bool {
    let out = started.elapsed() > TIME_BUDGET;
    if out && !report.out_of_time {
        tracing::warn!("sweep time budget spent; the next run continues");
        report.out_of_time = true;
    }
    out
}

pub const STUCK_REASON: &str =
    "The job did not finish in time. Your credits were refunded; please try again.";

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub deletions_completed: usize,
    pub deletions_rechecking: usize,
    pub deletions_held: usize,
    /// Parked records whose hold has ended, made due again.
    pub deletions_released: usize,
    /// Holds whose objects lost the backstop tag in this run (placing the hold could not).
    pub holds_untagged: usize,
    pub stale_jobs_refunded: usize,
    pub dead_letters_refunded: usize,
    pub dead_letters_removed: usize,
    /// Stamped items deleted (idempotency records, expired records, counters).
    pub items_deleted: usize,
    /// Content past the retention handed to the pipeline.
    pub content_expired: usize,
    /// Expired content left in place by a hold.
    pub content_held: usize,
    /// Reference uploads past their deletion time (R2) handed to the pipeline.
    pub uploads_expired: usize,
    /// Exports past their 7 days (R7) handed to the pipeline.
    pub exports_expired: usize,
    pub holds_ended: usize,
    /// Items or phases that failed this run (logged; retried next run).
    pub errors: usize,
    /// The run stopped early at its time budget.
    pub out_of_time: bool,
}

#[instrument(skip_all)]
pub async fn run(app: &App, now: DateTime<Utc>) -> anyhow::Result<SweepReport> {
    let started = std::time::Instant::now();
    let mut report = SweepReport::default();
    // Holds whose end has come are ended first, so what they kept is deleted in this run (and
    // their audit records are anonymized with the account they name, if it goes).
    match crate::services::admin::end_expired_holds(app, now).await {
        Ok(n) => report.holds_ended += n,
        Err(e) => {
            tracing::error!(error = ?e, "ended holds not removed");
            report.errors += 1;
        }
    }
    match crate::services::admin::untag_held_objects(app).await {
        Ok(n) => report.holds_untagged += n,
        Err(e) => {
            tracing::error!(error = ?e, "held objects not untagged");
            report.errors += 1;
        }
    }
    let holds = match app.store.holds_in_force(now).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = ?e, "holds unreadable: nothing is deleted this run");
            report.errors += 1;
            None
        }
    };
    if let Some(holds) = &holds {
        if let Err(e) = release_parked(started, app, holds, now, &mut report).await {
            tracing::error!(error = ?e, "parked deletions not released");
            report.errors += 1;
        }
        if let Err(e) = run_pipeline(started, app, holds, now, &mut report).await {
            tracing::error!(error = ?e, "deletion phase failed");
            report.errors += 1;
        }
    }
    // The phases are independent: one failing does not keep the others from running.
    if let Err(e) = refund_stale(started, app, now, &mut report).await {
        tracing::error!(error = ?e, "stale-job phase failed");
        report.errors += 1;
    }
    if let Err(e) = refund_dead_letters(started, app, now, &mut report).await {
        tracing::error!(error = ?e, "dead-letter phase failed");
        report.errors += 1;
    }
    if let Some(holds) = &holds {
        if let Err(e) = delete_stamped(started, app, holds, now, &mut report).await {
            tracing::error!(error = ?e, "expiry phase failed");
            report.errors += 1;
        }
        if let Err(e) = expire_content(started, app, holds, now, &mut report).await {
            tracing::error!(error = ?e, "content retention phase failed");
            report.errors += 1;
        }
    }
    tracing::info!(?report, "sweep done");
    Ok(report)
}

async fn run_pipeline(
    started: std::time::Instant,
    app: &App,
    holds: &HoldSet,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for id in app.store.due_deletion_records(now, BATCH_LIMIT).await? {
        if out_of_time(started, report) {
            break;
        }
        match deletion::execute(app, &id, holds, now).await {
            Ok(executed) => report.count(executed),
            Err(e) => {
                tracing::error!(error = ?e, record = %id, "deletion not completed; retried next run");
                report.errors += 1;
            }
        }
    }
    Ok(())
}

/// Parked records whose hold is gone are due again (a lift makes them due at once; this
/// catches whatever it missed).
async fn release_parked(
    started: std::time::Instant,
    app: &App,
    holds: &HoldSet,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for id in app.store.parked_deletion_records(BATCH_LIMIT).await? {
        if out_of_time(started, report) {
            break;
        }
        match app.store.get_deletion_record(&id).await? {
            Some(record) if !deletion::is_held(&record, holds) => {
                app.store.unpark_deletion_record(&id, now).await?;
                report.deletions_released += 1;
            }
            _ => {}
        }
    }
    Ok(())
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
    started: std::time::Instant,
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.stale_jobs(now, BATCH_LIMIT).await? {
        if out_of_time(started, report) {
            break;
        }
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
    started: std::time::Instant,
    app: &App,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for _ in 0..(BATCH_LIMIT / 10) {
        if out_of_time(started, report) {
            break;
        }
        let letters = app.queue().receive_dead_letters().await?;
        if letters.is_empty() {
            break;
        }
        for letter in letters {
            match settle_dead_letter(app, &letter, now).await {
                Ok(refunded) => {
                    report.dead_letters_refunded += usize::from(refunded);
                    app.queue()
                        .delete_dead_letter(&letter.receipt_handle)
                        .await?;
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

/// Hands a generation past its retention to the pipeline: hidden from the API with its
/// deletion record committed. Under a hold the record is parked and the content stays in
/// storage until the hold ends (it leaves the retention index either way, so held content never
/// crowds out the rest). An unfinished job is left to the stale-job phase, which fails and
/// refunds it first.
async fn expire_generation(
    app: &App,
    holds: &HoldSet,
    user_id: &str,
    job_id: &str,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    let Some(job) = app.store.get_job(user_id, job_id).await? else {
        return Ok(());
    };
    if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
        return Ok(());
    }
    // The retention in force decides (an item stamped by an earlier release included: not due
    // under it, it moves to the creation-time index and stops coming back here).
    if app
        .config
        .retention
        .content_delete_at(job.created_at)
        .is_none_or(|at| at > now)
    {
        return app.store.reindex_content(user_id, &job).await;
    }
    if let Some((record, _)) = app
        .store
        .hide_job(user_id, job_id, "expiry", true, now)
        .await?
    {
        report.content_expired += 1;
        let executed = deletion::execute(app, &record.id, holds, now).await?;
        report.content_held += usize::from(executed == Executed::Held);
        report.count(executed);
    }
    Ok(())
}

/// Items stamped with a deletion time (`EXP#` shards) whose time has come.
async fn delete_stamped(
    started: std::time::Instant,
    app: &App,
    holds: &HoldSet,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    for due in app.store.due_in(keys::EXP, now, BATCH_LIMIT).await? {
        if out_of_time(started, report) {
            break;
        }
        let outcome = async {
            if let Some((user_id, job_id)) = job_key(&due) {
                // Stamped by an earlier release; the policy decides now.
                return expire_generation(app, holds, user_id, job_id, now, report).await;
            }
            if let (Some(user_id), Some(id)) = (
                keys::user_from_pk(&due.pk),
                due.sk.strip_prefix(keys::UPLOAD_PREFIX),
            ) {
                // R2: through the pipeline (its objects), under the holds in force.
                if let Some(executed) =
                    crate::services::uploads::expire(app, holds, user_id, id, now).await?
                {
                    report.uploads_expired += 1;
                    report.count(executed);
                }
                return Ok(());
            }
            if let (Some(user_id), Some(id)) = (
                keys::user_from_pk(&due.pk),
                due.sk.strip_prefix(keys::EXPORT_PREFIX),
            ) {
                // R7: through the pipeline (its archive), under the holds in force.
                if let Some(executed) =
                    crate::services::exports::expire(app, holds, user_id, id, now).await?
                {
                    report.exports_expired += 1;
                    report.count(executed);
                }
                return Ok(());
            }
            if due.pk == HOLD_PK {
                // Ended at the start of the run (`end_expired_holds`).
                return Ok(());
            }
            if let Some(user_id) = keys::user_from_pk(&due.pk) {
                // R5: download history (C4) under a hold naming its owner stays; looked at
                // again a day later, so it never crowds out the rest.
                if due.sk.starts_with(keys::DOWNLOAD_PREFIX) && holds.names_user(user_id) {
                    app.store.postpone(&due, now + Duration::days(1)).await?;
                    return Ok(());
                }
            }
            if app.store.delete_if_due(&due, now).await? {
                report.items_deleted += 1;
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::error!(error = ?e, pk = %due.pk, "expired item not deleted");
            report.errors += 1;
        }
    }
    Ok(())
}

/// R1: content created before `now - retention` (`CONTENT#` shards, by creation time).
async fn expire_content(
    started: std::time::Instant,
    app: &App,
    holds: &HoldSet,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> anyhow::Result<()> {
    let Some(days) = app.config.retention.content_days() else {
        return Ok(());
    };
    let created_before = now - Duration::days(i64::from(days));
    for due in app
        .store
        .due_in(keys::CONTENT, created_before, BATCH_LIMIT)
        .await?
    {
        if out_of_time(started, report) {
            break;
        }
        if let (Some(user_id), true) = (
            user_from_pk(&due.pk),
            due.sk.starts_with(keys::VIOLATION_PREFIX),
        ) {
            // R1: a violation record holds its prompt; under a hold naming the user it stays
            // (evidence), otherwise it goes.
            let outcome = if holds.names_user(user_id) {
                // Looked at again a day later, so held records never crowd out the rest.
                report.content_held += 1;
                app.store
                    .postpone_violation(user_id, &due.sk, created_before + Duration::days(1))
                    .await
            } else {
                app.store
                    .delete_violation(user_id, &due.sk)
                    .await
                    .map(|()| {
                        report.items_deleted += 1;
                    })
            };
            if let Err(e) = outcome {
                tracing::error!(error = ?e, "expired violation record not handled");
                report.errors += 1;
            }
            continue;
        }
        let Some((user_id, job_id)) = job_key(&due) else {
            continue;
        };
        if let Err(e) = expire_generation(app, holds, user_id, job_id, now, report).await {
            tracing::error!(error = ?e, job_id, "expired generation not deleted");
            report.errors += 1;
        }
    }
    Ok(())
}
