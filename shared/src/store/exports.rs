//! Exports (D4, R7): one item per export in the owner's partition, stamped with its deletion
//! time (7 days from creation), and a lock item so one export is built at a time.

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, export_sk, user_pk, EXPORT_ACTIVE, EXPORT_PREFIX};
use super::txn::{transact, TxnOutcome};
use super::{applied, DeletionRecord, Store};
use crate::datamap::{new_item, Kind};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRecord {
    pub id: String,
    pub user_id: String,
    /// `queued`, `running`, `ready` or `failed`.
    pub status: String,
    pub created_at: String,
    pub delete_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// What became of a request for a new export.
pub enum Started {
    Created,
    /// Another export of the user is being built.
    InProgress,
    Inactive,
}

impl Store {
    /// Creates the export and takes the user's export lock (free, or its lease run out) in one
    /// transaction, while the account is active.
    pub async fn start_export(
        &self,
        record: &ExportRecord,
        lock_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Started> {
        let delete_at = DateTime::parse_from_rfc3339(&record.delete_at)?.timestamp();
        let mut item = new_item(
            Kind::Export,
            user_pk(&record.user_id),
            export_sk(&record.id),
        );
        item.extend(serde_dynamo::to_item::<_, Item>(record)?);
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(&record.id)));
        item.insert(keys::EXP_AT.into(), n(delete_at));
        let mut lock = new_item(Kind::ExportLock, user_pk(&record.user_id), EXPORT_ACTIVE);
        lock.insert("export_id".into(), s(&record.id));
        lock.insert("until".into(), n(lock_until.timestamp()));
        let items = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(lock))
                        .condition_expression("attribute_not_exists(pk) OR #u < :now")
                        .expression_attribute_names("#u", "until")
                        .expression_attribute_values(":now", n(now.timestamp()))
                        .build()?,
                )
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()?,
                )
                .build(),
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(&record.user_id), keys::PROFILE)))
                        .condition_expression(
                            "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                        )
                        .build()?,
                )
                .build(),
        ];
        Ok(
            match transact(self.client().await, "start export", items).await? {
                TxnOutcome::Committed => Started::Created,
                o if o.failed_at(0) => Started::InProgress,
                _ => Started::Inactive,
            },
        )
    }

    pub async fn get_export(
        &self,
        user_id: &str,
        id: &str,
    ) -> anyhow::Result<Option<ExportRecord>> {
        self.get_record(&user_pk(user_id), &export_sk(id), "an export")
            .await
    }

    /// The user's exports, newest first (hidden ones left out).
    pub async fn list_exports(&self, user_id: &str) -> anyhow::Result<Vec<ExportRecord>> {
        let mut all: Vec<ExportRecord> = self
            .query_all(&user_pk(user_id), Some(EXPORT_PREFIX), None, "exports")
            .await?
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<_>>()?;
        all.retain(|e| e.deleted_at.is_none());
        all.reverse();
        Ok(all)
    }

    /// Moves an export from `from` to `to` with the given fields; `false` if it was not in
    /// `from` (built by another delivery, failed, or deleted).
    pub async fn set_export_status(
        &self,
        user_id: &str,
        id: &str,
        from: &[&str],
        to: &str,
        fields: &[(&str, aws_sdk_dynamodb::types::AttributeValue)],
    ) -> anyhow::Result<bool> {
        let mut expr = "SET #st = :to".to_string();
        let mut req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), export_sk(id))))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(to));
        let mut allowed = vec![];
        for (i, f) in from.iter().enumerate() {
            let name = format!(":from{i}");
            allowed.push(format!("#st = {name}"));
            req = req.expression_attribute_values(name, s(*f));
        }
        for (i, (name, value)) in fields.iter().enumerate() {
            // Names through placeholders (`size` is a reserved word).
            expr.push_str(&format!(", #f{i} = :f{i}"));
            req = req
                .expression_attribute_names(format!("#f{i}"), *name)
                .expression_attribute_values(format!(":f{i}"), value.clone());
        }
        let req = req.update_expression(expr).condition_expression(format!(
            "attribute_not_exists(deleted_at) AND ({})",
            allowed.join(" OR ")
        ));
        applied(req.send().await, "updating an export")
    }

    /// Releases the user's export lock if `export_id` holds it.
    pub async fn release_export_lock(&self, user_id: &str, export_id: &str) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), EXPORT_ACTIVE)))
            .condition_expression("export_id = :id")
            .expression_attribute_values(":id", s(export_id))
            .send()
            .await;
        applied(result, "releasing the export lock")?;
        Ok(())
    }

    /// Hides an export and commits its deletion record, if its time has come (R7).
    pub async fn hide_export(
        &self,
        user_id: &str,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeletionRecord>> {
        let record = DeletionRecord::export(user_id, id, reason, now);
        let hide = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), export_sk(id))))
            .update_expression("SET deleted_at = :now REMOVE exp_pk, exp_at")
            .condition_expression("attribute_not_exists(deleted_at) AND exp_at <= :due")
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":due", n(now.timestamp()))
            .build()?;
        let mut items = vec![TransactWriteItem::builder().update(hide).build()];
        items.extend(self.deletion_record_put(&record, now)?);
        Ok(
            match transact(self.client().await, "delete export", items).await? {
                TxnOutcome::Committed => Some(record),
                TxnOutcome::ConditionFailed(_) => None,
            },
        )
    }
}
