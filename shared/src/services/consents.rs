//! Consents (U4, D5, D7) and the restriction of processing (D6), self-service.
//!
//! - Each purpose the operator configures (`CONSENT_PURPOSES`) is off until the user grants it;
//!   every change is recorded with its time, source and the policy version in force, and takes
//!   effect at once.
//! - Marketing events on the bus go out only for users whose consent is granted now and who do
//!   not restrict processing ([`marketing_allowed`]); a withdrawal sends
//!   `marketing.unsubscribed` at once (an opt-out signal carrying only the user id).
//! - A restricted account keeps its data, reads, exports and deletes it; its images leave the
//!   gallery, and no marketing or analytics event names it ([`analytics_allowed`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::instrument;

use crate::app::App;
use crate::error::ApiError;
use crate::http::Caller;
use crate::services::accounts::require_onboarded;
use crate::store::{ConsentChange, Recorded};

/// The restriction's entry in the consent records.
pub const RESTRICTION: &str = "processing_restriction";
/// The purpose marketing events need.
pub const MARKETING: &str = "marketing_email";
const SOURCE: &str = "self_service";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    pub granted: bool,
}

#[derive(Debug, Serialize)]
pub struct PurposeView {
    pub purpose: String,
    pub granted: bool,
    pub changed_at: Option<String>,
    pub source: Option<String>,
    pub policy_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ConsentsView {
    pub purposes: Vec<PurposeView>,
    /// Whether the user restricts processing (D6), and since when.
    pub restricted: bool,
    pub restricted_since: Option<String>,
    /// Every change, oldest first.
    pub history: Vec<ConsentChange>,
    pub policy_version: String,
}

/// `GET /v1/me/consents`: the configured purposes, and any other the user has a stored state
/// for (a purpose the operator removed can still be seen and withdrawn).
pub async fn get(app: &App, caller: &Caller) -> Result<ConsentsView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    view(app, caller.user_id.as_str(), profile.restricted_at).await
}

/// The view, with the restriction already known (a change reads no profile again).
async fn view(
    app: &App,
    user_id: &str,
    restricted_at: Option<String>,
) -> Result<ConsentsView, ApiError> {
    let current = app.store.consents(user_id).await?;
    let mut names: Vec<String> = app.config.consent_purposes.clone();
    for c in &current {
        if c.purpose != RESTRICTION && !names.contains(&c.purpose) {
            names.push(c.purpose.clone());
        }
    }
    let purposes = names
        .into_iter()
        .map(|p| {
            let c = current.iter().find(|c| c.purpose == p);
            PurposeView {
                granted: c.is_some_and(|c| c.granted),
                changed_at: c.map(|c| c.at.clone()),
                source: c.map(|c| c.source.clone()),
                policy_version: c.map(|c| c.policy_version.clone()),
                purpose: p,
            }
        })
        .collect();
    Ok(ConsentsView {
        purposes,
        restricted: restricted_at.is_some(),
        restricted_since: restricted_at,
        history: app.store.consent_history(user_id).await?,
        policy_version: app.config.policy_version.clone(),
    })
}

/// Records a change; `false` when a later change of the same purpose was recorded first (that
/// one stands).
async fn record(
    app: &App,
    caller: &Caller,
    purpose: &str,
    granted: bool,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let change = ConsentChange {
        id: ulid::Ulid::from_datetime(now.into())
            .to_string()
            .to_lowercase(),
        purpose: purpose.to_string(),
        granted,
        at: now.to_rfc3339(),
        source: SOURCE.into(),
        policy_version: app.config.policy_version.clone(),
    };
    match app
        .store
        .record_consent(caller.user_id.as_str(), &change, purpose == RESTRICTION)
        .await?
    {
        Recorded::Committed => Ok(true),
        Recorded::Superseded => Ok(false),
        Recorded::Inactive => {
            // Deactivated meanwhile.
            require_onboarded(app, caller).await?;
            Err(ApiError::Unavailable(
                "the account changed meanwhile".into(),
            ))
        }
    }
}

/// Whether the user's stored state grants `purpose`.
async fn granted(app: &App, user_id: &str, purpose: &str) -> anyhow::Result<bool> {
    Ok(app
        .store
        .consents(user_id)
        .await?
        .iter()
        .any(|c| c.purpose == purpose && c.granted))
}

