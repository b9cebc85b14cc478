use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// Bad input gets a clear 4xx problem+json with a stable code and loses nothing; never a 5xx.
#[tokio::test]
async fn bad_input_is_a_4xx_problem_never_a_5xx() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let json_ct = "application/json";
    let cases: [(Method, &str, &str, &str, u16, &str); 9] = [
        (
            Method::POST,
            "/v1/generations",
            "{\"prompt\": ",
            json_ct,
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            "/v1/generations",
            "",
            json_ct,
            400,
            "missing_body",
        ),
        (
            Method::POST,
            "/v1/generations",
            "[1,2]",
            json_ct,
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/generations",
            r#"{"prompt":"x","size":"1024x1024","quality":"low","n":"two"}"#,
            json_ct,
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/generations",
            r#"{"prompt":"x","size":"1024x1024","quality":"low","n":-1}"#,
            json_ct,
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/generations",
            r#"{"prompt":"x","size":"1024x1024","quality":"low","n":1,"extra":true}"#,
            json_ct,
            400,
            "invalid_body",
        ),
        (
            Method::POST,
            "/v1/generations",
            r#"{"prompt":"x","size":"1024x1024","quality":"low","n":1}"#,
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/v1/me",
            "{\"display_name\": 7, \"age_confirmed\": true}",
            json_ct,
            400,
            "invalid_body",
        ),
        (
            Method::PATCH,
            "/v1/me",
            "not json",
            json_ct,
            400,
            "malformed_json",
        ),
    ];
    for (method, path, body, content_type, status, code) in cases {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(&user.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            problem_code(resp, status).await,
            code,
            "{method} {path} {body}"
        );
    }
    for (body, code) in [
        (
            json!({"prompt": "x".repeat(4001), "size": "1024x1024", "quality": "low", "n": 1}),
            "invalid_prompt",
        ),
        (
            json!({"prompt": "   ", "size": "1024x1024", "quality": "low", "n": 1}),
            "invalid_prompt",
        ),
        (
            json!({"prompt": "ok", "size": "99x99", "quality": "low", "n": 1}),
            "invalid_size",
        ),
        (
            json!({"prompt": "ok", "size": "1024x1024", "quality": "ultra", "n": 1}),
            "invalid_quality",
        ),
        (
            json!({"prompt": "ok", "size": "1024x1024", "quality": "low", "n": 0}),
            "invalid_n",
        ),
        (
            json!({"prompt": "ok", "size": "1024x1024", "quality": "low", "n": 5}),
            "invalid_n",
        ),
        (
            json!({"prompt": "ok", "size": "1024x1024", "quality": "low", "n": 1, "output_format": "gif"}),
            "invalid_output_format",
        ),
    ] {
        assert_eq!(
            problem_code(app.generate(&user, body).await, 400).await,
            code
        );
    }
    let big = format!("{{\"prompt\": \"{}\"}}", "x".repeat(70 * 1024));
    let resp = app
        .http
        .post(format!("{}/v1/generations", app.base))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(resp, 413).await, "payload_too_large");
    let resp = app
        .http
        .post(format!("{}/v1/generations", app.base))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", "spaces are not allowed")
        .json(&gen_body("ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(resp, 400).await, "invalid_idempotency_key");
    for query in [
        "cursor=not-a-cursor",
        "cursor=%20",
        "limit=0",
        "limit=101",
        "limit=ten",
    ] {
        let resp = app.get(&format!("/v1/generations?{query}"), &user).await;
        let code = problem_code(resp, 400).await;
        assert!(
            code == "invalid_cursor" || code == "invalid_limit",
            "{query}: {code}"
        );
    }
    let resp = app.get("/v1/generations/..%2F..%2Fetc", &user).await;
    assert_eq!(problem_code(resp, 404).await, "not_found");
    let resp = app
        .get("/v1/generations/01m81fhng9b3v9wq139qsamm56", &user)
        .await;
    assert_eq!(problem_code(resp, 404).await, "not_found");

    // Nothing was charged by any of it.
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    let list: serde_json::Value = app
        .get("/v1/generations", &user)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_or_missing_tokens_are_401_problems() {
    let app = spawn_app().await;
    let forged = devstack::jwt::DevJwt::new("another-key")
        .mint("mallory", None, &[])
        .unwrap();
    for token in [None, Some("garbage"), Some(forged.as_str())] {
        let mut req = app.http.get(format!("{}/v1/generations", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(problem_code(resp, 401).await, "unauthorized");
    }
    let resp = app
        .http
        .get(format!("{}/v1/me", app.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(resp, 401).await, "unauthorized");
    let resp = app
        .http
        .get(format!("{}/v1/nothing-here", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(resp, 404).await, "route_not_found");
    let resp = app
        .http
        .post(format!("{}/dev/token", app.base))
        .json(&json!({"sub": "bad#sub"}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem_code(resp, 400).await, "invalid_subject");
}

/// A JSON body that is not an object is refused with 400 `invalid_body` on every route that
/// takes one (serde would otherwise read an array as a struct's fields by position): an array
/// confirmation deletes no account, an array prompt charges nothing.
#[tokio::test]
async fn non_object_bodies_are_refused_everywhere() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let fresh = app.new_user().await;
    let id = app.create(&user, gen_body("a kite")).await;
    app.drain().await;
    let before = app.balance(&user).await;
    let cases: Vec<(Method, String, &User, serde_json::Value)> = vec![
        (
            Method::DELETE,
            "/v1/me".into(),
            &user,
            json!(["delete my account"]),
        ),
        (
            Method::POST,
            "/v1/me".into(),
            &fresh,
            json!(["Positional", null, true]),
        ),
        (
            Method::POST,
            "/v1/generations".into(),
            &user,
            json!(["a red bicycle", "1024x1024", "low", 1]),
        ),
        (
            Method::POST,
            "/v1/uploads".into(),
            &user,
            json!(["image/png", 1000]),
        ),
        (
            Method::POST,
            "/v1/billing/checkout".into(),
            &user,
            json!(["pack_small"]),
        ),
        (
            Method::PUT,
            "/v1/me/consents/marketing_email".into(),
            &user,
            json!([true]),
        ),
        (
            Method::PATCH,
            format!("/v1/images/{id}-0"),
            &user,
            json!([true, false]),
        ),
        (
            Method::POST,
            format!("/v1/images/{id}-0/download"),
            &user,
            json!(["original"]),
        ),
        (
            Method::POST,
            "/v1/reports/child-account".into(),
            &user,
            json!([fresh.sub]),
        ),
        (
            Method::PUT,
            "/v1/billing/spend-cap".into(),
            &user,
            json!("100"),
        ),
        (Method::POST, "/v1/generations".into(), &user, json!(null)),
        (Method::POST, "/v1/generations".into(), &user, json!(42)),
    ];
    for (method, path, who, body) in cases {
        let resp = app.send(method.clone(), &path, Some(who), Some(body)).await;
        assert_eq!(
            problem_code(resp, 400).await,
            "invalid_body",
            "{method} {path}"
        );
    }
    assert_eq!(app.get("/v1/me", &user).await.status(), 200, "not deleted");
    assert_eq!(app.balance(&user).await, before, "nothing charged");
    assert_eq!(app.job(&user, &id).await["images"][0]["public"], false);
    assert_eq!(
        problem_code(app.get("/v1/me", &fresh).await, 403).await,
        "onboarding_required"
    );
}
