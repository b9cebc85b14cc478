//! Event-fixture tier: every sample event in `events/` goes through its function's real
//! handler against the local stack (the same files `sam local invoke -e` uses).

use std::path::PathBuf;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

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
    let req = lambda_http::request::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let resp = match name.split('-').next().unwrap() {
        "account" => account::handle(app.app(), req).await,
        "generations" => generations::handle(app.app(), req).await,
        "public" => public::handle(app.app(), req).await,
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

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    // In an order that makes sense for one user: onboarding first.
    for (name, expected) in [
        ("account-get-me.json", 403),
        ("account-onboard.json", 201),
        ("account-get-me.json", 200),
        ("account-update-me.json", 200),
        ("generations-create.json", 202),
        ("generations-create.json", 202),
        ("generations-list.json", 200),
        ("generations-get.json", 404),
        ("generations-delete.json", 404),
        ("public-health.json", 200),
        ("public-policy.json", 200),
    ] {
        let (status, body) = http(&app, name).await;
        assert_eq!(status, expected, "{name}: {body}");
        seen.push(name.to_string());
    }
    let sqs: SqsEvent = serde_json::from_str(&read("generate-sqs.json")).unwrap();
    let resp = generate::handle(app.app(), LambdaEvent::new(sqs, ctx()))
        .await
        .unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "a message for an unknown job is a no-op"
    );
    seen.push("generate-sqs.json".into());
    let schedule: Value = serde_json::from_str(&read("retention-sweep-schedule.json")).unwrap();
    retention_sweep::handle(app.app(), LambdaEvent::new(schedule, ctx()))
        .await
        .unwrap();
    seen.push("retention-sweep-schedule.json".into());

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
}
