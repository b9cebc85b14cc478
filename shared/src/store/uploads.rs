//! Reference uploads (C4, R2): one item per upload in the owner's partition, stamped with its
//! deletion time (`EXP#`): 24 hours after its last use by a generation (or after its creation
//! while unused), never later than the content retention (R1). Deleting one hides it and commits
//! its deletion record in one transaction, like every other deletion.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, upload_sk, user_pk};
use super::txn::{transact, TxnOutcome};
use super::{applied, DeletionRecord, Store};
use crate::datamap::{new_item, Kind};

/// Where an upload is in its life.
pub const PENDING: &str = "pending";
pub const READY: &str = "ready";
pub const REJECTED: &str = "rejected";

/// An upload as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    pub user_id: String,
    /// `pending` (waiting for the file), `ready` (checked and re-encoded) or `rejected`.
    pub status: String,
    pub content_type: String,
    pub declared_size: u64,
    pub created_at: String,
    /// The upload form stops working then.
    pub upload_expires_at: String,
    /// When it is deleted (R2), as stamped in `exp_at`.
    pub delete_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Size of the re-encoded reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// A generation's use of a reference: its new deletion time.
#[derive(Debug, Clone)]
pub struct ReferenceUse {
    pub upload_id: String,
    pub delete_at: DateTime<Utc>,
}

/// The outcome of checking an upload.
pub enum Settled {
    Ready { width: u32, height: u32, bytes: u64 },
    Rejected(String),
}

impl Store {
    pub async fn put_upload(&self, record: &UploadRecord) -> anyhow::Result<()> {
        let delete_at = DateTime::parse_from_rfc3339(&record.delete_at)?.timestamp();
        let mut item = new_item(
            Kind::Upload,
            user_pk(&record.user_id),
            upload_sk(&record.id),
        );
        item.extend(serde_dynamo::to_item::<_, Item>(record)?);
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(&record.id)));
        item.insert(keys::EXP_AT.into(), n(delete_at));
        self.client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await?;
        Ok(())
    }

    /// An upload, deleted ones included (`deleted_at` tells).
    pub async fn get_upload(
        &self,
        user_id: &str,
        id: &str,
    ) -> anyhow::Result<Option<UploadRecord>> {
        self.get_record(&user_pk(user_id), &upload_sk(id), "an upload")
            .await
    }

    /// Records the check of a pending upload; `false` if it is not pending any more (checked
    /// by a concurrent request, or deleted).
    pub async fn settle_upload(
        &self,
        user_id: &str,
        id: &str,
        outcome: &Settled,
    ) -> anyhow::Result<bool> {
        let req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), upload_sk(id))))
            .condition_expression("#st = :pending AND attribute_not_exists(deleted_at)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s(PENDING));
        let req = match outcome {
            Settled::Ready {
                width,
                height,
                bytes,
            } => req
                .update_expression("SET #st = :ready, width = :w, height = :h, bytes = :b")
                .expression_attribute_values(":ready", s(READY))
                .expression_attribute_values(":w", n(width))
                .expression_attribute_values(":h", n(height))
                .expression_attribute_values(":b", n(bytes)),
            Settled::Rejected(reason) => req
                .update_expression("SET #st = :rejected, reason = :r")
                .expression_attribute_values(":rejected", s(REJECTED))
                .expression_attribute_values(":r", s(reason)),
        };
        applied(req.send().await, "settling an upload")
    }

    /// The transaction item of a generation's use: the upload must be ready and not deleted.
    pub(crate) fn reference_use_item(
        &self,
        user_id: &str,
        r: &ReferenceUse,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), upload_sk(&r.upload_id))))
                    .update_expression("SET last_used_at = :now, delete_at = :del, exp_at = :exp")
                    .condition_expression("#st = :ready AND attribute_not_exists(deleted_at)")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":ready", s(READY))
                    .expression_attribute_values(":now", s(now.to_rfc3339()))
                    .expression_attribute_values(":del", s(r.delete_at.to_rfc3339()))
                    .expression_attribute_values(":exp", n(r.delete_at.timestamp()))
                    .build()?,
            )
            .build())
    }

    /// Hides an upload and commits its deletion record (its item and objects) in one
    /// transaction. `due_by` guards an expiry: only if its deletion time has come. `None` if
    /// there is no such visible upload (or it is not due).
    pub async fn hide_upload(
        &self,
        user_id: &str,
        id: &str,
        reason: &str,
        due_by: Option<DateTime<Utc>>,
        form_expires: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeletionRecord>> {
        let record = DeletionRecord::upload(user_id, id, reason, form_expires, now);
        let mut hide = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), upload_sk(id))))
            .update_expression("SET deleted_at = :now REMOVE exp_pk, exp_at")
            .expression_attribute_values(":now", s(now.to_rfc3339()));
        hide = match due_by {
            Some(at) => hide
                .condition_expression("attribute_not_exists(deleted_at) AND exp_at <= :due")
                .expression_attribute_values(":due", n(at.timestamp())),
            None => hide
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(deleted_at)"),
        };
        let mut items = vec![TransactWriteItem::builder().update(hide.build()?).build()];
        items.extend(self.deletion_record_put(&record, now)?);
        Ok(
            match transact(self.client().await, "delete upload", items).await? {
                TxnOutcome::Committed => Some(record),
                TxnOutcome::ConditionFailed(_) => None,
            },
        )
    }
}
