//! Stripe's webhooks (C2, U2, U5, S2). Signatures are verified here, with Stripe's scheme, and
//! only the fields this service needs are read from the event (not a typed event of one API
//! version: Stripe sends the account's pinned version, and a strict parser would refuse the
//! others). Every effect is one conditional transaction keyed by its Stripe cause, so the same
//! event delivered any number of times, in any order, books once:
//!
//! - a pack: `checkout.session.completed` when paid (or no payment required) and
//!   `checkout.session.async_payment_succeeded`, both keyed by the session;
//! - a plan: `invoice.paid` for `subscription_create` / `subscription_cycle`, keyed by the
//!   invoice (the user is in the subscription's metadata, so it does not wait for anything);
//! - `customer.subscription.*`: the latest state by Stripe's event time; canceled is final;
//! - `charge.refunded`, `charge.dispute.*`: the payment's reversal target is recomputed from its
//!   state (cumulative refund, dispute open/won/lost) and the difference booked, so refunds and
//!   disputes net correctly and never reverse more than was granted. A dispute suspends the
//!   account; winning it restores a suspension that was the dispute's.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::instrument;

use crate::app::App;
use crate::domain::billing::{self, SignatureError};
use crate::domain::credits::Cause;
use crate::error::ApiError;
use crate::services::deletion::legal_keep_until;
use crate::services::worker::publish;
use crate::store::{
    Applied, AuditRecord, Grant, Payment, StateOutcome, SubscriptionState, SYSTEM_ACTOR,
};

pub const DISPUTE_SUSPENSION: &str = "payment_dispute";

/// What a delivery came to (the body of the 200 answer).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Handled {
    pub event: String,
    /// `applied`, `duplicate` or `ignored`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn billing_not_configured() -> ApiError {
    ApiError::client(
        503,
        "billing_not_configured",
        "billing is not configured on this deployment",
    )
}

/// Verifies the signature over the raw body, then applies the event.
pub async fn receive(
    app: &App,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    let Some(source) = app.webhook_secrets() else {
        return Err(billing_not_configured());
    };
    // Read from SSM on the first event (and again after a failed read): 503, so Stripe
    // delivers again.
    let secrets: Vec<String> = source
        .get()
        .await
        .map_err(|e| {
            tracing::error!(error = ?e, "the webhook signing secrets could not be read");
            ApiError::Unavailable("the webhook signing secrets could not be read".into())
        })?
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    billing::verify(signature.unwrap_or(""), body, &secrets, now.timestamp()).map_err(|e| {
        let code = match e {
            SignatureError::Malformed => "missing_signature",
            SignatureError::Stale => "stale_signature",
            SignatureError::Mismatch => "invalid_signature",
        };
        ApiError::bad_request(code, e.to_string())
    })?;
    let event: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("event is not JSON: {e}")))?;
    apply(app, &event, now).await
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

fn ignored(event: &str, why: &str) -> Handled {
    Handled {
        event: event.into(),
        outcome: "ignored",
        detail: Some(why.into()),
    }
}

