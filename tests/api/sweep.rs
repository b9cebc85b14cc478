use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

/// A job claimed by a worker that died (lease run out) is failed and refunded by the sweep,
/// exactly once, and a late redelivery cannot resurrect it.
#[tokio::test]
async fn stuck_running_job_is_refunded_by_the_sweep() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("stuck")).await;
    let now = Utc::now();
    app.claim(&user, id, "crashed-worker", now, 300).await;
    // Before the lease runs out: nothing to do.
    let early = app.sweep_at(now + Duration::seconds(60)).await;
    assert_eq!(early.stale_jobs_refunded, 0);
    let later = now + Duration::seconds(301);
    let report = app.sweep_at(later).await;
    assert_eq!(report.stale_jobs_refunded, 1);
    let view = app.job(&user, id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["failure"]["code"], "timed_out");
    let again = app.sweep_at(later + Duration::hours(1)).await;
    assert_eq!(again.stale_jobs_refunded, 0);
    app.drain().await;
    assert_eq!(app.job(&user, id).await["status"], "failed");
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}

/// R1: a generation past its deletion time is deleted by the sweep, item and objects, found
/// through the expiry index.
#[tokio::test]
async fn r1_expired_generation_is_deleted_by_the_sweep() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(
            &user,
            json!({"prompt": "ephemeral", "size": "1024x1024", "quality": "low", "n": 2}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    app.drain().await;
    let view = app.job(&user, id).await;
    let delete_at =
        chrono::DateTime::parse_from_rfc3339(view["delete_at"].as_str().unwrap()).unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(view["created_at"].as_str().unwrap()).unwrap();
    assert_eq!((delete_at - created).num_days(), 14);
    assert_eq!(app.objects_of(&user, id).await.len(), 2);

    // The day before: nothing goes.
    let before = app
        .sweep_at(created.with_timezone(&Utc) + Duration::days(13))
        .await;
    assert_eq!(before.content_expired, 0);
    // At its deletion time: the item and its objects go, through the pipeline.
    let report = app.sweep_at(delete_at.with_timezone(&Utc)).await;
    assert_eq!(report.content_expired, 1);
    assert_eq!(report.deletions_completed, 1);
    assert_eq!(report.errors, 0);
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
    assert!(app.objects_of(&user, id).await.is_empty());
    // Profile, balance and ledger are account data (R6): untouched.
    assert_eq!(app.assert_ledger_consistent(&user).await, 8);
}

/// R1 with a plan setting: `until_deleted` content gets no deletion time and the sweep keeps it.
#[tokio::test]
async fn r1_until_deleted_policy_keeps_content() {
    let app = spawn_app_with(&[("RETENTION_DAYS", "until_deleted")]).await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(&user, gen_body("forever"))
        .await
        .json()
        .await
        .unwrap();
    assert!(job["delete_at"].is_null());
    app.drain().await;
    let report = app.sweep_at(Utc::now() + Duration::days(400)).await;
    assert_eq!(report.content_expired, 0);
    assert_eq!(
        app.job(&user, job["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
}

/// A dead-lettered duplicate of a message whose job a live worker holds does not fail that
/// job; the letter is removed and the job finishes normally.
#[tokio::test]
async fn dead_letter_for_a_job_held_by_a_live_worker_is_not_refunded() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("still running")).await;
    let now = Utc::now();
    app.claim(&user, id, "live-worker", now, 600).await;
    let sqs = aws_sdk_sqs::Client::new(&app.stack.sdk);
    sqs.send_message()
        .queue_url(&app.stack.resources.dlq_url)
        .message_body(json!({"user_id": user.sub, "job_id": id}).to_string())
        .send()
        .await
        .unwrap();
    let report = app.sweep_at(now).await;
    assert_eq!(report.dead_letters_removed, 1);
    assert_eq!(report.dead_letters_refunded, 0);
    assert_eq!(report.errors, 0);
    assert_eq!(app.job(&user, id).await["status"], "running");
    assert_eq!(app.assert_ledger_consistent(&user).await, 9);
}
