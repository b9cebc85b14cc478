//! Abuse controls (S2, U5, C3): rate limits per user and per source IP, prompt moderation with
//! violation records and automatic suspension, and what request logs carry.

use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    caller, contract_checked, gen_body, problem_code, spawn_app_with, unique, OpenAiStub,
    StubReply, TestApp, User, STUB_KEY,
};

/// Tests with day-long windows start away from the UTC day's edge, so all their requests share
/// one window.
async fn away_from_the_day_edge() {
    let left = 86_400 - chrono::Utc::now().timestamp().rem_euclid(86_400);
    if left < 120 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 1)).await;
    }
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a 429 carries Retry-After in seconds")
}

/// The violation records of the stack's table, as JSON.
async fn violations(app: &TestApp) -> Vec<Value> {
    app.scan_json()
        .await
        .into_iter()
        .filter(|i| i["kind"] == "violation")
        .collect()
}

async fn generations_count(app: &TestApp, user: &User) -> usize {
    app.get_json("/v1/generations?limit=100", user).await["items"]
        .as_array()
        .unwrap()
        .len()
}

async fn anonymous_get(app: &TestApp, client: &reqwest::Client, path: &str) -> reqwest::Response {
    let resp = client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    contract_checked("GET", path, resp).await
}

/// S2: 50 concurrent generation requests against a limit of 10: exactly 10 are accepted and
/// charged, 40 get 429 `rate_limited` with `Retry-After`.
#[tokio::test]
async fn s2_rate_limit_holds_under_50_concurrent_requests() {
    away_from_the_day_edge().await;
    let app = spawn_app_with(&[
        ("RATE_LIMITS", "generate=10/86400"),
        ("SIGNUP_CREDITS", "1000"),
    ])
    .await;
    let user = app.onboarded_user().await;
    let before = app.balance(&user).await;
    let responses = join_all(
        (0..50).map(|i| app.generate(&user, gen_body(&format!("a lighthouse, take {i}")))),
    )
    .await;
    let (mut accepted, mut limited) = (0, 0);
    for resp in responses {
        match resp.status().as_u16() {
            202 => accepted += 1,
            429 => {
                let wait = retry_after(&resp);
                assert!((1..=86_400).contains(&wait), "Retry-After {wait}");
                assert_eq!(problem_code(resp, 429).await, "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, limited), (10, 40));
    assert_eq!(generations_count(&app, &user).await, 10);
    let cost = shared::domain::pricing::cost(
        shared::domain::generation::ImageSize::parse("1024x1024").unwrap(),
        shared::domain::generation::Quality::parse("low").unwrap(),
        1,
    )
    .get() as i64;
    assert_eq!(app.balance(&user).await, before - 10 * cost);
    app.assert_ledger_consistent(&user).await;
}

/// S2: a spent window answers 429 until it ends; after `Retry-After` the next request passes.
#[tokio::test]
async fn s2_rate_limit_resets_after_its_window() {
    let app = spawn_app_with(&[("RATE_LIMITS", "gallery=2/3")]).await;
    // Start near the beginning of a window, so the three requests share it.
    loop {
        let ms = chrono::Utc::now().timestamp_millis() % 3000;
        if ms < 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(((3000 - ms) as u64).min(100))).await;
    }
    let client = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(
            anonymous_get(&app, &client, "/v1/gallery").await.status(),
            200
        );
    }
    let refused = anonymous_get(&app, &client, "/v1/gallery").await;
    assert_eq!(refused.status(), 429);
    let wait = retry_after(&refused);
    assert!((1..=3).contains(&wait), "Retry-After {wait}");
    assert_eq!(problem_code(refused, 429).await, "rate_limited");
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(
        anonymous_get(&app, &client, "/v1/gallery").await.status(),
        200
    );
}

/// S2: one user's spent limit leaves another user's untouched; one source IP's spent limit on
/// an anonymous route leaves another IP's untouched.
#[tokio::test]
async fn s2_rate_limits_separate_users_and_ips() {
    away_from_the_day_edge().await;
    let app = spawn_app_with(&[
        ("RATE_LIMITS", "generate=2/86400,gallery=2/86400"),
        ("SIGNUP_CREDITS", "100"),
    ])
    .await;
    let (a, b) = (app.onboarded_user().await, app.onboarded_user().await);
    for _ in 0..2 {
        assert_eq!(app.generate(&a, gen_body("a fox")).await.status(), 202);
    }
    assert_eq!(app.generate(&a, gen_body("a fox")).await.status(), 429);
    assert_eq!(app.generate(&b, gen_body("a fox")).await.status(), 202);

    let first_ip = reqwest::Client::new();
    // Another loopback address is another source IP to the dev host, as to API Gateway.
    let second_ip = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            anonymous_get(&app, &first_ip, "/v1/gallery").await.status(),
            200
        );
    }
    assert_eq!(
        anonymous_get(&app, &first_ip, "/v1/gallery").await.status(),
        429
    );
    assert_eq!(
        anonymous_get(&app, &second_ip, "/v1/gallery")
            .await
            .status(),
        200
    );
    // The table holds a hash of each address, never the address.
    let items = app.scan_json().await;
    let ip_counters: Vec<_> = items
        .iter()
        .filter(|i| i["kind"] == "ip_rate_counter")
        .collect();
    assert_eq!(ip_counters.len(), 2);
    assert!(!serde_json::to_string(&items).unwrap().contains("127.0.0."));
}