/// `PUT /v1/me/consents/{purpose}` `{granted}`: takes effect at once. A configured purpose can
/// be granted; any purpose with a stored state can be withdrawn. Setting the state it already
/// has records nothing.
#[instrument(skip_all, fields(user_id = %caller.user_id, purpose))]
pub async fn put(
    app: &App,
    caller: &Caller,
    purpose: &str,
    body: ConsentBody,
    now: DateTime<Utc>,
) -> Result<ConsentsView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    let user_id = caller.user_id.as_str();
    let stored = app.store.consents(user_id).await?;
    let current = stored
        .iter()
        .find(|c| c.purpose == purpose && purpose != RESTRICTION);
    let configured = app.config.consent_purposes.iter().any(|p| p == purpose);
    if !configured && (body.granted || current.is_none()) {
        return Err(ApiError::client(
            404,
            "unknown_purpose",
            format!(
                "no such purpose; the purposes are: {}",
                app.config.consent_purposes.join(", ")
            ),
        ));
    }
    let was = current.is_some_and(|c| c.granted);
    if was == body.granted {
        return view(app, user_id, profile.restricted_at).await;
    }
    if !record(app, caller, purpose, body.granted, now).await? {
        // A later change won: it stands, and announced itself.
        return get(app, caller).await;
    }
    if purpose == MARKETING {
        if body.granted {
            if profile.restricted_at.is_none() {
                publish_marketing(
                    app,
                    user_id,
                    "marketing.subscribed",
                    json!({"user_id": user_id, "at": now.to_rfc3339()}),
                )
                .await;
            }
        } else if profile.restricted_at.is_none() {
            // The opt-out reaches a newsletter integration at once (a restricted account was
            // taken out when it restricted processing).
            unsubscribe(app, user_id, now).await;
        }
    }
    tracing::info!(granted = body.granted, "consent recorded");
    view(app, user_id, profile.restricted_at).await
}

/// Tells marketing integrations to drop the user (it carries only the user id and the time of
/// the change, so a consumer applies the latest).
pub async fn unsubscribe(app: &App, user_id: &str, now: DateTime<Utc>) {
    crate::services::worker::publish_unchecked(
        app,
        "marketing.unsubscribed",
        json!({"user_id": user_id, "at": now.to_rfc3339()}),
    )
    .await;
}

/// At account deletion: an account that had granted marketing leaves it at once.
pub async fn on_account_deleted(app: &App, user_id: &str, now: DateTime<Utc>) {
    match granted(app, user_id, MARKETING).await {
        Ok(true) => unsubscribe(app, user_id, now).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = ?e, "marketing state unknown; opt-out not sent"),
    }
}

/// `POST /v1/me/restriction` (on) and `DELETE /v1/me/restriction` (off).
#[instrument(skip_all, fields(user_id = %caller.user_id, on))]
pub async fn restrict(
    app: &App,
    caller: &Caller,
    on: bool,
    now: DateTime<Utc>,
) -> Result<ConsentsView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    let user_id = caller.user_id.as_str();
    if profile.restricted_at.is_some() == on {
        return view(app, user_id, profile.restricted_at).await;
    }
    if record(app, caller, RESTRICTION, on, now).await? {
        if granted(app, user_id, MARKETING).await? {
            if on {
                // Out of marketing at once, like a withdrawal.
                unsubscribe(app, user_id, now).await;
            } else {
                // Back in, as the user's consent still says.
                publish_marketing(
                    app,
                    user_id,
                    "marketing.subscribed",
                    json!({"user_id": user_id, "at": now.to_rfc3339()}),
                )
                .await;
            }
        }
        tracing::info!(on, "restriction of processing changed");
        return view(app, user_id, on.then(|| now.to_rfc3339())).await;
    }
    // A later change won: read what stands.
    get(app, caller).await
}

/// Whether marketing may name this user now: active, not restricting processing, marketing
/// configured and consented to.
pub async fn marketing_allowed(app: &App, user_id: &str) -> anyhow::Result<bool> {
    if !app.config.consent_purposes.iter().any(|p| p == MARKETING) {
        return Ok(false);
    }
    let active = app
        .store
        .get_profile(user_id)
        .await?
        .is_some_and(|p| p.deleted_at.is_none() && p.restricted_at.is_none());
    Ok(active && granted(app, user_id, MARKETING).await?)
}

/// Whether analytics events may name this user (not while they restrict processing).
pub async fn analytics_allowed(app: &App, user_id: &str) -> anyhow::Result<bool> {
    Ok(app
        .store
        .get_profile(user_id)
        .await?
        .is_none_or(|p| p.restricted_at.is_none()))
}

/// Publishes a marketing event about `user_id` only if marketing may name them now.
pub async fn publish_marketing(
    app: &App,
    user_id: &str,
    detail_type: &str,
    detail: serde_json::Value,
) {
    match marketing_allowed(app, user_id).await {
        Ok(true) => crate::services::worker::publish_unchecked(app, detail_type, detail).await,
        Ok(false) => tracing::info!(detail_type, "marketing event left out: no consent"),
        Err(e) => tracing::warn!(error = ?e, detail_type, "marketing event left out"),
    }
}
