//! The DynamoDB adapter: one table, keys driven by the access patterns. SDK types and item
//! conversions stay in this module; callers see domain values.
//!
//! Every kind of item, its key shape, retention and deletion is listed once, in the data map
//! (`crate::datamap::DATA_MAP`, published by `GET /v1/policy`). The user's partition
//! `USER#<sub>` holds the profile, balance, ledger, generations (`GEN#<ulid>`, newest first),
//! idempotency records, references (`REF#`) and rate counters; admin records live in `HOLD`,
//! `AUDIT` and `REPORT`; deletion records in `DELETION#<id>`; billing records of deleted
//! accounts in `ANON#<id>`; tombstones in `TOMBSTONE#<hash>`.
//!
//! Index `by-expiry` lets the sweep find what is due without a `Scan`: `EXP#<shard>` items carry
//! their deletion time in `exp_at`, `CONTENT#<shard>` their creation time (due at creation + the
//! retention in force), `DEL#<shard>` are due deletion records and `HELD#<shard>` records parked
//! under a legal hold; `by-lease` (`lease_pk`,
//! `lease_until`) finds jobs queued or running past their deadline.

mod access;
mod accounts;
mod admin;
mod billing;
mod consents;
mod deletion;
mod erasure;
mod exports;
mod images;
pub(crate) mod item;
mod jobs;
pub mod keys;
mod ledger;
mod sweep;
mod txn;
mod uploads;
mod violations;

pub use accounts::{OnboardOutcome, Profile, ProfileUpdate, Suspension};
pub use admin::{AuditRecord, ChildReport, Hold, HoldSet, ReportStatus, Review, SYSTEM_ACTOR};
pub use billing::{Applied, CustomerRecord, Grant, Payment, StateOutcome, SubscriptionState};
pub use consents::{ConsentChange, Recorded};
pub use deletion::{AccountErasure, DeletionRecord, ItemRef, RECHECK_AFTER_MINUTES};
pub use erasure::{subject_hash, Erased, Tombstone};
pub use exports::{ExportRecord, Started};
pub use images::{Changed, DownloadRecord, GalleryEntry, ImageChange};
pub use jobs::{
    job_from_item, ClaimOutcome, CreateJob, CreateOutcome, FailGuard, IdempotencyRecord,
};
pub use sweep::DueItem;
pub use txn::{Ambiguous, Contention};
pub use uploads::{
    ReferenceUse, Settled, UploadRecord, PENDING as UPLOAD_PENDING, READY as UPLOAD_READY,
    REJECTED as UPLOAD_REJECTED,
};
pub use violations::ViolationRecord;

use aws_sdk_dynamodb::Client;

#[derive(Clone)]
pub struct Store {
    client: crate::lazy::Lazy<Client>,
    table: String,
}

impl Store {
    /// With a client already built (tests put one with an interceptor in).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client: crate::lazy::Lazy::ready(client),
            table: table.into(),
        }
    }

    /// With the DynamoDB client built on first use.
    pub fn lazy(sdk: &crate::lazy::SdkSource, table: impl Into<String>) -> Self {
        Self {
            client: crate::lazy::Lazy::new(sdk, Client::new),
            table: table.into(),
        }
    }

    async fn client(&self) -> &Client {
        self.client.get().await
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// A cheap read proving the table is reachable (for `/v1/health`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        self.client()
            .await
            .get_item()
            .table_name(&self.table)
            .key("pk", item::s("HEALTH"))
            .key("sk", item::s("HEALTH"))
            .send()
            .await
            .context("reading the table")?;
        Ok(())
    }
}

/// What a conditional write came to: `true` if it applied, `false` if its condition did not
/// hold (an expected outcome, never an error).
pub(crate) fn applied<T, E, R>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    what: &'static str,
) -> anyhow::Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if accounts::is_conditional_failure(&e) => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(what)),
    }
}

impl Store {
    /// One item of a kind mapped by serde, read strongly consistently.
    pub(crate) async fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &'static str,
    ) -> anyhow::Result<Option<T>> {
        use anyhow::Context;
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .with_context(|| format!("reading {what}"))?;
        out.item()
            .map(|i| serde_dynamo::from_item(i.clone()).with_context(|| format!("stored {what}")))
            .transpose()
    }

    /// Every item of partition `pk` (whose sort key starts with `sk_prefix`, if given) that
    /// passes `filter`, all pages, read strongly consistently.
    pub(crate) async fn query_all(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
        filter: Option<Filter<'_>>,
        what: &'static str,
    ) -> anyhow::Result<Vec<item::Item>> {
        use anyhow::Context;
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut req = self
                .client()
                .await
                .query()
                .table_name(&self.table)
                .key_condition_expression(match sk_prefix {
                    Some(_) => "pk = :pk AND begins_with(sk, :prefix)",
                    None => "pk = :pk",
                })
                .expression_attribute_values(":pk", item::s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if let Some(prefix) = sk_prefix {
                req = req.expression_attribute_values(":prefix", item::s(prefix));
            }
            if let Some(f) = &filter {
                req = req.filter_expression(f.expression);
                for (name, attr) in f.names {
                    req = req.expression_attribute_names(*name, *attr);
                }
                for (name, value) in &f.values {
                    req = req.expression_attribute_values(*name, value.clone());
                }
            }
            let out = req
                .send()
                .await
                .with_context(|| format!("querying {what}"))?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// A filter expression for [`Store::query_all`].
impl Store {
    /// One page of a partition (the items under `sk_prefix`, if given), newest first, read
    /// strongly consistently: the records and the last sort key read (the cursor).
    pub(crate) async fn page<T: serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
        limit: i32,
        after_sk: Option<String>,
        what: &'static str,
    ) -> anyhow::Result<(Vec<T>, Option<String>)> {
        use anyhow::Context;
        let mut req = self
            .client()
            .await
            .query()
            .table_name(&self.table)
            .key_condition_expression(match sk_prefix {
                Some(_) => "pk = :pk AND begins_with(sk, :prefix)",
                None => "pk = :pk",
            })
            .expression_attribute_values(":pk", item::s(pk))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(after_sk.map(|sk| item::key(pk, sk)));
        if let Some(prefix) = sk_prefix {
            req = req.expression_attribute_values(":prefix", item::s(prefix));
        }
        let out = req
            .send()
            .await
            .with_context(|| format!("listing {what}"))?;
        let records = out
            .items()
            .iter()
            .map(|i| serde_dynamo::from_item(i.clone()).with_context(|| format!("stored {what}")))
            .collect::<anyhow::Result<Vec<T>>>()?;
        let last = out
            .last_evaluated_key()
            .and_then(|k| k.get(keys::SK))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok((records, last))
    }
}

pub(crate) struct Filter<'a> {
    pub expression: &'a str,
    pub names: &'a [(&'a str, &'a str)],
    pub values: Vec<(&'a str, aws_sdk_dynamodb::types::AttributeValue)>,
}
