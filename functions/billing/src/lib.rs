//! `billing`: `/v1/billing` (balance, plan, subscription, spend cap), the ledger, checkout, the
//! customer portal and invoices. Translates requests to `shared::services::billing_account`.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::PAYMENTS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::{ascii_header, json_value};
use shared::http::{self, json, json_body, query_param, route_key, Caller};
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
        Some("POST /v1/billing/checkout") => {
            let body = json_body(&req)?;
            // Forwarded to Stripe: a retried request gets the same session.
            let key = ascii_header(&req, "idempotency-key", "invalid_idempotency_key")?;
            json(
                201,
                &billing_account::checkout(app, &caller, body, key, Utc::now()).await?,
            )
        }
        Some("POST /v1/billing/portal") => json(
            201,
            &billing_account::portal(app, &caller, chrono::Utc::now()).await?,
        ),
        Some("GET /v1/billing/invoices") => {
            json(200, &billing_account::invoices(app, &caller).await?)
        }
        Some("PUT /v1/billing/spend-cap") => {
            let body = json_value(&req)?;
            json(
                200,
                &billing_account::set_spend_cap(app, &caller, &body).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