/// Applies a verified event.
#[instrument(skip_all, fields(event = tracing::field::Empty, kind = tracing::field::Empty))]
pub async fn apply(app: &App, event: &Value, now: DateTime<Utc>) -> Result<Handled, ApiError> {
    let id = str_at(event, "/id")
        .ok_or_else(|| ApiError::bad_request("invalid_event", "the event has no id"))?;
    let kind = str_at(event, "/type").unwrap_or("");
    tracing::Span::current()
        .record("event", id)
        .record("kind", kind);
    let object = event.pointer("/data/object").unwrap_or(&Value::Null);
    let created = event
        .pointer("/created")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let handled = match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let handled = checkout(app, id, kind, object, now).await?;
            if handled.outcome != "ignored" {
                forget_pending(app, object).await?;
            }
            handled
        }
        "checkout.session.expired" | "checkout.session.async_payment_failed" => {
            forget_pending(app, object).await?;
            Handled {
                event: id.into(),
                outcome: "applied",
                detail: Some("open checkout removed".into()),
            }
        }
        "invoice.paid" => invoice_paid(app, id, kind, object, now).await?,
        "invoice_payment.paid" => invoice_payment_paid(app, id, kind, object, created, now).await?,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => subscription(app, id, object, created).await?,
        "charge.refunded" => {
            let refunded = u64_at(object, "/amount_refunded").unwrap_or(0);
            let amount = u64_at(object, "/amount");
            reversal(
                app,
                id,
                kind,
                str_at(object, "/payment_intent"),
                created,
                now,
                |p| {
                    // Cumulative, ordered by Stripe's event time: a later event wins, also when a
                    // failed or cancelled refund lowered the amount.
                    // Same second: the larger cumulative amount is the later one.
                    if created > p.refund_ts || (created == p.refund_ts && refunded > p.refunded) {
                        p.refunded = refunded;
                        p.refund_ts = created;
                    }
                    if let Some(a) = amount.filter(|a| *a > 0) {
                        p.amount = a;
                    }
                },
            )
            .await?
        }
        "charge.dispute.created" => {
            // An inquiry (`warning_*`) withdraws no funds: nothing is taken back for it.
            let inquiry = str_at(object, "/status").is_some_and(|s| s.starts_with("warning_"));
            reversal(
                app,
                id,
                kind,
                str_at(object, "/payment_intent"),
                created,
                now,
                |p| {
                    if !inquiry && p.dispute == "none" {
                        p.dispute = "open".into();
                    }
                },
            )
            .await?
        }
        "charge.dispute.funds_reinstated" => {
            reversal(
                app,
                id,
                kind,
                str_at(object, "/payment_intent"),
                created,
                now,
                |p| {
                    p.dispute = "won".into();
                },
            )
            .await?
        }
        "charge.dispute.closed" => {
            let decided = match str_at(object, "/status").unwrap_or("") {
                "won" => "won",
                "lost" => "lost",
                // An inquiry closed, or a dispute prevented: as if there had been none.
                "warning_closed" | "prevented" => "none",
                _ => return Ok(ignored(id, "dispute closed without a decision")),
            };
            reversal(
                app,
                id,
                kind,
                str_at(object, "/payment_intent"),
                created,
                now,
                |p| {
                    p.dispute = decided.into();
                },
            )
            .await?
        }
        _ => ignored(id, "not an event this service acts on"),
    };
    tracing::info!(outcome = handled.outcome, "stripe event handled");
    Ok(handled)
}

/// A paid or expired session no longer counts against the spend cap.
async fn forget_pending(app: &App, session: &Value) -> anyhow::Result<()> {
    if let (Some(user), Some(id)) = (user_of(session), str_at(session, "/id")) {
        app.store.remove_pending_checkout(user, id).await?;
    }
    Ok(())
}

fn user_of(object: &Value) -> Option<&str> {
    str_at(object, "/client_reference_id")
        .or_else(|| str_at(object, "/metadata/user_id"))
        .or_else(|| str_at(object, "/parent/subscription_details/metadata/user_id"))
        .or_else(|| str_at(object, "/subscription_details/metadata/user_id"))
}

async fn grant(
    app: &App,
    grant: Grant<'_>,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    let applied = app
        .store
        .apply_grant(&grant, kind, legal_keep_until(app, now), now)
        .await?;
    let outcome = match applied {
        Applied::Done => {
            publish(
                app,
                "credits.granted",
                json!({"user_id": grant.user_id, "amount": grant.credits, "cause": grant.cause.key()}),
            )
            .await;
            crate::services::billing_account::watch_low_balance(app, grant.user_id).await;
            "applied"
        }
        Applied::Duplicate => "duplicate",
        Applied::AccountGone => {
            tracing::warn!("grant for an account that does not exist or is being deleted");
            return Ok(ignored(
                grant.event_id,
                "the account does not exist or is deleted",
            ));
        }
    };
    Ok(Handled {
        event: grant.event_id.into(),
        outcome,
        detail: Some(grant.cause.key()),
    })
}

