//! `images`: `/v1/images/{id}` (GET, PATCH `{public, copy_protected}`, DELETE),
//! `/v1/images/{id}/download` (POST: a short-lived link, recorded) and `/v1/downloads` (GET: the
//! download history of the caller's images).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::{body_bytes, json_body};
use shared::http::{self, json, no_content, path_param, query_param, route_key, Caller};
use shared::services::images;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("GET /v1/images/{id}") => {
            let id = path_param(&req, "id")?;
            json(200, &images::get(app, &caller, &id).await?)
        }
        Some("PATCH /v1/images/{id}") => {
            let id = path_param(&req, "id")?;
            let body = json_body(&req)?;
            json(
                200,
                &images::patch(app, &caller, &id, body, Utc::now()).await?,
            )
        }
        Some("DELETE /v1/images/{id}") => {
            let id = path_param(&req, "id")?;
            images::delete(app, &caller, &id, Utc::now()).await?;
            Ok(no_content())
        }
        Some("POST /v1/images/{id}/download") => {
            let id = path_param(&req, "id")?;
            // The body is optional: `{"variant": "preview"}` for the owner's preview.
            let body = if body_bytes(&req).is_empty() {
                images::DownloadBody::default()
            } else {
                json_body(&req)?
            };
            json(
                200,
                &images::download(app, &caller, &id, body, Utc::now()).await?,
            )
        }
        Some("GET /v1/downloads") => {
            let limit = query_param(&req, "limit");
            let cursor = query_param(&req, "cursor");
            json(
                200,
                &images::downloads(app, &caller, limit.as_deref(), cursor.as_deref()).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
