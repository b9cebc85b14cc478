//! `stripe-webhook`: `POST /v1/webhooks/stripe`, no authorizer: Stripe's signature instead.
//! Translates the request to `shared::services::billing::receive` (verify, then apply).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::EVENTS | ports::WEBHOOKS
};

use chrono::Utc;
use lambda_http::{Body, Error, Request, Response};
use shared::http::request::{body_bytes, header};
use shared::http::{self, json, route_key};
use shared::services::billing;
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    match route_key(&req).as_deref() {
        Some("POST /v1/webhooks/stripe") => {
            // The raw body as Stripe signed it (lambda_http has already decoded a base64 body).
            let signature = header(&req, "stripe-signature");
            json(
                200,
                &billing::receive(app, signature, body_bytes(&req), Utc::now()).await?,
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}