async fn checkout(
    app: &App,
    id: &str,
    kind: &str,
    session: &Value,
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    let Some(user) = user_of(session) else {
        tracing::error!("checkout session without a user id; nothing to book");
        return Ok(ignored(id, "no user id on the session"));
    };
    if str_at(session, "/mode") == Some("subscription") {
        // Only links customer and subscription; invoices grant the plan's credits.
        let Some(sub) = str_at(session, "/subscription") else {
            return Ok(ignored(id, "subscription session without a subscription"));
        };
        let state = SubscriptionState {
            subscription_id: sub.into(),
            customer_id: str_at(session, "/customer").map(str::to_string),
            plan: str_at(session, "/metadata/item").map(str::to_string),
            status: "incomplete".into(),
            current_period_end: None,
            // Older than any subscription event: never overwrites their state.
            stripe_updated: 0,
        };
        if let StateOutcome::AccountGone = app.store.set_subscription(user, &state).await? {
            return Ok(ignored(id, "the account does not exist or is deleted"));
        }
        return Ok(Handled {
            event: id.into(),
            outcome: "applied",
            detail: Some("subscription linked".into()),
        });
    }
    let paid = matches!(
        str_at(session, "/payment_status"),
        Some("paid") | Some("no_payment_required")
    );
    if kind == "checkout.session.completed" && !paid {
        // An asynchronous payment method: nothing until it succeeds.
        return Ok(ignored(id, "not paid yet"));
    }
    let Some(pack) = str_at(session, "/metadata/item").and_then(|i| app.config.catalog.pack(i))
    else {
        tracing::error!("checkout session names no pack of the catalog");
        return Ok(ignored(id, "no catalog pack on the session"));
    };
    let session_id = str_at(session, "/id").unwrap_or(id);
    let cause = Cause::CheckoutGrant {
        session_id: session_id.into(),
    };
    let payment = str_at(session, "/payment_intent").map(|pi| {
        Payment::granted(
            pi,
            user,
            &cause,
            pack.credits,
            u64_at(session, "/amount_total").unwrap_or(pack.amount),
            str_at(session, "/currency").unwrap_or(&pack.currency),
        )
    });
    grant(
        app,
        Grant {
            event_id: id,
            user_id: user,
            cause,
            credits: pack.credits,
            payment,
        },
        kind,
        now,
    )
    .await
}

async fn invoice_paid(
    app: &App,
    id: &str,
    kind: &str,
    invoice: &Value,
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    let reason = str_at(invoice, "/billing_reason").unwrap_or("");
    if reason != "subscription_create" && reason != "subscription_cycle" {
        return Ok(ignored(id, "not a subscription's creation or renewal"));
    }
    let Some(user) = user_of(invoice) else {
        tracing::error!("subscription invoice without a user id in its metadata");
        return Ok(ignored(id, "no user id on the invoice's subscription"));
    };
    let lines = invoice
        .pointer("/lines/data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let plan = lines.iter().find_map(|line| {
        str_at(line, "/pricing/price_details/price")
            .or_else(|| str_at(line, "/price/id"))
            .and_then(|price| app.config.catalog.plan_by_price(price))
    });
    let Some(plan) = plan else {
        tracing::error!("subscription invoice for no plan of the catalog");
        return Ok(ignored(id, "no catalog plan on the invoice"));
    };
    if u64_at(invoice, "/amount_paid") == Some(0) && u64_at(invoice, "/total") == Some(0) {
        // A trial or a full discount: nothing owed, no credits. (An invoice paid from the
        // customer's Stripe balance owes its total and grants.)
        return Ok(ignored(id, "nothing was owed"));
    }
    let invoice_id = str_at(invoice, "/id").unwrap_or(id);
    let cause = Cause::InvoiceGrant {
        invoice_id: invoice_id.into(),
    };
    // Recorded under the payment intent when the invoice names it (older API versions), or
    // under the invoice until `invoice_payment.paid` names the intent.
    let payment = Payment::granted(
        str_at(invoice, "/payment_intent").unwrap_or(invoice_id),
        user,
        &cause,
        plan.credits,
        u64_at(invoice, "/amount_paid").unwrap_or(plan.amount),
        str_at(invoice, "/currency").unwrap_or(&plan.currency),
    );
    grant(
        app,
        Grant {
            event_id: id,
            user_id: user,
            cause,
            credits: plan.credits,
            payment: Some(payment),
        },
        kind,
        now,
    )
    .await
}

