//! Images of generations (G1, G2, G3): their settings live on the generation item (so they go
//! wherever it goes); the public gallery is one item per published image (`GALLERY | <image>`),
//! written and removed in the transaction that changes the image; download history is one item
//! per download in the image owner's partition.

use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, download_sk, gen_sk, user_pk, DOWNLOAD_PREFIX, GALLERY_PK, GEN_PREFIX};
use super::txn::{transact, TxnOutcome};
use super::{DeletionRecord, Filter, Store};
use crate::datamap::{new_item, Kind};
use crate::domain::generation::{image_id, JobStatus, StoredImage};

/// An account whose images may be in the gallery: active, not suspended, not restricted (D6).
const LISTED: &str = "attribute_exists(pk) AND attribute_not_exists(deleted_at) \
                      AND attribute_not_exists(suspension_reason) \
                      AND attribute_not_exists(restricted_at)";

/// A published image as the gallery serves it: what is shown (the preview of a copy-protected
/// image, never its original) and who owns it (never shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryEntry {
    pub image_id: String,
    pub owner: String,
    pub generation_id: String,
    pub index: usize,
    /// The object shown: the public copy of the original, or the preview when copy-protected
    /// (never a key under the owner's prefix).
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub copy_protected: bool,
    pub published_at: String,
    pub created_at: String,
}

impl GalleryEntry {
    /// The entry of a published image: `None` without a public copy.
    pub fn of(
        owner: &str,
        job_id: &str,
        index: usize,
        img: &StoredImage,
        created_at: &str,
    ) -> Option<Self> {
        let shown = img.shown.as_ref()?;
        Some(Self {
            image_id: image_id(job_id, index),
            owner: owner.into(),
            generation_id: job_id.into(),
            index,
            key: shown.key.clone(),
            width: shown.width,
            height: shown.height,
            format: shown.format.clone(),
            copy_protected: shown.variant == "preview",
            published_at: img.published_at.clone().unwrap_or_default(),
            created_at: created_at.into(),
        })
    }
}

/// The new settings of one image, written only if the generation is unchanged since `seen`.
pub struct ImageChange<'a> {
    pub user_id: &'a str,
    pub job_id: &'a str,
    pub index: usize,
    /// The generation's `updated_at` as read (optimistic concurrency).
    pub seen: &'a str,
    pub image: &'a StoredImage,
    /// The gallery entry to write when the image is public.
    pub entry: Option<GalleryEntry>,
    /// Objects no longer needed (a public copy), removed through the pipeline.
    pub record: Option<&'a DeletionRecord>,
    /// The record naming a public copy just made for this change: removed with it (the copy
    /// is in use from then on).
    pub pending_record: Option<&'a str>,
}

/// What became of a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Applied,
    /// The generation changed meanwhile (or the image is gone): read again.
    Conflict,
    /// Publishing refused: the account is suspended or being deleted.
    NotListed,
}

/// One download of an image (G3), kept in the owner's partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownloadRecord {
    pub id: String,
    pub image_id: String,
    pub generation_id: String,
    /// `owner`, or `other` (a signed-in user downloading a public image: not named, so the
    /// history never discloses who they are).
    pub by: String,
    /// `original` or `preview`.
    pub variant: String,
    pub downloaded_at: String,
    pub delete_at: String,
}

