//! Onboarding (K1, C1), the profile (D2) and the onboarding gate of every user route.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::instrument;

use crate::app::App;
use crate::domain::age::{self, AgeCheck};
use crate::domain::profile::{AvatarUrl, DisplayName, Preferences};
use crate::error::ApiError;
use crate::http::Caller;
use crate::store::{OnboardOutcome, Profile, ProfileUpdate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardBody {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub age_confirmed: Option<bool>,
}

/// `GET /v1/me`: the profile and the credit balance.
#[derive(Debug, Serialize)]
pub struct Me {
    #[serde(flatten)]
    pub profile: Profile,
    pub credits_balance: i64,
    pub data_retention: &'static str,
}

async fn me_view(app: &App, profile: Profile) -> Result<Me, ApiError> {
    let balance = app.store.balance(&profile.user_id).await?.unwrap_or(0);
    Ok(Me {
        profile,
        credits_balance: balance,
        data_retention: "kept while the account is active (R6)",
    })
}

/// Every user route except onboarding answers 403 `onboarding_required` until it is done, and
/// every route but the deletion status answers 403 `account_deleted` once the account's
/// deletion was requested (R4: deactivated at once).
pub async fn require_onboarded(app: &App, caller: &Caller) -> Result<Profile, ApiError> {
    match app.store.get_profile(caller.user_id.as_str()).await? {
        Some(p) if p.deleted_at.is_none() => Ok(p),
        Some(_) => Err(account_deleted()),
        // Erased already, the deletion not yet complete (a second look is pending): still
        // deleted, not a new account.
        None => match app.store.tombstone(caller.user_id.as_str()).await? {
            Some(t) if t.completed_at.is_none() => Err(account_deleted()),
            _ => Err(ApiError::onboarding_required()),
        },
    }
}

fn account_deleted() -> ApiError {
    ApiError::forbidden(
        "account_deleted",
        "this account is being deleted; GET /v1/me/deletion tells how far",
    )
}

/// `POST /v1/me`. Returns 201 on first onboarding, 200 when already onboarded. Not
/// instrumented with the subject: a refused under-13 sign-up must leave no identity in the logs.
#[instrument(skip_all)]
pub async fn onboard(
    app: &App,
    caller: &Caller,
    body: OnboardBody,
    now: DateTime<Utc>,
) -> Result<(u16, Me), ApiError> {
    let user_id = caller.user_id.as_str();
    if let Some(existing) = app.store.get_profile(user_id).await? {
        if existing.deleted_at.is_some() {
            return Err(account_deleted());
        }
        return Ok((200, me_view(app, existing).await?));
    }
    let confirmation = match age::check(
        body.date_of_birth.as_deref(),
        body.age_confirmed,
        now.date_naive(),
    )? {
        AgeCheck::Confirmed(how) => how,
        AgeCheck::Underage => {
            // K1: refused, and nothing about this person is kept: only an anonymous count. The
            // identity-provider user goes too, and no log line names the subject.
            app.store.count_age_refusal(now.date_naive()).await?;
            if let Err(e) = app.identity().delete_user(user_id).await {
                tracing::error!(error = %e, "refused sign-up: identity-provider user not deleted");
                return Err(ApiError::Unavailable(
                    "identity provider unavailable".into(),
                ));
            }
            return Err(ApiError::forbidden(
                "age_requirement",
                format!(
                    "this service is for people aged {} and over",
                    age::MINIMUM_AGE
                ),
            ));
        }
    };
    let display_name = match body.display_name.as_deref() {
        Some(raw) => DisplayName::parse(raw)?,
        None => default_display_name(caller.email.as_deref()),
    };
    // The same identity after its account was deleted gets a new, empty account, without the
    // signup credits a second time (the tombstone, keyed by a hash of the subject, tells).
    let signup_credits = match app.store.tombstone(user_id).await? {
        Some(t) if t.completed_at.is_none() => return Err(account_deleted()),
        Some(_) => 0,
        None => app.config.signup_credits,
    };
    let outcome = app
        .store
        .onboard(
            user_id,
            caller.email.as_deref(),
            &display_name,
            confirmation.as_str(),
            signup_credits,
            now,
        )
        .await?;
    match outcome {
        OnboardOutcome::Created(profile) => {
            tracing::info!(user_id, granted = signup_credits, "account onboarded");
            if signup_credits > 0 {
                let detail = serde_json::json!({"user_id": user_id, "amount": signup_credits, "cause": "grant:signup"});
                if let Err(e) = app.events().publish("credits.granted", &detail).await {
                    tracing::warn!(error = ?e, "credits.granted event not published");
                }
            }
            Ok((201, me_view(app, profile).await?))
        }
        OnboardOutcome::AlreadyOnboarded(profile) => Ok((200, me_view(app, profile).await?)),
    }
}

fn default_display_name(email: Option<&str>) -> DisplayName {
    email
        .and_then(|e| e.split('@').next())
        .and_then(|local| DisplayName::parse(local).ok())
        .unwrap_or_else(|| DisplayName::parse("New user").expect("constant is valid"))
}

/// `GET /v1/me`.
pub async fn get_me(app: &App, caller: &Caller) -> Result<Me, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    me_view(app, profile).await
}

