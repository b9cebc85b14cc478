//! `generations`: `/v1/generations` (POST with `Idempotency-Key`, GET history) and
//! `/v1/generations/{id}` (GET, DELETE).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS | ports::GENERATION_QUEUE | ports::MODERATION
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::{ascii_header, json_value};
use shared::http::{self, json, no_content, path_param, query_param, route_key, Caller};
use shared::services::generations;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("POST /v1/generations") => {
            let body = json_value(&req)?;
            let key = ascii_header(&req, "idempotency-key", "invalid_idempotency_key")?;
            let (status, view) = generations::create(app, &caller, &body, key, Utc::now()).await?;
            json(status, &view)
        }
        Some("GET /v1/generations") => {
            let limit = query_param(&req, "limit");
            let cursor = query_param(&req, "cursor");
            json(
                200,
                &generations::list(app, &caller, limit.as_deref(), cursor.as_deref()).await?,
            )
        }
        Some("GET /v1/generations/{id}") => {
            let id = path_param(&req, "id")?;
            json(200, &generations::get(app, &caller, &id).await?)
        }
        Some("DELETE /v1/generations/{id}") => {
            let id = path_param(&req, "id")?;
            generations::delete(app, &caller, &id, Utc::now()).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
