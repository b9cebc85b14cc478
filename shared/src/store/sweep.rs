//! What the retention sweep reads and deletes: items due by deletion time (`by-expiry`) and
//! jobs past their queue deadline or lease (`by-lease`), each found by a key-ordered query.

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::accounts::is_conditional_failure;
use super::item::{get_s, key, n};
use super::keys;
use super::Store;

/// The key of an item found through an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    pub pk: String,
    pub sk: String,
}

impl Store {
    async fn due(
        &self,
        index: &str,
        pk_attr: &str,
        sort_attr: &str,
        partitions: impl Iterator<Item = String>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<DueItem>> {
        let mut due = Vec::new();
        for partition in partitions {
            let mut start = None;
            loop {
                let out = self
                    .client()
                    .await
                    .query()
                    .table_name(&self.table)
                    .index_name(index)
                    .key_condition_expression("#p = :p AND #s <= :now")
                    .expression_attribute_names("#p", pk_attr)
                    .expression_attribute_names("#s", sort_attr)
                    .expression_attribute_values(":p", AttributeValue::S(partition.clone()))
                    .expression_attribute_values(":now", n(now.timestamp()))
                    .limit(i32::try_from(limit - due.len()).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .with_context(|| format!("querying {index}"))?;
                for item in out.items() {
                    due.push(DueItem {
                        pk: get_s(item, keys::PK)?.to_string(),
                        sk: get_s(item, keys::SK)?.to_string(),
                    });
                }
                start = out.last_evaluated_key().cloned();
                if start.is_none() || due.len() >= limit {
                    break;
                }
            }
            if due.len() >= limit {
                break;
            }
        }
        Ok(due)
    }

    /// Keys of the items of one `by-expiry` family (`EXP#`, `CONTENT#`, `DEL#`) whose sort
    /// key is at most `until`, oldest first within each shard.
    pub async fn due_in(
        &self,
        family: &'static str,
        until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<DueItem>> {
        self.due(
            keys::EXPIRY_INDEX,
            keys::EXP_PK,
            keys::EXP_AT,
            keys::all_shards(family),
            until,
            limit,
        )
        .await
    }

    /// Jobs queued past their deadline or running past their lease.
    pub async fn stale_jobs(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<DueItem>> {
        self.due(
            keys::LEASE_INDEX,
            keys::LEASE_PK,
            keys::LEASE_UNTIL,
            keys::all_lease_pks(),
            now,
            limit,
        )
        .await
    }

    /// Moves a stamped item's deletion time (`exp_at`, and the `delete_at` shown to its owner)
    /// to `until`: an item kept by a hold.
    pub async fn postpone(&self, item: &DueItem, until: DateTime<Utc>) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&item.pk, &item.sk)))
            .update_expression("SET exp_at = :until, delete_at = :at")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":until", n(until.timestamp()))
            .expression_attribute_values(":at", super::item::s(until.to_rfc3339()))
            .send()
            .await;
        super::applied(result, "postponing a held item")?;
        Ok(())
    }

    /// Deletes an item stamped with a deletion time if that time has come (the index may lag
    /// the table).
    pub async fn delete_if_due(&self, item: &DueItem, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let result = self
            .client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&item.pk, &item.sk)))
            .condition_expression("exp_at <= :now")
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(anyhow::anyhow!(e).context("deleting an expired item")),
        }
    }
}
