//! `public`: routes without an authorizer: `GET /v1/health`, `GET /v1/policy` and
//! `GET /v1/openapi.json`.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::GENERATION_QUEUE
};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lambda_http::{Body, Error, Request, Response};
use serde_json::json;
use shared::domain::pricing;
use shared::domain::retention::PublishedPolicy;
use shared::http::{self, route_key};
use shared::{ApiError, App};

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    http::serve(req, |req| route(app, req)).await
}

async fn route(app: &App, req: Request) -> Result<Response<Body>, ApiError> {
    match route_key(&req).as_deref() {
        Some("GET /v1/health") => health(app).await,
        // The API contract: every route, body, error code and security scheme (OpenAPI 3.1).
        Some("GET /v1/openapi.json") => Ok(Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "public, max-age=300")
            .body(Body::Text(shared::openapi::DOCUMENT.to_string()))
            .expect("static response parts are valid")),
        Some("GET /v1/policy") => {
            let prices: Vec<_> = pricing::table()
                .into_iter()
                .map(|(size, quality, credits)| json!({"size": size, "quality": quality, "credits_per_image": credits}))
                .collect();
            http::json(
                200,
                &json!({
                    // The version every consent change records.
                    "policy_version": &app.config.policy_version,
                    // What a user can consent to (each off until granted).
                    "consent_purposes": &app.config.consent_purposes,
                    "retention": PublishedPolicy::new(
                        &app.config.retention,
                        &app.config.policy_version,
                        app.config.backup_recovery_days,
                    ),
                    "prices": prices,
                    // What can be bought: packs and plans, with their credits and prices.
                    "catalog": &app.config.catalog,
                    // Every kind of data held about a person: what, how long, how deleted.
                    "data_map": shared::datamap::DATA_MAP,
                }),
            )
        }
        _ => Err(ApiError::client(404, "route_not_found", "no such route")),
    }
}

/// How long one check of the stores answers `/v1/health` (per function instance).
pub const HEALTH_TTL: Duration = Duration::from_secs(10);

/// The last check per table (one per deployment; tests run several stacks in one process).
type HealthCache = HashMap<String, (Instant, Vec<String>)>;
static LAST_CHECK: tokio::sync::Mutex<Option<HealthCache>> = tokio::sync::Mutex::const_new(None);

/// 200 when the table, the bucket and the queue answer; 503 otherwise. Anonymous callers cannot
/// multiply AWS calls: one check (three calls) answers every request for `HEALTH_TTL`, and
/// concurrent requests wait for the check in progress instead of starting their own.
async fn health(app: &App) -> Result<Response<Body>, ApiError> {
    let failures = {
        let mut guard = LAST_CHECK.lock().await;
        let cache = guard.get_or_insert_with(HashMap::new);
        match cache.get(app.store.table()) {
            Some((at, failures)) if at.elapsed() < HEALTH_TTL => failures.clone(),
            _ => {
                let failures = check(app).await;
                cache.insert(
                    app.store.table().to_string(),
                    (Instant::now(), failures.clone()),
                );
                failures
            }
        }
    };
    if failures.is_empty() {
        http::json(200, &json!({"status": "ok"}))
    } else {
        Err(ApiError::Unavailable(format!(
            "unreachable: {}",
            failures.join(", ")
        )))
    }
}

async fn check(app: &App) -> Vec<String> {
    let (table, bucket, queue) =
        tokio::join!(app.store.ping(), app.objects().ping(), app.queue().ping());
    [("table", table), ("bucket", bucket), ("queue", queue)]
        .into_iter()
        .filter_map(|(name, r)| {
            r.err().map(|e| {
                tracing::error!(error = ?e, store = name, "health check failed");
                name.to_string()
            })
        })
        .collect()
}