/// S2, U5: blocklisted prompts, obfuscated too, are refused with 400 `prompt_refused` before
/// anything is reserved; each refusal is a violation record; the third within the window
/// suspends the account (audited), which keeps its data rights; an admin restores it.
#[tokio::test]
async fn s2_u5_blocklisted_prompts_are_refused_uncharged_and_repeats_suspend() {
    let app = spawn_app_with(&[
        (
            "MODERATION_BLOCKLIST",
            "weapons:pipe bomb;gore:/\\bbehead\\w*/",
        ),
        ("VIOLATION_THRESHOLD", "3"),
        ("VIOLATION_WINDOW_HOURS", "24"),
        ("SIGNUP_CREDITS", "100"),
    ])
    .await;
    let user = app.onboarded_user().await;
    let admin = app.admin().await;
    let before = app.balance(&user).await;
    for prompt in ["a PIPE BOMB on a table", "a p i p e  b.o.m.b diagram"] {
        let resp = app.generate(&user, gen_body(prompt)).await;
        assert_eq!(problem_code(resp, 400).await, "prompt_refused", "{prompt}");
    }
    assert_eq!(app.balance(&user).await, before, "nothing charged");
    assert_eq!(generations_count(&app, &user).await, 0);
    // Two refusals: not suspended yet.
    assert_eq!(
        app.generate(&user, gen_body("a quiet harbour"))
            .await
            .status(),
        202
    );
    let charged = app.balance(&user).await;
    let resp = app
        .generate(&user, gen_body("pípé bömb, ｂｅｈｅａｄｅｄ"))
        .await;
    assert_eq!(problem_code(resp, 400).await, "prompt_refused");
    assert_eq!(app.balance(&user).await, charged);

    // Three violation records, each with its category, rule and time; in /v1/me/data too.
    let data = app.get_json("/v1/me/data?kind=violation", &user).await;
    let kind = &data["kinds"][0];
    assert_eq!(kind["kind"], "violation");
    assert_eq!(kind["count"], 3);
    assert!(kind["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["delete_at"].is_string()));
    let records: Vec<Value> = violations(&app).await;
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .all(|r| r["source"] == "blocklist"
            && r["rule"].as_str().unwrap().starts_with("blocklist #")));
    assert!(records.iter().any(|r| r["category"] == "weapons"));

    // Suspended: no generation, upload or checkout; data rights stay.
    let resp = app.generate(&user, gen_body("a quiet harbour")).await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");
    let resp = app
        .send(
            Method::POST,
            "/v1/uploads",
            Some(&user),
            Some(json!({"content_type": "image/png", "size": 1000})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");
    let resp = app
        .send(
            Method::POST,
            "/v1/billing/checkout",
            Some(&user),
            Some(json!({"item": "pack_small"})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");
    assert_eq!(app.get("/v1/me/data", &user).await.status(), 200);
    assert_eq!(app.get("/v1/generations", &user).await.status(), 200);
    let audit = app.get_json("/v1/admin/audit", &admin).await;
    let suspension = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "account.suspend" && a["target_user"] == user.sub.as_str())
        .expect("the suspension is audited");
    assert_eq!(suspension["actor"], "system");

    // An admin restores the account.
    let resp = app
        .send(
            Method::DELETE,
            &format!("/v1/admin/users/{}/suspension", user.sub),
            Some(&admin),
            Some(json!({"reason": "reviewed: a novelist's research"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.generate(&user, gen_body("a quiet harbour"))
            .await
            .status(),
        202
    );
    // What the admin reviewed is not counted again: one more refusal does not suspend.
    let resp = app.generate(&user, gen_body("a pipebomb")).await;
    assert_eq!(problem_code(resp, 400).await, "prompt_refused");
    assert_eq!(
        app.generate(&user, gen_body("a quiet harbour"))
            .await
            .status(),
        202
    );
}

/// S2, U5: with `MODERATION_PROVIDER=openai`, prompts the blocklist lets through go to the
/// moderation endpoint in its wire format; a flagged one is refused (its category recorded),
/// and an endpoint that cannot answer gets 503 with nothing charged.
#[tokio::test]
async fn s2_u5_the_moderation_endpoint_refuses_in_its_wire_format() {
    let stub = OpenAiStub::start(vec![StubReply::Images]).await;
    let app = spawn_app_with(&[
        ("MODERATION_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", &stub.base_url),
        ("OPENAI_API_KEY", STUB_KEY),
        ("SIGNUP_CREDITS", "100"),
    ])
    .await;
    let user = app.onboarded_user().await;
    let before = app.balance(&user).await;
    let resp = app.generate(&user, gen_body("a forbidden ritual")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "prompt_refused");
    assert!(body["detail"].as_str().unwrap().contains("violence"));
    let resp = app
        .generate(&user, gen_body("moderation-down, a lake"))
        .await;
    assert_eq!(problem_code(resp, 503).await, "temporarily_unavailable");
    assert_eq!(app.balance(&user).await, before);
    assert_eq!(
        app.generate(&user, gen_body("a calm lake")).await.status(),
        202
    );

    let asked: Vec<Value> = stub
        .requests()
        .into_iter()
        .filter(|r| r["endpoint"] == "moderations")
        .collect();
    assert_eq!(asked.len(), 3);
    assert!(asked
        .iter()
        .all(|r| r["model"] == "omni-moderation-latest" && r["input"].is_string()));
    let records: Vec<Value> = violations(&app).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "moderation_endpoint");
    assert_eq!(records[0]["category"], "violence");
}

/// U5: the image provider's own moderation refusal (refunded) counts as a violation: with a
/// threshold of one it suspends the account.
#[tokio::test]
async fn u5_a_provider_refusal_counts_as_a_violation() {
    let stub = OpenAiStub::start(vec![StubReply::Error(400, Some("moderation_blocked"))]).await;
    let mut env: Vec<(&str, String)> = stub.env();
    env.push(("VIOLATION_THRESHOLD", "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    let user = app.onboarded_user().await;
    let before = app.balance(&user).await;
    let id = app
        .create(&user, gen_body("a harmless-looking prompt"))
        .await;
    app.drain().await;
    let job = app.job(&user, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["failure"]["code"], "moderation_blocked");
    assert_eq!(app.balance(&user).await, before, "refunded");
    let records: Vec<Value> = violations(&app).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "image_provider");
    assert_eq!(records[0]["generation_id"], id.as_str());
    let resp = app.generate(&user, gen_body("a calm lake")).await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");
}

/// C3: request logs carry the source IP and the user agent, and no log line carries prompt
/// text: not the request's, not a refused one's, not a provider error that echoes it.
#[tokio::test]
async fn c3_request_logs_carry_ip_and_user_agent_never_prompt_text() {
    let stub = OpenAiStub::start(vec![StubReply::Echo(400)]).await;
    let mut env: Vec<(&str, String)> = stub.env();
    env.push(("MODERATION_BLOCKLIST", "dragon".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    let user = app.onboarded_user().await;
    let marker = unique("secretcastle");
    let agent = unique("c3-agent/");
    let post = |prompt: String| {
        app.http
            .post(format!("{}/v1/generations", app.base))
            .bearer_auth(&user.token)
            .header("user-agent", agent.as_str())
            .json(&gen_body(&prompt))
            .send()
    };
    let accepted = post(format!("a {marker} at dusk")).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = post(format!("a dragon over the {marker}")).await.unwrap();
    assert_eq!(refused.status(), 400);
    // The provider answers with an error quoting the prompt; the job fails, refunded.
    app.drain().await;
    assert_eq!(app.job(&user, &id).await["status"], "failed");
    // The caller-facing view still shows the prompt to its owner.
    let _ = caller(&user);

    let logs = shared::telemetry::captured();
    assert!(
        !logs.is_empty(),
        "the test subscriber captures the log lines"
    );
    assert!(
        !logs.contains(&marker),
        "a log line carries prompt text: {}",
        logs.lines().find(|l| l.contains(&marker)).unwrap_or("")
    );
    let ours: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains(&agent))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let done: Vec<&Value> = ours
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .collect();
    assert_eq!(done.len(), 2, "{ours:?}");
    for line in done {
        assert_eq!(line["span"]["ip"], "127.0.0.1");
        assert_eq!(line["span"]["user_agent"], agent.as_str());
        assert_eq!(line["span"]["user_id"], user.sub.as_str());
    }
}

/// Counts the calls a DynamoDB client sends.
#[derive(Debug)]
struct CountCalls(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl aws_sdk_dynamodb::config::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }
    fn read_before_transmit(
        &self,
        _ctx: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// S2: anonymous callers cannot multiply AWS calls through `GET /v1/health`: 20 concurrent
/// checks read the table once.
#[tokio::test]
async fn s2_health_checks_do_not_multiply_aws_calls() {
    let app = crate::helpers::spawn_app().await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conf = aws_sdk_dynamodb::config::Builder::from(&app.stack.sdk)
        .interceptor(CountCalls(calls.clone()))
        .build();
    let counted = app.app().clone().with_store(shared::store::Store::new(
        aws_sdk_dynamodb::Client::from_conf(conf),
        app.app().store.table(),
    ));
    let event = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/public-health.json"),
    )
    .unwrap();
    let responses = join_all((0..20).map(|_| {
        let req = lambda_http::request::from_str(&event).unwrap();
        public::handle(&counted, req)
    }))
    .await;
    for resp in responses {
        assert_eq!(resp.unwrap().status(), 200);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// S2: every limited action of a signed-in user is limited (a limit of one: the second request
/// in the window gets 429 `rate_limited` with `Retry-After`), before any other work.
#[tokio::test]
async fn s2_every_limited_action_answers_429_past_its_limit() {
    away_from_the_day_edge().await;
    let app = spawn_app_with(&[(
        "RATE_LIMITS",
        "upload=1/86400,download=1/86400,export=1/86400,checkout=1/86400,child_report=1/86400",
    )])
    .await;
    let user = app.onboarded_user().await;
    let other = app.onboarded_user().await;
    let id = app.create(&user, gen_body("a lighthouse")).await;
    app.drain().await;
    let image = format!("{id}-0");
    let requests: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/v1/uploads".into(),
            json!({"content_type": "image/png", "size": 100}),
        ),
        (
            Method::POST,
            format!("/v1/images/{image}/download"),
            json!({}),
        ),
        (Method::POST, "/v1/exports".into(), json!({})),
        (
            Method::POST,
            "/v1/billing/checkout".into(),
            json!({"item": "pack_small"}),
        ),
        (
            Method::POST,
            "/v1/reports/child-account".into(),
            json!({"user_id": other.sub}),
        ),
    ];
    for (method, path, body) in requests {
        let first = app
            .send(method.clone(), &path, Some(&user), Some(body.clone()))
            .await;
        assert_ne!(
            first.status(),
            429,
            "{path}: the first request passes the limit"
        );
        let second = app.send(method, &path, Some(&user), Some(body)).await;
        assert_eq!(second.status(), 429, "{path}");
        assert!(retry_after(&second) >= 1);
        assert_eq!(problem_code(second, 429).await, "rate_limited", "{path}");
    }
}
