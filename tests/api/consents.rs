//! Consents (U4, D5, D7) and the restriction of processing (D6).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn set_consent(&self, user: &User, purpose: &str, body: Value) -> reqwest::Response {
        self.send(
            Method::PUT,
            &format!("/v1/me/consents/{purpose}"),
            Some(user),
            Some(body),
        )
        .await
    }

    fn of_type(events: &[Value], detail_type: &str, user: &User) -> usize {
        events
            .iter()
            .filter(|e| {
                e["detail-type"] == detail_type && e["detail"]["user_id"] == user.sub.as_str()
            })
            .count()
    }
}

/// U4, D5, D7: every purpose is off until granted; each change is recorded with its time, its
/// source and the policy version in force, and shows in the history and in access; a withdrawn
/// consent takes the user out of marketing events at once.
#[tokio::test]
async fn u4_d5_d7_consents_are_recorded_with_the_policy_version_and_withdrawal_is_immediate() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let policy: Value = app
        .send(Method::GET, "/v1/policy", None, None)
        .await
        .json()
        .await
        .unwrap();
    let version = policy["policy_version"]
        .as_str()
        .expect("published")
        .to_string();

    let start = app.get_json("/v1/me/consents", &user).await;
    assert_eq!(start["purposes"][0]["purpose"], "marketing_email");
    assert_eq!(start["purposes"][0]["granted"], false, "off by default");
    assert!(start["history"].as_array().unwrap().is_empty());
    assert_eq!(start["policy_version"], version.as_str());

    let resp = app
        .set_consent(&user, "marketing_email", json!({"granted": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let after: Value = resp.json().await.unwrap();
    assert_eq!(after["purposes"][0]["granted"], true);
    let change = &after["history"][0];
    assert_eq!(
        (
            &change["purpose"],
            &change["granted"],
            &change["source"],
            &change["policy_version"]
        ),
        (
            &json!("marketing_email"),
            &json!(true),
            &json!("self_service"),
            &json!(version)
        )
    );
    assert!(change["at"].is_string());
    let events = app.events().await;
    assert_eq!(TestApp::of_type(&events, "marketing.subscribed", &user), 1);
    assert!(
        shared::services::consents::marketing_allowed(app.app(), &user.sub)
            .await
            .unwrap()
    );

    // Withdrawn: out of marketing at once.
    app.set_consent(&user, "marketing_email", json!({"granted": false}))
        .await;
    assert!(
        !shared::services::consents::marketing_allowed(app.app(), &user.sub)
            .await
            .unwrap()
    );
    shared::services::consents::publish_marketing(
        app.app(),
        &user.sub,
        "marketing.offer",
        json!({"user_id": user.sub}),
    )
    .await;
    let events = app.events().await;
    assert_eq!(
        TestApp::of_type(&events, "marketing.unsubscribed", &user),
        1
    );
    assert_eq!(TestApp::of_type(&events, "marketing.offer", &user), 0);
    let history = app.get_json("/v1/me/consents", &user).await["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(history[1]["granted"], false);

    // The same state again records nothing; an older change arriving late is not applied.
    app.set_consent(&user, "marketing_email", json!({"granted": false}))
        .await;
    let late = shared::services::consents::put(
        app.app(),
        &caller(&user),
        "marketing_email",
        serde_json::from_value(json!({"granted": true})).unwrap(),
        chrono::Utc::now() - chrono::Duration::minutes(5),
    )
    .await
    .unwrap();
    assert!(!late.purposes[0].granted, "the latest change stands");
    assert_eq!(late.history.len(), 2, "{:?}", late.history);
    assert_eq!(
        TestApp::of_type(&app.events().await, "marketing.subscribed", &user),
        0
    );

    // Bad input.
    let resp = app
        .set_consent(&user, "carrier_pigeons", json!({"granted": true}))
        .await;
    assert_eq!(problem_code(resp, 404).await, "unknown_purpose");
    let resp = app
        .set_consent(&user, "marketing_email", json!({"granted": "yes"}))
        .await;
    assert_eq!(problem_code(resp, 400).await, "invalid_body");

    // Access shows the state and the history.
    let data = app.get_json("/v1/me/data", &user).await;
    let count = |kind: &str| {
        data["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == kind)
            .unwrap()["count"]
            .clone()
    };
    assert_eq!(count("consent"), 1);
    assert_eq!(count("consent_record"), 2);
}

/// D6: a restricted account keeps its data; its published images leave the gallery at once,
/// it cannot publish, no marketing or analytics event names it; it can still read and delete
/// (and lifting the restriction brings its images back).
#[tokio::test]
async fn d6_a_restricted_account_leaves_the_gallery_and_can_still_read_export_and_delete() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let job = app.create(&user, gen_body("a quiet pond")).await;
    let second = app.create(&user, gen_body("a second pond")).await;
    app.drain().await;
    let image = format!("{job}-0");
    let resp = app
        .send(
            Method::PATCH,
            &format!("/v1/images/{image}"),
            Some(&user),
            Some(json!({"public": true})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    app.set_consent(&user, "marketing_email", json!({"granted": true}))
        .await;
    let gallery = || async {
        app.send(Method::GET, "/v1/gallery", None, None)
            .await
            .json::<Value>()
            .await
            .unwrap()
            .to_string()
    };
    assert!(gallery().await.contains(&image));
    app.events().await;

    let resp = app
        .send(Method::POST, "/v1/me/restriction", Some(&user), None)
        .await;
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["restricted"], true);
    assert_eq!(
        view["history"].as_array().unwrap().last().unwrap()["purpose"],
        "processing_restriction"
    );
    assert!(
        !gallery().await.contains(&image),
        "out of the gallery at once"
    );
    assert!(
        app.app()
            .store
            .gallery_entry(&image)
            .await
            .unwrap()
            .is_none(),
        "its entry is gone, not only hidden"
    );
    let resp = app
        .send(
            Method::PATCH,
            &format!("/v1/images/{second}-0"),
            Some(&user),
            Some(json!({"public": true})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "account_restricted");

    // No analytics or marketing events name it (another user's, in the same read, do).
    let other = app.onboarded_user().await;
    app.create(&user, gen_body("made while restricted")).await;
    app.create(&other, gen_body("made by someone else")).await;
    app.drain().await;
    shared::services::consents::publish_marketing(
        app.app(),
        &user.sub,
        "marketing.offer",
        json!({"user_id": user.sub}),
    )
    .await;
    let events = app.events().await;
    assert_eq!(
        TestApp::of_type(&events, "marketing.unsubscribed", &user),
        1
    );
    assert_eq!(TestApp::of_type(&events, "generation.completed", &other), 1);
    for kind in ["generation.completed", "marketing.offer"] {
        assert_eq!(
            TestApp::of_type(&events, kind, &user),
            0,
            "{kind}: {events:?}"
        );
    }

    // It can still read (its data, access) and delete.
    assert_eq!(
        app.get(&format!("/v1/generations/{job}"), &user)
            .await
            .status(),
        200
    );
    assert_eq!(app.get("/v1/me/data", &user).await.status(), 200);
    assert_eq!(
        app.send(Method::POST, "/v1/exports", Some(&user), None)
            .await
            .status(),
        202,
        "and export"
    );
    assert_eq!(app.delete_generation(&user, &second).await.status(), 204);

    // Lifted: back in the gallery, and in marketing (the consent still stands).
    let resp = app
        .send(Method::DELETE, "/v1/me/restriction", Some(&user), None)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(gallery().await.contains(&image));
    let events = app.events().await;
    assert_eq!(TestApp::of_type(&events, "marketing.subscribed", &user), 1);
    // Deleting the account takes it out of marketing at once.
    assert_eq!(
        app.delete_account(&user).await.status(),
        202,
        "and delete the account"
    );
    let events = app.events().await;
    assert_eq!(
        TestApp::of_type(&events, "marketing.unsubscribed", &user),
        1
    );
}
