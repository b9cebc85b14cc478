//! Profiles (C1, D2) and onboarding with its one-time signup grant.

use anyhow::Context;
use aws_sdk_dynamodb::types::{Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::item::{get_s, key, n, opt_s, s, Item};
use super::keys::{self, user_pk, CREDITS, PK, PROFILE, SK};
use super::txn::{transact, TxnOutcome};
use super::Store;
use crate::datamap::{new_item, spec_of, Kind};
use crate::domain::credits::Cause;
use crate::domain::profile::{AvatarUrl, DisplayName, Preferences};

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub user_id: String,
    pub email: Option<String>,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub preferences: serde_json::Map<String, serde_json::Value>,
    pub age_confirmed_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// Set when the account's deletion was requested: deactivated at once (R4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspension: Option<Suspension>,
    /// Set while the user restricts processing (D6): kept, not in the gallery, marketing or
    /// analytics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted_at: Option<String>,
    /// Set when a payment reversal left the balance negative (U5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_flag: Option<String>,
    /// When the account was last restored: moderation refusals before it no longer count
    /// towards an automatic suspension (U5).
    #[serde(skip_serializing)]
    pub violations_counted_from: Option<String>,
}

/// Why and since when an account is suspended (U5, K2): it may read, export and delete its data
/// but not generate (or buy).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Suspension {
    pub reason: String,
    pub since: String,
}

pub enum OnboardOutcome {
    Created(Profile),
    AlreadyOnboarded(Profile),
}

#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub display_name: Option<DisplayName>,
    /// `Some(None)` clears the avatar.
    pub avatar_url: Option<Option<AvatarUrl>>,
    pub preferences: Option<Preferences>,
}

impl ProfileUpdate {
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.avatar_url.is_none() && self.preferences.is_none()
    }
}

fn profile_from_item(item: &Item) -> anyhow::Result<Profile> {
    let preferences = match opt_s(item, "preferences") {
        Some(json) => serde_json::from_str(&json).context("stored preferences")?,
        None => Default::default(),
    };
    Ok(Profile {
        user_id: get_s(item, "user_id")?.to_string(),
        email: opt_s(item, "email"),
        display_name: get_s(item, "display_name")?.to_string(),
        avatar_url: opt_s(item, "avatar_url"),
        preferences,
        age_confirmed_by: get_s(item, "age_confirmed_by")?.to_string(),
        created_at: get_s(item, "created_at")?.to_string(),
        updated_at: get_s(item, "updated_at")?.to_string(),
        deleted_at: opt_s(item, "deleted_at"),
        billing_flag: opt_s(item, "billing_flag"),
        restricted_at: opt_s(item, "restricted_at"),
        violations_counted_from: opt_s(item, "violations_counted_from"),
        suspension: opt_s(item, "suspension_reason").map(|reason| Suspension {
            reason,
            since: opt_s(item, "suspended_at").unwrap_or_default(),
        }),
    })
}

