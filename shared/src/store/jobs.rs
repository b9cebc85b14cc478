//! Generation jobs: creation with credit reservation (and the idempotency record) in one
//! transaction, the worker's conditional claim with a lease, completion, and fail-and-refund
//! exactly once.

use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::accounts::is_conditional_failure;
use serde::{Deserialize, Serialize};

use super::deletion::DeletionRecord;
use super::item::{get_n, get_s, key, n, s, Item};
use super::keys::{self, gen_sk, idem_sk, user_pk, GEN_PREFIX};
use super::txn::{transact, TxnOutcome};
use super::{Filter, Store};
use crate::datamap::{new_item, Kind};
use crate::domain::credits::Cause;
use crate::domain::generation::{
    GenerationSettings, ImageSize, Job, JobStatus, OutputFormat, Prompt, Quality, StoredImage,
};

/// A stored `Idempotency-Key` and the first response given for it.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    pub body: String,
    /// The job the first request created (as read back).
    pub job_id: Option<String>,
    /// When the record expires (seconds since the epoch; as read back): after it, the key is
    /// free again.
    pub expires_at: Option<i64>,
}

/// One try at creating a job.
enum Attempt {
    Done(CreateOutcome),
    /// The idempotency record vanished between the failed condition and the read.
    Again,
    /// The idempotency record belongs to this deleted job: try again, replacing it.
    Free(String),
}

pub struct CreateJob<'a> {
    pub user_id: &'a str,
    pub job_id: &'a str,
    pub settings: &'a GenerationSettings,
    pub cost: u64,
    pub now: DateTime<Utc>,
    /// Past this, a job still queued is failed and refunded by the sweep.
    pub queue_deadline: DateTime<Utc>,
    pub idempotency: Option<IdempotencyRecord>,
    /// R2: each reference upload is marked used, and its deletion time moved, in the same
    /// transaction (it must still be ready then).
    pub references: Vec<super::uploads::ReferenceUse>,
}

pub enum CreateOutcome {
    Created,
    /// A reference upload was deleted (or expired) meanwhile.
    ReferenceGone,
    InsufficientCredits,
    /// The idempotency key was used before: the record of the first request.
    Existing(IdempotencyRecord),
    /// The account was deactivated or suspended meanwhile.
    AccountInactive,
}

pub enum ClaimOutcome {
    Claimed(Box<Job>),
    /// Running under a live lease, finished, or deleted: nothing to do.
    NotClaimable(Option<JobStatus>),
}

/// Which state a job must be in for a fail-and-refund to apply.
pub enum FailGuard<'a> {
    /// The worker holding this lease.
    Owner(&'a str),
    /// The sweep: queued or running with its deadline/lease passed at `now`.
    Stale(DateTime<Utc>),
    /// A dead-lettered message's job: queued, or running with its lease run out at `now` (a job
    /// that a live worker holds is left to it).
    DeadLettered(DateTime<Utc>),
}

/// A generation as stored: one serde struct, read without today's input rules (a tightened
/// prompt limit must not make old jobs unreadable, unrefundable or undeletable).
#[derive(Debug, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    user_id: String,
    status: String,
    prompt: String,
    size: String,
    quality: String,
    n: u8,
    seed: u64,
    output_format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reference_ids: Vec<String>,
    cost: u64,
    #[serde(default)]
    refunded: u64,
    #[serde(default)]
    attempts: u32,
    #[serde(default, deserialize_with = "images_list_or_json")]
    images: Vec<StoredImage>,
    /// U3: providers are called in their no-training mode; every stored item records it.
    training_use: String,
    created_at: String,
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// Set when the job was deleted: hidden from the API, its removal left to the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
}

/// Images as stored: a list, or (items of the first release) a JSON string.
fn images_list_or_json<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<StoredImage>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Images {
        List(Vec<StoredImage>),
        Json(String),
    }
    match Images::deserialize(d)? {
        Images::List(list) => Ok(list),
        Images::Json(text) => serde_json::from_str(&text).map_err(serde::de::Error::custom),
    }
}

