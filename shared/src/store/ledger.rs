//! The credits ledger: a balance item plus append-only entries keyed by cause. Every change is
//! part of one conditional transaction, so the balance never goes negative and a cause changes
//! it at most once; the sum of a user's entries equals the balance.

use anyhow::Context;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::item::{get_n, get_s, n, opt_n, s};
use super::keys::{ledger_sk, user_pk, LEDGER_PREFIX};
use super::Store;
use crate::datamap::{new_item, spec_of, Kind};
use crate::domain::credits::{Cause, EntryKind, LedgerEntry};

impl Store {
    /// Adds to the balance (creating it at zero if absent).
    pub(super) fn balance_add(
        &self,
        user_id: &str,
        amount: u64,
    ) -> anyhow::Result<TransactWriteItem> {
        self.balance_change(user_id, amount as i64)
    }

    /// Changes the balance by `amount` with no floor: a clawback may take it below zero
    /// (generation then answers 402 until it is topped up).
    pub(super) fn balance_change(
        &self,
        user_id: &str,
        amount: i64,
    ) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(Self::credits_key(user_id)))
                    .update_expression("ADD balance :a SET kind = :k, retention = :r")
                    .expression_attribute_values(":a", n(amount))
                    .expression_attribute_values(":k", s(spec_of(Kind::Balance).kind))
                    .expression_attribute_values(":r", s(spec_of(Kind::Balance).retention.as_str()))
                    .build()?,
            )
            .build())
    }

    /// Subtracts from the balance only if it stays non-negative.
    pub(super) fn balance_debit(
        &self,
        user_id: &str,
        amount: u64,
    ) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(Self::credits_key(user_id)))
                    .update_expression("SET balance = balance - :a")
                    .condition_expression("attribute_exists(balance) AND balance >= :a")
                    .expression_attribute_values(":a", n(amount))
                    .build()?,
            )
            .build())
    }

    /// Appends the entry for `cause`; fails its condition if that cause was already booked.
    pub(super) fn ledger_put(
        &self,
        user_id: &str,
        cause: &Cause,
        amount: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut item = new_item(Kind::LedgerEntry, user_pk(user_id), ledger_sk(&cause.key()));
        item.insert("entry_kind".into(), s(cause.kind().as_str()));
        item.insert("cause".into(), s(cause.key()));
        item.insert("amount".into(), n(amount));
        item.insert("created_at".into(), s(now.to_rfc3339()));
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

    /// The balance and whether it is marked low (an unmarked balance is not), in one read.
    pub async fn balance_state(&self, user_id: &str) -> anyhow::Result<(Option<i64>, bool)> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::credits_key(user_id)))
            .consistent_read(true)
            .send()
            .await
            .context("reading balance")?;
        let item = out.item();
        let marked = item
            .and_then(|i| i.get("low_balance"))
            .is_some_and(|v| matches!(v, aws_sdk_dynamodb::types::AttributeValue::Bool(true)));
        Ok((item.and_then(|i| opt_n(i, "balance")), marked))
    }

    /// Sets the low-balance mark to `low`; `false` if it already was (another request won), so
    /// a crossing is announced once.
    pub async fn mark_low_balance(&self, user_id: &str, low: bool) -> anyhow::Result<bool> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::credits_key(user_id)))
            .update_expression("SET low_balance = :low")
            // A missing mark counts as "not low".
            .condition_expression("attribute_exists(pk) AND NOT (low_balance = :low)")
            .expression_attribute_values(":low", aws_sdk_dynamodb::types::AttributeValue::Bool(low))
            .send()
            .await;
        super::applied(result, "marking the balance")
    }

    /// The current balance (negative after a clawback of spent credits); `None` before
    /// onboarding.
    pub async fn balance(&self, user_id: &str) -> anyhow::Result<Option<i64>> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::credits_key(user_id)))
            .consistent_read(true)
            .send()
            .await
            .context("reading balance")?;
        Ok(out.item().and_then(|i| opt_n(i, "balance")))
    }

    /// Every ledger entry of the user.
    pub async fn ledger_entries(&self, user_id: &str) -> anyhow::Result<Vec<LedgerEntry>> {
        self.ledger_entries_in(&user_pk(user_id)).await
    }

    /// The billing records kept under a deleted account's anonymous id (R4).
    pub async fn anonymous_ledger_entries(
        &self,
        anonymous_id: &str,
    ) -> anyhow::Result<Vec<LedgerEntry>> {
        self.ledger_entries_in(&super::keys::anon_pk(anonymous_id))
            .await
    }

    async fn ledger_entries_in(&self, pk: &str) -> anyhow::Result<Vec<LedgerEntry>> {
        let mut entries = self
            .query_all(pk, Some(LEDGER_PREFIX), None, "ledger")
            .await?
            .iter()
            .map(|item| {
                Ok(LedgerEntry {
                    cause: get_s(item, "cause")?.to_string(),
                    kind: match get_s(item, "entry_kind")? {
                        "grant" => EntryKind::Grant,
                        "debit" => EntryKind::Debit,
                        "reversal" => EntryKind::Reversal,
                        _ => EntryKind::Refund,
                    },
                    amount: get_n(item, "amount")?,
                    created_at: get_s(item, "created_at")?.to_string(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        entries.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(entries)
    }
}
