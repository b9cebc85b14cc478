//! Event-fixture tier: every sample event in `events/` goes through its function's real
//! handler against the local stack (the same files `sam local invoke -e` uses).

use std::path::PathBuf;

use base64::Engine;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Map, Value};

use crate::helpers::*;

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(events_dir().join(name))
        .unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

fn ctx() -> Context {
    let mut c = Context::default();
    c.request_id = unique("fixture-");
    c
}

async fn http(app: &TestApp, name: &str) -> (u16, Value) {
    send(app, name, &read(name)).await
}

/// Runs `event` (the sample `name`, possibly edited) through the handler of its function.
async fn send(app: &TestApp, name: &str, event: &str) -> (u16, Value) {
    let req = lambda_http::request::from_str(event).unwrap_or_else(|e| panic!("{name}: {e}"));
    let resp = match name.split('-').next().unwrap() {
        "account" => Box::pin(account::handle(&app.app().only(account::PORTS), req)).await,
        "generations" => {
            Box::pin(generations::handle(
                &app.app().only(generations::PORTS),
                req,
            ))
            .await
        }
        "public" => Box::pin(public::handle(&app.app().only(public::PORTS), req)).await,
        "admin" => Box::pin(admin::handle(&app.app().only(admin::PORTS), req)).await,
        "stripe" => {
            Box::pin(stripe_webhook::handle(
                &app.app().only(stripe_webhook::PORTS),
                req,
            ))
            .await
        }
        "billing" => Box::pin(billing::handle(&app.app().only(billing::PORTS), req)).await,
        "uploads" => Box::pin(uploads::handle(&app.app().only(uploads::PORTS), req)).await,
        "images" => Box::pin(images::handle(&app.app().only(images::PORTS), req)).await,
        "gallery" => Box::pin(gallery::handle(&app.app().only(gallery::PORTS), req)).await,
        "exports" => Box::pin(exports::handle(&app.app().only(exports::PORTS), req)).await,
        other => panic!("no HTTP function {other}"),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let body = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, body)
}

