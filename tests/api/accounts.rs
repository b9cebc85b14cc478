use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn k1_under_13_is_refused_and_nothing_personal_is_stored() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let today = chrono::Utc::now().date_naive();
    let before = app.app().store.age_refusals(today).await.unwrap();
    let twelve = today - chrono::Duration::days(12 * 366);
    let resp = app
        .send(
            Method::POST,
            "/v1/me",
            Some(&user),
            Some(json!({"display_name": "Kid", "date_of_birth": twelve.to_string()})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "age_requirement");
    let resp = app
        .send(
            Method::POST,
            "/v1/me",
            Some(&user),
            Some(json!({"display_name": "Kid", "age_confirmed": false})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "age_requirement");
    // Nothing under the subject's key, only an anonymous count.
    assert_eq!(app.app().store.user_item_count(&user.sub).await.unwrap(), 0);
    assert_eq!(
        app.app().store.age_refusals(today).await.unwrap(),
        before + 2
    );
    // And the account does not exist.
    assert_eq!(
        problem_code(app.get("/v1/me", &user).await, 403).await,
        "onboarding_required"
    );
}

#[tokio::test]
async fn k1_c1_onboarding_is_idempotent_and_grants_free_credits_once() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let body = json!({"display_name": "Ada", "date_of_birth": "1990-12-10"});
    let first = app
        .send(Method::POST, "/v1/me", Some(&user), Some(body.clone()))
        .await;
    assert_eq!(first.status(), 201);
    let me: serde_json::Value = first.json().await.unwrap();
    assert_eq!(me["display_name"], "Ada");
    assert_eq!(me["email"], format!("{}@example.com", user.sub));
    assert_eq!(me["credits_balance"], 10);
    assert_eq!(me["age_confirmed_by"], "date_of_birth");
    assert!(
        me.get("date_of_birth").is_none(),
        "the date of birth is not kept"
    );
    let again = app
        .send(Method::POST, "/v1/me", Some(&user), Some(body))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(app.assert_ledger_consistent(&user).await, 10);
    assert_eq!(
        app.app()
            .store
            .ledger_entries(&user.sub)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn signup_grant_is_configurable() {
    let app = spawn_app_with(&[("SIGNUP_CREDITS", "3")]).await;
    let user = app.onboarded_user().await;
    assert_eq!(app.assert_ledger_consistent(&user).await, 3);
}

#[tokio::test]
async fn every_user_route_requires_onboarding() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let id = "01m81fhng9b3v9wq139qsamm56";
    for (method, path, body) in [
        (Method::GET, "/v1/me".to_string(), None),
        (
            Method::PATCH,
            "/v1/me".to_string(),
            Some(json!({"display_name": "X"})),
        ),
        (Method::GET, "/v1/generations".to_string(), None),
        (
            Method::POST,
            "/v1/generations".to_string(),
            Some(gen_body("a cat")),
        ),
        (Method::GET, format!("/v1/generations/{id}"), None),
        (Method::DELETE, format!("/v1/generations/{id}"), None),
    ] {
        let resp = app.send(method.clone(), &path, Some(&user), body).await;
        assert_eq!(
            problem_code(resp, 403).await,
            "onboarding_required",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn d2_profile_can_be_corrected_and_is_validated() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = app
        .send(
            Method::PATCH,
            "/v1/me",
            Some(&user),
            Some(json!({"display_name": "Grace", "avatar_url": "https://cdn.example.com/g.png", "preferences": {"theme": "dark"}})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["display_name"], "Grace");
    assert_eq!(me["avatar_url"], "https://cdn.example.com/g.png");
    assert_eq!(me["preferences"]["theme"], "dark");
    let resp = app
        .send(
            Method::PATCH,
            "/v1/me",
            Some(&user),
            Some(json!({"avatar_url": null})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert!(me["avatar_url"].is_null());

    for (body, code) in [
        (json!({"display_name": ""}), "invalid_display_name"),
        (json!({"display_name": 5}), "invalid_body"),
        (
            json!({"avatar_url": "http://insecure.example.com/a.png"}),
            "invalid_avatar_url",
        ),
        (
            json!({"preferences": {"deep": {"x": 1}}}),
            "invalid_preferences",
        ),
        (json!({"email": "other@example.com"}), "unknown_field"),
        (json!({}), "empty_update"),
    ] {
        let resp = app
            .send(Method::PATCH, "/v1/me", Some(&user), Some(body.clone()))
            .await;
        assert_eq!(problem_code(resp, 400).await, code, "{body}");
    }
    let me: serde_json::Value = app.get_json("/v1/me", &user).await;
    assert_eq!(
        me["display_name"], "Grace",
        "rejected updates change nothing"
    );
}
