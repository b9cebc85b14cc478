//! Generation jobs: creation with credit reservation (and the idempotency record) in one
//! transaction, the worker's conditional claim with a lease, completion, and fail-and-refund
//! exactly once.

use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::accounts::is_conditional_failure;
use super::item::{get_n, get_s, key, n, opt_n, opt_s, s, Item};
use super::keys::{self, gen_sk, idem_sk, user_pk, GEN_PREFIX};
use super::txn::{transact, TxnOutcome};
use super::Store;
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
}

pub struct CreateJob<'a> {
    pub user_id: &'a str,
    pub job_id: &'a str,
    pub settings: &'a GenerationSettings,
    pub cost: u64,
    pub now: DateTime<Utc>,
    pub delete_at: Option<DateTime<Utc>>,
    /// Past this, a job still queued is failed and refunded by the sweep.
    pub queue_deadline: DateTime<Utc>,
    pub idempotency: Option<IdempotencyRecord>,
}

pub enum CreateOutcome {
    Created,
    InsufficientCredits,
    /// The idempotency key was used before: the record of the first request.
    Existing(IdempotencyRecord),
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

fn job_item(c: &CreateJob<'_>) -> Item {
    let mut item = key(user_pk(c.user_id), gen_sk(c.job_id));
    let set = &c.settings;
    item.insert("kind".into(), s("generation"));
    item.insert("id".into(), s(c.job_id));
    item.insert("user_id".into(), s(c.user_id));
    item.insert("status".into(), s(JobStatus::Queued.as_str()));
    item.insert("prompt".into(), s(set.prompt.as_str()));
    item.insert("size".into(), s(set.size.as_str()));
    item.insert("quality".into(), s(set.quality.as_str()));
    item.insert("n".into(), n(set.n));
    item.insert("seed".into(), n(set.seed));
    item.insert("output_format".into(), s(set.output_format.as_str()));
    item.insert("cost".into(), n(c.cost));
    item.insert("refunded".into(), n(0));
    item.insert("attempts".into(), n(0));
    item.insert("images".into(), s("[]"));
    // U3: providers are called in their no-training mode; every stored item records it.
    item.insert("training_use".into(), s("none"));
    item.insert("created_at".into(), s(c.now.to_rfc3339()));
    item.insert("updated_at".into(), s(c.now.to_rfc3339()));
    item.insert(keys::LEASE_PK.into(), s(keys::lease_pk(c.job_id)));
    item.insert(keys::LEASE_UNTIL.into(), n(c.queue_deadline.timestamp()));
    if let Some(at) = c.delete_at {
        item.insert("delete_at".into(), s(at.to_rfc3339()));
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(c.job_id)));
        item.insert(keys::EXP_AT.into(), n(at.timestamp()));
        // Backstop only, a day after the sweep's turn.
        item.insert(keys::TTL.into(), n(at.timestamp() + 86_400));
    }
    if let Some(idem) = &c.idempotency {
        item.insert("idempotency_key".into(), s(&idem.key));
    }
    item
}

fn time(item: &Item, name: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(get_s(item, name)?)
        .with_context(|| format!("stored {name}"))?
        .with_timezone(&Utc))
}

pub(super) fn job_from_item(item: &Item) -> anyhow::Result<Job> {
    let status = JobStatus::parse(get_s(item, "status")?).map_err(|e| anyhow::anyhow!(e))?;
    let settings = GenerationSettings {
        prompt: Prompt::parse(get_s(item, "prompt")?).map_err(|e| anyhow::anyhow!(e))?,
        size: ImageSize::parse(get_s(item, "size")?).map_err(|e| anyhow::anyhow!(e))?,
        quality: Quality::parse(get_s(item, "quality")?).map_err(|e| anyhow::anyhow!(e))?,
        n: get_n(item, "n")?,
        seed: get_n(item, "seed")?,
        output_format: OutputFormat::parse(get_s(item, "output_format")?)
            .map_err(|e| anyhow::anyhow!(e))?,
    };
    let images: Vec<StoredImage> =
        serde_json::from_str(get_s(item, "images")?).context("stored images")?;
    Ok(Job {
        id: get_s(item, "id")?.to_string(),
        user_id: get_s(item, "user_id")?.to_string(),
        status,
        settings,
        cost: get_n(item, "cost")?,
        refunded: opt_n(item, "refunded").unwrap_or(0),
        images,
        failure_code: opt_s(item, "failure_code"),
        failure_reason: opt_s(item, "failure_reason"),
        created_at: time(item, "created_at")?,
        updated_at: time(item, "updated_at")?,
        delete_at: opt_s(item, "delete_at")
            .map(|v| DateTime::parse_from_rfc3339(&v).map(|d| d.with_timezone(&Utc)))
            .transpose()
            .context("stored delete_at")?,
        provider: opt_s(item, "provider"),
        attempts: opt_n(item, "attempts").unwrap_or(0),
        idempotency_key: opt_s(item, "idempotency_key"),
    })
}