/// The sample `name` with its verified claims changed by `edit` (another caller).
fn with_claims(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut event: Value = serde_json::from_str(&read(name)).unwrap();
    edit(
        event["requestContext"]["authorizer"]["jwt"]["claims"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{name} carries JWT claims")),
    );
    event.to_string()
}

/// The subject `account-report-child.json` reports and `admin-place-hold.json` holds.
const REPORTED: &str = "sample-user-0002";

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    // In an order that makes sense for one user: onboarding first, account deletion last.
    for (name, expected) in [
        ("account-get-me.json", 403),
        ("account-onboard.json", 201),
        ("account-get-me.json", 200),
        ("account-update-me.json", 200),
        ("account-data.json", 200),
        ("account-consents.json", 200),
        ("exports-create.json", 202),
        ("generations-create.json", 202),
        ("generations-create.json", 202),
        ("generations-list.json", 200),
        ("billing-ledger.json", 200),
        ("generations-get.json", 404),
        ("generations-delete.json", 404),
        ("public-health.json", 200),
        ("public-policy.json", 200),
        ("public-openapi.json", 200),
        ("uploads-create.json", 201),
        ("images-get.json", 404),
        ("images-downloads.json", 200),
        ("gallery-list.json", 200),
        // No deletion was requested yet.
        ("account-deletion-status.json", 404),
    ] {
        let (status, body) = http(&app, name).await;
        assert_eq!(status, expected, "{name}: {body}");
        seen.push(name.to_string());
    }
    let sub = "sample-user-0001";
    let user = User {
        sub: sub.into(),
        token: String::new(),
    };
    assert_eq!(
        app.assert_ledger_consistent(&user).await,
        10 - 1,
        "the idempotent sample charged once"
    );

    // The Stripe sample as stored carries a stale signature (Stripe signs at delivery time):
    // refused as such; signed now with this deployment's secret, its pack is granted once.
    let name = "stripe-webhook-checkout-completed.json";
    let (status, body) = http(&app, name).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("stale_signature")),
        "{body}"
    );
    let mut stripe: Value = serde_json::from_str(&read(name)).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(stripe["body"].as_str().unwrap())
        .unwrap();
    let t = chrono::Utc::now().timestamp();
    stripe["headers"]["stripe-signature"] = json!(format!(
        "t={t},v1={}",
        shared::domain::billing::sign(&app.webhook_secret().await, t, &raw)
    ));
    for outcome in ["applied", "duplicate"] {
        let (status, body) = send(&app, name, &stripe.to_string()).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some(outcome)),
            "{body}"
        );
    }
    assert_eq!(app.assert_ledger_consistent(&user).await, 9 + 50);
    seen.push(name.to_string());

    // The account the samples report and hold, onboarded with the onboarding sample.
    let reported = with_claims("account-onboard.json", |claims| {
        claims.insert("sub".into(), json!(REPORTED));
        claims.insert("email".into(), json!("reported@example.com"));
    });
    let (status, body) = send(&app, "account-onboard.json", &reported).await;
    assert_eq!(status, 201, "{body}");

    // K2: the report is accepted and the reported account suspended at once.
    let (status, body) = http(&app, "account-report-child.json").await;
    assert_eq!(status, 202, "account-report-child.json: {body}");
    assert_eq!(body["status"], "pending", "{body}");
    let report_id = body["id"].as_str().expect("a report id").to_string();
    let suspended = app
        .app()
        .store
        .get_profile(REPORTED)
        .await
        .unwrap()
        .unwrap();
    assert!(suspended.suspension.is_some(), "{REPORTED} is suspended");
    seen.push("account-report-child.json".into());

    // The admin samples succeed for the admin group, and the same request without the group
    // claim is refused.
    for (name, expected) in [
        ("admin-place-hold.json", 201),
        ("admin-list-holds.json", 200),
        ("admin-audit.json", 200),
    ] {
        let (status, body) = http(&app, name).await;
        assert_eq!(status, expected, "{name}: {body}");
        match name {
            "admin-place-hold.json" => {
                assert_eq!(body["user_id"], REPORTED, "{body}");
                assert_eq!(body["in_force"].as_bool(), Some(true), "{body}");
            }
            "admin-list-holds.json" => {
                let holds = body["items"].as_array().expect("a list");
                assert_eq!(holds.len(), 1, "{body}");
                assert_eq!(holds[0]["user_id"], REPORTED, "{body}");
            }
            _ => {
                let actions: Vec<&str> = body["items"]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|r| r["action"].as_str().unwrap())
                    .collect();
                assert!(actions.contains(&"hold.place"), "{actions:?}");
                assert!(actions.contains(&"account.suspend"), "{actions:?}");
            }
        }
        let not_admin = with_claims(name, |claims| {
            assert!(
                claims.remove("cognito:groups").is_some(),
                "{name}: no group claim"
            );
        });
        let (status, body) = send(&app, name, &not_admin).await;
        assert_eq!(status, 403, "{name} without the admin group: {body}");
        assert_eq!(body["code"], "admin_required", "{name}: {body}");
        seen.push(name.to_string());
    }

    // R4: the account is deactivated at once; its queued job is cancelled and refunded.
    let (status, body) = http(&app, "account-delete-me.json").await;
    assert_eq!(status, 202, "account-delete-me.json: {body}");
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(body["live_stores_within_hours"], 24, "{body}");
    assert_eq!(
        body["backups_within_days"],
        app.app().config.backup_recovery_days,
        "{body}"
    );
    seen.push("account-delete-me.json".into());
    let (status, body) = http(&app, "account-get-me.json").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "account_deleted", "{body}");
    let (status, body) = http(&app, "account-deletion-status.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(
        app.assert_ledger_consistent(&user).await,
        10 + 50,
        "the cancelled job was refunded (and the sample pack is still there)"
    );

    let sqs: SqsEvent = serde_json::from_str(&read("generate-sqs.json")).unwrap();
    let resp = Box::pin(generate::handle(
        &app.app().only(generate::PORTS),
        LambdaEvent::new(sqs, ctx()),
    ))
    .await
    .unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "a message for an unknown job is a no-op"
    );
    seen.push("generate-sqs.json".into());
    let sqs: SqsEvent = serde_json::from_str(&read("export-sqs.json")).unwrap();
    let resp = Box::pin(export::handle(
        &app.app().only(export::PORTS),
        LambdaEvent::new(sqs, ctx()),
    ))
    .await
    .unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "a message for an unknown export is a no-op"
    );
    seen.push("export-sqs.json".into());
    let schedule: Value = serde_json::from_str(&read("retention-sweep-schedule.json")).unwrap();
    let report = Box::pin(retention_sweep::handle(
        &app.app().only(retention_sweep::PORTS),
        LambdaEvent::new(schedule, ctx()),
    ))
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    seen.push("retention-sweep-schedule.json".into());

    // The sweep erased the account: nothing left under the subject, the report names an
    // anonymous id, and the same identity signing up again gets no signup credits.
    let (status, body) = http(&app, "account-deletion-status.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(app.assert_ledger_consistent(&user).await, 0);
    let report = app
        .app()
        .store
        .get_child_report(&report_id)
        .await
        .unwrap()
        .expect("the report is kept");
    assert!(report.reporter.starts_with("anon:"), "{report:?}");
    let (status, body) = http(&app, "account-onboard.json").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credits_balance"], 0, "{body}");

    // Every file in events/ (but the env file) was exercised, and every function has one.
    for entry in std::fs::read_dir(events_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "env.json" {
            assert!(seen.contains(&name), "events/{name} is not exercised");
        }
    }
    let functions = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions");
    for entry in std::fs::read_dir(functions).unwrap() {
        let f = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            seen.iter().any(|s| s.starts_with(&format!("{f}-"))),
            "functions/{f} has no sample event"
        );
    }
}

