//! Admin operations (R5, U5, K2): legal holds, suspension, child-account review and the audit
//! log. Every route requires the configured admin group in the caller's token; everyone else
//! gets 403 and the attempt is logged. Every admin action writes an audit record (who, what,
//! when, why, outcome) in the same transaction as the action.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::app::App;
use crate::domain::cursor;
use crate::domain::user::UserId;
use crate::error::ApiError;
use crate::http::Caller;
use crate::objects::{generation_prefix, user_prefix};
use crate::services::accounts::start_account_deletion;
use crate::services::deletion::legal_keep_until;
use crate::services::generations::{is_job_id, Page};
use crate::store::{AuditRecord, ChildReport, Hold, ReportStatus, Review, SYSTEM_ACTOR};

pub const REASON_MAX_CHARS: usize = 1000;

/// The caller must carry the admin group; the refusal is logged with who tried what.
pub fn require_admin(app: &App, caller: &Caller, route: &str) -> Result<(), ApiError> {
    if caller.groups.iter().any(|g| g == &app.config.admin_group) {
        return Ok(());
    }
    tracing::warn!(user_id = %caller.user_id, route, "admin route refused: not in the admin group");
    Err(ApiError::forbidden(
        "admin_required",
        "this route is for administrators",
    ))
}

fn reason(raw: &str) -> Result<String, ApiError> {
    let r = raw.trim();
    if r.is_empty() || r.chars().count() > REASON_MAX_CHARS || r.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!("reason must be 1 to {REASON_MAX_CHARS} characters without control characters"),
        ));
    }
    Ok(r.to_string())
}

fn user_id(raw: &str) -> Result<String, ApiError> {
    UserId::parse(raw)
        .map(|u| u.as_str().to_string())
        .map_err(|_| ApiError::bad_request("invalid_user_id", "user_id is not a valid subject"))
}

