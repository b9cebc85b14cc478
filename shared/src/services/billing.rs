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
use crate::store::{Applied, AuditRecord, Grant, Payment, SubscriptionState, SYSTEM_ACTOR};

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
    if app.stripe_webhook_secrets.is_empty() {
        return Err(billing_not_configured());
    }
    let secrets: Vec<String> = app
        .stripe_webhook_secrets
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
            checkout(app, id, kind, object, now).await?
        }
        "invoice.paid" => invoice_paid(app, id, kind, object, now).await?,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => subscription(app, id, object, created).await?,
        "charge.refunded" => {
            let refunded = u64_at(object, "/amount_refunded").unwrap_or(0);
            reversal(app, id, kind, str_at(object, "/payment_intent"), now, |p| {
                p.refunded = p.refunded.max(refunded);
            })
            .await?
        }
        "charge.dispute.created" => {
            reversal(app, id, kind, str_at(object, "/payment_intent"), now, |p| {
                if p.dispute != "won" && p.dispute != "lost" {
                    p.dispute = "open".into();
                }
            })
            .await?
        }
        "charge.dispute.funds_reinstated" => {
            reversal(app, id, kind, str_at(object, "/payment_intent"), now, |p| {
                p.dispute = "won".into();
            })
            .await?
        }
        "charge.dispute.closed" => {
            let status = str_at(object, "/status").unwrap_or("").to_string();
            if status != "won" && status != "lost" {
                return Ok(ignored(id, "dispute closed without a decision"));
            }
            reversal(app, id, kind, str_at(object, "/payment_intent"), now, |p| {
                p.dispute = status.clone();
            })
            .await?
        }
        _ => ignored(id, "not an event this service acts on"),
    };
    tracing::info!(outcome = handled.outcome, "stripe event handled");
    Ok(handled)
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
            "applied"
        }
        Applied::Duplicate => "duplicate",
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
        app.store.set_subscription(user, &state).await?;
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
    let payment = str_at(session, "/payment_intent").map(|pi| Payment {
        payment_intent: pi.into(),
        user_id: user.into(),
        grant: cause.key(),
        credits: pack.credits,
        amount: u64_at(session, "/amount_total").unwrap_or(pack.amount),
        currency: str_at(session, "/currency")
            .unwrap_or(&pack.currency)
            .into(),
        refunded: 0,
        dispute: "none".into(),
        reversed: 0,
        version: 0,
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
    let invoice_id = str_at(invoice, "/id").unwrap_or(id);
    let cause = Cause::InvoiceGrant {
        invoice_id: invoice_id.into(),
    };
    let payment = str_at(invoice, "/payment_intent").map(|pi| Payment {
        payment_intent: pi.into(),
        user_id: user.into(),
        grant: cause.key(),
        credits: plan.credits,
        amount: u64_at(invoice, "/amount_paid").unwrap_or(plan.amount),
        currency: str_at(invoice, "/currency")
            .unwrap_or(&plan.currency)
            .into(),
        refunded: 0,
        dispute: "none".into(),
        reversed: 0,
        version: 0,
    });
    grant(
        app,
        Grant {
            event_id: id,
            user_id: user,
            cause,
            credits: plan.credits,
            payment,
        },
        kind,
        now,
    )
    .await
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
    let changed = app.store.set_subscription(user, &state).await?;
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

/// Applies `change` to the payment's state and books the difference of its reversal target.
async fn reversal(
    app: &App,
    id: &str,
    kind: &str,
    payment_intent: Option<&str>,
    now: DateTime<Utc>,
    change: impl Fn(&mut Payment),
) -> Result<Handled, ApiError> {
    let Some(pi) = payment_intent else {
        return Ok(ignored(id, "no payment intent on the object"));
    };
    for _ in 0..8 {
        if app.store.event_applied(id).await? {
            return Ok(Handled {
                event: id.into(),
                outcome: "duplicate",
                detail: None,
            });
        }
        let Some(current) = app.store.get_payment(pi).await? else {
            // Its grant has not arrived yet: Stripe retries, by then it has.
            return Err(ApiError::Unavailable(format!("payment {pi} not known yet")));
        };
        let mut next = current.clone();
        change(&mut next);
        next.reversed = next.reversal_target();
        next.version = current.version + 1;
        if !app
            .store
            .apply_reversal(id, kind, &current, &next, now)
            .await?
        {
            continue;
        }
        let delta = next.reversed as i64 - current.reversed as i64;
        if delta > 0 && app.store.balance(&current.user_id).await?.unwrap_or(0) < 0 {
            // The credits were spent already: the balance stays negative (generation answers
            // 402 until it is topped up) and the account is flagged.
            app.store
                .flag_account(&current.user_id, "negative_balance_after_reversal")
                .await?;
        }
        if delta != 0 {
            publish(
                app,
                "credits.clawed_back",
                json!({"user_id": current.user_id, "amount": delta, "payment_intent": pi, "dispute": next.dispute}),
            )
            .await;
        }
        suspension_follows_dispute(app, &current, &next, now).await?;
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

/// S2: an open dispute suspends the account; a won dispute restores a suspension that was the
/// dispute's (an admin's stays).
async fn suspension_follows_dispute(
    app: &App,
    before: &Payment,
    after: &Payment,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if before.dispute == after.dispute {
        return Ok(());
    }
    let user = &after.user_id;
    let keep = legal_keep_until(app, now);
    match after.dispute.as_str() {
        "open" | "lost" => {
            let suspended = app
                .store
                .get_profile(user)
                .await?
                .is_some_and(|p| p.suspension.is_some());
            if suspended {
                // Already suspended (by an admin, a report or this dispute): that reason stays.
                return Ok(());
            }
            let audit = AuditRecord::new(
                SYSTEM_ACTOR,
                "account.suspend",
                Some(user),
                Some(&format!("payment:{}", after.payment_intent)),
                Some("payment dispute"),
                "suspended",
                now,
            );
            app.store
                .set_suspension(
                    user,
                    Some(DISPUTE_SUSPENSION),
                    None,
                    SYSTEM_ACTOR,
                    &audit,
                    keep,
                    now,
                )
                .await?;
        }
        "won" => {
            let audit = AuditRecord::new(
                SYSTEM_ACTOR,
                "account.restore",
                Some(user),
                Some(&format!("payment:{}", after.payment_intent)),
                Some("payment dispute won"),
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
        _ => {}
    }
    Ok(())
}