fn job_item(c: &CreateJob<'_>) -> anyhow::Result<Item> {
    let set = &c.settings;
    let record = JobRecord {
        id: c.job_id.to_string(),
        user_id: c.user_id.to_string(),
        status: JobStatus::Queued.as_str().into(),
        prompt: set.prompt.as_str().into(),
        size: set.size.as_str().into(),
        quality: set.quality.as_str().into(),
        n: set.n,
        seed: set.seed,
        output_format: set.output_format.as_str().into(),
        reference_ids: set.reference_ids.clone(),
        cost: c.cost,
        refunded: 0,
        attempts: 0,
        images: vec![],
        training_use: "none".into(),
        created_at: c.now.to_rfc3339(),
        updated_at: c.now.to_rfc3339(),
        failure_code: None,
        failure_reason: None,
        provider: None,
        idempotency_key: c.idempotency.as_ref().map(|i| i.key.clone()),
        deleted_at: None,
    };
    let mut item = new_item(Kind::Generation, user_pk(c.user_id), gen_sk(c.job_id));
    item.extend(serde_dynamo::to_item::<_, Item>(record)?);
    item.insert(keys::LEASE_PK.into(), s(keys::lease_pk(c.job_id)));
    item.insert(keys::LEASE_UNTIL.into(), n(c.queue_deadline.timestamp()));
    // R1: found by creation time, due at creation + the retention in force at each sweep, so a
    // retention change reaches stored content. No TTL: it could not follow such a change.
    item.insert(keys::EXP_PK.into(), s(keys::content_pk(c.job_id)));
    item.insert(keys::EXP_AT.into(), n(c.now.timestamp()));
    Ok(item)
}

fn time(raw: &str, name: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(raw)
        .with_context(|| format!("stored {name}"))?
        .with_timezone(&Utc))
}

/// A stored job, hidden ones included (`deleted_at` tells).
pub fn job_from_item(item: &Item) -> anyhow::Result<(Job, Option<String>)> {
    let r: JobRecord = serde_dynamo::from_item(item.clone()).context("stored generation")?;
    let parse = |e: crate::domain::Invalid| anyhow::anyhow!(e);
    let job = Job {
        status: JobStatus::parse(&r.status).map_err(parse)?,
        settings: GenerationSettings {
            prompt: Prompt::from_stored(r.prompt),
            size: ImageSize::parse(&r.size).map_err(parse)?,
            quality: Quality::parse(&r.quality).map_err(parse)?,
            n: r.n,
            seed: r.seed,
            output_format: OutputFormat::parse(&r.output_format).map_err(parse)?,
            reference_ids: r.reference_ids,
        },
        cost: r.cost,
        refunded: r.refunded,
        images: r.images,
        failure_code: r.failure_code,
        failure_reason: r.failure_reason,
        created_at: time(&r.created_at, "created_at")?,
        updated_at: time(&r.updated_at, "updated_at")?,
        provider: r.provider,
        attempts: r.attempts,
        idempotency_key: r.idempotency_key,
        id: r.id,
        user_id: r.user_id,
    };
    Ok((job, r.deleted_at))
}