/// How long an event about a payment whose grant is unknown is answered 503 (so Stripe retries
/// while the grant may still be on its way); after that it concerns no grant of this service.
pub const GRANT_WAIT_SECS: i64 = 3600;

fn not_known_yet(
    id: &str,
    what: &str,
    created: i64,
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    if now.timestamp() - created < GRANT_WAIT_SECS {
        Err(ApiError::Unavailable(format!("{what} not known yet")))
    } else {
        Ok(ignored(id, "concerns no grant of this service"))
    }
}

/// Current API versions: the invoice's payment intent arrives with `invoice_payment.paid`; the
/// grant's record moves under it, so refunds and disputes of plan charges find it.
async fn invoice_payment_paid(
    app: &App,
    id: &str,
    kind: &str,
    object: &Value,
    created: i64,
    now: DateTime<Utc>,
) -> Result<Handled, ApiError> {
    let (Some(invoice), Some(pi)) = (
        str_at(object, "/invoice"),
        str_at(object, "/payment/payment_intent"),
    ) else {
        return Ok(ignored(id, "not a payment-intent payment of an invoice"));
    };
    if app.store.get_payment(pi).await?.is_some() {
        // Already recorded under its intent (a pack's invoice, or an older API version).
        return Ok(ignored(id, "the payment is already recorded"));
    }
    let Some(recorded) = app.store.get_payment(invoice).await? else {
        return not_known_yet(id, "the invoice's grant", created, now);
    };
    let payment = Payment {
        payment_intent: pi.into(),
        amount: u64_at(object, "/amount_paid").unwrap_or(recorded.amount),
        ..recorded
    };
    let outcome = match app
        .store
        .link_payment(id, kind, &payment, legal_keep_until(app, now), now)
        .await?
    {
        Applied::Done => "applied",
        _ => "duplicate",
    };
    Ok(Handled {
        event: id.into(),
        outcome,
        detail: Some("payment linked to its invoice's grant".into()),
    })
}

async fn subscription(app: &App, id: &str, sub: &Value, created: i64) -> Result<Handled, ApiError> {
    let Some(user) = str_at(sub, "/metadata/user_id") else {
        return Ok(ignored(id, "no user id on the subscription"));
    };
    let price = str_at(sub, "/items/data/0/price/id");
    let state = SubscriptionState {
        subscription_id: str_at(sub, "/id").unwrap_or_default().into(),
        customer_id: str_at(sub, "/customer").map(str::to_string),
        plan: price
            .and_then(|p| app.config.catalog.plan_by_price(p))
            .map(|p| p.id.clone()),
        status: str_at(sub, "/status").unwrap_or("unknown").into(),
        current_period_end: sub
            .pointer("/current_period_end")
            .or_else(|| sub.pointer("/items/data/0/current_period_end"))
            .and_then(Value::as_i64),
        stripe_updated: created,
    };
    let changed = match app.store.set_subscription(user, &state).await? {
        StateOutcome::Stored => true,
        StateOutcome::Stale => false,
        StateOutcome::AccountGone => {
            return Ok(ignored(id, "the account does not exist or is deleted"))
        }
    };
    if changed {
        publish(
            app,
            "subscription.changed",
            json!({"user_id": user, "status": state.status, "plan": state.plan}),
        )
        .await;
    }
    Ok(Handled {
        event: id.into(),
        outcome: if changed { "applied" } else { "duplicate" },
        detail: Some(
            if changed {
                "state stored"
            } else {
                "a newer state is stored"
            }
            .into(),
        ),
    })
}