impl Store {
    pub async fn get_profile(&self, user_id: &str) -> anyhow::Result<Option<Profile>> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), PROFILE)))
            .consistent_read(true)
            .send()
            .await
            .context("reading profile")?;
        out.item().map(profile_from_item).transpose()
    }

    /// Creates the profile, the balance and the signup grant in one transaction; a second
    /// onboarding of the same subject changes nothing and returns the existing profile.
    #[allow(clippy::too_many_arguments)]
    pub async fn onboard(
        &self,
        user_id: &str,
        email: Option<&str>,
        display_name: &DisplayName,
        age_confirmed_by: &str,
        signup_credits: u64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<OnboardOutcome> {
        let ts = now.to_rfc3339();
        let mut profile = new_item(Kind::Profile, user_pk(user_id), PROFILE);
        profile.insert("user_id".into(), s(user_id));
        profile.insert("display_name".into(), s(display_name.as_str()));
        profile.insert("preferences".into(), s("{}"));
        profile.insert("age_confirmed_by".into(), s(age_confirmed_by));
        profile.insert("created_at".into(), s(&ts));
        profile.insert("updated_at".into(), s(&ts));
        if let Some(email) = email {
            profile.insert("email".into(), s(email));
        }
        let put_profile = TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(profile))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?,
            )
            .build();
        let mut items = vec![put_profile];
        items.push(self.balance_add(user_id, signup_credits)?);
        if signup_credits > 0 {
            items.push(self.ledger_put(
                user_id,
                &Cause::SignupGrant,
                signup_credits as i64,
                now,
            )?);
        }
        match transact(self.client().await, "onboard", items).await? {
            TxnOutcome::Committed => {
                let p = self
                    .get_profile(user_id)
                    .await?
                    .context("profile missing after onboarding")?;
                Ok(OnboardOutcome::Created(p))
            }
            TxnOutcome::ConditionFailed(_) => {
                let p = self
                    .get_profile(user_id)
                    .await?
                    .context("onboarding condition failed but no profile exists")?;
                Ok(OnboardOutcome::AlreadyOnboarded(p))
            }
        }
    }

    /// Applies a validated update; `None` when the user has not onboarded.
    pub async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Profile>> {
        let mut sets = vec!["updated_at = :now".to_string()];
        let mut removes = Vec::new();
        let mut req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), PROFILE)))
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(deleted_at)")
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .return_values(ReturnValue::AllNew);
        if let Some(name) = &update.display_name {
            sets.push("display_name = :dn".into());
            req = req.expression_attribute_values(":dn", s(name.as_str()));
        }
        match &update.avatar_url {
            Some(Some(url)) => {
                sets.push("avatar_url = :av".into());
                req = req.expression_attribute_values(":av", s(url.as_str()));
            }
            Some(None) => removes.push("avatar_url"),
            None => {}
        }
        if let Some(prefs) = &update.preferences {
            sets.push("preferences = :pr".into());
            req = req.expression_attribute_values(":pr", s(prefs.to_json()));
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expr.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match req.update_expression(expr).send().await {
            Ok(out) => out
                .attributes()
                .map(profile_from_item)
                .transpose()
                .map(|p| p.or(None)),
            Err(e) if is_conditional_failure(&e) => Ok(None),
            Err(e) => Err(anyhow::anyhow!(e).context("updating profile")),
        }
    }

    /// Flags an account (a reversal left its balance negative).
    pub async fn flag_account(&self, user_id: &str, flag: &str) -> anyhow::Result<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), PROFILE)))
            .update_expression("SET billing_flag = :f")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":f", s(flag))
            .send()
            .await;
        super::applied(result, "flagging an account")?;
        Ok(())
    }

    /// K1: counts refused under-13 sign-ups per day, with no identity attached.
    pub async fn count_age_refusal(&self, day: NaiveDate) -> anyhow::Result<()> {
        self.client().await
            .update_item()
            .table_name(&self.table)
            .key(PK, s("STATS#age_refusals"))
            .key(SK, s(day.to_string()))
            .update_expression(
                "SET kind = :kind, retention = :ret, exp_pk = :epk, exp_at = :eat ADD refusals :one",
            )
            .expression_attribute_values(":kind", s(spec_of(Kind::AgeRefusalCounter).kind))
            .expression_attribute_values(
                ":ret",
                s(spec_of(Kind::AgeRefusalCounter).retention.as_str()),
            )
            .expression_attribute_values(":epk", s(keys::exp_pk(&day.to_string())))
            .expression_attribute_values(
                ":eat",
                n((day + chrono::Days::new(366))
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc()
                    .timestamp()),
            )
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .context("counting an age refusal")?;
        Ok(())
    }

    pub async fn age_refusals(&self, day: NaiveDate) -> anyhow::Result<u64> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .key(PK, s("STATS#age_refusals"))
            .key(SK, s(day.to_string()))
            .consistent_read(true)
            .send()
            .await
            .context("reading age refusals")?;
        Ok(out
            .item()
            .and_then(|i| super::item::opt_n(i, "refusals"))
            .unwrap_or(0))
    }

    /// Whether any item of the user's partition exists (tests of K1 use it).
    pub async fn user_item_count(&self, user_id: &str) -> anyhow::Result<usize> {
        let out = self
            .client()
            .await
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(user_pk(user_id)))
            .consistent_read(true)
            .send()
            .await
            .context("counting user items")?;
        Ok(out.items().len())
    }

    pub(super) fn credits_key(user_id: &str) -> Item {
        key(user_pk(user_id), CREDITS)
    }
}

pub(super) fn is_conditional_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}
