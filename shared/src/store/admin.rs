//! Admin records: legal holds (R5), the audit log of admin actions, child-account reports (K2),
//! and the references that let account deletion replace a subject named in them by the
//! account's anonymous id (R4).

use std::collections::HashSet;

use anyhow::Context;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::item::{key, n, s, Item};
use super::keys::{self, ref_sk, user_pk, AUDIT_PK, HOLD_PK, REPORT_PK};
use super::txn::{transact, TxnOutcome};
use super::{applied, Filter, Store};
use crate::datamap::{new_item, Kind};

/// A legal hold on a user, or on one of their generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Whether the objects it covers have lost the lifecycle backstop's tag (the sweep finishes
    /// what placing the hold could not).
    #[serde(default)]
    pub objects_untagged: bool,
}

impl Hold {
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        match &self.until {
            None => true,
            Some(u) => DateTime::parse_from_rfc3339(u)
                .map(|u| u > now)
                .unwrap_or(true),
        }
    }
}

/// The holds in force at one moment: what the pipeline, the sweep and expiry leave in place.
#[derive(Debug, Default, Clone)]
pub struct HoldSet {
    users: HashSet<String>,
    generations: HashSet<(String, String)>,
}

impl HoldSet {
    pub fn covers(&self, user_id: &str, generation_id: Option<&str>) -> bool {
        self.users.contains(user_id)
            || generation_id.is_some_and(|g| {
                self.generations
                    .contains(&(user_id.to_string(), g.to_string()))
            })
    }

    /// Whether any hold names the user (on the account or on one of its generations): an
    /// account is erased only when none does.
    pub fn names_user(&self, user_id: &str) -> bool {
        self.users.contains(user_id) || self.generations.iter().any(|(u, _)| u == user_id)
    }

    /// The generations of `user_id` held on their own.
    pub fn held_generations<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a str> {
        self.generations
            .iter()
            .filter(move |(u, _)| u == user_id)
            .map(|(_, g)| g.as_str())
    }
}

/// One admin action: who, what, when, why, outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at: String,
    /// The admin's subject, or `system`.
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub outcome: String,
}

pub const SYSTEM_ACTOR: &str = "system";

impl AuditRecord {
    pub fn new(
        actor: &str,
        action: &str,
        target_user: Option<&str>,
        target: Option<&str>,
        reason: Option<&str>,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ulid::Ulid::from_datetime(now.into())
                .to_string()
                .to_lowercase(),
            at: now.to_rfc3339(),
            actor: actor.into(),
            action: action.into(),
            target_user: target_user.map(str::to_string),
            target: target.map(str::to_string),
            reason: reason.map(str::to_string),
            outcome: outcome.into(),
        }
    }

    fn sk(&self) -> String {
        format!("{}#{}", self.at, self.id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Pending,
    Confirmed,
    Dismissed,
}

/// A report that an account belongs to a child (K2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildReport {
    pub id: String,
    pub reported_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    pub reporter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    pub status: ReportStatus,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_reason: Option<String>,
}

/// An admin's review of a child report.
pub struct Review<'a> {
    pub id: &'a str,
    pub status: ReportStatus,
    pub reviewer: &'a str,
    pub reason: Option<&'a str>,
    pub audit: &'a AuditRecord,
}

/// Which attributes of a record name which subject.
pub(crate) struct Mentions<'a>(pub Vec<(&'a str, &'a str)>);

