//! The deletion pipeline (R3) and the retention rules of stored content (R1).

use std::sync::atomic::Ordering;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

/// R3: a DELETE whose object deletion fails (S3 times out) still answers 204 and hides the
/// generation at once; the committed deletion record lets the next sweep finish the job, so
/// nothing is orphaned and the deleted item is never visible again.
#[tokio::test]
async fn r3_delete_whose_object_deletion_fails_is_completed_by_the_next_sweep() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = app
        .create(
            &user,
            json!({"prompt": "fragile", "size": "1024x1024", "quality": "low", "n": 2}),
        )
        .await;
    app.drain().await;
    assert_eq!(app.objects_of(&user, &id).await.len(), 2);

    let (faulty, faults) = app.with_failing_deletes();
    shared::services::generations::delete(&faulty, &caller(&user), &id, Utc::now())
        .await
        .expect("the owner's delete succeeds even when S3 fails");
    // Gone from the API at once, everywhere.
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
    let list: Value = app.get_json("/v1/generations", &user).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    // The objects are still there: nothing points at them but the deletion record.
    assert_eq!(app.objects_of(&user, &id).await.len(), 2);

    // A sweep while S3 still fails keeps the record (and counts the error, without failing).
    let failing = shared::services::sweep::run(&faulty, Utc::now())
        .await
        .unwrap();
    assert_eq!(failing.errors, 1);
    assert_eq!(failing.deletions_completed, 0);

    faults.fail_deletes.store(false, Ordering::SeqCst);
    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.deletions_completed, 1);
    assert_eq!(report.errors, 0);
    assert!(app.objects_of(&user, &id).await.is_empty());
    let kinds: Vec<String> = app
        .scan_table()
        .await
        .iter()
        .filter_map(|i| i.get("kind").and_then(|k| k.as_s().ok()).cloned())
        .collect();
    assert!(!kinds.contains(&"generation".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"deletion_record".to_string()), "{kinds:?}");
    // Never visible again.
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
}

/// R3: the idempotency record of a deleted job goes with it (it holds the prompt), so the same
/// key cannot replay a deleted job.
#[tokio::test]
async fn r3_deleted_job_cannot_be_replayed_by_its_idempotency_key() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let send = || {
        app.http
            .post(format!("{}/v1/generations", app.base))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", "replay-me")
            .json(&gen_body("a secret prompt"))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    app.drain().await;
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204);
    assert!(!app.idempotency_record_exists(&user, "replay-me").await);
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_ne!(again["id"], first["id"], "a new job, not the deleted one");
}

/// R3: a worker that finishes a job deleted under it keeps nothing: its images are removed
/// through a deletion record, and that record's recheck after the worker's lease catches images
/// written after the first pass.
#[tokio::test]
async fn r3_images_of_a_job_deleted_while_running_are_never_orphaned() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("racing the delete")).await;
    let now = Utc::now();
    app.claim(&user, &id, "worker-1", now, 600).await;
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204);
    // The worker, unaware, stores an image after the delete ran.
    let key = format!("users/{}/generations/{id}/0.png", user.sub);
    app.app()
        .objects()
        .put(&key, vec![1, 2, 3], "image/png", true)
        .await
        .unwrap();
    // Before the recheck time the record waits; after it, the late image goes.
    let early = app.sweep_at(now + Duration::minutes(1)).await;
    assert_eq!(early.deletions_completed, 0);
    let late = app
        .sweep_at(now + Duration::minutes(shared::store::RECHECK_AFTER_MINUTES + 1))
        .await;
    assert_eq!(late.deletions_completed, 1);
    assert!(app.objects_of(&user, &id).await.is_empty());
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}

/// R1: content stored under `until_deleted` gets a deletion time when the operator later sets
/// 14 days (at the next sweep); lengthening never brings back what is gone.
#[tokio::test]
async fn r1_shortening_the_retention_reaches_content_already_stored() {
    let app = spawn_app_with(&[("RETENTION_DAYS", "until_deleted")]).await;
    let user = app.onboarded_user().await;
    let id = app
        .create(&user, gen_body("kept forever, or so it seemed"))
        .await;
    app.drain().await;
    let in_a_month = Utc::now() + Duration::days(30);
    assert_eq!(app.sweep_at(in_a_month).await.content_expired, 0);
    assert!(app.job(&user, &id).await["delete_at"].is_null());

    // The operator sets 14 days: the same table, the same items, a new configuration.
    let mut shorter = app.app().clone();
    shorter.config.retention = shared::domain::retention::RetentionPolicy::parse("14").unwrap();
    let report = shared::services::sweep::run(&shorter, in_a_month)
        .await
        .unwrap();
    assert_eq!(report.content_expired, 1);
    assert_eq!(report.deletions_completed, 1);
    assert!(app.objects_of(&user, &id).await.is_empty());

    // Back to until_deleted: what is gone stays gone.
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
}

