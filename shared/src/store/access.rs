//! What access (D1) reads: every item that holds something about one user, wherever it lives:
//! their partition, the records their references name (audit, reports, payments), their
//! gallery entries and their holds (their pending deletion records are found through the
//! pointers in their partition).

use anyhow::Context;
use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::item::{key, s, Item};
use super::keys::{user_pk, GALLERY_PK, HOLD_PK};
use super::{Filter, Store};

impl Store {
    /// Every item of the user's partition.
    pub async fn user_partition(&self, user_id: &str) -> anyhow::Result<Vec<Item>> {
        self.query_all(&user_pk(user_id), None, None, "the user's items")
            .await
    }

    /// The items at `keys` (missing ones left out), read strongly consistently.
    pub async fn batch_get(&self, keys: &[(String, String)]) -> anyhow::Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut unique: Vec<&(String, String)> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.iter().map(|(pk, sk)| key(pk, sk)).collect()))
                    .consistent_read(true)
                    .build()?,
            );
            while let Some(req) = request.take() {
                let out = self
                    .client()
                    .await
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .context("reading items")?;
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().cloned());
                }
                request = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        Ok(found)
    }

    /// The user's gallery entries among `image_ids`.
    pub async fn gallery_entries_of(&self, image_ids: &[String]) -> anyhow::Result<Vec<Item>> {
        let keys: Vec<(String, String)> = image_ids
            .iter()
            .map(|id| (GALLERY_PK.to_string(), id.clone()))
            .collect();
        self.batch_get(&keys).await
    }

    /// Holds naming the user.
    pub async fn holds_of(&self, user_id: &str) -> anyhow::Result<Vec<Item>> {
        let filter = Filter {
            expression: "user_id = :u",
            names: &[],
            values: vec![(":u", s(user_id))],
        };
        self.query_all(HOLD_PK, None, Some(filter), "holds").await
    }
}
