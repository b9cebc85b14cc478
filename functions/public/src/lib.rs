//! `public`: routes without an authorizer: `GET /v1/health` and `GET /v1/policy`.

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

/// 200 when the table, the bucket and the queue answer; 503 otherwise.
async fn health(app: &App) -> Result<Response<Body>, ApiError> {
    let (table, bucket, queue) =
        tokio::join!(app.store.ping(), app.objects.ping(), app.queue.ping());
    let failures: Vec<String> = [("table", table), ("bucket", bucket), ("queue", queue)]
        .into_iter()
        .filter_map(|(name, r)| {
            r.err().map(|e| {
                tracing::error!(error = ?e, store = name, "health check failed");
                name.to_string()
            })
        })
        .collect();
    if failures.is_empty() {
        http::json(200, &json!({"status": "ok"}))
    } else {
        Err(ApiError::Unavailable(format!(
            "unreachable: {}",
            failures.join(", ")
        )))
    }
}
