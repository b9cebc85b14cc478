//! `account`: `/v1/me` (GET, POST onboarding, PATCH, DELETE), `/v1/me/deletion`,
//! `/v1/me/data` (access: everything held about the caller), `/v1/me/consents`,
//! `/v1/me/restriction`, and
//! `/v1/reports/child-account`. Translates requests to `shared::services` calls.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS | ports::IDENTITY | ports::PAYMENTS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::{self, json, json_body, path_param, query_param, route_key, Caller};
use shared::services::{access, accounts, admin, consents};
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("GET /v1/me") => json(200, &accounts::get_me(app, &caller).await?),
        Some("POST /v1/me") => {
            let body = json_body(&req)?;
            let (status, me) = accounts::onboard(app, &caller, body, Utc::now()).await?;
            json(status, &me)
        }
        Some("PATCH /v1/me") => {
            let body = http::request::json_value(&req)?;
            json(
                200,
                &accounts::update_me(app, &caller, &body, Utc::now()).await?,
            )
        }
        Some("DELETE /v1/me") => {
            let body = json_body(&req)?;
            json(
                202,
                &accounts::delete_me(app, &caller, body, Utc::now()).await?,
            )
        }
        Some("GET /v1/me/deletion") => json(200, &accounts::deletion_status(app, &caller).await?),
        Some("GET /v1/me/consents") => json(200, &consents::get(app, &caller).await?),
        Some("PUT /v1/me/consents/{purpose}") => {
            let purpose = path_param(&req, "purpose")?;
            let body = json_body(&req)?;
            json(
                200,
                &consents::put(app, &caller, &purpose, body, Utc::now()).await?,
            )
        }
        Some("POST /v1/me/restriction") => json(
            200,
            &consents::restrict(app, &caller, true, Utc::now()).await?,
        ),
        Some("DELETE /v1/me/restriction") => json(
            200,
            &consents::restrict(app, &caller, false, Utc::now()).await?,
        ),
        Some("GET /v1/me/data") => {
            let (kind, limit, cursor) = (
                query_param(&req, "kind"),
                query_param(&req, "limit"),
                query_param(&req, "cursor"),
            );
            json(
                200,
                &access::get(
                    app,
                    &caller,
                    kind.as_deref(),
                    limit.as_deref(),
                    cursor.as_deref(),
                    Utc::now(),
                )
                .await?,
            )
        }
        Some("POST /v1/reports/child-account") => {
            let body = json_body(&req)?;
            json(
                202,
                &admin::report_child_account(app, &caller, body, Utc::now()).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
