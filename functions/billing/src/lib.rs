//! `billing`: `/v1/billing` (balance, plan, subscription) and `/v1/billing/ledger`. Translates
//! requests to `shared::services::billing_account` calls.

use lambda_http::{Body, Error, Request, Response};
use shared::http::{self, json, query_param, route_key, Caller};
use shared::services::billing_account;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    let caller = Caller::from_request(&req)?;
    match route_key(&req).as_deref() {
        Some("GET /v1/billing") => json(200, &billing_account::overview(app, &caller).await?),
        Some("GET /v1/billing/ledger") => {
            let limit = query_param(&req, "limit");
            let cursor = query_param(&req, "cursor");
            json(
                200,
                &billing_account::ledger(app, &caller, limit.as_deref(), cursor.as_deref()).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
