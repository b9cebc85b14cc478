//! Consents (U4, D5, D7) and the restriction of processing (D6): the current state of each
//! purpose (`CONSENT#<purpose>`) and an append-only history (`CONSENTLOG#<id>`), written
//! together; the restriction also marks the profile, which the gallery, marketing and analytics
//! read.

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use super::item::{key, s, Item};
use super::keys::{self, user_pk};
use super::txn::{transact, TxnOutcome};
use super::Store;
use crate::datamap::{new_item, Kind};

pub const CONSENT_PREFIX: &str = "CONSENT#";
pub const CONSENT_LOG_PREFIX: &str = "CONSENTLOG#";

/// What became of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Committed,
    /// A later change of the same purpose was recorded first: this one is not applied.
    Superseded,
    /// The account is not active.
    Inactive,
}

/// One change of a consent (or of the restriction), as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsentChange {
    pub id: String,
    pub purpose: String,
    pub granted: bool,
    pub at: String,
    /// Where the change came from (`self_service`).
    pub source: String,
    /// The privacy policy in force when it was made.
    pub policy_version: String,
}

impl Store {
    /// The current state of each purpose the user ever set.
    pub async fn consents(&self, user_id: &str) -> anyhow::Result<Vec<ConsentChange>> {
        self.query_all(&user_pk(user_id), Some(CONSENT_PREFIX), None, "consents")
            .await?
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(anyhow::Error::from))
            .collect()
    }

    /// Every change, oldest first.
    pub async fn consent_history(&self, user_id: &str) -> anyhow::Result<Vec<ConsentChange>> {
        self.query_all(
            &user_pk(user_id),
            Some(CONSENT_LOG_PREFIX),
            None,
            "consent history",
        )
        .await?
        .into_iter()
        .map(|i| serde_dynamo::from_item(i).map_err(anyhow::Error::from))
        .collect()
    }

    /// Records a change: the current state and the history entry in one transaction, while the
    /// account is active. With `restriction`, the profile's `restricted_at` is set or removed
    /// in the same transaction.
    pub async fn record_consent(
        &self,
        user_id: &str,
        change: &ConsentChange,
        restriction: bool,
    ) -> anyhow::Result<Recorded> {
        let mut current = new_item(
            Kind::Consent,
            user_pk(user_id),
            format!("{CONSENT_PREFIX}{}", change.purpose),
        );
        current.extend(serde_dynamo::to_item::<_, Item>(change)?);
        let mut entry = new_item(
            Kind::ConsentRecord,
            user_pk(user_id),
            format!("{CONSENT_LOG_PREFIX}{}", change.id),
        );
        entry.extend(serde_dynamo::to_item::<_, Item>(change)?);
        let put = |item: Item, newer: bool| -> anyhow::Result<TransactWriteItem> {
            let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
            if newer {
                // The latest change wins, whatever order requests commit in: the current state
                // and the history's last entry always agree.
                put = put
                    .condition_expression("attribute_not_exists(pk) OR #at < :at")
                    .expression_attribute_names("#at", "at")
                    .expression_attribute_values(":at", s(&change.at));
            }
            Ok(TransactWriteItem::builder().put(put.build()?).build())
        };
        let profile_key = key(user_pk(user_id), keys::PROFILE);
        let active = "attribute_exists(pk) AND attribute_not_exists(deleted_at)";
        let profile = if restriction {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(profile_key))
                .condition_expression(active);
            let update = if change.granted {
                update
                    .update_expression("SET restricted_at = :at")
                    .expression_attribute_values(":at", s(&change.at))
            } else {
                update.update_expression("REMOVE restricted_at")
            };
            TransactWriteItem::builder().update(update.build()?).build()
        } else {
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(profile_key))
                        .condition_expression(active)
                        .build()?,
                )
                .build()
        };
        let items = vec![put(current, true)?, put(entry, false)?, profile];
        let outcome = transact(self.client().await, "record consent", items).await?;
        let recorded = match &outcome {
            TxnOutcome::Committed => Recorded::Committed,
            o if o.failed_at(2) => Recorded::Inactive,
            _ => Recorded::Superseded,
        };
        if recorded == Recorded::Committed && restriction {
            // D6: a restricted account's images leave the gallery at once (and come back when
            // it is lifted); the gallery also checks each owner as it reads.
            self.follow_gallery(user_id).await;
        }
        Ok(recorded)
    }
}