impl Store {
    pub(crate) fn gallery_delete_item(&self, image_id: &str) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(GALLERY_PK, image_id)))
                    .build()?,
            )
            .build())
    }

    fn gallery_put_item(&self, entry: &GalleryEntry) -> anyhow::Result<TransactWriteItem> {
        let mut item = new_item(Kind::GalleryEntry, GALLERY_PK, &entry.image_id);
        item.extend(serde_dynamo::to_item::<_, Item>(entry)?);
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()?,
            )
            .build())
    }

    fn listed_check(&self, user_id: &str) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), keys::PROFILE)))
                    .condition_expression(LISTED)
                    .build()?,
            )
            .build())
    }

    /// Writes one image's settings and its gallery entry (put or removed) in one transaction.
    pub async fn change_image(
        &self,
        c: ImageChange<'_>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Changed> {
        let i = c.index;
        let mut set = vec![
            format!("images[{i}].#pub = :pub"),
            format!("images[{i}].copy_protected = :cp"),
            "updated_at = :now".to_string(),
        ];
        let mut remove = vec![];
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(c.user_id), gen_sk(c.job_id))))
            .condition_expression(format!(
                "attribute_not_exists(deleted_at) AND updated_at = :seen \
                 AND images[{i}].#k = :key AND attribute_not_exists(images[{i}].deleted_at)"
            ))
            .expression_attribute_names("#pub", "public")
            .expression_attribute_names("#k", "key")
            .expression_attribute_values(
                ":pub",
                aws_sdk_dynamodb::types::AttributeValue::Bool(c.image.public),
            )
            .expression_attribute_values(
                ":cp",
                aws_sdk_dynamodb::types::AttributeValue::Bool(c.image.copy_protected),
            )
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":seen", s(c.seen))
            .expression_attribute_values(":key", s(&c.image.key));
        match &c.image.shown {
            Some(p) => {
                set.push(format!("images[{i}].shown = :shown"));
                update = update
                    .expression_attribute_values(":shown", serde_dynamo::to_attribute_value(p)?);
            }
            None => remove.push(format!("images[{i}].shown")),
        }
        match &c.image.published_at {
            Some(at) => {
                set.push(format!("images[{i}].published_at = :pa"));
                update = update.expression_attribute_values(":pa", s(at));
            }
            None => remove.push(format!("images[{i}].published_at")),
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let mut items = vec![TransactWriteItem::builder()
            .update(update.update_expression(expr).build()?)
            .build()];
        let listed_at = match &c.entry {
            Some(entry) => {
                items.push(self.gallery_put_item(entry)?);
                items.push(self.listed_check(c.user_id)?);
                Some(items.len() - 1)
            }
            None => {
                items.push(self.gallery_delete_item(&image_id(c.job_id, i))?);
                None
            }
        };
        if let Some(record) = c.record {
            items.extend(self.deletion_record_put(record, now)?);
        }
        if let Some(id) = c.pending_record {
            items.extend(self.deletion_record_delete(c.user_id, id)?);
        }
        Ok(
            match transact(self.client().await, "change image", items).await? {
                TxnOutcome::Committed => Changed::Applied,
                // Which condition failed: the account's, or the generation's.
                outcome @ TxnOutcome::ConditionFailed(_) => {
                    if listed_at.is_some_and(|at| outcome.failed_at(at)) && !outcome.failed_at(0) {
                        Changed::NotListed
                    } else {
                        Changed::Conflict
                    }
                }
            },
        )
    }

    /// Hides one image of a generation, removes it from the gallery and commits the deletion
    /// record of its objects, in one transaction; `false` if the generation changed meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_image(
        &self,
        user_id: &str,
        job_id: &str,
        index: usize,
        seen: &str,
        image_key: &str,
        record: &DeletionRecord,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let i = index;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .update_expression(format!(
                "SET images[{i}].deleted_at = :now, images[{i}].#pub = :false, updated_at = :now \
                 REMOVE images[{i}].published_at, images[{i}].shown"
            ))
            .condition_expression(format!(
                "attribute_not_exists(deleted_at) AND updated_at = :seen \
                 AND images[{i}].#k = :key AND attribute_not_exists(images[{i}].deleted_at)"
            ))
            .expression_attribute_names("#pub", "public")
            .expression_attribute_names("#k", "key")
            .expression_attribute_values(
                ":false",
                aws_sdk_dynamodb::types::AttributeValue::Bool(false),
            )
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":seen", s(seen))
            .expression_attribute_values(":key", s(image_key))
            .build()?;
        let mut items = vec![
            TransactWriteItem::builder().update(update).build(),
            self.gallery_delete_item(&image_id(job_id, index))?,
        ];
        items.extend(self.deletion_record_put(record, now)?);
        Ok(matches!(
            transact(self.client().await, "delete image", items).await?,
            TxnOutcome::Committed
        ))
    }

    pub async fn gallery_entry(&self, image_id: &str) -> anyhow::Result<Option<GalleryEntry>> {
        self.get_record(GALLERY_PK, image_id, "a gallery entry")
            .await
    }

    /// Published images, newest first; the page and the last key read.
    pub async fn list_gallery(
        &self,
        limit: i32,
        after: Option<String>,
    ) -> anyhow::Result<(Vec<GalleryEntry>, Option<String>)> {
        self.page(GALLERY_PK, None, limit, after, "the gallery")
            .await
    }

    /// Makes the gallery follow the account: a suspended or deleted account's images leave it;
    /// a restored account's published images come back (each only while still published, in a
    /// transaction that checks the image and the account).
    pub async fn sync_gallery(&self, user_id: &str) -> anyhow::Result<()> {
        let listed = self.get_profile(user_id).await?.is_some_and(|p| {
            p.deleted_at.is_none() && p.suspension.is_none() && p.restricted_at.is_none()
        });
        let filter = Filter {
            expression: "#st = :done AND attribute_not_exists(deleted_at)",
            names: &[("#st", "status")],
            values: vec![(":done", s(JobStatus::Succeeded.as_str()))],
        };
        for item in self
            .query_all(
                &user_pk(user_id),
                Some(GEN_PREFIX),
                Some(filter),
                "published images",
            )
            .await?
        {
            let (job, _) = super::jobs::job_from_item(&item)?;
            for (index, img) in job.images.iter().enumerate() {
                if !img.public || img.deleted_at.is_some() {
                    continue;
                }
                let id = image_id(&job.id, index);
                if !listed {
                    transact(
                        self.client().await,
                        "unlist image",
                        vec![self.gallery_delete_item(&id)?],
                    )
                    .await?;
                    continue;
                }
                let Some(entry) =
                    GalleryEntry::of(user_id, &job.id, index, img, &job.created_at.to_rfc3339())
                else {
                    continue;
                };
                // The generation unchanged since read: a concurrent change (copy protection
                // turned on, unpublished) must not be overwritten by this older view.
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user_id), gen_sk(&job.id))))
                    .condition_expression("attribute_not_exists(deleted_at) AND updated_at = :seen")
                    .expression_attribute_values(":seen", s(job.updated_at.to_rfc3339()))
                    .build()?;
                let items = vec![
                    TransactWriteItem::builder().condition_check(check).build(),
                    self.gallery_put_item(&entry)?,
                    self.listed_check(user_id)?,
                ];
                // A failed condition: unpublished or suspended meanwhile, nothing to list.
                transact(self.client().await, "relist image", items).await?;
            }
        }
        Ok(())
    }

    /// Which of `owners` may be in the gallery now (active, not suspended): the gallery reads
    /// this with every page, so an entry whose removal failed is never shown.
    pub async fn listed_owners(
        &self,
        owners: &[String],
    ) -> anyhow::Result<std::collections::HashSet<String>> {
        let keys: Vec<(String, String)> = owners
            .iter()
            .map(|o| (user_pk(o), keys::PROFILE.to_string()))
            .collect();
        Ok(self
            .batch_get(&keys)
            .await?
            .iter()
            .filter(|item| {
                !["deleted_at", "suspension_reason", "restricted_at"]
                    .iter()
                    .any(|a| item.contains_key(*a))
            })
            .filter_map(|item| item.get(keys::PK).and_then(|v| v.as_s().ok()))
            .filter_map(|pk| keys::user_from_pk(pk).map(str::to_string))
            .collect())
    }

    /// The prefixes of the user's public copies (account erasure removes them: they live
    /// outside the user's prefix).
    pub async fn public_copies(&self, user_id: &str) -> anyhow::Result<Vec<String>> {
        let mut prefixes = Vec::new();
        for item in self
            .query_all(&user_pk(user_id), Some(GEN_PREFIX), None, "public copies")
            .await?
        {
            let (job, _) = super::jobs::job_from_item(&item)?;
            prefixes.extend(
                job.images
                    .iter()
                    .filter_map(|i| i.shown.as_ref())
                    .map(|s| s.prefix()),
            );
        }
        Ok(prefixes)
    }

    pub async fn put_download(&self, owner: &str, d: &DownloadRecord) -> anyhow::Result<()> {
        let delete_at = DateTime::parse_from_rfc3339(&d.delete_at)?.timestamp();
        let mut item = new_item(Kind::Download, user_pk(owner), download_sk(&d.id));
        item.extend(serde_dynamo::to_item::<_, Item>(d)?);
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(&d.id)));
        item.insert(keys::EXP_AT.into(), n(delete_at));
        self.client()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(e).context("recording a download"))?;
        Ok(())
    }

    /// The owner's download history, newest first.
    pub async fn list_downloads(
        &self,
        owner: &str,
        limit: i32,
        after: Option<String>,
    ) -> anyhow::Result<(Vec<DownloadRecord>, Option<String>)> {
        self.page(
            &user_pk(owner),
            Some(DOWNLOAD_PREFIX),
            limit,
            after,
            "downloads",
        )
        .await
    }
}
