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

mod accounts;
mod admin;
mod deletion;
mod erasure;
pub(crate) mod item;
mod jobs;
pub mod keys;
mod ledger;
mod sweep;
mod txn;

pub use accounts::{OnboardOutcome, Profile, ProfileUpdate, Suspension};
pub use admin::{AuditRecord, ChildReport, Hold, HoldSet, ReportStatus, SYSTEM_ACTOR};
pub use deletion::{AccountErasure, DeletionRecord, ItemRef, RECHECK_AFTER_MINUTES};
pub use erasure::{subject_hash, Erased, Tombstone};
pub use jobs::{ClaimOutcome, CreateJob, CreateOutcome, FailGuard, IdempotencyRecord};
pub use sweep::DueItem;
pub use txn::Contention;

use aws_sdk_dynamodb::Client;

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// A cheap read proving the table is reachable (for `/v1/health`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        self.client
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