impl Store {
    fn put(&self, item: Item, condition: Option<&str>) -> anyhow::Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition.map(str::to_string))
                    .build()?,
            )
            .build())
    }

    /// The reference items for a record at (`pk`, `sk`) that names subjects in attributes, one
    /// per subject (`system` names nobody).
    pub(crate) fn references(
        &self,
        pk: &str,
        sk: &str,
        mentions: &Mentions<'_>,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        let mut by_user: Vec<(&str, Vec<&str>)> = Vec::new();
        for (field, user) in &mentions.0 {
            if *user == SYSTEM_ACTOR {
                continue;
            }
            match by_user.iter_mut().find(|(u, _)| u == user) {
                Some((_, fields)) => fields.push(field),
                None => by_user.push((user, vec![field])),
            }
        }
        by_user
            .into_iter()
            .map(|(user, fields)| {
                // An update that adds to the set: two mentions of one user in one record (a
                // reporter who also reviews) merge instead of overwriting each other.
                let spec = crate::datamap::spec_of(Kind::Reference);
                Ok(TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(user_pk(user), ref_sk(pk, sk))))
                            .update_expression(
                                "SET kind = :kind, retention = :ret, ref_pk = :rpk, ref_sk = :rsk \
                                 ADD #fields :f",
                            )
                            .expression_attribute_names("#fields", "fields")
                            .expression_attribute_values(":kind", s(spec.kind))
                            .expression_attribute_values(":ret", s(spec.retention.as_str()))
                            .expression_attribute_values(":rpk", s(pk))
                            .expression_attribute_values(":rsk", s(sk))
                            .expression_attribute_values(
                                ":f",
                                aws_sdk_dynamodb::types::AttributeValue::Ss(
                                    fields.into_iter().map(str::to_string).collect(),
                                ),
                            )
                            .build()?,
                    )
                    .build())
            })
            .collect()
    }

    fn stamped(&self, mut item: Item, seed: &str, at: DateTime<Utc>) -> Item {
        item.insert(keys::EXP_PK.into(), s(keys::exp_pk(seed)));
        item.insert(keys::EXP_AT.into(), n(at.timestamp()));
        item
    }

    /// The audit record and its references, as transaction items; kept until `keep_until`.
    pub(crate) fn audit_items(
        &self,
        record: &AuditRecord,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        let sk = record.sk();
        let mut item = new_item(Kind::AuditRecord, AUDIT_PK, &sk);
        item.extend(serde_dynamo::to_item::<_, Item>(record)?);
        let mut items = vec![self.put(self.stamped(item, &record.id, keep_until), None)?];
        let mut mentions = vec![("actor", record.actor.as_str())];
        if let Some(u) = &record.target_user {
            mentions.push(("target_user", u.as_str()));
        }
        items.extend(self.references(AUDIT_PK, &sk, &Mentions(mentions))?);
        Ok(items)
    }

    /// Writes an audit record on its own.
    pub async fn audit(
        &self,
        record: &AuditRecord,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        transact(
            self.client().await,
            "audit",
            self.audit_items(record, keep_until)?,
        )
        .await?;
        Ok(())
    }

    /// Audit records, newest first; returns the page and the last sort key read.
    pub async fn list_audit(
        &self,
        limit: i32,
        after_sk: Option<String>,
    ) -> anyhow::Result<(Vec<AuditRecord>, Option<String>)> {
        self.page(AUDIT_PK, None, limit, after_sk, "the audit log")
            .await
    }

    /// Places a hold and audits it, in one transaction.
    pub async fn place_hold(
        &self,
        hold: &Hold,
        audit: &AuditRecord,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut item = new_item(Kind::Hold, HOLD_PK, &hold.id);
        item.extend(serde_dynamo::to_item::<_, Item>(hold)?);
        if let Some(until) = &hold.until {
            let at = DateTime::parse_from_rfc3339(until)
                .context("hold end")?
                .with_timezone(&Utc);
            item = self.stamped(item, &hold.id, at);
        }
        let mut items = vec![self.put(item, Some("attribute_not_exists(pk)"))?];
        items.extend(self.audit_items(audit, keep_until)?);
        transact(self.client().await, "place hold", items).await?;
        Ok(())
    }

    /// Notes that the hold's objects lost the backstop tag.
    pub async fn mark_hold_untagged(&self, id: &str) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(HOLD_PK, id)))
            .update_expression("SET objects_untagged = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .send()
            .await;
        applied(result, "marking a hold's objects untagged")?;
        Ok(())
    }

    pub async fn get_hold(&self, id: &str) -> anyhow::Result<Option<Hold>> {
        self.get_record(HOLD_PK, id, "a hold").await
    }

    /// Every hold stored (in force or ended but not yet removed by the sweep).
    pub async fn list_holds(&self) -> anyhow::Result<Vec<Hold>> {
        self.query_all(HOLD_PK, None, None, "holds")
            .await?
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).context("stored hold"))
            .collect()
    }

    /// The holds that keep content now: every stored hold, an ended one included until the
    /// sweep has removed it (and audited its end), so nothing it names is erased before that.
    pub async fn holds_in_force(&self, _now: DateTime<Utc>) -> anyhow::Result<HoldSet> {
        let mut set = HoldSet::default();
        for hold in self.list_holds().await? {
            match hold.generation_id {
                Some(g) => set.generations.insert((hold.user_id, g)),
                None => set.users.insert(hold.user_id),
            };
        }
        Ok(set)
    }

    /// Removes a hold and audits it in one transaction; `false` if there was no such hold.
    pub async fn remove_hold(
        &self,
        id: &str,
        audit: &AuditRecord,
        keep_until: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut items = vec![TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(HOLD_PK, id)))
                    .condition_expression("attribute_exists(pk)")
                    .build()?,
            )
            .build()];
        items.extend(self.audit_items(audit, keep_until)?);
        Ok(matches!(
            transact(self.client().await, "lift hold", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Files a report, suspends the reported account pending review and audits both, in one
    /// transaction; `false` if the reported account does not exist or is deleted.
    pub async fn file_child_report(
        &self,
        report: &ChildReport,
        audit: &AuditRecord,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut item = new_item(Kind::ChildReport, REPORT_PK, &report.id);
        item.extend(serde_dynamo::to_item::<_, Item>(report)?);
        let mut items = vec![self.put(
            self.stamped(item, &report.id, keep_until),
            Some("attribute_not_exists(pk)"),
        )?];
        items.extend(self.references(
            REPORT_PK,
            &report.id,
            &Mentions(vec![
                ("reported_user", report.reported_user.as_str()),
                ("reporter", report.reporter.as_str()),
            ]),
        )?);
        items.push(self.suspend_item(
            &report.reported_user,
            "child_report",
            SYSTEM_ACTOR,
            true,
            now,
        )?);
        items.extend(self.audit_items(audit, keep_until)?);
        let committed = matches!(
            transact(self.client().await, "file child report", items).await?,
            TxnOutcome::Committed
        );
        if committed {
            // G1: a suspended account's images leave the gallery at once.
            self.follow_gallery(&report.reported_user).await;
        }
        Ok(committed)
    }

    pub async fn get_child_report(&self, id: &str) -> anyhow::Result<Option<ChildReport>> {
        self.get_record(REPORT_PK, id, "a report").await
    }

    /// Reports waiting for review, oldest first (every page of the partition is read).
    pub async fn pending_child_reports(&self) -> anyhow::Result<Vec<ChildReport>> {
        let filter = Filter {
            expression: "#st = :pending",
            names: &[("#st", "status")],
            values: vec![(":pending", s("pending"))],
        };
        self.query_all(REPORT_PK, None, Some(filter), "reports")
            .await?
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).context("stored report"))
            .collect()
    }

    /// The review's items: the report's update (only while pending), the reviewer's
    /// reference and the audit record.
    pub(crate) fn review_items(
        &self,
        review: &Review<'_>,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TransactWriteItem>> {
        let status_value = serde_dynamo::to_attribute_value(review.status)?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(REPORT_PK, review.id)))
            .update_expression(
                "SET #st = :status, reviewed_by = :by, reviewed_at = :at, review_reason = :why",
            )
            .condition_expression("#st = :pending")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":status", status_value)
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":by", s(review.reviewer))
            .expression_attribute_values(":at", s(now.to_rfc3339()))
            .expression_attribute_values(":why", s(review.reason.unwrap_or("")));
        let mut items = vec![TransactWriteItem::builder().update(update.build()?).build()];
        items.extend(self.references(
            REPORT_PK,
            review.id,
            &Mentions(vec![("reviewed_by", review.reviewer)]),
        )?);
        items.extend(self.audit_items(review.audit, keep_until)?);
        Ok(items)
    }

    /// Records the review of a pending report (and its audit record); `false` if it was not
    /// pending any more.
    pub async fn review_child_report(
        &self,
        review: &Review<'_>,
        keep_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let items = self.review_items(review, keep_until, now)?;
        Ok(matches!(
            transact(self.client().await, "review child report", items).await?,
            TxnOutcome::Committed
        ))
    }

    /// Takes one use of a rate limit's window with one conditional write (`uses < max`);
    /// `false` when the window is spent. User counters live in the user's partition (they go
    /// with the account); IP counters under a hash of the address. DynamoDB's TTL removes them
    /// a day after their window.
    pub async fn take_rate_slot(
        &self,
        action: crate::limits::Action,
        subject: &str,
        window_start: i64,
        window_end: i64,
        max: u32,
    ) -> anyhow::Result<bool> {
        let (pk, kind) = match action.scope() {
            crate::limits::Scope::User => (user_pk(subject), Kind::RateCounter),
            crate::limits::Scope::Ip => (keys::ip_rate_pk(subject), Kind::IpRateCounter),
        };
        let sk = keys::rate_sk(action.name(), &window_start.to_string());
        let spec = crate::datamap::spec_of(kind);
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, &sk)))
            .update_expression(
                "SET kind = :kind, retention = :ret, exp_at = :eat, #ttl = :ttl ADD uses :one",
            )
            .condition_expression("attribute_not_exists(uses) OR uses < :max")
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_values(":kind", s(spec.kind))
            .expression_attribute_values(":ret", s(spec.retention.as_str()))
            .expression_attribute_values(":eat", n(window_end))
            .expression_attribute_values(":ttl", n(window_end + 86_400))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .send()
            .await;
        applied(result, "taking a rate limit slot")
    }
}