fn new_id(now: DateTime<Utc>) -> String {
    ulid::Ulid::from_datetime(now.into())
        .to_string()
        .to_lowercase()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub user_id: String,
    #[serde(default)]
    pub generation_id: Option<String>,
    pub reason: String,
    /// RFC 3339; absent: until lifted.
    #[serde(default)]
    pub until: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HoldView {
    #[serde(flatten)]
    pub hold: Hold,
    pub in_force: bool,
}

/// `POST /v1/admin/holds`: places a hold on a user or one generation. Held content stays in
/// storage whatever deletes it (the owner, expiry, account deletion) until the hold ends.
#[instrument(skip_all, fields(admin = %caller.user_id))]
pub async fn place_hold(
    app: &App,
    caller: &Caller,
    body: HoldBody,
    now: DateTime<Utc>,
) -> Result<HoldView, ApiError> {
    let user = user_id(&body.user_id)?;
    let why = reason(&body.reason)?;
    let until = match &body.until {
        None => None,
        Some(raw) => {
            let at = DateTime::parse_from_rfc3339(raw)
                .map_err(|_| {
                    ApiError::bad_request("invalid_until", "until must be an RFC 3339 time")
                })?
                .with_timezone(&Utc);
            if at <= now {
                return Err(ApiError::bad_request(
                    "invalid_until",
                    "until must be in the future",
                ));
            }
            Some(at.to_rfc3339())
        }
    };
    if app.store.get_profile(&user).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    if let Some(g) = &body.generation_id {
        if !is_job_id(g) || app.store.get_job_any(&user, g).await?.is_none() {
            return Err(ApiError::not_found("generation"));
        }
    }
    let hold = Hold {
        id: new_id(now),
        user_id: user.clone(),
        generation_id: body.generation_id.clone(),
        reason: why.clone(),
        placed_by: caller.user_id.to_string(),
        placed_at: now.to_rfc3339(),
        until,
        objects_untagged: false,
    };
    let target = hold
        .generation_id
        .as_ref()
        .map(|g| format!("generation:{g}"));
    let audit = AuditRecord::new(
        caller.user_id.as_str(),
        "hold.place",
        Some(&user),
        target.as_deref(),
        Some(&why),
        &format!("hold {} placed", hold.id),
        now,
    );
    app.store
        .place_hold(&hold, &audit, legal_keep_until(app, now))
        .await?;
    // The bucket's lifecycle backstop expires only tagged objects: held ones lose the tag. If
    // this fails or runs out of time, the sweep finishes it (the hold says it is not done).
    let mut hold = hold;
    match untag(app, &hold).await {
        Ok(()) => hold.objects_untagged = true,
        Err(e) => {
            tracing::warn!(error = ?e, hold = %hold.id, "held objects left for the sweep to untag")
        }
    }
    Ok(HoldView {
        in_force: hold.in_force(now),
        hold,
    })
}

async fn untag(app: &App, hold: &Hold) -> anyhow::Result<()> {
    app.objects()
        .set_backstop(&hold_prefix(hold), false)
        .await?;
    app.store.mark_hold_untagged(&hold.id).await
}

/// The sweep's side: untags the objects of holds whose placement could not. Returns how many
/// holds it finished.
pub async fn untag_held_objects(app: &App) -> anyhow::Result<usize> {
    let mut done = 0;
    for hold in app.store.list_holds().await? {
        if !hold.objects_untagged {
            untag(app, &hold).await?;
            done += 1;
        }
    }
    Ok(done)
}

fn hold_prefix(hold: &Hold) -> String {
    match &hold.generation_id {
        Some(g) => generation_prefix(&hold.user_id, g),
        None => user_prefix(&hold.user_id),
    }
}

/// `GET /v1/admin/holds[?user_id=]`.
pub async fn list_holds(
    app: &App,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Page<HoldView>, ApiError> {
    let items = app
        .store
        .list_holds()
        .await?
        .into_iter()
        .filter(|h| user.is_none_or(|u| h.user_id == u))
        .map(|hold| HoldView {
            in_force: hold.in_force(now),
            hold,
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// Ends a hold (lifted by an admin, or run out): removed and audited; the objects it covered
/// get the backstop tag back unless another hold still covers them. Deletion resumes at the
/// next sweep. `false` if there was no such hold.
async fn end(
    app: &App,
    hold: &Hold,
    actor: &str,
    action: &str,
    why: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let audit = AuditRecord::new(
        actor,
        action,
        Some(&hold.user_id),
        Some(&format!("hold:{}", hold.id)),
        why,
        "hold ended; deletion resumes",
        now,
    );
    if !app
        .store
        .remove_hold(&hold.id, &audit, legal_keep_until(app, now))
        .await?
    {
        return Ok(false);
    }
    // What the hold kept may go now: parked deletion records are due again (the sweep also
    // releases whatever this misses), and its objects get the backstop tag back, except what
    // another hold still covers.
    if let Err(e) = app.store.unpark_deletion_records(now, 100).await {
        tracing::warn!(error = ?e, "parked deletions left for the sweep to release");
    }
    let holds = app.store.holds_in_force(now).await?;
    if !holds.covers(&hold.user_id, hold.generation_id.as_deref()) {
        app.objects().set_backstop(&hold_prefix(hold), true).await?;
        for g in holds.held_generations(&hold.user_id) {
            app.objects()
                .set_backstop(&generation_prefix(&hold.user_id, g), false)
                .await?;
        }
    }
    Ok(true)
}

/// The sweep's side: removes every hold whose end has come. Returns how many.
pub async fn end_expired_holds(app: &App, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut ended = 0;
    for hold in app.store.list_holds().await? {
        if hold.in_force(now) {
            continue;
        }
        // One failing hold does not keep the others from ending (it still counts as a hold
        // until it is removed, so nothing it names is erased meanwhile).
        match end(app, &hold, SYSTEM_ACTOR, "hold.end", None, now).await {
            Ok(true) => ended += 1,
            Ok(false) => {}
            Err(e) => tracing::error!(error = ?e, hold = %hold.id, "ended hold not removed"),
        }
    }
    Ok(ended)
}

/// `DELETE /v1/admin/holds/{id}`.
#[instrument(skip_all, fields(admin = %caller.user_id, hold = %id))]
pub async fn lift_hold(
    app: &App,
    caller: &Caller,
    id: &str,
    body: ReasonBody,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let why = body.reason.as_deref().map(reason).transpose()?;
    if !is_job_id(id) {
        return Err(ApiError::not_found("hold"));
    }
    let hold = app
        .store
        .get_hold(id)
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    if !end(
        app,
        &hold,
        caller.user_id.as_str(),
        "hold.lift",
        why.as_deref(),
        now,
    )
    .await?
    {
        return Err(ApiError::not_found("hold"));
    }
    Ok(())
}

/// `POST /v1/admin/users/{id}/suspension` (reason required) and `DELETE` (restore).
#[instrument(skip_all, fields(admin = %caller.user_id))]
pub async fn set_suspension(
    app: &App,
    caller: &Caller,
    target: &str,
    suspend: bool,
    body: ReasonBody,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let user = user_id(target)?;
    let why = match (&body.reason, suspend) {
        (Some(r), _) => Some(reason(r)?),
        (None, true) => {
            return Err(ApiError::bad_request(
                "invalid_reason",
                "a suspension needs a reason",
            ))
        }
        (None, false) => None,
    };
    let (action, outcome) = if suspend {
        ("account.suspend", "suspended")
    } else {
        ("account.restore", "restored")
    };
    let audit = AuditRecord::new(
        caller.user_id.as_str(),
        action,
        Some(&user),
        None,
        why.as_deref(),
        outcome,
        now,
    );
    let changed = app
        .store
        .set_suspension(
            &user,
            if suspend { why.as_deref() } else { None },
            None,
            caller.user_id.as_str(),
            &audit,
            legal_keep_until(app, now),
            now,
        )
        .await?;
    if !changed {
        return Err(ApiError::not_found("user"));
    }
    Ok(())
}

/// `GET /v1/admin/audit`: newest first, `limit` 1 to 100, cursor.
pub async fn audit_log(
    app: &App,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<AuditRecord>, ApiError> {
    let limit = crate::services::generations::parse_limit(limit)?;
    let start = after.map(|c| cursor::decode(c, "2")).transpose()?;
    let (items, last) = app.store.list_audit(limit, start).await?;
    Ok(Page {
        items,
        next_cursor: last.map(|sk| cursor::encode(&sk)),
    })
}

/// `GET /v1/admin/reports`: reports waiting for review.
pub async fn pending_reports(app: &App) -> Result<Page<ChildReport>, ApiError> {
    Ok(Page {
        items: app.store.pending_child_reports().await?,
        next_cursor: None,
    })
}

/// `POST /v1/admin/reports/{id}/confirm` (the account is deleted under R4) or `/dismiss` (it
/// is restored, unless suspended for another reason or by another pending report).
#[instrument(skip_all, fields(admin = %caller.user_id, report = %id))]
pub async fn review_report(
    app: &App,
    caller: &Caller,
    id: &str,
    confirm: bool,
    body: ReasonBody,
    now: DateTime<Utc>,
) -> Result<ChildReport, ApiError> {
    let why = body.reason.as_deref().map(reason).transpose()?;
    if !is_job_id(id) {
        return Err(ApiError::not_found("report"));
    }
    let report = app
        .store
        .get_child_report(id)
        .await?
        .ok_or_else(|| ApiError::not_found("report"))?;
    if report.status != ReportStatus::Pending {
        return Err(ApiError::client(
            409,
            "report_already_reviewed",
            "this report was already reviewed",
        ));
    }
    let (status, action, outcome) = if confirm {
        (
            ReportStatus::Confirmed,
            "child_report.confirm",
            "confirmed; account deletion started",
        )
    } else {
        (ReportStatus::Dismissed, "child_report.dismiss", "dismissed")
    };
    let audit = AuditRecord::new(
        caller.user_id.as_str(),
        action,
        Some(&report.reported_user),
        Some(&format!("report:{id}")),
        why.as_deref(),
        outcome,
        now,
    );
    let review = Review {
        id,
        status,
        reviewer: caller.user_id.as_str(),
        reason: why.as_deref(),
        audit: &audit,
    };
    let keep_until = legal_keep_until(app, now);
    // A confirmation deactivates the account in the same transaction that records the review;
    // if the account is gone already, the review is recorded on its own.
    let recorded = (confirm
        && start_account_deletion(
            app,
            &report.reported_user,
            "child_report",
            Some(&review),
            now,
        )
        .await?)
        || app
            .store
            .review_child_report(&review, keep_until, now)
            .await?;
    if !recorded {
        return Err(ApiError::client(
            409,
            "report_already_reviewed",
            "this report was already reviewed",
        ));
    }
    let user = &report.reported_user;
    if !confirm {
        let others_pending = app
            .store
            .pending_child_reports()
            .await?
            .iter()
            .any(|r| &r.reported_user == user);
        let by_report = app
            .store
            .get_profile(user)
            .await?
            .and_then(|p| p.suspension)
            .is_some_and(|s| s.reason == "child_report");
        if by_report && !others_pending {
            let restore = AuditRecord::new(
                SYSTEM_ACTOR,
                "account.restore",
                Some(user),
                Some(&format!("report:{id}")),
                Some("child-account report dismissed"),
                "restored",
                now,
            );
            // Only while the suspension is still the report's (an admin's meanwhile stays).
            app.store
                .set_suspension(
                    user,
                    None,
                    Some("child_report"),
                    SYSTEM_ACTOR,
                    &restore,
                    legal_keep_until(app, now),
                    now,
                )
                .await?;
        }
    }
    Ok(app.store.get_child_report(id).await?.unwrap_or(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub user_id: String,
    #[serde(default)]
    pub generation_id: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReportReceipt {
    pub id: String,
    pub status: ReportStatus,
}

/// `POST /v1/reports/child-account` (K2), by any signed-in user: the reported account is
/// suspended at once pending review. Rate-limited per reporter.
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn report_child_account(
    app: &App,
    caller: &Caller,
    body: ReportBody,
    now: DateTime<Utc>,
) -> Result<ReportReceipt, ApiError> {
    crate::services::accounts::require_onboarded(app, caller).await?;
    let reported = user_id(&body.user_id)?;
    if reported == caller.user_id.as_str() {
        return Err(ApiError::bad_request(
            "cannot_report_self",
            "you cannot report your own account",
        ));
    }
    let details = body
        .details
        .as_deref()
        .map(reason)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_details",
                format!("details must be 1 to {REASON_MAX_CHARS} characters"),
            )
        })?;
    match app.store.get_profile(&reported).await? {
        Some(p) if p.deleted_at.is_none() => {}
        _ => return Err(ApiError::not_found("user")),
    }
    if let Some(g) = &body.generation_id {
        if !is_job_id(g) || app.store.get_job(&reported, g).await?.is_none() {
            return Err(ApiError::not_found("generation"));
        }
    }
    crate::limits::take_for_user(
        app,
        crate::limits::Action::ChildReport,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    let report = ChildReport {
        id: new_id(now),
        reported_user: reported.clone(),
        generation_id: body.generation_id,
        reporter: caller.user_id.to_string(),
        details,
        status: ReportStatus::Pending,
        created_at: now.to_rfc3339(),
        reviewed_by: None,
        reviewed_at: None,
        review_reason: None,
    };
    let audit = AuditRecord::new(
        SYSTEM_ACTOR,
        "account.suspend",
        Some(&reported),
        Some(&format!("report:{}", report.id)),
        Some("child-account report pending review"),
        "suspended",
        now,
    );
    if !app
        .store
        .file_child_report(&report, &audit, legal_keep_until(app, now), now)
        .await?
    {
        return Err(ApiError::not_found("user"));
    }
    Ok(ReportReceipt {
        id: report.id,
        status: report.status,
    })
}
