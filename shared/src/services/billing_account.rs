//! The user's side of billing (C2, U2): balance, plan and subscription state, and the ledger
//! with the balance after each entry.

use serde::Serialize;

use crate::app::App;
use crate::domain::credits::LedgerEntry;
use crate::domain::cursor;
use crate::error::ApiError;
use crate::http::Caller;
use crate::services::accounts::require_onboarded;
use crate::services::generations::{parse_limit, Page};

/// `GET /v1/billing`.
#[derive(Debug, Serialize)]
pub struct BillingView {
    pub balance: i64,
    pub plan: Option<String>,
    pub subscription_status: Option<String>,
    /// Epoch seconds.
    pub current_period_end: Option<i64>,
    /// Set when a payment reversal left the balance negative.
    pub billing_flag: Option<String>,
    pub suspended: bool,
}

pub async fn overview(app: &App, caller: &Caller) -> Result<BillingView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    let user = caller.user_id.as_str();
    let (balance, subscription) =
        tokio::try_join!(app.store.balance(user), app.store.subscription(user))?;
    Ok(BillingView {
        balance: balance.unwrap_or(0),
        plan: subscription.as_ref().and_then(|s| s.plan.clone()),
        subscription_status: subscription.as_ref().map(|s| s.status.clone()),
        current_period_end: subscription.and_then(|s| s.current_period_end),
        billing_flag: profile.billing_flag,
        suspended: profile.suspension.is_some(),
    })
}

#[derive(Debug, Serialize)]
pub struct LedgerLine {
    #[serde(flatten)]
    pub entry: LedgerEntry,
    pub balance_after: i64,
}

const CURSOR_PREFIX: &str = "L#";

/// `GET /v1/billing/ledger`: newest first, `limit` 1 to 100, opaque cursor; each entry with the
/// balance after it.
pub async fn ledger(
    app: &App,
    caller: &Caller,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<LedgerLine>, ApiError> {
    require_onboarded(app, caller).await?;
    let limit = parse_limit(limit)? as usize;
    let after = after
        .map(|c| cursor::decode(c, CURSOR_PREFIX))
        .transpose()?;
    // Oldest first, with the running balance; then newest first.
    let mut balance = 0;
    let mut lines: Vec<LedgerLine> = app
        .store
        .ledger_entries(caller.user_id.as_str())
        .await?
        .into_iter()
        .map(|entry| {
            balance += entry.amount;
            LedgerLine {
                entry,
                balance_after: balance,
            }
        })
        .collect();
    lines.reverse();
    let position =
        |l: &LedgerLine| format!("{CURSOR_PREFIX}{}#{}", l.entry.created_at, l.entry.cause);
    let start = match &after {
        Some(key) => lines
            .iter()
            .position(|l| &position(l) == key)
            .map(|i| i + 1)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
            })?,
        None => 0,
    };
    let items: Vec<LedgerLine> = lines.into_iter().skip(start).take(limit + 1).collect();
    let (items, next) = if items.len() > limit {
        let mut items = items;
        items.truncate(limit);
        let next = items.last().map(|l| cursor::encode(&position(l)));
        (items, next)
    } else {
        (items, None)
    };
    Ok(Page {
        items,
        next_cursor: next,
    })
}