/// Reading stored data does not depend on today's input limits: a job whose prompt is longer
/// than today's limit (stored under an older, looser rule) can still be listed, read, deleted.
#[tokio::test]
async fn stored_jobs_stay_readable_and_deletable_when_input_limits_tighten() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("short")).await;
    app.drain().await;
    let long = "x".repeat(shared::domain::generation::PROMPT_MAX_CHARS + 500);
    aws_sdk_dynamodb::Client::new(&app.stack.sdk)
        .update_item()
        .table_name(&app.stack.resources.table_name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{}", user.sub)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("GEN#{id}")),
        )
        .update_expression("SET prompt = :p")
        .expression_attribute_values(
            ":p",
            aws_sdk_dynamodb::types::AttributeValue::S(long.clone()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(app.job(&user, &id).await["prompt"], long.as_str());
    let list: Value = app.get_json("/v1/generations", &user).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204);
    assert!(app.objects_of(&user, &id).await.is_empty());
}

/// Content objects carry the backstop tag that the bucket's lifecycle rule matches.
#[tokio::test]
async fn r1_content_objects_are_tagged_for_the_lifecycle_backstop() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("tagged")).await;
    app.drain().await;
    let key = &app.objects_of(&user, &id).await[0];
    let tags = app.app().objects().tags(key).await.unwrap();
    assert_eq!(tags, vec![("backstop".to_string(), "on".to_string())]);
}

/// Items stored by the first release (images as a JSON string, stamped `EXP#` deletion time,
/// a DynamoDB TTL) stay readable, and the retention in force decides their fate: not due under
/// it, they move to the creation-time index and lose the TTL that would delete them anyway.
#[tokio::test]
async fn r1_first_release_items_are_read_and_follow_the_retention_in_force() {
    let app = spawn_app_with(&[("RETENTION_DAYS", "until_deleted")]).await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("from the first release")).await;
    app.drain().await;
    let images = app.job(&user, &id).await["images"].clone();
    let created = Utc::now();
    let old_delete_at = created + Duration::days(14);
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let ddb = aws_sdk_dynamodb::Client::new(&app.stack.sdk);
    let stored: Value = json!([{"key": format!("users/{}/generations/{id}/0.png", user.sub),
        "width": images[0]["width"], "height": images[0]["height"], "format": "png", "bytes": 1}]);
    ddb.update_item()
        .table_name(&app.stack.resources.table_name)
        .key("pk", A::S(format!("USER#{}", user.sub)))
        .key("sk", A::S(format!("GEN#{id}")))
        .update_expression(
            "SET images = :img, exp_pk = :epk, exp_at = :eat, #ttl = :ttl, delete_at = :da",
        )
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":img", A::S(stored.to_string()))
        .expression_attribute_values(":epk", A::S("EXP#0".into()))
        .expression_attribute_values(":eat", A::N(old_delete_at.timestamp().to_string()))
        .expression_attribute_values(
            ":ttl",
            A::N((old_delete_at.timestamp() + 86_400).to_string()),
        )
        .expression_attribute_values(":da", A::S(old_delete_at.to_rfc3339()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.job(&user, &id).await["images"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Past its old deletion time, under until_deleted: kept, re-indexed, TTL gone.
    let report = app.sweep_at(old_delete_at + Duration::hours(1)).await;
    assert_eq!((report.content_expired, report.errors), (0, 0));
    let item = app
        .scan_table()
        .await
        .into_iter()
        .find(|i| i["sk"].as_s().unwrap() == &format!("GEN#{id}"))
        .unwrap();
    assert!(item["exp_pk"].as_s().unwrap().starts_with("CONTENT#"));
    assert!(!item.contains_key("ttl") && !item.contains_key("delete_at"));
    assert_eq!(app.job(&user, &id).await["status"], "succeeded");
}
