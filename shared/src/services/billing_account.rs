//! The user's side of billing (C2, U2): balance, plan and subscription state, and the ledger
//! with the balance after each entry.

use serde::Serialize;

use crate::app::App;
use crate::domain::credits::LedgerEntry;
use crate::domain::cursor;
use crate::error::ApiError;
use crate::http::Caller;
use crate::payments::PaymentsError;
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
    /// Most the user wants to spend a month (smallest currency unit), and what they paid.
    pub spend_cap: Option<u64>,
    pub spent_this_month: u64,
}

pub async fn overview(app: &App, caller: &Caller) -> Result<BillingView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    overview_of(app, caller.user_id.as_str(), profile).await
}

/// The overview, with the profile already read.
async fn overview_of(
    app: &App,
    user: &str,
    profile: crate::store::Profile,
) -> Result<BillingView, ApiError> {
    let now = chrono::Utc::now();
    let (balance, subscription, customer, spent) = tokio::try_join!(
        app.store.balance(user),
        app.store.subscription(user),
        app.store.customer(user),
        app.store.spent_this_month(user, now),
    )?;
    Ok(BillingView {
        balance: balance.unwrap_or(0),
        plan: subscription.as_ref().and_then(|s| s.plan.clone()),
        subscription_status: subscription.as_ref().map(|s| s.status.clone()),
        current_period_end: subscription.and_then(|s| s.current_period_end),
        billing_flag: profile.billing_flag,
        suspended: profile.suspension.is_some(),
        spend_cap: customer.spend_cap,
        spent_this_month: spent,
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

fn billing_not_configured() -> ApiError {
    ApiError::client(
        503,
        "billing_not_configured",
        "billing is not configured on this deployment",
    )
}

fn payments(app: &App) -> Result<&dyn crate::payments::Payments, ApiError> {
    app.payments().ok_or_else(billing_not_configured)
}

/// The user's Stripe customer, one per account: created at Stripe, then kept by a conditional
/// write; a creation that lost a race (or an account deleted meanwhile) has its customer
/// deleted again, so Stripe holds no stray copy of the user.
/// The user's Stripe customer: `stored` (as just read with the customer record), or a new one.
async fn customer_of(
    app: &App,
    caller: &Caller,
    stored: Option<String>,
) -> Result<String, ApiError> {
    let user = caller.user_id.as_str();
    if let Some(id) = stored {
        return Ok(id);
    }
    let stripe = payments(app)?;
    let created = stripe
        .create_customer(user, caller.email.as_deref())
        .await
        .map_err(payments_error)?;
    let kept = app.store.keep_customer(user, &created).await?;
    if kept.as_deref() != Some(created.as_str()) {
        if let Err(e) = stripe.delete_customer(&created).await {
            tracing::error!(error = %e, "a surplus Stripe customer was not deleted");
        }
    }
    kept.ok_or_else(|| ApiError::forbidden("account_deleted", "this account is being deleted"))
}

/// A failed Stripe call as an answer: a reused key is the client's (422); Stripe refusing our
/// request is ours (502, logged); Stripe not answering is worth a retry (503).
fn payments_error(e: PaymentsError) -> ApiError {
    match e {
        PaymentsError::IdempotencyConflict => ApiError::client(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        ),
        PaymentsError::Rejected { .. } => {
            tracing::error!(error = %e, "Stripe refused a request");
            ApiError::client(
                502,
                "payment_provider_error",
                "the payment provider refused the request",
            )
        }
        PaymentsError::Unavailable(_) => {
            tracing::warn!(error = %e, "Stripe unavailable");
            ApiError::Unavailable("the payment provider did not answer; retry shortly".into())
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    pub item: String,
}

#[derive(Debug, Serialize)]
pub struct UrlView {
    pub url: String,
}

/// `POST /v1/billing/checkout`: a Checkout Session for a pack (mode payment) or a plan (mode
/// subscription). Suspended accounts cannot buy; the spend cap is checked first.
#[tracing::instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn checkout(
    app: &App,
    caller: &Caller,
    body: CheckoutBody,
    idempotency_key: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<UrlView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    if profile.suspension.is_some() {
        return Err(ApiError::forbidden(
            "account_suspended",
            "this account is suspended: it can read, export and delete its data, not buy",
        ));
    }
    crate::limits::take_for_user(
        app,
        crate::limits::Action::Checkout,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    payments(app)?;
    let idempotency_key = crate::services::generations::parse_idempotency_key(idempotency_key)?;
    let catalog = &app.config.catalog;
    let (item, purchase) = match (catalog.pack(&body.item), catalog.plan(&body.item)) {
        (Some(pack), _) => (pack, crate::payments::Purchase::Pack),
        (None, Some(plan)) => (plan, crate::payments::Purchase::Plan),
        (None, None) => {
            return Err(ApiError::bad_request(
                "unknown_item",
                "item must be the id of a pack or plan of GET /v1/policy's catalog",
            ))
        }
    };
    let user = caller.user_id.as_str();
    let plan = purchase == crate::payments::Purchase::Plan;
    // Decide on what is stored, then reserve the amount only if no other checkout reserved
    // since those reads (a conditional transaction): two checkouts at once cannot both pass
    // the cap, nor open two plans.
    let reservation = ulid::Ulid::new().to_string().to_lowercase();
    let mut attempt = 0;
    let stored_customer = loop {
        // The sequence first: a reservation or an opened checkout that the reads below miss
        // has moved it on, and this checkout's reservation then fails and reads again.
        let record = app.store.customer(user).await?;
        let pending = app.store.pending_checkouts(user, now).await?;
        if plan {
            if pending.iter().any(|(_, plan)| *plan) {
                return Err(ApiError::client(
                    409,
                    "already_subscribed",
                    "a checkout for a plan is already open; pay or let it expire",
                ));
            }
            if let Some(sub) = app.store.subscription(user).await? {
                if matches!(
                    sub.status.as_str(),
                    "active" | "trialing" | "past_due" | "incomplete"
                ) {
                    return Err(ApiError::client(
                        409,
                        "already_subscribed",
                        "this account already has a plan; change it in the customer portal",
                    ));
                }
            }
        }
        if let Some(cap) = record.spend_cap {
            // Open sessions count too: several of them cannot pass the cap together.
            let spent = app.store.spent_this_month(user, now).await?
                + pending.iter().map(|(a, _)| a).sum::<u64>();
            if spent + item.amount > cap {
                return Err(ApiError::client(
                    409,
                    "spend_cap_reached",
                    format!(
                        "this purchase would pass the monthly spend cap ({spent} of {cap} spent)"
                    ),
                ));
            }
        }
        match app
            .store
            .reserve_checkout(
                user,
                record.checkout_seq,
                &reservation,
                item.amount,
                plan,
                now,
            )
            .await?
        {
            Some(true) => break record.customer_id,
            Some(false) if attempt < 3 => attempt += 1,
            Some(false) => {
                return Err(ApiError::Unavailable(
                    "other checkouts are being opened; try again".into(),
                ))
            }
            None => {
                require_onboarded(app, caller).await?;
                return Err(ApiError::Unavailable(
                    "the account changed meanwhile".into(),
                ));
            }
        }
    };
    let opened = async {
        let customer = customer_of(app, caller, stored_customer).await?;
        payments(app)?
            .checkout_url(
                &customer,
                user,
                item,
                purchase,
                &app.config.checkout_success_url,
                &app.config.checkout_cancel_url,
                idempotency_key.as_deref(),
            )
            .await
            .map_err(payments_error)
    }
    .await;
    let session = match opened {
        Ok(session) => session,
        Err(e) => {
            if let Err(release) = app.store.release_reservation(user, &reservation).await {
                tracing::warn!(error = ?release, "reservation left to expire");
            }
            return Err(e);
        }
    };
    app.store
        .confirm_checkout(user, &reservation, &session.id, item.amount, plan, now)
        .await?;
    Ok(UrlView { url: session.url })
}

/// `POST /v1/billing/portal`: the customer portal (card, cancel, invoices), for users who have
/// bought something (a portal never creates a Stripe customer).
pub async fn portal(
    app: &App,
    caller: &Caller,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<UrlView, ApiError> {
    require_onboarded(app, caller).await?;
    crate::limits::take_for_user(
        app,
        crate::limits::Action::Checkout,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    payments(app)?;
    let customer = app
        .store
        .customer(caller.user_id.as_str())
        .await?
        .customer_id
        .ok_or_else(|| ApiError::not_found("billing account (buy something first)"))?;
    let url = payments(app)?
        .portal_url(&customer, &app.config.portal_return_url)
        .await
        .map_err(payments_error)?;
    Ok(UrlView { url })
}

/// `GET /v1/billing/invoices`.
pub async fn invoices(
    app: &App,
    caller: &Caller,
) -> Result<Page<crate::payments::InvoiceView>, ApiError> {
    require_onboarded(app, caller).await?;
    let stripe = payments(app)?;
    let items = match app
        .store
        .customer(caller.user_id.as_str())
        .await?
        .customer_id
    {
        Some(customer) => stripe.invoices(&customer).await.map_err(payments_error)?,
        None => vec![],
    };
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// `PUT /v1/billing/spend-cap` `{monthly_cap}`: a number (smallest currency unit) or null.
pub async fn set_spend_cap(
    app: &App,
    caller: &Caller,
    body: &serde_json::Value,
) -> Result<BillingView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    let cap = match body.get("monthly_cap") {
        Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|c| *c <= 100_000_000).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_spend_cap",
                "monthly_cap must be a whole number from 0 to 100000000, or null",
            )
        })?),
        None => {
            return Err(ApiError::bad_request(
                "invalid_spend_cap",
                "send {\"monthly_cap\": number or null}",
            ))
        }
    };
    if body.as_object().is_some_and(|o| o.len() != 1) {
        return Err(ApiError::bad_request(
            "unknown_field",
            "only monthly_cap can be set here",
        ));
    }
    app.store
        .set_spend_cap(caller.user_id.as_str(), cap)
        .await?;
    // The cap is not part of the profile: what was read stands.
    overview_of(app, caller.user_id.as_str(), profile).await
}

/// Announces `credits.low` once each time the balance falls below the threshold (the mark is
/// cleared when it climbs back, so the next crossing is announced again).
pub async fn watch_low_balance(app: &App, user_id: &str) {
    let result = async {
        // One read; a write only when the mark changes (not on every generation).
        let (balance, marked) = app.store.balance_state(user_id).await?;
        let balance = balance.unwrap_or(0);
        let low = balance < app.config.low_balance_threshold as i64;
        if low != marked && app.store.mark_low_balance(user_id, low).await? && low {
            crate::services::worker::publish(
                app,
                "credits.low",
                serde_json::json!({"user_id": user_id, "balance": balance,
                                   "threshold": app.config.low_balance_threshold}),
            )
            .await;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = ?e, "low-balance check not done");
    }
}
