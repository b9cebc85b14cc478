//! Stripe's effects on the ledger (C2, U2, U5): grants keyed by their Stripe cause, payment
//! reversals (refunds and disputes, netted) and the subscription's latest state. Each change is
//! one conditional transaction with the balance and the event's marker, so a cause books at most
//! once and a redelivered event changes nothing.

use anyhow::Context;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::admin::Mentions;
use super::item::{key, n, s, Item};
use super::keys::{self, user_pk};
use super::txn::{transact, TxnOutcome};
use super::{applied, Store};
use crate::datamap::{new_item, Kind};
use crate::domain::credits::Cause;

/// How long an applied event's id is kept (Stripe retries for up to three days).
pub const EVENT_MARKER_DAYS: i64 = 30;

pub const SUBSCRIPTION: &str = "SUBSCRIPTION";
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
}

fn no_dispute() -> String {
    "none".into()
}

impl Payment {
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

pub enum Applied {
    Done,
    /// Already applied (this event, or another with the same cause).
    Duplicate,
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
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(event_pk(event_id), EVENT)))
            .consistent_read(true)
            .send()
            .await
            .context("reading an event marker")?;
        Ok(out.item().is_some())
    }

    /// Books a grant once: the event's marker, the ledger entry keyed by its cause, the balance
    /// and the payment's record, all or nothing.
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
        ];
        if let Some(p) = &grant.payment {
            let pk = payment_pk(&p.payment_intent);
            let mut item = new_item(Kind::Payment, &pk, PAYMENT);
            item.extend(serde_dynamo::to_item::<_, Item>(p)?);
            item.insert(keys::EXP_PK.into(), s(keys::exp_pk(&p.payment_intent)));
            item.insert(keys::EXP_AT.into(), n(keep_until.timestamp()));
            items.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .condition_expression("attribute_not_exists(pk)")
                            .build()?,
                    )
                    .build(),
            );
            items.extend(self.references(
                &pk,
                PAYMENT,
                &Mentions(vec![("user_id", grant.user_id)]),
            )?);
        }
        Ok(match transact(&self.client, "stripe grant", items).await? {
            TxnOutcome::Committed => Applied::Done,
            TxnOutcome::ConditionFailed(_) => Applied::Duplicate,
        })
    }

    pub async fn get_payment(&self, payment_intent: &str) -> anyhow::Result<Option<Payment>> {
        self.get_record(&payment_pk(payment_intent), PAYMENT, "a payment")
            .await
    }

    /// Moves a payment to `next` (same payment, a later version) and books the change of its
    /// reversal, with the event's marker, in one transaction guarded by the stored version.
    /// `false` if another change got there first (read again and retry).
    pub async fn apply_reversal(
        &self,
        event_id: &str,
        event_type: &str,
        current: &Payment,
        next: &Payment,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let delta = next.reversed as i64 - current.reversed as i64;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(payment_pk(&current.payment_intent), PAYMENT)))
            .update_expression(
                "SET refunded = :refunded, dispute = :dispute, reversed = :reversed, version = :next",
            )
            .condition_expression("version = :version")
            .expression_attribute_values(":refunded", n(next.refunded))
            .expression_attribute_values(":dispute", s(&next.dispute))
            .expression_attribute_values(":reversed", n(next.reversed))
            .expression_attribute_values(":next", n(next.version))
            .expression_attribute_values(":version", n(current.version))
            .build()?;
        let mut items = vec![
            self.event_marker(event_id, event_type, now)?,
            TransactWriteItem::builder().update(update).build(),
        ];
        if delta != 0 {
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
            transact(&self.client, "stripe reversal", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Stores the subscription's state if it is newer than the stored one (by Stripe's event
    /// time; a canceled subscription stays canceled). `false` if the stored state is newer.
    pub async fn set_subscription(
        &self,
        user_id: &str,
        state: &SubscriptionState,
    ) -> anyhow::Result<bool> {
        let spec = crate::datamap::spec_of(Kind::Subscription);
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), SUBSCRIPTION)))
            .update_expression(
                "SET kind = :kind, retention = :ret, subscription_id = :sid, #st = :status, \
                 stripe_updated = :ts, customer_id = :cus, #plan = :plan, current_period_end = :end",
            )
            .condition_expression(
                "attribute_not_exists(pk) OR (stripe_updated <= :ts \
                 AND NOT (subscription_id = :sid AND #st = :canceled))",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#plan", "plan")
            .expression_attribute_values(":kind", s(spec.kind))
            .expression_attribute_values(":ret", s(spec.retention.as_str()))
            .expression_attribute_values(":sid", s(&state.subscription_id))
            .expression_attribute_values(":status", s(&state.status))
            .expression_attribute_values(":ts", n(state.stripe_updated))
            .expression_attribute_values(":canceled", s("canceled"));
        req = req
            .expression_attribute_values(
                ":cus",
                state
                    .customer_id
                    .as_deref()
                    .map(s)
                    .unwrap_or(aws_sdk_dynamodb::types::AttributeValue::Null(true)),
            )
            .expression_attribute_values(
                ":plan",
                state
                    .plan
                    .as_deref()
                    .map(s)
                    .unwrap_or(aws_sdk_dynamodb::types::AttributeValue::Null(true)),
            )
            .expression_attribute_values(
                ":end",
                state
                    .current_period_end
                    .map(n)
                    .unwrap_or(aws_sdk_dynamodb::types::AttributeValue::Null(true)),
            );
        applied(req.send().await, "storing a subscription")
    }

    pub async fn subscription(&self, user_id: &str) -> anyhow::Result<Option<SubscriptionState>> {
        self.get_record(&user_pk(user_id), SUBSCRIPTION, "a subscription")
            .await
    }
}
