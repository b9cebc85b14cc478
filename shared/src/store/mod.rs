//! The DynamoDB adapter: one table, keys driven by the access patterns. SDK types and item
//! conversions stay in this module; callers see domain values.
//!
//! | item            | pk           | sk                | notes                                   |
//! |-----------------|--------------|-------------------|-----------------------------------------|
//! | profile         | `USER#<sub>` | `PROFILE`         |                                         |
//! | balance         | `USER#<sub>` | `CREDITS`         | `balance` never negative (condition)     |
//! | ledger entry    | `USER#<sub>` | `LEDGER#<cause>`  | one per cause (condition)               |
//! | generation      | `USER#<sub>` | `GEN#<ulid>`      | newest first by ULID; `exp_*`, `lease_*` |
//! | idempotency     | `USER#<sub>` | `IDEM#<key>`      | `exp_*` 24 h, TTL backstop              |
//! | refusal counter | `STATS#age_refusals` | `<date>`  | a count, no identity (K1)               |
//!
//! Index `by-expiry` (`exp_pk` = `EXP#<shard>`, `exp_at` epoch seconds) lets the sweep find what
//! is due for deletion in deletion-time order without a `Scan`; `by-lease` (`lease_pk`,
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
