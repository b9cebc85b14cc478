//! The account lifecycle's storage side: suspension (U5, K2), deactivation with its deletion
//! record (D3, R4), the tombstone that answers for a deleted account, and the erasure of an
//! account's partition: every item deleted, billing records moved under an anonymous id with no
//! link back to the person, subjects named in admin records replaced by that id.

use anyhow::Context;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::admin::{AuditRecord, Review, SYSTEM_ACTOR};
use super::deletion::{AccountErasure, DeletionRecord};
use super::item::{get_s, key, n, s, Item};
use super::keys::{
    self, anon_pk, tombstone_pk, user_pk, ACCOUNT, LEDGER_PREFIX, PROFILE, REF_PREFIX,
};
use super::txn::{transact, TxnOutcome};
use super::{applied, Store};
use crate::datamap::{new_item, Kind};

/// What answers for a deleted account: keyed by a hash of the subject, never the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// The tombstone key of a subject.
pub fn subject_hash(user_id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("imagegen-account:{user_id}").as_bytes(),
    ))
}

/// What one erasure pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub items_deleted: usize,
    pub ledger_entries_moved: usize,
    pub references_rewritten: usize,
}

impl Store {
    /// [`Store::sync_gallery`] after a committed change of the account, logged on failure.
    pub(crate) async fn follow_gallery(&self, user_id: &str) {
        if let Err(e) = self.sync_gallery(user_id).await {
            tracing::error!(error = ?e, "gallery entries not yet following the account");
        }
    }

