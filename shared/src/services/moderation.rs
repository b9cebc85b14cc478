//! Moderation in front of every generation (S2, U5): a refused prompt is a violation record,
//! and repeated violations suspend the account (audited, restorable by an admin).

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::error::ApiError;
use crate::moderation::Refusal;
use crate::services::deletion::legal_keep_until;
use crate::store::{AuditRecord, ViolationRecord, SYSTEM_ACTOR};

/// The suspension reason repeated violations record.
pub const VIOLATION_SUSPENSION: &str = "repeated_violations";

/// Screens a prompt before anything is reserved: 400 `prompt_refused` (recorded) or 503 when
/// the moderation endpoint cannot answer (nothing recorded, nothing charged).
pub async fn screen(
    app: &App,
    user_id: &str,
    prompt: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    match app.moderation().check(prompt).await {
        Ok(None) => Ok(()),
        Ok(Some(refusal)) => {
            let category = refusal.category.clone();
            record(app, user_id, &refusal, prompt, None, now).await?;
            Err(ApiError::bad_request(
                "prompt_refused",
                format!(
                    "this prompt was refused by moderation (category: {category}); nothing was charged"
                ),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "moderation unavailable");
            Err(ApiError::Unavailable(e.to_string()))
        }
    }
}

/// Records one refusal and suspends the account once `VIOLATION_THRESHOLD` refusals fall within
/// `VIOLATION_WINDOW_HOURS`. A provider's refusal passes its generation's id, so a redelivered
/// job records it once.
pub async fn record(
    app: &App,
    user_id: &str,
    refusal: &Refusal,
    prompt: &str,
    generation_id: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let id = generation_id.map(str::to_string).unwrap_or_else(|| {
        ulid::Ulid::from_datetime(now.into())
            .to_string()
            .to_lowercase()
    });
    app.store
        .put_violation(&ViolationRecord {
            id,
            user_id: user_id.to_string(),
            at: now.to_rfc3339(),
            source: refusal.source.clone(),
            category: refusal.category.clone(),
            rule: refusal.rule.clone(),
            prompt: prompt.to_string(),
            generation_id: generation_id.map(str::to_string),
        })
        .await?;
    // U5: a security signal in the logs, without the prompt (C3).
    tracing::info!(
        source = %refusal.source,
        category = %refusal.category,
        rule = %refusal.rule,
        "prompt refused by moderation"
    );
    let cfg = &app.config.moderation;
    let Some(profile) = app.store.get_profile(user_id).await? else {
        return Ok(());
    };
    if profile.deleted_at.is_some() || profile.suspension.is_some() {
        return Ok(());
    }
    // The window, from the last restore at the latest: what an admin reviewed is not counted
    // again.
    let window = chrono::Duration::from_std(cfg.violation_window).unwrap_or_default();
    let restored = profile
        .violations_counted_from
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let since = restored.map_or(now - window, |r| r.max(now - window));
    let recent = app.store.count_violations_since(user_id, since).await?;
    if recent < cfg.violation_threshold as usize {
        return Ok(());
    }
    let why = format!(
        "{recent} moderation refusals within {} hours",
        cfg.violation_window.as_secs() / 3600
    );
    let audit = AuditRecord::new(
        SYSTEM_ACTOR,
        "account.suspend",
        Some(user_id),
        None,
        Some(&why),
        "suspended",
        now,
    );
    if app
        .store
        .suspend_keeping_reason(
            user_id,
            VIOLATION_SUSPENSION,
            &audit,
            legal_keep_until(app, now),
            now,
        )
        .await?
    {
        tracing::warn!(
            violations = recent,
            "account suspended for repeated violations"
        );
    }
    Ok(())
}
