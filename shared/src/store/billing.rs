//! Stripe's effects on the ledger (C2, U2, U5): grants keyed by their Stripe cause, payment
//! reversals (refunds and disputes, netted) and the subscription's latest state. Each change is
//! one conditional transaction with the balance and the event's marker, so a cause books at most
//! once and a redelivered event changes nothing.

use anyhow::Context;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::admin::Mentions;
use super::item::{key, n, s, Item};
use super::keys::{self, user_pk};
use super::txn::{transact, TxnOutcome};
use super::Store;
use crate::datamap::{new_item, Kind};
use crate::domain::credits::Cause;

/// How long an applied event's id is kept (Stripe retries for up to three days).
pub const EVENT_MARKER_DAYS: i64 = 30;

pub const SUBSCRIPTION: &str = "SUBSCRIPTION";

/// How far along a subscription status is: breaks ties between events of the same second.
fn status_rank(status: &str) -> u8 {
    match status {
        "incomplete" => 0,
        "incomplete_expired" => 1,
        "trialing" => 2,
        "active" => 3,
        "past_due" => 4,
        "unpaid" | "paused" => 5,
        "canceled" => 9,
        _ => 3,
    }
}
const PAYMENT: &str = "PAYMENT";
const EVENT: &str = "EVENT";

fn payment_pk(payment_intent: &str) -> String {
    format!("PAYMENT#{payment_intent}")
}

fn event_pk(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}

/// A payment that granted credits, and what has happened to it since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_intent: String,
    pub user_id: String,
    /// The ledger cause of its grant.
    pub grant: String,
    pub credits: u64,
    pub amount: u64,
    pub currency: String,
    /// Cumulative amount refunded (Stripe's `amount_refunded`; only ever grows).
    #[serde(default)]
    pub refunded: u64,
    /// `none`, `open`, `won` or `lost`.
    #[serde(default = "no_dispute")]
    pub dispute: String,
    /// Credits taken back so far (net of reinstatements).
    #[serde(default)]
    pub reversed: u64,
    #[serde(default)]
    pub version: u64,
    /// Stripe's `created` of the refund event that set `refunded` (a later one wins, so a
    /// failed or cancelled refund that lowers `amount_refunded` is followed too).
    #[serde(default)]
    pub refund_ts: i64,
}

fn no_dispute() -> String {
    "none".into()
}

impl Payment {
    /// The record of a payment that has just granted `credits` under `cause`.
    pub fn granted(
        payment_intent: &str,
        user_id: &str,
        cause: &Cause,
        credits: u64,
        amount: u64,
        currency: &str,
    ) -> Self {
        Self {
            payment_intent: payment_intent.into(),
            user_id: user_id.into(),
            grant: cause.key(),
            credits,
            amount,
            currency: currency.into(),
            refunded: 0,
            dispute: no_dispute(),
            reversed: 0,
            version: 0,
            refund_ts: 0,
        }
    }

    /// What should be taken back now: everything while a dispute is open or lost, otherwise the
    /// refunded share (rounded down). Never more than was granted.
    pub fn reversal_target(&self) -> u64 {
        if matches!(self.dispute.as_str(), "open" | "lost") {
            return self.credits;
        }
        if self.amount == 0 {
            return 0;
        }
        let share = u128::from(self.credits) * u128::from(self.refunded.min(self.amount))
            / u128::from(self.amount);
        (share as u64).min(self.credits)
    }
}

/// A grant a Stripe event asks for.
pub struct Grant<'a> {
    pub event_id: &'a str,
    pub user_id: &'a str,
    pub cause: Cause,
    pub credits: u64,
    /// The payment it came from, when the event names it (refunds and disputes find it there).
    pub payment: Option<Payment>,
}

/// The subscription as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub subscription_id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    pub status: String,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    /// Stripe's `created` of the event that set this state.
    pub stripe_updated: i64,
}

/// The user's Stripe customer and spend cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Most the user wants to spend a month, in the currency's smallest unit.
    #[serde(default)]
    pub spend_cap: Option<u64>,
    /// How many checkouts have been opened: a checkout decides on what it read (the cap, the
    /// month's spend, the open checkouts) and reserves only if this has not moved since.
    #[serde(default)]
    pub checkout_seq: u64,
}

const STRIPE_CUSTOMER: &str = "STRIPE_CUSTOMER";
const PENDING: &str = "PENDING#";
/// How long a checkout's reservation counts before its session replaces it.
const RESERVATION_LASTS: Duration = Duration::minutes(5);