    /// The profile update that suspends an account, as a transaction item.
    ///
    /// With `keep_existing`, an account already suspended keeps its reason (a child report
    /// must not turn an admin's suspension into one its dismissal would lift).
    pub(crate) fn suspend_item(
        &self,
        user_id: &str,
        reason: &str,
        actor: &str,
        keep_existing: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TransactWriteItem> {
        let expr = if keep_existing {
            "SET suspension_reason = if_not_exists(suspension_reason, :r), \
             suspended_at = if_not_exists(suspended_at, :t), \
             suspended_by = if_not_exists(suspended_by, :by)"
        } else {
            "SET suspension_reason = :r, suspended_at = :t, suspended_by = :by"
        };
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), PROFILE)))
                    .update_expression(expr)
                    .condition_expression(
                        "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                    )
                    .expression_attribute_values(":r", s(reason))
                    .expression_attribute_values(":t", s(now.to_rfc3339()))
                    .expression_attribute_values(":by", s(actor))
                    .build()?,
            )
            .build())
    }

    /// Suspends (`Some(reason)`) or restores (`None`) an account and audits it in one
    /// transaction; `false` if there is no such active account.
    ///
    /// A restore with `restore_only_if` applies only while the suspension has that reason.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_suspension(
        &self,
        user_id: &str,
        reason: Option<&str>,
        restore_only_if: Option<&str>,
        actor: &str,
        audit: &AuditRecord,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let change = match reason {
            Some(r) => self.suspend_item(user_id, r, actor, false, now)?,
            None => TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(user_id), PROFILE)))
                        // U5: refusals before an admin's restore (the unconditional one) no
                        // longer count towards the next automatic suspension; the automatic
                        // restores (a dispute resolved, a report dismissed) reviewed none.
                        .update_expression(if restore_only_if.is_some() {
                            "REMOVE suspension_reason, suspended_at, suspended_by"
                        } else {
                            "REMOVE suspension_reason, suspended_at, suspended_by \
                             SET violations_counted_from = :now"
                        })
                        .condition_expression(if restore_only_if.is_some() {
                            "attribute_exists(pk) AND attribute_not_exists(deleted_at) \
                             AND suspension_reason = :only"
                        } else {
                            "attribute_exists(pk) AND attribute_not_exists(deleted_at)"
                        })
                        .set_expression_attribute_values(Some(match restore_only_if {
                            Some(r) => {
                                std::collections::HashMap::from([(":only".to_string(), s(r))])
                            }
                            None => std::collections::HashMap::from([(
                                ":now".to_string(),
                                s(now.to_rfc3339()),
                            )]),
                        }))
                        .build()?,
                )
                .build(),
        };
        let mut items = vec![change];
        items.extend(self.audit_items(audit, keep_until)?);
        let committed = matches!(
            transact(self.client().await, "suspension", items).await?,
            TxnOutcome::Committed
        );
        if committed {
            // G1: a suspended account's images leave the gallery at once; a restored one's
            // come back. The gallery also checks each owner when it reads, so a failure here
            // never shows a suspended account's images.
            self.follow_gallery(user_id).await;
        }
        Ok(committed)
    }

    /// Suspends an account that is not suspended yet (an existing suspension keeps its reason),
    /// audited in the same transaction.
    pub async fn suspend_keeping_reason(
        &self,
        user_id: &str,
        reason: &str,
        audit: &AuditRecord,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut items = vec![self.suspend_item(user_id, reason, SYSTEM_ACTOR, true, now)?];
        items.extend(self.audit_items(audit, keep_until)?);
        let committed = matches!(
            transact(self.client().await, "suspension", items).await?,
            TxnOutcome::Committed
        );
        if committed {
            // G1: a suspended account's images leave the gallery at once; a restored one's
            // come back. The gallery also checks each owner when it reads, so a failure here
            // never shows a suspended account's images.
            self.follow_gallery(user_id).await;
        }
        Ok(committed)
    }

    /// Deactivates the account at once and commits its deletion record and tombstone in the
    /// same transaction; `false` if there is no active account.
    ///
    /// With a `review`, the confirmed child report that caused it is recorded (and audited) in
    /// the same transaction.
    pub async fn deactivate_account(
        &self,
        user_id: &str,
        record: &DeletionRecord,
        review: Option<&Review<'_>>,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let deactivate = TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), PROFILE)))
                    .update_expression("SET deleted_at = :t, updated_at = :t")
                    .condition_expression(
                        "attribute_exists(pk) AND attribute_not_exists(deleted_at)",
                    )
                    .expression_attribute_values(":t", s(now.to_rfc3339()))
                    .build()?,
            )
            .build();
        let hash = subject_hash(user_id);
        let mut tomb = new_item(Kind::DeletionTombstone, tombstone_pk(&hash), ACCOUNT);
        tomb.extend(serde_dynamo::to_item::<_, Item>(Tombstone {
            requested_at: now.to_rfc3339(),
            completed_at: None,
        })?);
        tomb.insert(keys::EXP_PK.into(), s(keys::exp_pk(&hash)));
        tomb.insert(keys::EXP_AT.into(), n(keep_until.timestamp()));
        let mut items = vec![
            deactivate,
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(tomb))
                        .build()?,
                )
                .build(),
        ];
        items.extend(self.deletion_record_put(record, now)?);
        if let Some(review) = review {
            items.extend(self.review_items(review, keep_until, now)?);
        }
        let committed = matches!(
            transact(self.client().await, "deactivate account", items).await?,
            TxnOutcome::Committed
        );
        if committed {
            // Its images leave the public gallery at once (the erasure checks again, and the
            // gallery checks each owner when it reads).
            self.follow_gallery(user_id).await;
        }
        Ok(committed)
    }

    pub async fn tombstone(&self, user_id: &str) -> anyhow::Result<Option<Tombstone>> {
        self.get_record(
            &tombstone_pk(&subject_hash(user_id)),
            ACCOUNT,
            "a tombstone",
        )
        .await
    }

    pub async fn complete_tombstone(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tombstone_pk(&subject_hash(user_id)), ACCOUNT)))
            .update_expression("SET completed_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", s(now.to_rfc3339()))
            .send()
            .await;
        applied(result, "completing a tombstone")?;
        Ok(())
    }

    /// Erases the account's partition: ledger entries move under `anonymous_id` (kept until
    /// `keep_until`), references rewrite the subject in the records they name, everything else
    /// is deleted, the profile last. Safe to run again after a partial run.
    pub async fn erase_account_items(
        &self,
        user_id: &str,
        ids: &AccountErasure,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<Erased> {
        let anonymous_id = ids.anonymous_id.as_str();
        let reference_id = if ids.reference_id.is_empty() {
            anonymous_id
        } else {
            ids.reference_id.as_str()
        };
        let mut erased = Erased::default();
        let mut profile = None;
        for item in self
            .query_all(&user_pk(user_id), None, None, "the account's items")
            .await?
        {
            let item = &item;
            let sk = get_s(item, keys::SK)?.to_string();
            if sk == PROFILE {
                profile = Some(sk);
            } else if sk.starts_with(LEDGER_PREFIX) {
                self.move_ledger_entry(user_id, anonymous_id, item, keep_until)
                    .await?;
                erased.ledger_entries_moved += 1;
            } else if sk.starts_with(REF_PREFIX) {
                // Billing records are kept under the ledger's anonymous id; admin records get
                // the other one, so their free text cannot tie the two together.
                let id = if get_s(item, "ref_pk")?.starts_with("PAYMENT#") {
                    anonymous_id
                } else {
                    reference_id
                };
                self.rewrite_reference(user_id, id, item).await?;
                erased.references_rewritten += 1;
            } else {
                self.delete_key(&user_pk(user_id), &sk).await?;
                erased.items_deleted += 1;
            }
        }
        if let Some(sk) = profile {
            self.delete_key(&user_pk(user_id), &sk).await?;
            erased.items_deleted += 1;
        }
        Ok(erased)
    }

    async fn delete_key(&self, pk: &str, sk: &str) -> anyhow::Result<()> {
        self.client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .send()
            .await
            .context("deleting an account item")?;
        Ok(())
    }

    async fn move_ledger_entry(
        &self,
        user_id: &str,
        anonymous_id: &str,
        item: &Item,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let sk = get_s(item, keys::SK)?;
        let mut moved = new_item(Kind::AnonymousLedgerEntry, anon_pk(anonymous_id), sk);
        for field in ["entry_kind", "cause", "amount", "created_at"] {
            if let Some(v) = item.get(field) {
                moved.insert(field.into(), v.clone());
            }
        }
        moved.insert(
            keys::EXP_PK.into(),
            s(keys::exp_pk(&format!("{anonymous_id}{sk}"))),
        );
        moved.insert(keys::EXP_AT.into(), n(keep_until.timestamp()));
        let put = TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(moved))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?,
            )
            .build();
        let delete = TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), sk)))
                    .build()?,
            )
            .build();
        if let TxnOutcome::ConditionFailed(_) = transact(
            self.client().await,
            "anonymize ledger entry",
            vec![put, delete],
        )
        .await?
        {
            // Moved by an earlier, interrupted run: only the original is left to delete.
            self.delete_key(&user_pk(user_id), sk).await?;
        }
        Ok(())
    }

    async fn rewrite_reference(
        &self,
        user_id: &str,
        anonymous_id: &str,
        item: &Item,
    ) -> anyhow::Result<()> {
        let ref_pk = get_s(item, "ref_pk")?;
        let ref_sk = get_s(item, "ref_sk")?;
        let fields: Vec<String> = match item.get("fields") {
            Some(AttributeValue::Ss(f)) => f.clone(),
            _ => vec![],
        };
        for (i, field) in fields.iter().enumerate() {
            let name = format!("#f{i}");
            let result = self
                .client()
                .await
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(ref_pk, ref_sk)))
                .update_expression(format!("SET {name} = :anon"))
                .condition_expression(format!("{name} = :sub"))
                .expression_attribute_names(&name, field)
                .expression_attribute_values(":anon", s(format!("anon:{anonymous_id}")))
                .expression_attribute_values(":sub", s(user_id))
                .send()
                .await;
            // Not applied: already rewritten, or the record is gone.
            applied(result, "anonymizing a reference")?;
        }
        self.delete_key(&user_pk(user_id), get_s(item, keys::SK)?)
            .await
    }
}
