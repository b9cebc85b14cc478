use std::collections::HashSet;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Credits never go negative: 20 concurrent requests with credits for 5.
#[tokio::test]
async fn twenty_concurrent_requests_with_credits_for_five() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await; // 10 credits; medium square costs 2
    let body =
        json!({"prompt": "a storm over the sea", "size": "1024x1024", "quality": "medium", "n": 1});
    let requests = (0..20).map(|_| app.generate(&user, body.clone()));
    let responses = futures::future::join_all(requests).await;
    let mut accepted = 0;
    let mut refused = 0;
    for resp in responses {
        match resp.status().as_u16() {
            202 => accepted += 1,
            402 => {
                assert_eq!(problem_code(resp, 402).await, "insufficient_credits");
                refused += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, refused), (5, 15));
    assert_eq!(app.assert_ledger_consistent(&user).await, 0);
    let list: Value = app.get_json("/v1/generations?limit=100", &user).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_never_charges_twice() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let post = |body: Value, key: &'static str| {
        app.http
            .post(format!("{}/v1/generations", app.base))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(gen_body("a quiet forest"), "key-1").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Same key, same body (keys in another order): the first response, no new charge.
    let same = json!({"n": 1, "quality": "low", "size": "1024x1024", "prompt": "a quiet forest"});
    let replays = futures::future::join_all((0..3).map(|_| post(same.clone(), "key-1"))).await;
    for r in replays {
        let r = r.unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["id"], first["id"]);
    }
    // Same key, different body: 422.
    let other = post(gen_body("a loud city"), "key-1").await.unwrap();
    assert_eq!(problem_code(other, 422).await, "idempotency_key_reused");
    // Another key: a new job.
    let second = post(gen_body("a quiet forest"), "key-2").await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["id"], first["id"]);
    assert_eq!(app.assert_ledger_consistent(&user).await, 8);
    // Another user may use the same key independently.
    let other_user = app.onboarded_user().await;
    let r = app
        .http
        .post(format!("{}/v1/generations", app.base))
        .bearer_auth(&other_user.token)
        .header("Idempotency-Key", "key-1")
        .json(&gen_body("a quiet forest"))
        .send()
        .await
        .unwrap();
    let r: Value = r.json().await.unwrap();
    assert_ne!(r["id"], first["id"]);
    // Records are kept at least 24 hours.
    let rec_sweep = app
        .sweep_at(chrono::Utc::now() + chrono::Duration::hours(23))
        .await;
    assert_eq!(rec_sweep.items_deleted, 0);
    assert!(app.idempotency_record_exists(&user, "key-1").await);
    // And deleted by the sweep once the 24 hours are over (the record holds the prompt).
    let after = app
        .sweep_at(chrono::Utc::now() + chrono::Duration::hours(25))
        .await;
    assert_eq!(after.errors, 0);
    assert!(!app.idempotency_record_exists(&user, "key-1").await);
}

fn sqs_event(body: &str, message_id: &str) -> LambdaEvent<SqsEvent> {
    let event: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": message_id,
        "receiptHandle": "handle",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:generation",
        "awsRegion": "us-east-1",
    }]}))
    .unwrap();
    let mut ctx = Context::default();
    ctx.request_id = unique("req-");
    LambdaEvent::new(event, ctx)
}

async fn take_message(app: &TestApp) -> String {
    let sqs = aws_sdk_sqs::Client::new(&app.stack.sdk);
    let out = sqs
        .receive_message()
        .queue_url(&app.stack.resources.queue_url)
        .max_number_of_messages(1)
        .send()
        .await
        .unwrap();
    out.messages()[0].body().unwrap().to_string()
}

/// At-least-once delivery: the same message three times (and three at once) yields one set of
/// images and one charge.
#[tokio::test]
async fn same_sqs_message_delivered_three_times_one_set_of_images_one_charge() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let job: Value = app
        .generate(
            &user,
            json!({"prompt": "three ravens", "size": "1024x1024", "quality": "low", "n": 2}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let body = take_message(&app).await;
    for i in 0..3 {
        let resp = generate::handle(app.app(), sqs_event(&body, &format!("m{i}")))
            .await
            .unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }
    let concurrent = futures::future::join_all(
        (0..3).map(|i| generate::handle(app.app(), sqs_event(&body, &format!("c{i}")))),
    )
    .await;
    assert!(concurrent
        .iter()
        .all(|r| r.as_ref().unwrap().batch_item_failures.is_empty()));
    let job = app.job(&user, id).await;
    assert_eq!(job["status"], "succeeded");
    let keys = app.objects_of(&user, id).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let entries = app.app().store.ledger_entries(&user.sub).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.cause.contains(id)).count(), 1);
    assert_eq!(app.assert_ledger_consistent(&user).await, 8);
}

