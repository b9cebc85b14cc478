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
    pub credits_balance: u64,
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

/// Every user route except onboarding answers 403 `onboarding_required` until it is done.
pub async fn require_onboarded(app: &App, caller: &Caller) -> Result<Profile, ApiError> {
    app.store
        .get_profile(caller.user_id.as_str())
        .await?
        .ok_or_else(ApiError::onboarding_required)
}

/// `POST /v1/me`. Returns 201 on first onboarding, 200 when already onboarded.
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn onboard(
    app: &App,
    caller: &Caller,
    body: OnboardBody,
    now: DateTime<Utc>,
) -> Result<(u16, Me), ApiError> {
    let user_id = caller.user_id.as_str();
    if let Some(existing) = app.store.get_profile(user_id).await? {
        return Ok((200, me_view(app, existing).await?));
    }
    let confirmation = match age::check(
        body.date_of_birth.as_deref(),
        body.age_confirmed,
        now.date_naive(),
    )? {
        AgeCheck::Confirmed(how) => how,
        AgeCheck::Underage => {
            // K1: refused, and nothing about this person is kept; only an anonymous count.
            app.store.count_age_refusal(now.date_naive()).await?;
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
    let outcome = app
        .store
        .onboard(
            user_id,
            caller.email.as_deref(),
            &display_name,
            confirmation.as_str(),
            app.config.signup_credits,
            now,
        )
        .await?;
    match outcome {
        OnboardOutcome::Created(profile) => {
            tracing::info!(granted = app.config.signup_credits, "account onboarded");
            let detail = serde_json::json!({"user_id": user_id, "amount": app.config.signup_credits, "cause": "grant:signup"});
            if let Err(e) = app.events.publish("credits.granted", &detail).await {
                tracing::warn!(error = ?e, "credits.granted event not published");
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
    let profile = app
        .store
        .update_profile(caller.user_id.as_str(), &update, now)
        .await?
        .ok_or_else(ApiError::onboarding_required)?;
    me_view(app, profile).await
}
