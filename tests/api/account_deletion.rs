//! Account deletion (D3, R4) and the identity provider's side of K1.

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

fn attribute_texts(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Vec<String> {
    fn walk(v: &aws_sdk_dynamodb::types::AttributeValue, out: &mut Vec<String>) {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        match v {
            A::S(s) => out.push(s.clone()),
            A::Ss(ss) => out.extend(ss.iter().cloned()),
            A::L(l) => l.iter().for_each(|x| walk(x, out)),
            A::M(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for v in item.values() {
        walk(v, &mut out);
    }
    out
}

/// R4, D3: after account deletion and one sweep, no item or object anywhere holds the user's
/// subject, email, display name, avatar URL or any prompt; the ledger survives under an
/// anonymous id and sums to what was charged; the Cognito user is gone; `account.deleted`
/// carries only the anonymous id.
#[tokio::test]
async fn r4_account_deletion_leaves_nothing_but_anonymous_billing_records() {
    let app = spawn_app().await;
    let user = app.cognito_user().await;
    assert_eq!(app.onboard(&user).await.status(), 201);
    let email = {
        let me: Value = app.get_json("/v1/me", &user).await;
        me["email"].as_str().unwrap().to_string()
    };
    let patch = app
        .send(
            reqwest::Method::PATCH,
            "/v1/me",
            Some(&user),
            Some(json!({"display_name": "Zelda Quux", "avatar_url": "https://cdn.example.com/zq.png"})),
        )
        .await;
    assert_eq!(patch.status(), 200);
    let done = app
        .create(&user, gen_body("a unique prompt about marmalade"))
        .await;
    app.drain().await;
    let queued = app
        .create(&user, gen_body("another prompt about quinces"))
        .await;
    // Someone reports them and an admin dismisses it: admin records name the user.
    let reporter = app.onboarded_user().await;
    let r = app
        .send(
            reqwest::Method::POST,
            "/v1/reports/child-account",
            Some(&reporter),
            Some(json!({"user_id": user.sub})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let report: Value = r.json().await.unwrap();
    let admin = app.admin().await;
    let dismissed = app
        .send(
            reqwest::Method::POST,
            &format!(
                "/v1/admin/reports/{}/dismiss",
                report["id"].as_str().unwrap()
            ),
            Some(&admin),
            Some(json!({"reason": "adult"})),
        )
        .await;
    assert_eq!(dismissed.status(), 200);
    assert!(app.cognito_user_exists(&user.sub).await);
    let _ = app.events().await;

    let resp = app.delete_account(&user).await;
    assert_eq!(resp.status(), 202);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(status["status"], "pending");
    // Deactivated at once: every route but the deletion status answers 403 account_deleted.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/me"),
        (reqwest::Method::GET, "/v1/generations"),
        (
            reqwest::Method::GET,
            &format!("/v1/generations/{done}") as &str,
        ),
    ] {
        let resp = app.send(method, path, Some(&user), None).await;
        assert_eq!(problem_code(resp, 403).await, "account_deleted", "{path}");
    }
    assert_eq!(
        problem_code(app.generate(&user, gen_body("more")).await, 403).await,
        "account_deleted"
    );
    assert_eq!(app.get("/v1/me/deletion", &user).await.status(), 200);
    // The queued job was cancelled and refunded.
    let balance = app.assert_ledger_consistent(&user).await;
    assert_eq!(
        balance, 9,
        "10 signup, 1 charged for the finished job, the queued one refunded"
    );
    let _ = queued;

    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.errors, 0);
    // Nothing anywhere holds the user's identifiers or prompts.
    let secrets = [
        user.sub.as_str(),
        email.as_str(),
        "Zelda Quux",
        "https://cdn.example.com/zq.png",
        "marmalade",
        "quinces",
    ];
    let mut anonymous_ids = std::collections::BTreeSet::new();
    for item in app.scan_table().await {
        for text in attribute_texts(&item) {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} survives in {item:?}");
            }
        }
        if let Some(pk) = item["pk"].as_s().ok().and_then(|p| p.strip_prefix("ANON#")) {
            anonymous_ids.insert(pk.to_string());
        }
    }
    assert!(app.all_objects().await.is_empty());
    // The billing records survive under one anonymous id and sum to what was charged.
    assert_eq!(anonymous_ids.len(), 1);
    let anon = anonymous_ids.into_iter().next().unwrap();
    let entries = app
        .app()
        .store
        .anonymous_ledger_entries(&anon)
        .await
        .unwrap();
    assert_eq!(
        entries.len(),
        4,
        "signup, two debits, one refund: {entries:?}"
    );
    assert_eq!(entries.iter().map(|e| e.amount).sum::<i64>(), 9);
    // The identity-provider user is gone; the event names only the anonymous id.
    assert!(!app.cognito_user_exists(&user.sub).await);
    let events = app.events().await;
    let deleted: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail-type"] == "account.deleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["detail"]["anonymous_id"], anon.as_str());
    assert!(!deleted[0].to_string().contains(&user.sub));
    // The status says so.
    let status: Value = app.get_json("/v1/me/deletion", &user).await;
    assert_eq!(status["status"], "completed");
}

/// D3: deletion needs the explicit confirmation; without it nothing happens.
#[tokio::test]
async fn d3_account_deletion_requires_the_confirmation() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = app
        .send(
            reqwest::Method::DELETE,
            "/v1/me",
            Some(&user),
            Some(json!({"confirm": "yes"})),
        )
        .await;
    assert_eq!(problem_code(resp, 400).await, "confirmation_required");
    assert_eq!(app.get("/v1/me", &user).await.status(), 200);
    assert_eq!(
        problem_code(app.get("/v1/me/deletion", &user).await, 404).await,
        "not_found"
    );
}

/// R4: the same identity signing up again after its account was deleted gets a new, empty
/// account, and no signup credits a second time; while the deletion is pending it cannot.
#[tokio::test]
async fn r4_the_same_identity_signing_up_again_gets_an_empty_account_without_free_credits() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    app.create(&user, gen_body("before")).await;
    assert_eq!(app.delete_account(&user).await.status(), 202);
    assert_eq!(
        problem_code(app.onboard(&user).await, 403).await,
        "account_deleted"
    );
    app.sweep_at(Utc::now()).await;
    assert_eq!(app.onboard(&user).await.status(), 201);
    let me: Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["credits_balance"], 0);
    let list: Value = app.get_json("/v1/generations", &user).await;
    assert!(list["items"].as_array().unwrap().is_empty());
}

/// K1 on AWS: a refused under-13 sign-up deletes the identity-provider user, and nothing in the
/// table names it.
#[tokio::test]
async fn k1_refused_sign_up_deletes_the_identity_provider_user() {
    let app = spawn_app().await;
    let child = app.cognito_user().await;
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/me",
            Some(&child),
            Some(json!({"date_of_birth": "2020-01-01"})),
        )
        .await;
    assert_eq!(problem_code(resp, 403).await, "age_requirement");
    assert!(!app.cognito_user_exists(&child.sub).await);
    for item in app.scan_table().await {
        assert!(!format!("{item:?}").contains(&child.sub));
    }
}
