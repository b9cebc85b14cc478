//! `admin`: `/v1/admin/...` for callers in the admin group (legal holds, suspension,
//! child-account review, the audit log). Translates requests to `shared::services::admin`.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS | ports::PAYMENTS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::body_bytes;
use shared::http::{self, json, json_body, no_content, path_param, query_param, route_key, Caller};
use shared::services::admin::{self, ReasonBody};
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

/// An optional `{"reason": ...}` body.
fn reason_body(req: &Request) -> Result<ReasonBody, ApiError> {
    if body_bytes(req).iter().all(u8::is_ascii_whitespace) {
        return Ok(ReasonBody::default());
    }
    json_body(req)
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    let key = route_key(&req).unwrap_or_default();
    admin::require_admin(app, &caller, &key)?;
    let now = Utc::now();
    match key.as_str() {
        "GET /v1/admin/holds" => {
            let user = query_param(&req, "user_id");
            json(200, &admin::list_holds(app, user.as_deref(), now).await?)
        }
        "POST /v1/admin/holds" => json(
            201,
            &admin::place_hold(app, &caller, json_body(&req)?, now).await?,
        ),
        "DELETE /v1/admin/holds/{id}" => {
            let id = path_param(&req, "id")?;
            admin::lift_hold(app, &caller, &id, reason_body(&req)?, now).await?;
            Ok(no_content())
        }
        "POST /v1/admin/users/{id}/suspension" | "DELETE /v1/admin/users/{id}/suspension" => {
            let id = path_param(&req, "id")?;
            let suspend = key.starts_with("POST");
            admin::set_suspension(app, &caller, &id, suspend, reason_body(&req)?, now).await?;
            Ok(no_content())
        }
        "GET /v1/admin/audit" => {
            let limit = query_param(&req, "limit");
            let cursor = query_param(&req, "cursor");
            json(
                200,
                &admin::audit_log(app, limit.as_deref(), cursor.as_deref()).await?,
            )
        }
        "GET /v1/admin/reports" => json(200, &admin::pending_reports(app).await?),
        "POST /v1/admin/reports/{id}/confirm" | "POST /v1/admin/reports/{id}/dismiss" => {
            let id = path_param(&req, "id")?;
            let confirm = key.ends_with("/confirm");
            json(
                200,
                &admin::review_report(app, &caller, &id, confirm, reason_body(&req)?, now).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
