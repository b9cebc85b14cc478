//! HTTP plumbing shared by the API functions: caller identity from the JWT authorizer's claims,
//! body parsing, routing helpers and problem+json responses.

pub mod auth;
pub mod request;
pub mod response;

pub use auth::Caller;
pub use request::{json_body, path_param, query_param, route_key, source_ip, user_agent};
pub use response::{json, no_content, problem};

use lambda_http::{Body, Request, Response};
use tracing::Instrument;

use crate::error::ApiError;

/// The route whose span carries the subject only on success.
pub const ONBOARDING_ROUTE: &str = "POST /v1/me";

/// Runs an API handler inside a span carrying the request id (and, once known, the user id),
/// and turns its `ApiError` into a problem+json response. Client errors are `Ok` responses.
pub async fn serve<F, Fut>(req: Request, handler: F) -> Result<Response<Body>, lambda_http::Error>
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Result<Response<Body>, ApiError>>,
{
    let request_id = request::request_id(&req);
    let route = route_key(&req).unwrap_or_default();
    let user_id = auth::Caller::from_request(&req)
        .map(|c| c.user_id.to_string())
        .unwrap_or_default();
    // C3: usage and diagnostics: the source IP and user agent (kept with the logs, 30 days);
    // never a body, so never a prompt.
    let ip = request::source_ip(&req).unwrap_or_default();
    let user_agent: String = request::user_agent(&req)
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        route = %route,
        ip = tracing::field::Empty,
        user_agent = tracing::field::Empty,
        user_id = tracing::field::Empty
    );
    // K1: onboarding names its subject, IP and user agent only once it succeeded, so a refused
    // under-13 sign-up leaves nothing personal in the logs.
    let onboarding = route == ONBOARDING_ROUTE;
    let identify = move |span: &tracing::Span| {
        span.record("user_id", user_id.as_str());
        span.record("ip", ip.as_str());
        span.record("user_agent", user_agent.as_str());
    };
    if !onboarding {
        identify(&span);
    }
    let current = span.clone();
    async move {
        let result = handler(req).await;
        if onboarding && result.as_ref().is_ok_and(|r| r.status().is_success()) {
            identify(&current);
        }
        let response = match result {
            Ok(resp) => resp,
            Err(err) => {
                match &err {
                    ApiError::Internal(e) => tracing::error!(error = ?e, "request failed"),
                    ApiError::Unavailable(e) => {
                        tracing::warn!(error = %e, "dependency unavailable")
                    }
                    ApiError::Client { status, code, .. } => {
                        tracing::info!(status, code, "request rejected")
                    }
                    ApiError::RateLimited { retry_after, .. } => {
                        tracing::info!(status = 429, retry_after, "request rate limited")
                    }
                }
                problem(&err, &request_id)
            }
        };
        tracing::info!(status = response.status().as_u16(), "request done");
        Ok(response)
    }
    .instrument(span)
    .await
}
