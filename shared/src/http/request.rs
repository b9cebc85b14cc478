//! Reading requests: route key, path and query parameters, headers and JSON bodies.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest JSON body accepted.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// The API Gateway route key, e.g. `GET /v1/generations/{id}`.
pub fn route_key(req: &Request) -> Option<String> {
    #[allow(unreachable_patterns)]
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.route_key.clone(),
        _ => None,
    }
}

pub fn request_id(req: &Request) -> String {
    #[allow(unreachable_patterns)]
    let from_ctx = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    from_ctx
        .or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()))
        .unwrap_or_default()
}

/// The caller's IP as API Gateway saw it (never a client-sent header).
pub fn source_ip(req: &Request) -> Option<String> {
    #[allow(unreachable_patterns)]
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    }
}

/// The caller's user agent as API Gateway saw it.
pub fn user_agent(req: &Request) -> Option<String> {
    #[allow(unreachable_patterns)]
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.user_agent.clone(),
        _ => None,
    }
}

pub fn path_param(req: &Request, name: &str) -> Result<String, ApiError> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
        .ok_or_else(|| ApiError::not_found("resource"))
}

pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(str::to_string)
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A header that must be visible ASCII when present: a value that is not is a 400 with
/// `code`, never silently treated as absent.
pub fn ascii_header<'a>(
    req: &'a Request,
    name: &str,
    code: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request(code, format!("the {name} header must be visible ASCII"))
        }),
    }
}

/// The raw body bytes.
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parses a JSON body into `T`: 415 for a non-JSON content type, 413 when too large,
/// 400 `malformed_json` for bad syntax, 400 `invalid_body` for wrong fields or types.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let value = json_value(req)?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("request body: {e}")))
}

/// Parses the body as a JSON value (for hashing and field-level validation).
pub fn json_value(req: &Request) -> Result<serde_json::Value, ApiError> {
    if let Some(ct) = header(req, "content-type") {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::client(
                415,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
    }
    let bytes = body_bytes(req);
    if bytes.len() > MAX_JSON_BODY_BYTES {
        return Err(ApiError::client(
            413,
            "payload_too_large",
            format!("JSON bodies are limited to {MAX_JSON_BODY_BYTES} bytes"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "missing_body",
            "a JSON body is required",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("body is not valid JSON: {e}"))
    })?;
    // Every body of this API is an object: serde would read an array as a struct's fields by
    // position (`["delete my account"]` as a confirmation), so nothing else gets that far.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    Ok(value)
}
