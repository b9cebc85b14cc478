//! `exports`: `/v1/exports` (POST: queue an export; GET: the user's exports) and
//! `/v1/exports/{id}` (status, size, a short-lived download link when ready, deletion time).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EXPORT_QUEUE
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::{self, json, path_param, route_key, Caller};
use shared::services::exports;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("POST /v1/exports") => json(202, &exports::create(app, &caller, Utc::now()).await?),
        Some("GET /v1/exports") => json(200, &exports::list(app, &caller).await?),
        Some("GET /v1/exports/{id}") => {
            let id = path_param(&req, "id")?;
            json(200, &exports::get(app, &caller, &id).await?)
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