impl Store {
    /// Reserves the credits, creates the job and stores the idempotency record, all or nothing.
    pub async fn create_job(&self, c: CreateJob<'_>) -> anyhow::Result<CreateOutcome> {
        // An idempotency record can vanish between the failed condition and the read (expired
        // and swept, or deleted with its job): then the key is free again, so try once more.
        for _ in 0..2 {
            if let Some(outcome) = self.try_create_job(&c).await? {
                return Ok(outcome);
            }
        }
        Err(anyhow::Error::new(super::Contention("idempotency record")))
    }

    async fn try_create_job(&self, c: &CreateJob<'_>) -> anyhow::Result<Option<CreateOutcome>> {
        let mut items = Vec::new();
        if let Some(idem) = &c.idempotency {
            let expires = c.now
                + chrono::Duration::hours(
                    crate::domain::retention::RetentionPolicy::IDEMPOTENCY_HOURS,
                );
            let mut rec = key(user_pk(c.user_id), idem_sk(&idem.key));
            rec.insert("kind".into(), s("idempotency"));
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
                            .condition_expression("attribute_not_exists(pk) OR exp_at < :now")
                            .expression_attribute_values(":now", n(c.now.timestamp()))
                            .build()?,
                    )
                    .build(),
            );
        }
        let idem_index = c.idempotency.as_ref().map(|_| 0);
        let balance_index = items.len() + 1;
        items.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(job_item(c)))
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
        let outcome = transact(&self.client, "create generation", items).await?;
        if let TxnOutcome::Committed = outcome {
            return Ok(Some(CreateOutcome::Created));
        }
        if let Some(i) = idem_index {
            if outcome.failed_at(i) {
                let key = &c.idempotency.as_ref().expect("index implies a record").key;
                return Ok(self
                    .get_idempotency(c.user_id, key)
                    .await?
                    .map(CreateOutcome::Existing));
            }
        }
        if outcome.failed_at(balance_index) {
            return Ok(Some(CreateOutcome::InsufficientCredits));
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
            .client
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
                })
            })
            .transpose()
    }

    pub async fn get_job(&self, user_id: &str, job_id: &str) -> anyhow::Result<Option<Job>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .consistent_read(true)
            .send()
            .await
            .context("reading generation")?;
        out.item().map(job_from_item).transpose()
    }

    /// The user's generations, newest first; returns the page and the last key read.
    pub async fn list_jobs(
        &self,
        user_id: &str,
        limit: i32,
        after_sk: Option<String>,
    ) -> anyhow::Result<(Vec<Job>, Option<String>)> {
        let start = after_sk.map(|sk| key(user_pk(user_id), sk));
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(user_pk(user_id)))
            .expression_attribute_values(":p", s(GEN_PREFIX))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("listing generations")?;
        let jobs = out
            .items()
            .iter()
            .map(job_from_item)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let last = out
            .last_evaluated_key()
            .and_then(|k| k.get(keys::SK))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok((jobs, last))
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
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
            .update_expression(
                "SET #st = :running, lease_owner = :owner, lease_until = :until, \
                 lease_pk = :lpk, updated_at = :ts ADD attempts :one",
            )
            .condition_expression(
                "attribute_exists(pk) AND (#st = :queued OR (#st = :running AND lease_until < :now))",
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
                Ok(ClaimOutcome::Claimed(Box::new(job_from_item(item)?)))
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
            .client
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
                (":images", s(serde_json::to_string(images)?)),
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
        let items = vec![
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
        Ok(matches!(
            transact(&self.client, "fail and refund generation", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Deletes an idempotency record (it holds the first response, prompt included) if it still
    /// belongs to `job_id`; a key reused after expiry by another job keeps its record.
    async fn delete_idempotency_of(
        &self,
        user_id: &str,
        key_value: &str,
        job_id: &str,
    ) -> anyhow::Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), idem_sk(key_value))))
            .condition_expression("job_id = :id")
            .expression_attribute_values(":id", s(job_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(anyhow::anyhow!(e).context("deleting an idempotency record")),
        }
    }

    /// Removes the job from the API at once. An unfinished job (queued or running) is cancelled
    /// and refunded in the same transaction: a worker still running it then fails its
    /// completion condition and removes what it stored. Returns whether credits were refunded;
    /// `None` if the job does not exist.
    pub async fn delete_job(
        &self,
        user_id: &str,
        job_id: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<bool>> {
        for _ in 0..3 {
            let Some(job) = self.get_job(user_id, job_id).await? else {
                return Ok(None);
            };
            let refund = matches!(job.status, JobStatus::Queued | JobStatus::Running);
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(user_pk(user_id), gen_sk(job_id))))
                .condition_expression("#st = :st")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":st", s(job.status.as_str()));
            let mut items = vec![TransactWriteItem::builder().delete(delete.build()?).build()];
            if refund {
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
            match transact(&self.client, "delete generation", items).await? {
                TxnOutcome::Committed => {
                    if let Some(k) = &job.idempotency_key {
                        self.delete_idempotency_of(user_id, k, job_id).await?;
                    }
                    return Ok(Some(refund));
                }
                // The status moved under us (claimed, finished): read again and retry.
                TxnOutcome::ConditionFailed(_) => continue,
            }
        }
        Err(anyhow::Error::new(super::Contention("delete generation")))
    }
}
