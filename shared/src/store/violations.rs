//! Moderation refusals (S2, U5): one item per refusal in the user's partition, indexed by its
//! time under `CONTENT#` so it goes at R1 (it holds the prompt).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, user_pk, VIOLATION_PREFIX};
use super::Store;
use crate::datamap::{new_item, Kind};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViolationRecord {
    pub id: String,
    pub user_id: String,
    pub at: String,
    /// `blocklist`, `moderation_endpoint` or `image_provider`.
    pub source: String,
    pub category: String,
    pub rule: String,
    /// The prompt as sent (content: kept no longer than R1).
    pub prompt: String,
    /// The generation it was for, when one had been accepted (a provider's refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
}

impl Store {
    /// Records one refusal. The id is a ULID of its time, so a refusal recorded twice (a
    /// redelivered job) is one item when its id is given.
    pub async fn put_violation(&self, v: &ViolationRecord) -> anyhow::Result<()> {
        use anyhow::Context;
        let at = DateTime::parse_from_rfc3339(&v.at)?.timestamp();
        let sk = format!("{VIOLATION_PREFIX}{}", v.id);
        let mut item = new_item(Kind::Violation, user_pk(&v.user_id), &sk);
        item.extend(serde_dynamo::to_item::<_, Item>(v)?);
        item.insert(keys::EXP_PK.into(), s(keys::content_pk(&v.id)));
        item.insert(keys::EXP_AT.into(), n(at));
        self.client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .context("recording a violation")?;
        Ok(())
    }

    /// How many refusals of the user since `since` (ids are ULIDs, so a key range).
    pub async fn count_violations_since(
        &self,
        user_id: &str,
        since: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        use anyhow::Context;
        let from = ulid::Ulid::from_parts(since.timestamp_millis().max(0) as u64, 0)
            .to_string()
            .to_lowercase();
        let mut count = 0usize;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client()
                .await
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(user_pk(user_id)))
                .expression_attribute_values(":from", s(format!("{VIOLATION_PREFIX}{from}")))
                .expression_attribute_values(":to", s(format!("{VIOLATION_PREFIX}~")))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .context("counting violations")?;
            count += out.count() as usize;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    /// A refusal kept by a legal hold is looked at again later: its index time moves so it is due
    /// at `until` (it never crowds out the content behind it).
    pub async fn postpone_violation(
        &self,
        user_id: &str,
        sk: &str,
        index_time: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), sk)))
            .update_expression("SET exp_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", n(index_time.timestamp()))
            .send()
            .await;
        super::applied(result, "postponing a held violation")?;
        Ok(())
    }

    /// Removes one refusal (R1 expiry).
    pub async fn delete_violation(&self, user_id: &str, sk: &str) -> anyhow::Result<()> {
        use anyhow::Context;
        self.client()
            .await
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), sk)))
            .send()
            .await
            .context("deleting a violation")?;
        Ok(())
    }
}
