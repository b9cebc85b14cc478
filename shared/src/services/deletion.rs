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
    if is_held(&record, holds) {
        // Parked out of the due partitions, so held records never crowd out the rest; the end
        // of a hold makes every parked record due again.
        app.store.park_deletion_record(id).await?;
        tracing::info!(reason = %record.reason, "deletion held");
        return Ok(Executed::Held);
    }
    let recheck = match work(app, &record, now).await {
        Ok(recheck) => recheck,
        Err(e) => {
            // Due again at the next run, then with a growing pause (a record that keeps failing
            // must not crowd out the others); the error is kept on the record.
            let msg = format!("{e:#}");
            let due = match record.attempts {
                0..=2 => now,
                n => now + Duration::minutes(1 << (n - 3).min(9)),
            };
            if let Err(e2) = app
                .store
                .defer_deletion_record(id, due, Some(&msg), false)
                .await
            {
                tracing::warn!(error = ?e2, "could not note the failure on the record");
            }
            return Err(e);
        }
    };
    let recheck_at = record
        .recheck_at
        .and_then(|at| DateTime::from_timestamp(at, 0))
        .into_iter()
        .chain(recheck)
        .max()
        .filter(|at| *at > now);
    if let Some(due) = recheck_at {
        app.store.defer_deletion_record(id, due, None, true).await?;
        return Ok(Executed::Rechecking);
    }
    if let Some(account) = &record.account {
        // Once, when everything is gone: the deletion is complete.
        app.store.complete_tombstone(&record.user_id, now).await?;
        crate::services::worker::publish(
            app,
            "account.deleted",
            json!({"anonymous_id": account.anonymous_id, "reason": record.reason}),
        )
        .await;
    }
    app.store
        .finish_deletion_record(&record.user_id, id)
        .await?;
    Ok(Executed::Done)
}

/// Whether a hold keeps the record's work from being done: an account is erased only when no
/// hold names it, not even one of its generations.
pub fn is_held(record: &DeletionRecord, holds: &HoldSet) -> bool {
    match record.account {
        Some(_) => holds.names_user(&record.user_id),
        None => holds.covers(&record.user_id, record.generation_id.as_deref()),
    }
}

/// Removes everything the record names: objects first (the items still point at them if this
/// dies half-way), then items, then the account's partition and identity. Returns when to look
/// again if a worker may still be writing.
async fn work(
    app: &App,
    record: &DeletionRecord,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut recheck = None;
    if record.account.is_some() {
        // Jobs still unfinished (created in a race with the deactivation) are cancelled and
        // refunded before the ledger leaves the account; a running one's worker may still
        // write, so its objects are looked at once more after the lease.
        if crate::services::accounts::cancel_unfinished_jobs(
            app,
            &record.user_id,
            &record.reason,
            now,
        )
        .await?
        {
            recheck = Some(now + Duration::minutes(crate::store::RECHECK_AFTER_MINUTES));
        }
    }
    for prefix in &record.prefixes {
        app.objects().delete_prefix(prefix).await?;
    }
    for item in &record.items {
        app.store.delete_named_item(item).await?;
    }
    if let Some(account) = &record.account {
        // At Stripe first: the customer goes (its subscriptions are cancelled with it), so no
        // renewal charges an account that no longer exists, and Stripe keeps no email of it.
        if let Some(customer) = app.store.customer(&record.user_id).await?.customer_id {
            match app.payments() {
                Some(stripe) => stripe
                    .delete_customer(&customer)
                    .await
                    .map_err(|e| anyhow::anyhow!(e).context("deleting the Stripe customer"))?,
                // Left for a run that can: erasing the only link would leave a subscription
                // charging a deleted account.
                None => anyhow::bail!(
                    "the account has a Stripe customer but Stripe is not reachable here"
                ),
            }
        }
        // Gallery entries and public copies live outside the account's partition and prefix
        // (the entries normally left at deactivation).
        app.store.sync_gallery(&record.user_id).await?;
        for prefix in app.store.public_copies(&record.user_id).await? {
            app.objects().delete_prefix(&prefix).await?;
        }
        let keep_until = legal_keep_until(app, now);
        let mut erased = app
            .store
            .erase_account_items(&record.user_id, account, keep_until)
            .await?;
        // A second pass finds what a concurrent writer added meanwhile (normally nothing).
        let again = app
            .store
            .erase_account_items(&record.user_id, account, keep_until)
            .await?;
        erased.items_deleted += again.items_deleted;
        // Objects written while the partition was erased (a late worker) go too.
        for prefix in &record.prefixes {
            app.objects().delete_prefix(prefix).await?;
        }
        app.identity().delete_user(&record.user_id).await?;
        tracing::info!(?erased, identity = app.identity().name(), "account erased");
    }
    Ok(recheck)
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
