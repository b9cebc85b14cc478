//! The deletion pipeline (R3, R4, R5). Whatever deletes content (a user's DELETE, expiry, account
//! deletion, a confirmed child report, a lost job) first commits a deletion record in the
//! transaction that hides the content from the API; [`execute`] then removes what the record
//! names, and removes the record only when all of it is gone. The DELETE handlers execute their
//! record at once; the sweep executes every due record first thing in each run, so a crash, an
//! S3 error or a timeout at any step leaves work for the next run, never an orphan. A record
//! whose user or generation is under a legal hold is left in place until the hold ends.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tracing::instrument;

use crate::app::App;
use crate::store::{DeletionRecord, HoldSet};

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// Everything it named is gone; the record is removed.
    Done,
    /// Done once; kept for a second pass at its recheck time (a worker may still write).
    Rechecking,
    /// Under a legal hold: left in place.
    Held,
    /// The record no longer exists (another run finished it).
    Missing,
}

/// Executes the record `id` under the holds in force.
#[instrument(skip(app, holds), fields(record = %id))]
pub async fn execute(
    app: &App,
    id: &str,
    holds: &HoldSet,
    now: DateTime<Utc>,
) -> anyhow::Result<Executed> {
    let Some(record) = app.store.get_deletion_record(id).await? else {
        return Ok(Executed::Missing);
    };
    if holds.covers(&record.user_id, record.generation_id.as_deref()) {
        tracing::info!(reason = %record.reason, "deletion held");
        return Ok(Executed::Held);
    }
    match work(app, &record, now).await {
        Ok(()) => {}
        Err(e) => {
            // Due again at once: the next run tries again; the error is kept on the record.
            let msg = format!("{e:#}");
            if let Err(e2) = app
                .store
                .defer_deletion_record(id, now, Some(&msg), false)
                .await
            {
                tracing::warn!(error = ?e2, "could not note the failure on the record");
            }
            return Err(e);
        }
    }
    match record.recheck_at {
        Some(at) if at > now.timestamp() => {
            let due = DateTime::from_timestamp(at, 0).unwrap_or(now + Duration::minutes(15));
            app.store.defer_deletion_record(id, due, None, true).await?;
            Ok(Executed::Rechecking)
        }
        _ => {
            app.store.finish_deletion_record(id).await?;
            Ok(Executed::Done)
        }
    }
}

/// Removes everything the record names: objects first (the items still point at them if this
/// dies half-way), then items, then the account's partition and identity.
async fn work(app: &App, record: &DeletionRecord, now: DateTime<Utc>) -> anyhow::Result<()> {
    for prefix in &record.prefixes {
        app.objects.delete_prefix(prefix).await?;
    }
    for item in &record.items {
        app.store.delete_named_item(item).await?;
    }
    if let Some(account) = &record.account {
        let keep_until = legal_keep_until(app, now);
        let erased = app
            .store
            .erase_account_items(&record.user_id, &account.anonymous_id, keep_until)
            .await?;
        // Objects written while the partition was erased (a late worker) go too.
        for prefix in &record.prefixes {
            app.objects.delete_prefix(prefix).await?;
        }
        app.identity.delete_user(&record.user_id).await?;
        app.store.complete_tombstone(&record.user_id, now).await?;
        tracing::info!(?erased, identity = app.identity.name(), "account erased");
        crate::services::worker::publish(
            app,
            "account.deleted",
            json!({"anonymous_id": account.anonymous_id, "reason": record.reason}),
        )
        .await;
    }
    Ok(())
}

/// How long billing and admin records are kept from `now` (R4's legal period).
pub fn legal_keep_until(app: &App, now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::days(365 * i64::from(app.config.legal_retention_years))
}

/// Executes a record just committed by a request, best effort: whatever fails is left to the
/// sweep (the content is already hidden).
pub async fn execute_now(app: &App, record: &DeletionRecord, now: DateTime<Utc>) {
    let holds = match app.store.holds_in_force(now).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = ?e, "holds unreadable; the sweep will delete");
            return;
        }
    };
    if let Err(e) = execute(app, &record.id, &holds, now).await {
        tracing::warn!(error = ?e, record = %record.id, "deletion left to the sweep");
    }
}
