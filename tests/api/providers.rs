use serde_json::{json, Value};

use crate::helpers::*;

async fn app_with_stub(script: Vec<StubReply>, extra: &[(&str, &str)]) -> (TestApp, OpenAiStub) {
    let stub = OpenAiStub::start(script).await;
    let mut env: Vec<(&str, String)> = stub.env();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (spawn_app_with(&borrowed).await, stub)
}

/// The OpenAI adapter speaks the Images API: request shape, auth, b64_json images.
#[tokio::test]
async fn openai_provider_generates_through_the_images_api() {
    let (app, stub) = app_with_stub(vec![StubReply::Images], &[]).await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(&user, json!({"prompt": "a paper boat", "size": "1024x1536", "quality": "high", "n": 1, "output_format": "jpeg"}))
        .await
        .json()
        .await
        .unwrap();
    app.drain().await;
    let job = app.job(&user, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["images"][0]["width"], 1024);
    assert_eq!(job["images"][0]["height"], 1536);
    let req = &stub.requests()[0];
    assert_eq!(req["model"], "gpt-image-1");
    assert_eq!(req["prompt"], "a paper boat");
    assert_eq!(req["size"], "1024x1536");
    assert_eq!(req["quality"], "high");
    assert_eq!(req["output_format"], "jpeg");
    assert_eq!(req["n"], 1);
    assert!(
        req.get("user").is_none(),
        "U1: no user identifier goes to the provider"
    );
    assert_eq!(app.assert_ledger_consistent(&user).await, 4);
}

/// Transient errors are retried within the delivery; success charges once.
#[tokio::test]
async fn transient_provider_errors_are_retried() {
    let (app, stub) = app_with_stub(
        vec![
            StubReply::Error(500, None),
            StubReply::Error(429, None),
            StubReply::Images,
        ],
        &[],
    )
    .await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(&user, gen_body("retry me"))
        .await
        .json()
        .await
        .unwrap();
    app.drain().await;
    assert_eq!(stub.calls(), 3);
    let job = app.job(&user, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(app.assert_ledger_consistent(&user).await, 9);
}

/// Transient then permanent: failed with a readable reason, refunded exactly once, even when
/// the message comes again.
#[tokio::test]
async fn transient_then_permanent_failure_is_refunded_exactly_once() {
    let (app, stub) = app_with_stub(
        vec![
            StubReply::Error(503, None),
            StubReply::Error(400, Some("invalid_value")),
        ],
        &[],
    )
    .await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("doomed")).await;
    app.drain().await;
    assert_eq!(stub.calls(), 2);
    let view = app.job(&user, id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["failure"]["code"], "provider_error");
    assert!(view["failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("refunded"));
    assert_eq!(view["credits_refunded"], 1);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    // Redelivery of the same job: nothing more happens.
    let msg = shared::domain::generation::JobMessage {
        user_id: user.sub.clone(),
        job_id: id.to_string(),
    };
    let outcome = shared::services::worker::process(app.app(), &msg, "again")
        .await
        .unwrap();
    assert_eq!(outcome, shared::services::worker::Processed::Skipped);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    let failed: Vec<Value> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e["detail-type"] == "generation.failed")
        .collect();
    assert_eq!(failed.len(), 1);
}

/// A moderation refusal is final, user-readable and refunded once.
#[tokio::test]
async fn moderation_refusal_is_refunded_exactly_once() {
    let (app, _stub) =
        app_with_stub(vec![StubReply::Error(400, Some("moderation_blocked"))], &[]).await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(
            &user,
            json!({"prompt": "something refused", "size": "1024x1024", "quality": "high", "n": 2}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(app.balance(&user).await, 2);
    app.drain().await;
    let view = app.job(&user, id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["failure"]["code"], "moderation_blocked");
    assert_eq!(view["credits_refunded"], 8);
    assert!(view["images"].as_array().unwrap().is_empty());
    // The sweep finds nothing more to refund.
    let report = app
        .sweep_at(chrono::Utc::now() + chrono::Duration::hours(3))
        .await;
    assert_eq!(report.stale_jobs_refunded + report.dead_letters_refunded, 0);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}

/// A provider that never recovers: the message is redelivered until it lands in the DLQ
/// (maxReceiveCount 5) and the sweep refunds its job once.
#[tokio::test]
async fn message_that_keeps_failing_lands_in_the_dlq_and_the_sweep_refunds_it() {
    let (app, stub) = app_with_stub(
        vec![StubReply::Error(502, None)],
        &[("PROVIDER_MAX_RETRIES", "0")],
    )
    .await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("never works")).await;
    app.drain().await;
    assert_eq!(stub.calls(), 5, "one call per delivery, five deliveries");
    let view = app.job(&user, id).await;
    assert_eq!(
        view["status"], "queued",
        "released back after each transient failure"
    );
    let report = app.sweep_at(chrono::Utc::now()).await;
    assert_eq!(report.dead_letters_refunded, 1);
    let view = app.job(&user, id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["failure"]["code"], "processing_failed");
    let again = app
        .sweep_at(chrono::Utc::now() + chrono::Duration::hours(2))
        .await;
    assert_eq!(again.dead_letters_refunded + again.stale_jobs_refunded, 0);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}
