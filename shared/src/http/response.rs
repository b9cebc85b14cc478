//! Building responses.

use lambda_http::{Body, Response};
use serde::Serialize;

use crate::error::ApiError;

pub fn json<T: Serialize>(status: u16, value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::Text(body))
        .expect("static response parts are valid"))
}

pub fn no_content() -> Response<Body> {
    Response::builder()
        .status(204)
        .body(Body::Empty)
        .expect("static response parts are valid")
}

/// An RFC 9457 problem document with a stable `code`.
pub fn problem(err: &ApiError, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": format!("https://imagegen.invalid/problems/{}", err.code().replace('_', "-")),
        "title": err.title(),
        "status": err.status(),
        "detail": err.public_detail(),
        "code": err.code(),
        "request_id": request_id,
    });
    let mut builder = Response::builder()
        .status(err.status())
        .header("content-type", "application/problem+json")
        .header("cache-control", "no-store");
    if err.status() == 401 {
        builder = builder.header("www-authenticate", "Bearer");
    }
    if let ApiError::RateLimited { retry_after, .. } = err {
        builder = builder.header("retry-after", retry_after.to_string());
    }
    builder
        .body(Body::Text(body.to_string()))
        .expect("static response parts are valid")
}