/// S1: another user's ids are 404 on every route, and their data is untouched.
#[tokio::test]
async fn s1_another_users_generation_is_404_on_every_route() {
    let app = spawn_app().await;
    let owner = app.onboarded_user().await;
    let intruder = app.onboarded_user().await;
    let id = &app.create(&owner, gen_body("private sketch")).await;
    app.drain().await;
    let path = format!("/v1/generations/{id}");
    assert_eq!(
        problem_code(app.get(&path, &intruder).await, 404).await,
        "not_found"
    );
    let resp = app.send(Method::DELETE, &path, Some(&intruder), None).await;
    assert_eq!(problem_code(resp, 404).await, "not_found");
    let list: Value = app.get_json("/v1/generations", &intruder).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    // A cursor minted from the owner's listing reads only the intruder's own partition.
    let cursor = shared::domain::cursor::encode(&format!("GEN#{}", "zzzzzzzzzzzzzzzzzzzzzzzzzz"));
    let list: Value = app
        .get_json(&format!("/v1/generations?cursor={cursor}"), &intruder)
        .await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let job = app.job(&owner, id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["images"].as_array().unwrap().len(), 1);
    app.assert_ledger_consistent(&owner).await;
    app.assert_ledger_consistent(&intruder).await;
}

/// D3, R3: a deleted generation is gone from the API at once and its objects are deleted.
#[tokio::test]
async fn r3_d3_deleted_generation_disappears_with_its_objects() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, json!({"prompt": "a red kite", "size": "1024x1536", "quality": "low", "n": 2, "output_format": "jpeg"})).await;
    app.drain().await;
    assert_eq!(app.objects_of(&user, id).await.len(), 2);
    let resp = app.delete_generation(&user, id).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
    assert!(app.objects_of(&user, id).await.is_empty());
    let resp = app.delete_generation(&user, id).await;
    assert_eq!(problem_code(resp, 404).await, "not_found");
    // A finished job is not refunded by deletion.
    assert_eq!(app.assert_ledger_consistent(&user).await, 6);
}

/// A queued job deleted by its owner is cancelled and refunded once; its message then does
/// nothing.
#[tokio::test]
async fn deleting_a_queued_generation_cancels_and_refunds_it_once() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("never drawn")).await;
    assert_eq!(app.balance(&user).await, 9);
    let resp = app.delete_generation(&user, id).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    app.drain().await;
    assert!(app.objects_of(&user, id).await.is_empty());
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}

/// G4: history is newest first with an opaque cursor.
#[tokio::test]
async fn g4_history_is_newest_first_and_paginates() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let mut ids = Vec::new();
    for p in ["first", "second", "third"] {
        let job: Value = app.generate(&user, gen_body(p)).await.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
        sleep_ms(5).await;
    }
    let page: Value = app.get_json("/v1/generations?limit=2", &user).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], ids[2].as_str());
    assert_eq!(items[1]["id"], ids[1].as_str());
    assert_eq!(items[0]["prompt"], "third");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: Value = app
        .get_json(&format!("/v1/generations?limit=2&cursor={cursor}"), &user)
        .await;
    let rest: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, vec![ids[0].as_str()]);
    let all: HashSet<String> = ids.into_iter().collect();
    assert_eq!(all.len(), 3);
    app.assert_ledger_consistent(&user).await;
}

/// A job whose enqueue failed is not lost: it stays queued and the sweep refunds it.
#[tokio::test]
async fn job_whose_enqueue_failed_is_refunded_by_the_sweep() {
    let app = spawn_app_with(&[(
        "GENERATION_QUEUE_URL",
        "http://127.0.0.1:9/000000000000/missing",
    )])
    .await;
    let user = app.onboarded_user().await;
    let resp = app.generate(&user, gen_body("lost in transit")).await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(app.balance(&user).await, 9);
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let report = app.sweep_at(later).await;
    assert_eq!(report.stale_jobs_refunded, 1);
    let job = app.job(&user, id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["failure"]["code"], "not_started");
    assert_eq!(job["credits_refunded"], 1);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}

/// D3: a job deleted while a worker runs it is cancelled and refunded once; the worker's
/// completion then fails and stores nothing.
#[tokio::test]
async fn deleting_a_running_generation_refunds_it_and_the_worker_keeps_nothing() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = &app.create(&user, gen_body("interrupted")).await;
    app.claim(&user, id, "worker-1", chrono::Utc::now(), 600)
        .await;
    assert_eq!(app.delete_generation(&user, id).await.status(), 204);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    let image = shared::domain::generation::StoredImage {
        key: format!("users/{}/generations/{id}/0.png", user.sub),
        width: 1024,
        height: 1024,
        format: "png".into(),
        bytes: 1,
        ..Default::default()
    };
    let completed = app
        .app()
        .store
        .complete_job(
            &user.sub,
            id,
            "worker-1",
            &[image],
            "local",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert!(!completed, "the deleted job cannot be completed");
    assert_eq!(
        problem_code(app.get(&format!("/v1/generations/{id}"), &user).await, 404).await,
        "not_found"
    );
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
}