/// A `MakeWriter` into a shared buffer: what the function logged during one test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// K1: a refused under-13 sign-up leaves no identity in the logs: the request's span names the
/// subject only once onboarding succeeded (and a successful one does name it).
#[tokio::test]
async fn k1_refused_sign_up_logs_no_subject() {
    let app = spawn_app().await;
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(logs.clone())
        .finish();
    // A second registered dispatcher makes tracing compute each callsite's interest across all
    // dispatchers, whatever thread registers it first (with just one, a callsite first hit by
    // another test's thread would be cached as uninteresting for this one too).
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let child = unique("child-");
    let mut event: Value = serde_json::from_str(&with_claims("account-onboard.json", |c| {
        c.insert("sub".into(), json!(child));
        c.remove("email");
    }))
    .unwrap();
    event["body"] = json!(json!({"date_of_birth": "2020-02-02"}).to_string());
    let (status, body) = send(&app, "account-onboard.json", &event.to_string()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("age_requirement"))
    );
    let refused = logs.text();
    assert!(
        refused.contains("age_requirement"),
        "the refusal is logged: {refused}"
    );
    assert!(
        !refused.contains(&child),
        "the subject is logged: {refused}"
    );
    // Nor its IP address or user agent (C3 data of a refused child).
    assert!(
        !refused.contains("203.0.113.7") && !refused.contains("curl/8.5.0"),
        "the refused sign-up's IP or user agent is logged: {refused}"
    );

    let adult = unique("adult-");
    let event = with_claims("account-onboard.json", |c| {
        c.insert("sub".into(), json!(adult));
    });
    assert_eq!(send(&app, "account-onboard.json", &event).await.0, 201);
    assert!(
        logs.text().contains(&adult),
        "a successful onboarding names its subject"
    );
    assert!(
        logs.text().contains("203.0.113.7"),
        "a successful onboarding logs its IP (C3)"
    );
}