/// How long one delivery may spend on a contended payment before asking Stripe to retry.
const REVERSAL_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies `change` to the payment's state and books the difference of its reversal target.
async fn reversal(
    app: &App,
    id: &str,
    kind: &str,
    payment_intent: Option<&str>,
    created: i64,
    now: DateTime<Utc>,
    change: impl Fn(&mut Payment),
) -> Result<Handled, ApiError> {
    let Some(pi) = payment_intent else {
        return Ok(ignored(id, "no payment intent on the object"));
    };
    let started = std::time::Instant::now();
    while started.elapsed() < REVERSAL_BUDGET {
        let Some(current) = app.store.get_payment(pi).await? else {
            // Its grant may not have arrived yet: Stripe retries, by then it has.
            return not_known_yet(id, "the payment", created, now);
        };
        if app.store.event_applied(id).await? {
            // Applied before; what follows from the payment's state is made sure of again (an
            // earlier delivery may have failed after its commit).
            settle(app, &current, now).await?;
            return Ok(Handled {
                event: id.into(),
                outcome: "duplicate",
                detail: None,
            });
        }
        let mut next = current.clone();
        change(&mut next);
        next.reversed = next.reversal_target();
        next.version = current.version + 1;
        // A deleted account's payment changes state only: its ledger has left the account.
        let book = !current.user_id.starts_with("anon:")
            && app
                .store
                .get_profile(&current.user_id)
                .await?
                .is_some_and(|p| p.deleted_at.is_none());
        if !app
            .store
            .apply_reversal(id, kind, &current, &next, book, now)
            .await?
        {
            continue;
        }
        let delta = next.reversed as i64 - current.reversed as i64;
        if delta != 0 && book {
            let (event, amount) = if delta > 0 {
                ("credits.clawed_back", delta)
            } else {
                ("credits.reinstated", -delta)
            };
            publish(
                app,
                event,
                json!({"user_id": current.user_id, "amount": amount, "dispute": next.dispute}),
            )
            .await;
        }
        settle(app, &next, now).await?;
        if book {
            crate::services::billing_account::watch_low_balance(app, &current.user_id).await;
        }
        return Ok(Handled {
            event: id.into(),
            outcome: "applied",
            detail: Some(format!(
                "reversed {} of {} credits",
                next.reversed, next.credits
            )),
        });
    }
    Err(ApiError::Unavailable(format!(
        "payment {pi} is changing; retry"
    )))
}

/// What a payment's state implies for its account, made sure of (idempotent): a negative
/// balance is flagged; an open or lost dispute suspends (an existing suspension keeps its
/// reason); when no payment of the user is disputed any more and no child report is pending, a
/// suspension that was a dispute's is lifted.
async fn settle(app: &App, payment: &Payment, now: DateTime<Utc>) -> anyhow::Result<()> {
    let user = &payment.user_id;
    let Some(profile) = app.store.get_profile(user).await? else {
        return Ok(());
    };
    if profile.deleted_at.is_some() {
        return Ok(());
    }
    if profile.billing_flag.is_none() && app.store.balance(user).await?.unwrap_or(0) < 0 {
        // The credits were spent already: the balance stays negative (generation answers 402
        // until it is topped up) and the account is flagged.
        app.store
            .flag_account(user, "negative_balance_after_reversal")
            .await?;
    }
    let keep = legal_keep_until(app, now);
    let disputed = matches!(payment.dispute.as_str(), "open" | "lost");
    match (&profile.suspension, disputed) {
        (None, true) => {
            let audit = AuditRecord::new(
                SYSTEM_ACTOR,
                "account.suspend",
                Some(user),
                None,
                Some("payment dispute"),
                "suspended",
                now,
            );
            app.store
                .suspend_keeping_reason(user, DISPUTE_SUSPENSION, &audit, keep, now)
                .await?;
        }
        (Some(s), false) if s.reason == DISPUTE_SUSPENSION => {
            let other_disputes = app.store.payments_of(user).await?.iter().any(|p| {
                p.payment_intent != payment.payment_intent
                    && matches!(p.dispute.as_str(), "open" | "lost")
            });
            let report_pending = app
                .store
                .pending_child_reports()
                .await?
                .iter()
                .any(|r| &r.reported_user == user);
            if !other_disputes && !report_pending {
                let audit = AuditRecord::new(
                    SYSTEM_ACTOR,
                    "account.restore",
                    Some(user),
                    None,
                    Some("payment dispute resolved"),
                    "restored",
                    now,
                );
                app.store
                    .set_suspension(
                        user,
                        None,
                        Some(DISPUTE_SUSPENSION),
                        SYSTEM_ACTOR,
                        &audit,
                        keep,
                        now,
                    )
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}
