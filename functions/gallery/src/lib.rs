//! `gallery`: the public gallery, with no authorizer: `/v1/gallery` (published images, newest
//! first, cursor-paginated) and `/v1/gallery/{id}`.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS
};

use lambda_http::{Body, Error, Request, Response};
use shared::http::{self, json, path_param, query_param, route_key};
use shared::services::gallery;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    // S2: anonymous reads are limited per source IP (one conditional write).
    shared::limits::take_for_ip(
        app,
        shared::limits::Action::Gallery,
        http::source_ip(&req).as_deref(),
        chrono::Utc::now(),
    )
    .await?;
    match route_key(&req).as_deref() {
        Some("GET /v1/gallery") => {
            let limit = query_param(&req, "limit");
            let cursor = query_param(&req, "cursor");
            json(
                200,
                &gallery::list(app, limit.as_deref(), cursor.as_deref()).await?,
            )
        }
        Some("GET /v1/gallery/{id}") => {
            let id = path_param(&req, "id")?;
            json(200, &gallery::get(app, &id).await?)
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
