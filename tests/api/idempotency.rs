//! What a retry of `POST /v1/generations` must finish: a committed job whose queue message was
//! lost is sent again by a retry with its `Idempotency-Key`, and a commit whose outcome the SDK
//! could not learn is answered by re-reading, not by a 500.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use serde_json::Value;

use crate::helpers::{caller, gen_body, spawn_app, TestApp, User};

async fn post_with_key(app: &TestApp, user: &User, prompt: &str, key: &str) -> Value {
    let resp = app
        .http
        .post(format!("{}/v1/generations", app.base))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", key)
        .json(&gen_body(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

/// Takes every message off the generation queue without running it: what a lost send (or a
/// function stopped between commit and send) leaves.
async fn lose_queued_messages(app: &TestApp) -> usize {
    let q = &app.stack.queue;
    let mut lost = 0;
    loop {
        let out = q
            .sqs
            .receive_message()
            .queue_url(&q.url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return lost;
        }
        for m in messages {
            q.sqs
                .delete_message()
                .queue_url(&q.url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
            lost += 1;
        }
    }
}

#[tokio::test]
async fn a_retry_with_the_same_key_sends_a_lost_job_message_again() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let first = post_with_key(&app, &user, "a paper boat", "retry-1").await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(lose_queued_messages(&app).await, 1);
    app.drain().await;
    assert_eq!(
        app.job(&user, id).await["status"],
        "queued",
        "nothing ran it"
    );
    let balance = app.balance(&user).await;

    // The client retries (its response was lost too): the same answer, and the job runs.
    let retry = post_with_key(&app, &user, "a paper boat", "retry-1").await;
    assert_eq!(retry["id"], first["id"]);
    app.drain().await;
    assert_eq!(app.job(&user, id).await["status"], "succeeded");
    assert_eq!(app.balance(&user).await, balance, "charged once");
    app.assert_ledger_consistent(&user).await;

    // A retry of a finished job sends nothing more.
    post_with_key(&app, &user, "a paper boat", "retry-1").await;
    assert_eq!(lose_queued_messages(&app).await, 0);
}

/// Fails the next `TransactWriteItems` calls, after the request reached the emulator (the
/// response is lost: the commit happened) or before it was sent (it did not).
#[derive(Debug)]
struct LoseTransactions {
    after_send: bool,
    remaining: AtomicUsize,
}

impl LoseTransactions {
    fn take(&self, target: Option<&str>) -> Result<(), BoxError> {
        if target.is_some_and(|t| t.ends_with("TransactWriteItems"))
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err("injected: the connection was lost".into());
        }
        Ok(())
    }
}

impl Intercept for LoseTransactions {
    fn name(&self) -> &'static str {
        "LoseTransactions"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.after_send {
            return Ok(());
        }
        self.take(ctx.request().headers().get("x-amz-target"))
    }

    fn read_before_deserialization(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.after_send {
            return Ok(());
        }
        let target = ctx
            .inner()
            .request()
            .and_then(|r| r.headers().get("x-amz-target"))
            .map(str::to_string);
        self.take(target.as_deref())
    }
}

fn losing_app(app: &TestApp, after_send: bool) -> shared::App {
    let conf = aws_sdk_dynamodb::config::Builder::from(&app.stack.sdk)
        .interceptor(LoseTransactions {
            after_send,
            remaining: AtomicUsize::new(1),
        })
        .build();
    let store = shared::store::Store::new(
        aws_sdk_dynamodb::Client::from_conf(conf),
        app.app().store.table(),
    );
    app.app().clone().with_store(store)
}

#[tokio::test]
async fn an_ambiguous_commit_is_answered_by_rereading() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let before = app.balance(&user).await;

    // Committed, but the answer was lost: re-read, 202, the message sent, charged once.
    let lost_answer = losing_app(&app, true);
    let body = gen_body("a lantern");
    let (status, view) = shared::services::generations::create(
        &lost_answer,
        &caller(&user),
        &body,
        None,
        chrono::Utc::now(),
    )
    .await
    .expect("an ambiguous commit that happened is a success");
    assert_eq!(status, 202);
    let id = view["id"].as_str().unwrap().to_string();
    app.drain().await;
    assert_eq!(app.job(&user, &id).await["status"], "succeeded");
    let charged = app.balance(&user).await;
    assert!(charged < before);

    // Never sent: re-read finds nothing, 503 (safe to retry), nothing charged or created.
    let never_sent = losing_app(&app, false);
    let err = shared::services::generations::create(
        &never_sent,
        &caller(&user),
        &gen_body("a second lantern"),
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    assert_eq!(app.balance(&user).await, charged);
    let list = app.get_json("/v1/generations", &user).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}