impl Store {
    /// Reserves the credits, creates the job and stores the idempotency record, all or nothing.
    pub async fn create_job(&self, c: CreateJob<'_>) -> anyhow::Result<CreateOutcome> {
        // An idempotency record can vanish between the failed condition and the read (expired
        // and swept, or deleted with its job): then the key is free again, so try once more.
        let mut freed = None;
        for _ in 0..3 {
            match self.try_create_job(&c, freed.as_deref()).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Again => {}
                // The key's record belongs to a job its owner deleted (its removal is still
                // pending): the key is free, and must never replay the deleted job.
                Attempt::Free(job_id) => freed = Some(job_id),
            }
        }
        Err(anyhow::Error::new(super::Contention("idempotency record")))
    }

    async fn try_create_job(
        &self,
        c: &CreateJob<'_>,
        freed: Option<&str>,
    ) -> anyhow::Result<Attempt> {
        let mut items = Vec::new();
        if let Some(idem) = &c.idempotency {
            let expires = c.now
                + chrono::Duration::hours(
                    crate::domain::retention::RetentionPolicy::IDEMPOTENCY_HOURS,
                );
            let mut rec = new_item(Kind::Idempotency, user_pk(c.user_id), idem_sk(&idem.key));
            rec.insert("request_hash".into(), s(&idem.request_hash));
            rec.insert("status_code".into(), n(idem.status));
            rec.insert("body".into(), s(&idem.body));
            rec.insert("job_id".into(), s(c.job_id));
            rec.insert("created_at".into(), s(c.now.to_rfc3339()));
            rec.insert("delete_at".into(), s(expires.to_rfc3339()));
            rec.insert(keys::EXP_PK.into(), s(keys::exp_pk(&idem.key)));
            rec.insert(keys::EXP_AT.into(), n(expires.timestamp()));
            rec.insert(keys::TTL.into(), n(expires.timestamp() + 86_400));
            items.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(rec))
                            .condition_expression(
                                "attribute_not_exists(pk) OR exp_at < :now OR job_id = :freed",
                            )
                            .expression_attribute_values(":now", n(c.now.timestamp()))
                            .expression_attribute_values(":freed", s(freed.unwrap_or("-")))
                            .build()?,
                    )
                    .build(),
            );
        }
        let idem_index = c.idempotency.as_ref().map(|_| 0);
        let job_index = items.len();
        let balance_index = items.len() + 1;
        items.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(job_item(c)?))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()?,
                )
                .build(),
        );
        items.push(self.balance_debit(c.user_id, c.cost)?);
        items.push(self.ledger_put(
            c.user_id,
            &Cause::GenerationDebit {
                job_id: c.job_id.to_string(),
            },
            -(c.cost as i64),
            c.now,
        )?);
        // The account must still be active and not suspended when the job commits (a deletion
        // or suspension racing this request wins).
        let profile_index = items.len();
        items.push(
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(c.user_id), keys::PROFILE)))
                        .condition_expression(
                            "attribute_exists(pk) AND attribute_not_exists(deleted_at) \
                             AND attribute_not_exists(suspension_reason)",
                        )
                        .build()?,
                )
                .build(),
        );
        let refs_from = items.len();
        for r in &c.references {
            items.push(self.reference_use_item(c.user_id, r, c.now)?);
        }
        let outcome = transact(self.client().await, "create generation", items).await?;
        if let TxnOutcome::Committed = outcome {
            return Ok(Attempt::Done(CreateOutcome::Created));
        }
        if let Some(i) = idem_index {
            if outcome.failed_at(i) {
                let key = &c.idempotency.as_ref().expect("index implies a record").key;
                return Ok(match self.get_idempotency(c.user_id, key).await? {
                    None => Attempt::Again,
                    Some(record) => match &record.job_id {
                        Some(job) if self.get_job(c.user_id, job).await?.is_none() => {
                            Attempt::Free(job.clone())
                        }
                        _ => Attempt::Done(CreateOutcome::Existing(record)),
                    },
                });
            }
        }
        if outcome.failed_at(job_index) && self.get_job_any(c.user_id, c.job_id).await?.is_some() {
            // The job id is new to this request: only an earlier send of this same transaction
            // (whose answer was lost, then resent) can have created it.
            return Ok(Attempt::Done(CreateOutcome::Created));
        }
        if outcome.failed_at(profile_index) {
            return Ok(Attempt::Done(CreateOutcome::AccountInactive));
        }
        if outcome.failed_at(balance_index) {
            return Ok(Attempt::Done(CreateOutcome::InsufficientCredits));
        }
        if (refs_from..refs_from + c.references.len()).any(|i| outcome.failed_at(i)) {
            return Ok(Attempt::Done(CreateOutcome::ReferenceGone));
        }
        bail!(
            "creating generation {}: unexpected condition failure",
            c.job_id
        )
    }

    pub async fn get_idempotency(
        &self,
        user_id: &str,
        key_value: &str,
    ) -> anyhow::Result<Option<IdempotencyRecord>> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), idem_sk(key_value))))
            .consistent_read(true)
            .send()
            .await
            .context("reading idempotency record")?;
        out.item()
            .map(|i| {
                Ok(IdempotencyRecord {
                    key: key_value.to_string(),
                    request_hash: get_s(i, "request_hash")?.to_string(),
                    status: get_n(i, "status_code")?,
                    body: get_s(i, "body")?.to_string(),
                    job_id: i.get("job_id").and_then(|v| v.as_s().ok()).cloned(),
                    expires_at: i
                        .get(keys::EXP_AT)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok()),
                })
            })
            .transpose()
    }

    /// A job as stored, hidden (deleted) ones included, with its `deleted_at`.
    pub async fn get_job_any(
        &self,
        user_id: &str,
        job_id: &str,
    ) -> anyhow::Result<Option<(Job, Option<String>)>> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .consistent_read(true)
            .send()
            .await
            .context("reading generation")?;
        out.item().map(job_from_item).transpose()
    }

    /// A job visible through the API (strongly consistent: a deleted job never reappears).
    pub async fn get_job(&self, user_id: &str, job_id: &str) -> anyhow::Result<Option<Job>> {
        Ok(match self.get_job_any(user_id, job_id).await? {
            Some((job, None)) => Some(job),
            _ => None,
        })
    }

    /// The user's visible generations, newest first, read strongly consistently; returns the
    /// page and the last key read (a page may hold fewer than `limit` when some were deleted).
    pub async fn list_jobs(
        &self,
        user_id: &str,
        limit: i32,
        after_sk: Option<String>,
    ) -> anyhow::Result<(Vec<Job>, Option<String>)> {
        let start = after_sk.map(|sk| key(user_pk(user_id), sk));
        let out = self
            .client()
            .await
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .filter_expression("attribute_not_exists(deleted_at)")
            .expression_attribute_values(":pk", s(user_pk(user_id)))
            .expression_attribute_values(":p", s(GEN_PREFIX))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("listing generations")?;
        let jobs = out
            .items()
            .iter()
            .map(|i| job_from_item(i).map(|(job, _)| job))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let last = out
            .last_evaluated_key()
            .and_then(|k| k.get(keys::SK))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok((jobs, last))
    }

    /// Moves a generation stamped by the first release (`EXP#`, with a TTL) to the creation-time
    /// index, where the retention in force decides, and drops its TTL.
    pub async fn reindex_content(&self, user_id: &str, job: &Job) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(&job.id))))
            .update_expression("SET exp_pk = :pk, exp_at = :created REMOVE #ttl, delete_at")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(deleted_at)")
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_values(":pk", s(keys::content_pk(&job.id)))
            .expression_attribute_values(":created", n(job.created_at.timestamp()))
            .send()
            .await;
        super::applied(result, "re-indexing a generation")?;
        Ok(())
    }

    /// Ids of the user's jobs still queued or running (account deletion cancels them).
    pub async fn unfinished_job_ids(&self, user_id: &str) -> anyhow::Result<Vec<String>> {
        let filter = Filter {
            expression: "#st IN (:queued, :running) AND attribute_not_exists(deleted_at)",
            names: &[("#st", "status")],
            values: vec![
                (":queued", s(JobStatus::Queued.as_str())),
                (":running", s(JobStatus::Running.as_str())),
            ],
        };
        self.query_all(
            &user_pk(user_id),
            Some(GEN_PREFIX),
            Some(filter),
            "unfinished jobs",
        )
        .await?
        .iter()
        .map(|item| Ok(get_s(item, "id")?.to_string()))
        .collect()
    }

    /// Claims a queued job (or one whose lease has run out) for `owner`.
    pub async fn claim_job(
        &self,
        user_id: &str,
        job_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<ClaimOutcome> {
        let until = now.timestamp() + lease.as_secs() as i64;
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .update_expression(
                "SET #st = :running, lease_owner = :owner, lease_until = :until, \
                 lease_pk = :lpk, updated_at = :ts ADD attempts :one",
            )
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(deleted_at) \
                 AND (#st = :queued OR (#st = :running AND lease_until < :now))",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":lpk", s(keys::lease_pk(job_id)))
            .expression_attribute_values(":ts", s(now.to_rfc3339()))
            .expression_attribute_values(":now", n(now.timestamp()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes().context("claim returned no item")?;
                Ok(ClaimOutcome::Claimed(Box::new(job_from_item(item)?.0)))
            }
            Err(e) if is_conditional_failure(&e) => {
                let current = self.get_job(user_id, job_id).await?;
                Ok(ClaimOutcome::NotClaimable(current.map(|j| j.status)))
            }
            Err(e) => Err(anyhow::anyhow!(e).context("claiming generation")),
        }
    }

    /// Applies `expression` to a job only while `owner` holds its lease; `false` when it does
    /// not (the job was deleted, failed by the sweep or claimed again).
    async fn update_if_owner(
        &self,
        user_id: &str,
        job_id: &str,
        owner: &str,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
        what: &'static str,
    ) -> anyhow::Result<bool> {
        let mut req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .update_expression(expression)
            .condition_expression("#st = :running AND lease_owner = :owner")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .expression_attribute_values(":owner", s(owner));
        for (name, value) in values {
            req = req.expression_attribute_values(name, value);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(anyhow::anyhow!(e).context(what)),
        }
    }

    /// Marks the job succeeded if `owner` still holds it; `false` if it was lost (deleted, or
    /// failed by the sweep), in which case the caller removes what it stored.
    pub async fn complete_job(
        &self,
        user_id: &str,
        job_id: &str,
        owner: &str,
        images: &[StoredImage],
        provider: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        self.update_if_owner(
            user_id,
            job_id,
            owner,
            "SET #st = :done, images = :images, provider = :provider, updated_at = :ts \
             REMOVE lease_owner, lease_until, lease_pk",
            vec![
                (":done", s(JobStatus::Succeeded.as_str())),
                (":images", serde_dynamo::to_attribute_value(images)?),
                (":provider", s(provider)),
                (":ts", s(now.to_rfc3339())),
            ],
            "completing generation",
        )
        .await
    }

    /// Gives a claimed job back to the queue after a transient failure, so the redelivered
    /// message can claim it again.
    pub async fn release_job(
        &self,
        user_id: &str,
        job_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        queue_deadline: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        self.update_if_owner(
            user_id,
            job_id,
            owner,
            "SET #st = :queued, lease_until = :deadline, updated_at = :ts REMOVE lease_owner",
            vec![
                (":queued", s(JobStatus::Queued.as_str())),
                (":deadline", n(queue_deadline.timestamp())),
                (":ts", s(now.to_rfc3339())),
            ],
            "releasing generation",
        )
        .await
    }

    /// Fails the job and refunds its credits in one transaction, exactly once: the job's
    /// state condition and the refund's ledger key both guard it. `false` if the guard did not
    /// hold (someone else finished, failed or deleted it).
    pub async fn fail_and_refund(
        &self,
        job: &Job,
        guard: FailGuard<'_>,
        code: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(&job.user_id), gen_sk(&job.id))))
            .update_expression(
                "SET #st = :failed, failure_code = :code, failure_reason = :reason, \
                 refunded = :cost, updated_at = :ts REMOVE lease_owner, lease_until, lease_pk",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":failed", s(JobStatus::Failed.as_str()))
            .expression_attribute_values(":code", s(code))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":cost", n(job.cost))
            .expression_attribute_values(":ts", s(now.to_rfc3339()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()));
        update = match guard {
            FailGuard::Owner(owner) => update
                .condition_expression("#st = :running AND lease_owner = :owner")
                .expression_attribute_values(":owner", s(owner)),
            FailGuard::Stale(at) => update
                .condition_expression("(#st = :running OR #st = :queued) AND lease_until <= :now")
                .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
                .expression_attribute_values(":now", n(at.timestamp())),
            FailGuard::DeadLettered(at) => update
                .condition_expression("#st = :queued OR (#st = :running AND lease_until <= :now)")
                .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
                .expression_attribute_values(":now", n(at.timestamp())),
        };
        // Whatever a worker stored for a failed job goes (it may still be writing when the
        // sweep fails it): the record is worked off at once and once more after the lease.
        let cleanup = DeletionRecord::lost_job(&job.user_id, &job.id, now);
        let mut items = vec![
            TransactWriteItem::builder().update(update.build()?).build(),
            self.balance_add(&job.user_id, job.cost)?,
            self.ledger_put(
                &job.user_id,
                &Cause::GenerationRefund {
                    job_id: job.id.clone(),
                },
                job.cost as i64,
                now,
            )?,
        ];
        items.extend(self.deletion_record_put(&cleanup, now)?);
        Ok(matches!(
            transact(self.client().await, "fail and refund generation", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Hides the job from the API at once and commits, in the same transaction, the deletion
    /// record naming what remains (its item, its idempotency record, its objects). An
    /// unfinished job is cancelled and refunded in that transaction too: a worker still
    /// running it then fails its completion condition. Returns the record and whether credits
    /// were refunded; `None` if there is no visible job.
    ///
    /// Without `commit_record` the job is only hidden (cancelled and refunded if unfinished):
    /// account deletion, whose own record covers everything of the user, uses that.
    pub async fn hide_job(
        &self,
        user_id: &str,
        job_id: &str,
        reason: &str,
        commit_record: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<(DeletionRecord, JobStatus)>> {
        for _ in 0..3 {
            let Some(job) = self.get_job(user_id, job_id).await? else {
                return Ok(None);
            };
            let unfinished = matches!(job.status, JobStatus::Queued | JobStatus::Running);
            let record = DeletionRecord::generation(&job, reason, now);
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
                // Unchanged since read: the record names the public copies it saw (an image
                // published meanwhile would leave its copy unnamed).
                .condition_expression(
                    "#st = :st AND attribute_not_exists(deleted_at) AND updated_at = :seen",
                )
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":seen", s(job.updated_at.to_rfc3339()))
                // A first-release item's TTL must not delete it under a hold.
                .expression_attribute_names("#ttl", keys::TTL)
                .expression_attribute_values(":st", s(job.status.as_str()))
                .expression_attribute_values(":now", s(now.to_rfc3339()));
            update = if unfinished {
                update
                    .update_expression(
                        "SET deleted_at = :now, updated_at = :now, #st = :canceled, refunded = :cost \
                         REMOVE lease_owner, lease_until, lease_pk, exp_pk, exp_at, #ttl",
                    )
                    .expression_attribute_values(":canceled", s(JobStatus::Canceled.as_str()))
                    .expression_attribute_values(":cost", n(job.cost))
            } else {
                update.update_expression(
                    "SET deleted_at = :now, updated_at = :now \
                     REMOVE lease_owner, lease_until, lease_pk, exp_pk, exp_at, #ttl",
                )
            };
            let mut items = vec![TransactWriteItem::builder().update(update.build()?).build()];
            // G1: out of the public gallery at once (every image: one published meanwhile
            // included; deleting an absent entry is no error).
            for index in 0..job.images.len() {
                items.push(
                    self.gallery_delete_item(&crate::domain::generation::image_id(job_id, index))?,
                );
            }
            if commit_record {
                items.extend(self.deletion_record_put(&record, now)?);
            }
            if unfinished {
                items.push(self.balance_add(user_id, job.cost)?);
                items.push(self.ledger_put(
                    user_id,
                    &Cause::GenerationRefund {
                        job_id: job_id.to_string(),
                    },
                    job.cost as i64,
                    now,
                )?);
            }
            match transact(self.client().await, "delete generation", items).await? {
                TxnOutcome::Committed => return Ok(Some((record, job.status))),
                // The status moved under us (claimed, finished): read again and retry.
                TxnOutcome::ConditionFailed(_) => continue,
            }
        }
        Err(anyhow::Error::new(super::Contention("delete generation")))
    }
}
