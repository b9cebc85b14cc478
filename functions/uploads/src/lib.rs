//! `uploads`: `/v1/uploads` (POST: a presigned upload form) and `/v1/uploads/{id}` (GET: status,
//! checking the file once it has arrived; DELETE).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::json_body;
use shared::http::{self, json, no_content, path_param, route_key, Caller};
use shared::services::uploads;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("POST /v1/uploads") => {
            let body = json_body(&req)?;
            json(201, &uploads::create(app, &caller, body, Utc::now()).await?)
        }
        Some("GET /v1/uploads/{id}") => {
            let id = path_param(&req, "id")?;
            json(200, &uploads::get(app, &caller, &id, Utc::now()).await?)
        }
        Some("DELETE /v1/uploads/{id}") => {
            let id = path_param(&req, "id")?;
            uploads::delete(app, &caller, &id, Utc::now()).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
