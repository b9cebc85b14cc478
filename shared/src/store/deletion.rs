//! Deletion records: whatever deletes content commits, in the transaction that hides it from the
//! API, a record naming what remains to be removed (items, object prefixes, an account to
//! erase). The sweep works off due records first in every run and removes a record only when
//! everything it names is gone, so a crash, an S3 error or a timeout at any step leaves work for
//! the next run, never an orphan.

use anyhow::Context;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, deletion_pk, gen_sk, idem_sk, user_pk, RECORD};
use super::{applied, Store};
use crate::datamap::{new_item, Kind};
use crate::domain::generation::Job;
use crate::objects::generation_prefix;

/// A deleted job's worker may still be writing until its invocation ends (the `generate`
/// function's timeout is 300 s, its lease 600 s): the record removes the job's objects at once
/// and once more after this.
pub const RECHECK_AFTER_MINUTES: i64 = 15;

/// An item the record removes; `only_if_job` guards a record that a later job may have reused
/// (an idempotency key used again after expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRef {
    pub pk: String,
    pub sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if_job: Option<String>,
}

/// An account to erase: every item of its partition, every object under its prefix, its
/// billing records moved under `anonymous_id`, its identity-provider user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountErasure {
    /// The id the billing records are kept under.
    pub anonymous_id: String,
    /// Another id, for the subject's mentions in admin records (audit, reports), so their free
    /// text can never tie the billing records to the person.
    #[serde(default)]
    pub reference_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRecord {
    pub id: String,
    /// `user_request`, `expiry`, `account_deletion`, `child_report`, `lost_job`.
    pub reason: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    #[serde(default)]
    pub items: Vec<ItemRef>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountErasure>,
    /// Epoch seconds: after the work is done once, keep the record and do it again then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_at: Option<i64>,
    pub created_at: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn new_id(now: DateTime<Utc>) -> String {
    ulid::Ulid::from_datetime(now.into())
        .to_string()
        .to_lowercase()
}

impl DeletionRecord {
    fn base(reason: &str, user_id: &str, now: DateTime<Utc>) -> Self {
        Self {
            id: new_id(now),
            reason: reason.into(),
            user_id: user_id.into(),
            generation_id: None,
            items: vec![],
            prefixes: vec![],
            account: None,
            recheck_at: None,
            created_at: now.to_rfc3339(),
            attempts: 0,
            last_error: None,
        }
    }

    /// A generation's item, its idempotency record and its objects.
    pub fn generation(job: &Job, reason: &str, now: DateTime<Utc>) -> Self {
        let mut r = Self::base(reason, &job.user_id, now);
        r.generation_id = Some(job.id.clone());
        r.items.push(ItemRef {
            pk: user_pk(&job.user_id),
            sk: gen_sk(&job.id),
            only_if_job: None,
        });
        if let Some(k) = &job.idempotency_key {
            r.items.push(ItemRef {
                pk: user_pk(&job.user_id),
                sk: idem_sk(k),
                only_if_job: Some(job.id.clone()),
            });
        }
        r.prefixes.push(generation_prefix(&job.user_id, &job.id));
        // The public copies of its published images.
        r.prefixes.extend(
            job.images
                .iter()
                .filter_map(|i| i.shown.as_ref())
                .map(|s| s.prefix()),
        );
        // Only a running job has a worker that may still write (a queued one, once cancelled,
        // can no longer be claimed).
        if job.status == crate::domain::generation::JobStatus::Running {
            r.recheck_at = Some((now + Duration::minutes(RECHECK_AFTER_MINUTES)).timestamp());
        }
        r
    }

    /// The objects a worker stored (or may still store) for a job that failed or was lost.
    pub fn lost_job(user_id: &str, job_id: &str, now: DateTime<Utc>) -> Self {
        let mut r = Self::base("lost_job", user_id, now);
        r.generation_id = Some(job_id.into());
        r.prefixes.push(generation_prefix(user_id, job_id));
        r.recheck_at = Some((now + Duration::minutes(RECHECK_AFTER_MINUTES)).timestamp());
        r
    }

    /// A reference upload: its item and its objects (R2). A hold on its owner keeps it.
    ///
    /// While its upload form still works (`form_expires`), a client may send the file again:
    /// the record looks once more after that.
    pub fn upload(
        user_id: &str,
        upload_id: &str,
        reason: &str,
        form_expires: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut r = Self::base(reason, user_id, now);
        r.recheck_at = form_expires
            .filter(|at| *at > now)
            .map(|at| (at + Duration::minutes(1)).timestamp());
        r.items.push(ItemRef {
            pk: user_pk(user_id),
            sk: keys::upload_sk(upload_id),
            only_if_job: None,
        });
        r.prefixes
            .push(crate::objects::upload_prefix(user_id, upload_id));
        r
    }

    /// Objects of one generation no longer needed: one deleted image (its object and public
    /// copy), or a public copy no longer shown. The generation's hold keeps them.
    pub fn generation_objects(
        user_id: &str,
        job_id: &str,
        prefixes: Vec<String>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let mut r = Self::base(reason, user_id, now);
        r.generation_id = Some(job_id.into());
        r.prefixes = prefixes;
        r
    }

    /// An export: its item, its archive and the lock it may still hold (R7).
    pub fn export(user_id: &str, export_id: &str, reason: &str, now: DateTime<Utc>) -> Self {
        let mut r = Self::base(reason, user_id, now);
        r.items.push(ItemRef {
            pk: user_pk(user_id),
            sk: keys::export_sk(export_id),
            only_if_job: None,
        });
        r.prefixes
            .push(crate::objects::export_prefix(user_id, export_id));
        r
    }

    /// A whole account (R4).
    pub fn account(user_id: &str, reason: &str, anonymous_id: &str, now: DateTime<Utc>) -> Self {
        let mut r = Self::base(reason, user_id, now);
        r.prefixes.push(crate::objects::user_prefix(user_id));
        r.account = Some(AccountErasure {
            anonymous_id: anonymous_id.into(),
            reference_id: new_id(now),
        });
        r
    }
}

impl Store {
    fn deletion_item(&self, record: &DeletionRecord, due: DateTime<Utc>) -> anyhow::Result<Item> {
        let mut item = new_item(Kind::DeletionRecord, deletion_pk(&record.id), RECORD);
        item.extend(serde_dynamo::to_item::<_, Item>(record)?);
        item.insert(keys::EXP_PK.into(), s(keys::del_pk(&record.id)));
        item.insert(keys::EXP_AT.into(), n(due.timestamp()));
        Ok(item)
    }

    /// The pointer from the user's partition to a record (access finds their pending
    /// deletions there, with no scan of every record).
    fn pointer_item(&self, record: &DeletionRecord) -> Item {
        let mut item = new_item(
            Kind::DeletionPointer,
            user_pk(&record.user_id),
            keys::delref_sk(&record.id),
        );
        item.insert("ref_pk".into(), s(deletion_pk(&record.id)));
        item.insert("ref_sk".into(), s(RECORD));
        item
    }

    /// The record and its pointer as items of a transaction, due at `due`.
    pub(crate) fn deletion_record_put(
        &self,
        record: &DeletionRecord,
        due: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        Ok(vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(self.deletion_item(record, due)?))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()?,
                )
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(self.pointer_item(record)))
                        .build()?,
                )
                .build(),
        ])
    }

    /// Transaction items that remove a record and its pointer.
    pub(crate) fn deletion_record_delete(
        &self,
        user_id: &str,
        id: &str,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        [
            key(deletion_pk(id), RECORD),
            key(user_pk(user_id), keys::delref_sk(id)),
        ]
        .into_iter()
        .map(|k| {
            Ok(TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(k))
                        .build()?,
                )
                .build())
        })
        .collect()
    }

    /// Stores a record on its own (for work found outside a transaction: a worker's lost job).
    pub async fn put_deletion_record(
        &self,
        record: &DeletionRecord,
        due: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        // The pointer first: a record never exists without it.
        for item in [self.pointer_item(record), self.deletion_item(record, due)?] {
            self.client()
                .await
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .context("storing a deletion record")?;
        }
        Ok(())
    }

    pub async fn get_deletion_record(&self, id: &str) -> anyhow::Result<Option<DeletionRecord>> {
        self.get_record(&deletion_pk(id), RECORD, "a deletion record")
            .await
    }

    /// Ids of the records due at `now`.
    pub async fn due_deletion_records(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        Ok(self
            .due_in(keys::DEL, now, limit)
            .await?
            .into_iter()
            .filter_map(|d| d.pk.strip_prefix("DELETION#").map(str::to_string))
            .collect())
    }

    /// Everything the record named is gone: the record goes.
    pub async fn finish_deletion_record(&self, user_id: &str, id: &str) -> anyhow::Result<()> {
        // The record first: a pointer without its record is harmless, the reverse is not.
        for k in [
            key(deletion_pk(id), RECORD),
            key(user_pk(user_id), keys::delref_sk(id)),
        ] {
            self.client()
                .await
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(k))
                .send()
                .await
                .context("removing a finished deletion record")?;
        }
        Ok(())
    }

    /// Leaves the record for a later run: due again at `due`, with what went wrong.
    pub async fn defer_deletion_record(
        &self,
        id: &str,
        due: DateTime<Utc>,
        error: Option<&str>,
        clear_recheck: bool,
    ) -> anyhow::Result<()> {
        let mut expr = "SET exp_at = :due ADD attempts :one".to_string();
        let mut req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(deletion_pk(id), RECORD)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":due", n(due.timestamp()))
            .expression_attribute_values(":one", n(1));
        if let Some(e) = error {
            expr = expr.replace("SET exp_at = :due", "SET exp_at = :due, last_error = :err");
            req =
                req.expression_attribute_values(":err", s(e.chars().take(500).collect::<String>()));
        }
        if clear_recheck {
            expr.push_str(" REMOVE recheck_at");
        }
        applied(
            req.update_expression(expr).send().await,
            "deferring a deletion record",
        )?;
        Ok(())
    }

    /// Parks a record under a hold: out of the due partitions until a hold ends.
    pub async fn park_deletion_record(&self, id: &str) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(deletion_pk(id), RECORD)))
            .update_expression("SET exp_pk = :held")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":held", s(keys::held_pk(id)))
            .send()
            .await;
        applied(result, "parking a held deletion record")?;
        Ok(())
    }

    /// Ids of parked records (at most `limit`).
    pub async fn parked_deletion_records(&self, limit: usize) -> anyhow::Result<Vec<String>> {
        let far = Utc::now() + Duration::days(366 * 100);
        Ok(self
            .due_in(keys::HELD, far, limit)
            .await?
            .into_iter()
            .filter_map(|d| d.pk.strip_prefix("DELETION#").map(str::to_string))
            .collect())
    }

    /// Makes one parked record due at `now`.
    pub async fn unpark_deletion_record(&self, id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(deletion_pk(id), RECORD)))
            .update_expression("SET exp_pk = :del, exp_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":del", s(keys::del_pk(id)))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        applied(result, "unparking a deletion record")?;
        Ok(())
    }

    /// A hold ended: parked records (up to `limit`) are due again; those still held are
    /// parked again when they run. Returns how many.
    pub async fn unpark_deletion_records(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<usize> {
        let parked = self.parked_deletion_records(limit).await?;
        for id in &parked {
            self.unpark_deletion_record(id, now).await?;
        }
        Ok(parked.len())
    }

    /// Deletes one item named by a record; a missing item is already gone.
    pub async fn delete_named_item(&self, item: &ItemRef) -> anyhow::Result<()> {
        let mut req = self
            .client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&item.pk, &item.sk)));
        if let Some(job) = &item.only_if_job {
            req = req
                .condition_expression("job_id = :id")
                .expression_attribute_values(":id", s(job));
        }
        applied(req.send().await, "deleting a named item")?;
        Ok(())
    }
}