fn spend_sk(now: DateTime<Utc>) -> String {
    format!("SPEND#{}", now.format("%Y-%m"))
}

pub enum Applied {
    Done,
    /// Already applied (this event, or another with the same cause).
    Duplicate,
    /// The account does not exist or is being deleted: nothing was booked.
    AccountGone,
}

/// What storing a subscription state came to.
pub enum StateOutcome {
    Stored,
    /// A newer state (or the same subscription's cancellation) is stored.
    Stale,
    AccountGone,
}

impl Store {
    fn event_marker(
        &self,
        event_id: &str,
        event_type: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut item = new_item(Kind::WebhookEvent, event_pk(event_id), EVENT);
        item.insert("type".into(), s(event_type));
        item.insert("applied_at".into(), s(now.to_rfc3339()));
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(event_id)));
        item.insert(
            keys::EXP_AT.into(),
            n((now + Duration::days(EVENT_MARKER_DAYS)).timestamp()),
        );
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?,
            )
            .build())
    }

    pub async fn event_applied(&self, event_id: &str) -> anyhow::Result<bool> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(event_pk(event_id), EVENT)))
            .consistent_read(true)
            .send()
            .await
            .context("reading an event marker")?;
        Ok(out.item().is_some())
    }

    /// The account must exist and not be deleted for Stripe to change it.
    fn account_active(&self, user_id: &str) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), keys::PROFILE)))
                    .condition_expression(
                        "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                    )
                    .build()?,
            )
            .build())
    }

    /// A payment's record and its reference, as transaction items.
    fn payment_items(
        &self,
        p: &Payment,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        let pk = payment_pk(&p.payment_intent);
        let mut item = new_item(Kind::Payment, &pk, PAYMENT);
        item.extend(serde_dynamo::to_item::<_, Item>(p)?);
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(&p.payment_intent)));
        item.insert(keys::EXP_AT.into(), n(keep_until.timestamp()));
        let mut items = vec![TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?,
            )
            .build()];
        items.extend(self.references(&pk, PAYMENT, &Mentions(vec![("user_id", &p.user_id)]))?);
        Ok(items)
    }

    /// Links a payment intent to a grant recorded under its invoice (API versions whose
    /// invoices no longer name their payment intent): the payment's record under the intent.
    pub async fn link_payment(
        &self,
        event_id: &str,
        event_type: &str,
        payment: &Payment,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Applied> {
        let mut items = vec![self.event_marker(event_id, event_type, now)?];
        items.extend(self.payment_items(payment, keep_until)?);
        Ok(
            match transact(self.client().await, "stripe payment link", items).await? {
                TxnOutcome::Committed => Applied::Done,
                TxnOutcome::ConditionFailed(_) => Applied::Duplicate,
            },
        )
    }

    /// Books a grant once: the event's marker, the ledger entry keyed by its cause, the balance
    /// and the payment's record, all or nothing, and only into an active account.
    pub async fn apply_grant(
        &self,
        grant: &Grant<'_>,
        event_type: &str,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Applied> {
        let mut items = vec![
            self.event_marker(grant.event_id, event_type, now)?,
            self.ledger_put(grant.user_id, &grant.cause, grant.credits as i64, now)?,
            self.balance_add(grant.user_id, grant.credits)?,
            self.account_active(grant.user_id)?,
        ];
        if let Some(p) = &grant.payment {
            items.extend(self.payment_items(p, keep_until)?);
            items.push(self.spend_item(grant.user_id, p.amount, now)?);
        }
        let outcome = transact(self.client().await, "stripe grant", items).await?;
        Ok(match outcome {
            TxnOutcome::Committed => Applied::Done,
            _ if outcome.failed_at(3) => Applied::AccountGone,
            TxnOutcome::ConditionFailed(_) => Applied::Duplicate,
        })
    }

    /// Adds a payment to its month's spend (for the spend cap).
    fn spend_item(
        &self,
        user_id: &str,
        amount: u64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        let spec = crate::datamap::spec_of(Kind::MonthlySpend);
        let sk = spend_sk(now);
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), &sk)))
                    .update_expression(
                        "SET kind = :kind, retention = :ret, exp_pk = :epk, exp_at = :eat ADD spent :a",
                    )
                    .expression_attribute_values(":kind", s(spec.kind))
                    .expression_attribute_values(":ret", s(spec.retention.as_str()))
                    .expression_attribute_values(":epk", s(keys::exp_pk(&format!("{user_id}{sk}"))))
                    .expression_attribute_values(":eat", n((now + Duration::days(62)).timestamp()))
                    .expression_attribute_values(":a", n(amount))
                    .build()?,
            )
            .build())
    }

    /// What the user paid this month.
    pub async fn spent_this_month(&self, user_id: &str, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), spend_sk(now))))
            .consistent_read(true)
            .send()
            .await
            .context("reading the month's spend")?;
        Ok(out
            .item()
            .and_then(|i| super::item::opt_n(i, "spent"))
            .unwrap_or(0))
    }

    pub async fn customer(&self, user_id: &str) -> anyhow::Result<CustomerRecord> {
        Ok(self
            .get_record(&user_pk(user_id), STRIPE_CUSTOMER, "a Stripe customer")
            .await?
            .unwrap_or_default())
    }

    /// The customer item's update, with the account check, in one transaction; `None` if the
    /// account is gone (nothing is written after its erasure), `Some(false)` if the update's
    /// condition did not hold.
    async fn update_customer(&self, user_id: &str, update: Update) -> anyhow::Result<Option<bool>> {
        let items = vec![
            self.account_active(user_id)?,
            TransactWriteItem::builder().update(update).build(),
        ];
        let outcome = transact(self.client().await, "stripe customer", items).await?;
        Ok(match outcome {
            TxnOutcome::Committed => Some(true),
            _ if outcome.failed_at(0) => None,
            TxnOutcome::ConditionFailed(_) => Some(false),
        })
    }

    fn customer_key_update(
        &self,
        user_id: &str,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let spec = crate::datamap::spec_of(Kind::StripeCustomer);
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), STRIPE_CUSTOMER)))
            .expression_attribute_values(":kind", s(spec.kind))
            .expression_attribute_values(":ret", s(spec.retention.as_str()))
    }

    /// Stores the user's customer id unless one is stored; returns the stored one (`None`: the
    /// account is gone).
    pub async fn keep_customer(
        &self,
        user_id: &str,
        customer_id: &str,
    ) -> anyhow::Result<Option<String>> {
        let update = self
            .customer_key_update(user_id)
            .update_expression("SET kind = :kind, retention = :ret, customer_id = :c")
            .condition_expression("attribute_not_exists(customer_id)")
            .expression_attribute_values(":c", s(customer_id))
            .build()?;
        match self.update_customer(user_id, update).await? {
            None => Ok(None),
            Some(true) => Ok(Some(customer_id.to_string())),
            Some(false) => Ok(self.customer(user_id).await?.customer_id),
        }
    }

    /// Sets (or, with `None`, removes) the monthly spend cap; `false` if the account is gone.
    pub async fn set_spend_cap(&self, user_id: &str, cap: Option<u64>) -> anyhow::Result<bool> {
        let update = self.customer_key_update(user_id);
        let update = match cap {
            Some(c) => update
                .update_expression("SET kind = :kind, retention = :ret, spend_cap = :cap")
                .expression_attribute_values(":cap", n(c)),
            None => update.update_expression("SET kind = :kind, retention = :ret REMOVE spend_cap"),
        };
        Ok(self
            .update_customer(user_id, update.build()?)
            .await?
            .is_some())
    }

    /// An open checkout's item (`PENDING#<id>`): its amount counts against the spend cap until
    /// it is paid or `expires` (the sweep deletes it then).
    fn pending_item(
        &self,
        user_id: &str,
        id: &str,
        amount: u64,
        plan: bool,
        expires: DateTime<Utc>,
    ) -> Item {
        let sk = format!("{PENDING}{id}");
        let mut item = new_item(Kind::PendingCheckout, user_pk(user_id), &sk);
        item.insert("amount".into(), n(amount));
        item.insert("plan".into(), AttributeValue::Bool(plan));
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(id)));
        item.insert(keys::EXP_AT.into(), n(expires.timestamp()));
        item
    }

    /// Reserves a checkout's amount before its session exists (`PENDING#res-<reservation>`),
    /// in one transaction with moving the customer's `checkout_seq` on from `seen`, the value
    /// read with the cap and the open checkouts: two checkouts deciding on the same reads
    /// cannot both reserve. `Some(false)`: another checkout reserved meanwhile (read again);
    /// `None`: the account is gone.
    pub async fn reserve_checkout(
        &self,
        user_id: &str,
        seen: u64,
        reservation: &str,
        amount: u64,
        plan: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<bool>> {
        let update = self
            .customer_key_update(user_id)
            .update_expression("SET kind = :kind, retention = :ret, checkout_seq = :next")
            .condition_expression(if seen == 0 {
                "attribute_not_exists(checkout_seq) OR checkout_seq = :seen"
            } else {
                "checkout_seq = :seen"
            })
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":next", n(seen + 1))
            .build()?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.pending_item(
                user_id,
                &format!("res-{reservation}"),
                amount,
                plan,
                // Past the billing function's timeout: a reservation whose checkout died stops
                // counting soon (a plan's would otherwise block plans).
                now + RESERVATION_LASTS,
            )))
            .build()?;
        let items = vec![
            self.account_active(user_id)?,
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        let outcome = transact(self.client().await, "reserve checkout", items).await?;
        Ok(match outcome {
            TxnOutcome::Committed => Some(true),
            _ if outcome.failed_at(0) => None,
            TxnOutcome::ConditionFailed(_) => Some(false),
        })
    }

    /// The session exists: its open checkout replaces the reservation, in one transaction that
    /// also moves `checkout_seq` on (a checkout that read the open checkouts while this one
    /// replaced its reservation may have seen neither, and must not reserve on those reads).
    pub async fn confirm_checkout(
        &self,
        user_id: &str,
        reservation: &str,
        session_id: &str,
        amount: u64,
        plan: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(
                // Stripe's sessions expire after 24 hours.
                self.pending_item(user_id, session_id, amount, plan, now + Duration::hours(24)),
            ))
            .build()?;
        let seq = self
            .customer_key_update(user_id)
            .update_expression("SET kind = :kind, retention = :ret ADD checkout_seq :one")
            .expression_attribute_values(":one", n(1))
            .build()?;
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                user_pk(user_id),
                format!("{PENDING}res-{reservation}"),
            )))
            .build()?;
        let items = vec![
            self.account_active(user_id)?,
            TransactWriteItem::builder().update(seq).build(),
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().delete(delete).build(),
        ];
        match transact(self.client().await, "open checkout", items).await? {
            TxnOutcome::Committed => Ok(()),
            // Erased meanwhile: nothing is written after an erasure.
            TxnOutcome::ConditionFailed(_) => anyhow::bail!("the account is gone"),
        }
    }

    /// No session came of a reservation: it no longer counts.
    pub async fn release_reservation(
        &self,
        user_id: &str,
        reservation: &str,
    ) -> anyhow::Result<()> {
        self.remove_pending_checkout(user_id, &format!("res-{reservation}"))
            .await
    }

    /// Open Checkout Sessions not yet expired: (amount, is a plan).
    pub async fn pending_checkouts(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<(u64, bool)>> {
        Ok(self
            .query_all(&user_pk(user_id), Some(PENDING), None, "open checkouts")
            .await?
            .iter()
            .filter(|i| {
                super::item::opt_n::<i64>(i, keys::EXP_AT).is_some_and(|t| t > now.timestamp())
            })
            .map(|i| {
                (
                    super::item::opt_n(i, "amount").unwrap_or(0),
                    matches!(i.get("plan"), Some(AttributeValue::Bool(true))),
                )
            })
            .collect())
    }

    /// A session was paid or expired: it no longer counts.
    pub async fn remove_pending_checkout(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> anyhow::Result<()> {
        self.client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                user_pk(user_id),
                format!("{PENDING}{session_id}"),
            )))
            .send()
            .await
            .context("removing an open checkout")?;
        Ok(())
    }

    /// The payments of a user, found through the references in the user's partition.
    pub async fn payments_of(&self, user_id: &str) -> anyhow::Result<Vec<Payment>> {
        let refs = self
            .query_all(
                &user_pk(user_id),
                Some(&format!("{}PAYMENT#", keys::REF_PREFIX)),
                None,
                "a user's payments",
            )
            .await?;
        let mut payments = Vec::new();
        for r in refs {
            if let Some(pk) = r.get("ref_pk").and_then(|v| v.as_s().ok()) {
                if let Some(p) = self.get_record(pk, PAYMENT, "a payment").await? {
                    payments.push(p);
                }
            }
        }
        Ok(payments)
    }

    pub async fn get_payment(&self, payment_intent: &str) -> anyhow::Result<Option<Payment>> {
        self.get_record(&payment_pk(payment_intent), PAYMENT, "a payment")
            .await
    }

    /// Moves a payment to `next` (same payment, a later version) and books the change of its
    /// reversal, with the event's marker, in one transaction guarded by the stored version.
    /// `false` if another change got there first (read again and retry).
    ///
    /// Without `book` (the account is gone), only the payment's state changes.
    pub async fn apply_reversal(
        &self,
        event_id: &str,
        event_type: &str,
        current: &Payment,
        next: &Payment,
        book: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let delta = next.reversed as i64 - current.reversed as i64;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(payment_pk(&current.payment_intent), PAYMENT)))
            .update_expression(
                "SET refunded = :refunded, refund_ts = :rts, amount = :amount, dispute = :dispute, \
                 reversed = :reversed, version = :next",
            )
            .condition_expression("version = :version")
            .expression_attribute_values(":refunded", n(next.refunded))
            .expression_attribute_values(":rts", n(next.refund_ts))
            .expression_attribute_values(":amount", n(next.amount))
            .expression_attribute_values(":dispute", s(&next.dispute))
            .expression_attribute_values(":reversed", n(next.reversed))
            .expression_attribute_values(":next", n(next.version))
            .expression_attribute_values(":version", n(current.version))
            .build()?;
        let mut items = vec![
            self.event_marker(event_id, event_type, now)?,
            TransactWriteItem::builder().update(update).build(),
        ];
        if delta != 0 && book {
            items.push(self.ledger_put(
                &current.user_id,
                &Cause::PaymentReversal {
                    payment_intent: current.payment_intent.clone(),
                    version: next.version,
                },
                -delta,
                now,
            )?);
            items.push(self.balance_change(&current.user_id, -delta)?);
        }
        Ok(matches!(
            transact(self.client().await, "stripe reversal", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Stores the subscription's state if it is newer than the stored one: by Stripe's event
    /// time, ties broken by how far along the status is; a canceled subscription stays
    /// canceled, and the cancellation of another (older) subscription never replaces the
    /// current one's state.
    pub async fn set_subscription(
        &self,
        user_id: &str,
        state: &SubscriptionState,
    ) -> anyhow::Result<StateOutcome> {
        let spec = crate::datamap::spec_of(Kind::Subscription);
        let null = || AttributeValue::Null(true);
        let condition = if state.status == "canceled" {
            "attribute_not_exists(pk) OR (subscription_id = :sid AND #st <> :canceled \
             AND (stripe_updated < :ts OR (stripe_updated = :ts AND status_rank <= :rank)))"
        } else {
            "attribute_not_exists(pk) OR (subscription_id <> :sid AND stripe_updated <= :ts) \
             OR (subscription_id = :sid AND #st <> :canceled \
             AND (stripe_updated < :ts OR (stripe_updated = :ts AND status_rank <= :rank)))"
        };
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), SUBSCRIPTION)))
            .update_expression(
                "SET kind = :kind, retention = :ret, subscription_id = :sid, #st = :status, \
                 status_rank = :rank, stripe_updated = :ts, customer_id = :cus, #plan = :plan, \
                 current_period_end = :end",
            )
            .condition_expression(condition)
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#plan", "plan")
            .expression_attribute_values(":kind", s(spec.kind))
            .expression_attribute_values(":ret", s(spec.retention.as_str()))
            .expression_attribute_values(":sid", s(&state.subscription_id))
            .expression_attribute_values(":status", s(&state.status))
            .expression_attribute_values(":rank", n(status_rank(&state.status)))
            .expression_attribute_values(":ts", n(state.stripe_updated))
            .expression_attribute_values(":canceled", s("canceled"))
            .expression_attribute_values(
                ":cus",
                state.customer_id.as_deref().map(s).unwrap_or_else(null),
            )
            .expression_attribute_values(":plan", state.plan.as_deref().map(s).unwrap_or_else(null))
            .expression_attribute_values(
                ":end",
                state.current_period_end.map(n).unwrap_or_else(null),
            )
            .build()?;
        let items = vec![
            self.account_active(user_id)?,
            TransactWriteItem::builder().update(update).build(),
        ];
        let outcome = transact(self.client().await, "stripe subscription", items).await?;
        Ok(match outcome {
            TxnOutcome::Committed => StateOutcome::Stored,
            _ if outcome.failed_at(0) => StateOutcome::AccountGone,
            TxnOutcome::ConditionFailed(_) => StateOutcome::Stale,
        })
    }

    pub async fn subscription(&self, user_id: &str) -> anyhow::Result<Option<SubscriptionState>> {
        self.get_record(&user_pk(user_id), SUBSCRIPTION, "a subscription")
            .await
    }
}