/// Parses a `PATCH /v1/me` body: `display_name`, `avatar_url` (string or null), `preferences`.
pub fn parse_update(body: &Value) -> Result<ProfileUpdate, ApiError> {
    let map = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid_body", "the body must be a JSON object"))?;
    let mut update = ProfileUpdate::default();
    for (field, value) in map {
        match (field.as_str(), value) {
            ("display_name", Value::String(s)) => {
                update.display_name = Some(DisplayName::parse(s)?)
            }
            ("avatar_url", Value::Null) => update.avatar_url = Some(None),
            ("avatar_url", Value::String(s)) => {
                update.avatar_url = Some(Some(AvatarUrl::parse(s)?))
            }
            ("preferences", v) => update.preferences = Some(Preferences::parse(v)?),
            ("display_name" | "avatar_url", _) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("{field} has the wrong type"),
                ))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("{field} cannot be changed here"),
                ))
            }
        }
    }
    if update.is_empty() {
        return Err(ApiError::bad_request(
            "empty_update",
            "send at least one of display_name, avatar_url, preferences",
        ));
    }
    Ok(update)
}

/// `PATCH /v1/me`.
pub async fn update_me(
    app: &App,
    caller: &Caller,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<Me, ApiError> {
    let update = parse_update(body)?;
    // One conditional write: the profile must exist and not be deleted. Only a refused write
    // reads, to say why.
    match app
        .store
        .update_profile(caller.user_id.as_str(), &update, now)
        .await?
    {
        Some(profile) => me_view(app, profile).await,
        None => {
            require_onboarded(app, caller).await?;
            Err(ApiError::Unavailable(
                "the account changed meanwhile".into(),
            ))
        }
    }
}

/// The confirmation `DELETE /v1/me` requires, verbatim.
pub const DELETE_CONFIRMATION: &str = "delete my account";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountBody {
    pub confirm: String,
}

/// `GET /v1/me/deletion` and the answer to `DELETE /v1/me`.
#[derive(Debug, Serialize)]
pub struct DeletionStatus {
    /// `pending` until the sweep has erased everything, then `completed`.
    pub status: &'static str,
    pub requested_at: String,
    pub completed_at: Option<String>,
    /// The promise: gone from live stores within this, from backups within `backups_within_days`.
    pub live_stores_within_hours: u32,
    pub backups_within_days: u32,
}

fn deletion_status_view(app: &App, t: crate::store::Tombstone) -> DeletionStatus {
    DeletionStatus {
        status: if t.completed_at.is_some() {
            "completed"
        } else {
            "pending"
        },
        requested_at: t.requested_at,
        completed_at: t.completed_at,
        live_stores_within_hours: crate::domain::retention::PURGE_WITHIN_HOURS,
        backups_within_days: app.config.backup_recovery_days,
    }
}

/// `DELETE /v1/me` (D3, R4): deactivates the account at once, cancels and refunds its
/// unfinished jobs, and hands everything to the deletion pipeline.
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn delete_me(
    app: &App,
    caller: &Caller,
    body: DeleteAccountBody,
    now: DateTime<Utc>,
) -> Result<DeletionStatus, ApiError> {
    if body.confirm != DELETE_CONFIRMATION {
        return Err(ApiError::bad_request(
            "confirmation_required",
            format!("send {{\"confirm\": \"{DELETE_CONFIRMATION}\"}} to delete this account and all its data"),
        ));
    }
    require_onboarded(app, caller).await?;
    start_account_deletion(app, caller.user_id.as_str(), "user_request", None, now).await?;
    let t = app
        .store
        .tombstone(caller.user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no tombstone after deletion")))?;
    Ok(deletion_status_view(app, t))
}

/// Deactivates an account and commits its deletion record (self-service, or a confirmed child
/// report, whose review commits in the same transaction); then cancels and refunds its
/// unfinished jobs (best effort: the erasure cancels whatever is left first). `false` if there
/// was no active account (or the review's report was not pending any more).
pub async fn start_account_deletion(
    app: &App,
    user_id: &str,
    reason: &str,
    review: Option<&crate::store::Review<'_>>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    match app.store.get_profile(user_id).await? {
        Some(p) if p.deleted_at.is_none() => {}
        _ => return Ok(false),
    }
    let anonymous_id = ulid::Ulid::new().to_string().to_lowercase();
    let record = crate::store::DeletionRecord::account(user_id, reason, &anonymous_id, now);
    let keep_until = crate::services::deletion::legal_keep_until(app, now);
    if !app
        .store
        .deactivate_account(user_id, &record, review, keep_until, now)
        .await?
    {
        return Ok(false);
    }
    tracing::info!(reason, "account deactivated; deletion pending");
    // No renewal may charge an account being deleted, even while a hold delays its erasure:
    // the Stripe customer goes now (its subscriptions with it); the erasure retries.
    if let (Some(stripe), Some(customer)) = (
        app.payments(),
        app.store.customer(user_id).await?.customer_id,
    ) {
        if let Err(e) = stripe.delete_customer(&customer).await {
            tracing::warn!(error = %e, "Stripe customer left for the erasure to delete");
        }
    }
    // Out of marketing at once (the account's consents go with it).
    crate::services::consents::on_account_deleted(app, user_id, now).await;
    if let Err(e) = cancel_unfinished_jobs(app, user_id, reason, now).await {
        tracing::warn!(error = ?e, "unfinished jobs left for the erasure to cancel");
    }
    Ok(true)
}

/// Cancels and refunds the user's unfinished jobs, each with its deletion record (a running
/// one's objects get a second look after the lease). Returns whether one was running.
pub async fn cancel_unfinished_jobs(
    app: &App,
    user_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let mut running = false;
    for job_id in app.store.unfinished_job_ids(user_id).await? {
        if let Some((_, status)) = app
            .store
            .hide_job(user_id, &job_id, reason, true, now)
            .await?
        {
            running |= status == crate::domain::generation::JobStatus::Running;
        }
    }
    Ok(running)
}

/// `GET /v1/me/deletion`: how far the deletion of the caller's account is.
pub async fn deletion_status(app: &App, caller: &Caller) -> Result<DeletionStatus, ApiError> {
    let t = app
        .store
        .tombstone(caller.user_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("account deletion"))?;
    Ok(deletion_status_view(app, t))
}
