//! The dev host's HTTP side: serves every route by calling the same handler code the Lambda
//! binaries run, with the API Gateway v2 (payload 2.0) event AWS would send, including the JWT
//! claims the authorizer would put in the request context.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use lambda_http::Body as LambdaBody;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::{ApiError, App};

use crate::jwt::DevJwt;
use crate::routes::{self, Function};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

pub struct Host {
    pub app: Arc<App>,
    pub jwt: DevJwt,
}

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/dev/token", post(dev_token))
        .fallback(dispatch)
        .with_state(host)
}

/// A problem+json answer from the dev host itself (what API Gateway answers before a function
/// runs), built by the same code the functions use.
fn problem(status: u16, code: &'static str, detail: &str) -> Response {
    to_axum(shared::http::problem(
        &ApiError::client(status, code, detail),
        "",
    ))
}

fn to_axum(resp: lambda_http::Response<LambdaBody>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        LambdaBody::Empty => Vec::new(),
        LambdaBody::Text(t) => t.into_bytes(),
        LambdaBody::Binary(b) => b,
        _ => Vec::new(),
    };
    let mut out = Response::new(AxumBody::from(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

async fn dev_token(State(host): State<Arc<Host>>, body: axum::body::Bytes) -> Response {
    let req: TokenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                400,
                "invalid_body",
                &format!("expected {{\"sub\", \"email\", \"groups\"}}: {e}"),
            )
        }
    };
    if shared::domain::user::UserId::parse(&req.sub).is_err() {
        return problem(
            400,
            "invalid_subject",
            "sub must be 1 to 128 of [A-Za-z0-9-_.@:|]",
        );
    }
    match host.jwt.mint(&req.sub, req.email.as_deref(), &req.groups) {
        Ok(token) => axum::Json(json!({"token": token})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "minting a dev token failed");
            problem(500, "internal_error", "an internal error occurred")
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Builds the payload 2.0 event API Gateway sends for this request.
#[allow(clippy::too_many_arguments)]
pub fn api_gateway_event(
    route_key: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    path_params: &[(String, String)],
    claims: Option<&HashMap<String, String>>,
    body: &[u8],
    request_id: &str,
    source_ip: &str,
) -> Value {
    let mut hdrs = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).to_string();
        if name.as_str() == "cookie" {
            cookies.extend(v.split("; ").map(str::to_string));
            continue;
        }
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    let mut qs = Map::new();
    let raw_query = query.unwrap_or("");
    for (k, v) in url_pairs(raw_query) {
        match qs.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                qs.insert(k, Value::String(v));
            }
        }
    }
    let now = chrono::Utc::now();
    let (body_value, is_b64) = if body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(body) {
            Ok(text) => (Value::String(text.to_string()), false),
            Err(_) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
                true,
            ),
        }
    };
    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": "127.0.0.1",
        "domainPrefix": "127",
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "requestContext": context,
        "isBase64Encoded": is_b64,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !qs.is_empty() {
        event["queryStringParameters"] = Value::Object(qs);
    }
    if !path_params.is_empty() {
        event["pathParameters"] = Value::Object(
            path_params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    if !body_value.is_null() {
        event["body"] = body_value;
    }
    event
}

fn url_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Calls a function's handler with a request event, exactly as the Lambda runtime would.
pub async fn invoke_http(app: &App, function: Function, event: &Value) -> Response {
    let req = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "event not understood");
            return problem(500, "internal_error", "an internal error occurred");
        }
    };
    let result = match function {
        Function::Account => account::handle(&app.only(account::PORTS), req).await,
        Function::Generations => generations::handle(&app.only(generations::PORTS), req).await,
        Function::Public => public::handle(&app.only(public::PORTS), req).await,
        Function::Admin => admin::handle(&app.only(admin::PORTS), req).await,
        Function::StripeWebhook => {
            stripe_webhook::handle(&app.only(stripe_webhook::PORTS), req).await
        }
        Function::Billing => billing::handle(&app.only(billing::PORTS), req).await,
        Function::Uploads => uploads::handle(&app.only(uploads::PORTS), req).await,
        Function::Images => images::handle(&app.only(images::PORTS), req).await,
        Function::Gallery => gallery::handle(&app.only(gallery::PORTS), req).await,
        Function::Exports => exports::handle(&app.only(exports::PORTS), req).await,
    };
    match result {
        Ok(resp) => to_axum(resp),
        // An invocation error: API Gateway answers 500.
        Err(e) => {
            tracing::error!(error = %e, "invocation failed");
            problem(500, "internal_error", "an internal error occurred")
        }
    }
}

async fn dispatch(
    State(host): State<Arc<Host>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let Some((route, params)) = routes::find(&method, &path) else {
        return problem(
            404,
            "route_not_found",
            &format!("no route for {method} {path}"),
        );
    };
    let claims = if route.authorized {
        match bearer(&parts.headers).and_then(|t| host.jwt.verify(t)) {
            Some(c) => Some(c),
            None => return problem(401, "unauthorized", "a valid bearer token is required"),
        }
    } else {
        None
    };
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return problem(413, "payload_too_large", "the request body is too large"),
    };
    let request_id = ulid::Ulid::new().to_string();
    let event = api_gateway_event(
        &route.key(),
        &method,
        &path,
        parts.uri.query(),
        &parts.headers,
        &params,
        claims.as_ref(),
        &body,
        &request_id,
        &peer.ip().to_string(),
    );
    invoke_http(&host.app, route.function, &event).await
}
