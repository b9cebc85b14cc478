//! R1: one retention policy value, read by every function and published by `GET /v1/policy`.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// How long content (prompts, images, uploads) is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// `None` means "until deleted" (a plan setting); the default is 14 days.
    content_days: Option<u32>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            content_days: Some(Self::DEFAULT_DAYS),
        }
    }
}

impl RetentionPolicy {
    pub const DEFAULT_DAYS: u32 = 14;
    pub const MAX_DAYS: u32 = 3650;
    /// Idempotency records are kept this long (at least 24 hours, as promised to clients).
    pub const IDEMPOTENCY_HOURS: i64 = 24;

    /// Parses `RETENTION_DAYS`: a number of days (1 to 3650) or `until_deleted`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "until_deleted" {
            return Ok(Self { content_days: None });
        }
        match raw.parse::<u32>() {
            Ok(days) if (1..=Self::MAX_DAYS).contains(&days) => Ok(Self {
                content_days: Some(days),
            }),
            _ => Err(format!(
                "expected a number of days from 1 to {} or \"until_deleted\", got {raw:?}",
                Self::MAX_DAYS
            )),
        }
    }

    pub fn content_days(&self) -> Option<u32> {
        self.content_days
    }

    /// When content created at `created` is deleted (`None`: kept until the user deletes it).
    pub fn content_delete_at(&self, created: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.content_days
            .map(|days| created + Duration::days(i64::from(days)))
    }
}

/// R3: deleted content leaves every live store within this (the sweep runs every 5 minutes).
pub const PURGE_WITHIN_HOURS: u32 = 24;

/// The S3 lifecycle backstop for content kept `retention_days`: two days after the sweep's turn,
/// so it never expires content the policy keeps (none at all under `until_deleted`).
pub fn backstop_days(retention_days: u32) -> u32 {
    retention_days + 2
}

/// The retention policy in force, as published.
#[derive(Debug, Serialize)]
pub struct PublishedPolicy {
    pub policy_version: String,
    pub content_retention_days: Option<u32>,
    pub content_retention: String,
    pub deleted_content_purged_within_hours: u32,
    /// Deleted data can survive this long in point-in-time-recovery backups.
    pub deleted_content_purged_from_backups_within_days: u32,
    pub deletion_promise: String,
    pub idempotency_record_hours: i64,
    pub log_retention_days: u32,
    pub minimum_age: u32,
    pub training_use: &'static str,
}

impl PublishedPolicy {
    pub fn new(policy: &RetentionPolicy, version: &str, backup_days: u32) -> Self {
        Self {
            policy_version: version.to_string(),
            content_retention_days: policy.content_days,
            content_retention: match policy.content_days {
                Some(d) => format!("{d} days"),
                None => "until deleted".into(),
            },
            deleted_content_purged_within_hours: PURGE_WITHIN_HOURS,
            deleted_content_purged_from_backups_within_days: backup_days,
            deletion_promise: format!(
                "gone from live stores within {PURGE_WITHIN_HOURS} h, from backups within {backup_days} days"
            ),
            idempotency_record_hours: RetentionPolicy::IDEMPOTENCY_HOURS,
            log_retention_days: 30,
            minimum_age: super::age::MINIMUM_AGE,
            training_use: "never",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_default_is_fourteen_days() {
        let p = RetentionPolicy::default();
        let t = Utc::now();
        assert_eq!(p.content_delete_at(t), Some(t + Duration::days(14)));
        assert!(RetentionPolicy::parse("0").is_err());
        assert_eq!(
            RetentionPolicy::parse("until_deleted")
                .unwrap()
                .content_delete_at(t),
            None
        );
    }
}
