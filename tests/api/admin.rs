//! Legal holds (R5), suspension (U5), child-account reports (K2) and the admin routes.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/admin/holds"),
    ("POST", "/v1/admin/holds"),
    ("DELETE", "/v1/admin/holds/01jh000000000000000000000"),
    ("POST", "/v1/admin/users/someone/suspension"),
    ("DELETE", "/v1/admin/users/someone/suspension"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/v1/admin/reports"),
    ("POST", "/v1/admin/reports/r1/confirm"),
    ("POST", "/v1/admin/reports/r1/dismiss"),
];

/// R5: non-admins get 403 `admin_required` on every admin route, and nothing changes.
#[tokio::test]
async fn r5_non_admins_get_403_on_every_admin_route() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    for (method, path) in ADMIN_ROUTES {
        let resp = app
            .send(
                method.parse().unwrap(),
                path,
                Some(&user),
                Some(json!({"user_id": user.sub, "reason": "x"})),
            )
            .await;
        assert_eq!(
            problem_code(resp, 403).await,
            "admin_required",
            "{method} {path}"
        );
    }
    assert!(app.app().store.list_holds().await.unwrap().is_empty());
    let (audit, _) = app.app().store.list_audit(100, None).await.unwrap();
    assert!(audit.is_empty());
}

/// R5: a held user's deletion and expired content survive sweeps until the hold is lifted, then
/// are gone within one sweep; held objects lose the lifecycle backstop tag meanwhile. Every
/// admin action is audited with who, what, why and the outcome.
#[tokio::test]
async fn r5_held_content_survives_deletion_and_expiry_until_the_hold_is_lifted() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let deleted = app.create(&user, gen_body("deleted by its owner")).await;
    let expiring = app.create(&user, gen_body("past its retention")).await;
    app.drain().await;
    let hold = app
        .place_hold(
            &admin,
            json!({"user_id": user.sub, "reason": "litigation 2026-17"}),
        )
        .await;
    assert_eq!(hold["placed_by"], admin.sub.as_str());
    assert_eq!(hold["in_force"], true);
    let key = &app.objects_of(&user, &expiring).await[0];
    assert!(
        app.app().objects().tags(key).await.unwrap().is_empty(),
        "no backstop tag while held"
    );

    // The owner deletes: gone from the API at once, kept in storage.
    assert_eq!(app.delete_generation(&user, &deleted).await.status(), 204);
    assert_eq!(
        app.get(&format!("/v1/generations/{deleted}"), &user)
            .await
            .status(),
        404
    );
    assert_eq!(app.objects_of(&user, &deleted).await.len(), 1);
    // Expiry hides the held content from the API too, and sweeps leave everything in storage.
    let later = Utc::now() + Duration::days(20);
    let first = app.sweep_at(later).await;
    assert_eq!(first.errors, 0);
    assert_eq!(
        (first.content_held, first.deletions_held),
        (1, 1),
        "{first:?}"
    );
    let second = app.sweep_at(later).await;
    assert_eq!(second.errors, 0);
    assert_eq!(second.deletions_completed, 0, "{second:?}");
    assert_eq!(app.objects_of(&user, &deleted).await.len(), 1);
    assert_eq!(app.objects_of(&user, &expiring).await.len(), 1);
    assert_eq!(
        app.get(&format!("/v1/generations/{expiring}"), &user)
            .await
            .status(),
        404
    );
    let kinds: Vec<String> = app
        .scan_table()
        .await
        .iter()
        .filter_map(|i| i.get("kind").and_then(|k| k.as_s().ok()).cloned())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "generation").count(),
        2,
        "items kept while held"
    );

    // Lifted: within one sweep both are gone.
    let lift = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/admin/holds/{}", hold["id"].as_str().unwrap()),
            Some(&admin),
            Some(json!({"reason": "case closed"})),
        )
        .await;
    assert_eq!(lift.status(), 204);
    assert_eq!(app.app().objects().tags(key).await.unwrap().len(), 1);
    let report = app.sweep_at(later).await;
    assert_eq!(report.errors, 0);
    assert_eq!(report.deletions_completed, 2, "{report:?}");
    assert!(app.objects_of(&user, &deleted).await.is_empty());
    assert!(app.objects_of(&user, &expiring).await.is_empty());
    assert_eq!(
        app.get(&format!("/v1/generations/{expiring}"), &user)
            .await
            .status(),
        404
    );

    let audit: Value = app.get_json("/v1/admin/audit", &admin).await;
    let actions = app.audit_actions(&admin).await;
    assert_eq!(actions, vec!["hold.lift", "hold.place"]);
    let lift = &audit["items"][0];
    assert_eq!(lift["actor"], admin.sub.as_str());
    assert_eq!(lift["target_user"], user.sub.as_str());
    assert_eq!(lift["reason"], "case closed");
}

/// R5: a held account's deletion waits for the hold; a hold with an end resumes by itself.
#[tokio::test]
async fn r5_account_deletion_of_a_held_user_waits_until_the_hold_ends() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("evidence")).await;
    app.drain().await;
    let until = Utc::now() + Duration::days(3);
    app.place_hold(
        &admin,
        json!({"user_id": user.sub, "reason": "fraud review", "until": until.to_rfc3339()}),
    )
    .await;
    let resp = app.delete_account(&user).await;
    assert_eq!(resp.status(), 202);
    let report = app.sweep_at(Utc::now() + Duration::days(1)).await;
    assert_eq!(report.deletions_held, 1);
    assert_eq!(app.objects_of(&user, &id).await.len(), 1);
    assert!(app
        .app()
        .store
        .get_profile(&user.sub)
        .await
        .unwrap()
        .is_some());
    // The hold ends: the sweep removes it and the deletion completes in the same run.
    let report = app.sweep_at(until + Duration::minutes(5)).await;
    assert_eq!(report.holds_ended, 1);
    assert_eq!(report.errors, 0);
    let report = if report.deletions_completed == 0 {
        app.sweep_at(until + Duration::minutes(10)).await
    } else {
        report
    };
    assert_eq!(report.errors, 0);
    assert!(app.objects_of(&user, &id).await.is_empty());
    assert!(app
        .app()
        .store
        .get_profile(&user.sub)
        .await
        .unwrap()
        .is_none());
    let status: Value = app.get_json("/v1/me/deletion", &user).await;
    assert_eq!(status["status"], "completed");
}

/// U5: a suspended account cannot generate but can read and delete; restoring lifts it.
#[tokio::test]
async fn suspended_account_reads_and_deletes_but_cannot_generate() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("before the suspension")).await;
    let path = format!("/v1/admin/users/{}/suspension", user.sub);
    let resp = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&admin),
            Some(json!({"reason": "chargeback"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        problem_code(app.generate(&user, gen_body("during")).await, 403).await,
        "account_suspended"
    );
    assert_eq!(
        app.get(&format!("/v1/generations/{id}"), &user)
            .await
            .status(),
        200
    );
    let me: Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["suspension"]["reason"], "chargeback");
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204);
    let resp = app
        .send(reqwest::Method::DELETE, &path, Some(&admin), None)
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(app.generate(&user, gen_body("after")).await.status(), 202);
    // Unknown users and bad reasons are clear 4xx answers.
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/admin/users/nobody-here/suspension",
            Some(&admin),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(problem_code(resp, 404).await, "not_found");
    let resp = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&admin),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(problem_code(resp, 400).await, "invalid_reason");
}

async fn report(app: &TestApp, reporter: &User, reported: &User) -> Value {
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/reports/child-account",
            Some(reporter),
            Some(json!({"user_id": reported.sub, "details": "says they are 11"})),
        )
        .await;
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

/// K2: report, suspended at once, confirmed by an admin, deleted under R4; both audited.
#[tokio::test]
async fn k2_reported_child_account_is_suspended_then_deleted_when_confirmed() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let reporter = app.onboarded_user().await;
    let child = app.cognito_user().await;
    assert_eq!(app.onboard(&child).await.status(), 201);
    let id = app.create(&child, gen_body("drawing")).await;
    app.drain().await;
    let filed = report(&app, &reporter, &child).await;
    assert_eq!(
        problem_code(app.generate(&child, gen_body("more")).await, 403).await,
        "account_suspended"
    );
    let pending: Value = app.get_json("/v1/admin/reports", &admin).await;
    assert_eq!(pending["items"][0]["id"], filed["id"]);
    let resp = app
        .send(
            reqwest::Method::POST,
            &format!(
                "/v1/admin/reports/{}/confirm",
                filed["id"].as_str().unwrap()
            ),
            Some(&admin),
            Some(json!({"reason": "confirmed with the parent"})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let reviewed: Value = resp.json().await.unwrap();
    assert_eq!(reviewed["status"], "confirmed");
    assert_eq!(
        problem_code(app.get("/v1/me", &child).await, 403).await,
        "account_deleted"
    );
    app.sweep_at(Utc::now()).await;
    assert!(app.objects_of(&child, &id).await.is_empty());
    assert!(!app.cognito_user_exists(&child.sub).await);
    for item in app.scan_table().await {
        assert!(!format!("{item:?}").contains(&child.sub), "{item:?}");
    }
    let audit: Value = app.get_json("/v1/admin/audit", &admin).await;
    let actions = app.audit_actions(&admin).await;
    assert_eq!(actions, vec!["child_report.confirm", "account.suspend"]);
    assert!(audit["items"][0]["target_user"]
        .as_str()
        .unwrap()
        .starts_with("anon:"));
    // Reviewing twice is a conflict.
    let again = app
        .send(
            reqwest::Method::POST,
            &format!(
                "/v1/admin/reports/{}/dismiss",
                filed["id"].as_str().unwrap()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(problem_code(again, 409).await, "report_already_reviewed");
}

/// K2: report, dismissed, restored; reporting is rate-limited per reporter.
#[tokio::test]
async fn k2_dismissed_report_restores_the_account_and_reports_are_rate_limited() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let reporter = app.onboarded_user().await;
    let adult = app.onboarded_user().await;
    let filed = report(&app, &reporter, &adult).await;
    let resp = app
        .send(
            reqwest::Method::POST,
            &format!(
                "/v1/admin/reports/{}/dismiss",
                filed["id"].as_str().unwrap()
            ),
            Some(&admin),
            Some(json!({"reason": "verified adult"})),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.generate(&adult, gen_body("back to work"))
            .await
            .status(),
        202
    );
    let actions = app.audit_actions(&admin).await;
    assert!(
        actions.contains(&"child_report.dismiss".to_string())
            && actions.contains(&"account.restore".to_string()),
        "{actions:?}"
    );

    // Four more reports today are accepted (five in all), the sixth is refused.
    for _ in 0..4 {
        let other = app.onboarded_user().await;
        report(&app, &reporter, &other).await;
    }
    let sixth = app.onboarded_user().await;
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/reports/child-account",
            Some(&reporter),
            Some(json!({"user_id": sixth.sub})),
        )
        .await;
    assert_eq!(problem_code(resp, 429).await, "rate_limited");
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/reports/child-account",
            Some(&sixth),
            Some(json!({"user_id": sixth.sub})),
        )
        .await;
    assert_eq!(problem_code(resp, 400).await, "cannot_report_self");
    let resp = app
        .send(
            reqwest::Method::POST,
            "/v1/reports/child-account",
            Some(&sixth),
            Some(json!({"user_id": "nobody-at-all"})),
        )
        .await;
    assert_eq!(problem_code(resp, 404).await, "not_found");
}

/// Bad input on the admin and report routes is a clear 4xx, never a 5xx: odd or huge ids never
/// reach a key, bodies are checked.
#[tokio::test]
async fn admin_and_report_routes_answer_bad_input_with_4xx() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let huge = "x".repeat(3000);
    let cases: Vec<(reqwest::Method, String, Option<Value>, u16, &str)> = vec![
        (
            reqwest::Method::DELETE,
            format!("/v1/admin/holds/{huge}"),
            None,
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            format!("/v1/admin/reports/{huge}/confirm"),
            None,
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/holds".into(),
            Some(json!({"user_id": user.sub, "generation_id": huge, "reason": "r"})),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/holds".into(),
            Some(json!({"user_id": user.sub, "reason": "r", "until": "yesterday"})),
            400,
            "invalid_until",
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/holds".into(),
            Some(json!({"user_id": "a/b", "reason": "r"})),
            400,
            "invalid_user_id",
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/holds".into(),
            Some(json!({"user_id": user.sub, "reason": huge})),
            400,
            "invalid_reason",
        ),
        (
            reqwest::Method::POST,
            "/v1/admin/holds".into(),
            Some(json!([1])),
            400,
            "invalid_body",
        ),
        (
            reqwest::Method::POST,
            format!("/v1/admin/users/{huge}/suspension"),
            Some(json!({"reason": "r"})),
            400,
            "invalid_user_id",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let resp = app.send(method.clone(), &path, Some(&admin), body).await;
        assert_eq!(
            problem_code(resp, status).await,
            code,
            "{method} {}",
            &path[..path.len().min(60)]
        );
    }
    let reporter = app.onboarded_user().await;
    for (body, status, code) in [
        (
            json!({"user_id": user.sub, "generation_id": huge}),
            404,
            "not_found",
        ),
        (
            json!({"user_id": user.sub, "details": huge}),
            400,
            "invalid_details",
        ),
        (json!({"user_id": huge}), 400, "invalid_user_id"),
        (json!({"user": user.sub}), 400, "invalid_body"),
    ] {
        let resp = app
            .send(
                reqwest::Method::POST,
                "/v1/reports/child-account",
                Some(&reporter),
                Some(body),
            )
            .await;
        assert_eq!(problem_code(resp, status).await, code);
    }
    // Nothing was suspended by the refused reports.
    assert_eq!(
        app.generate(&user, gen_body("still fine")).await.status(),
        202
    );
}

/// R5: a hold on one generation keeps that generation through its owner's account deletion
/// (the whole account waits, since the erasure removes everything under the subject), and the
/// lifting resumes it within one sweep. New images of held content carry no backstop tag.
#[tokio::test]
async fn r5_hold_on_one_generation_holds_the_account_deletion() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let held = app.create(&user, gen_body("held alone")).await;
    let hold = app
        .place_hold(
            &admin,
            json!({"user_id": user.sub, "generation_id": held, "reason": "dispute"}),
        )
        .await;
    // Stored after the hold was placed: no backstop tag.
    app.drain().await;
    let key = &app.objects_of(&user, &held).await[0];
    assert!(app.app().objects().tags(key).await.unwrap().is_empty());
    let resp = app.delete_account(&user).await;
    assert_eq!(resp.status(), 202);
    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.deletions_held, 1, "{report:?}");
    assert_eq!(app.objects_of(&user, &held).await.len(), 1);
    let lift = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/admin/holds/{}", hold["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(lift.status(), 204);
    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.deletions_completed, 1, "{report:?}");
    assert!(app.objects_of(&user, &held).await.is_empty());
    assert!(app
        .app()
        .store
        .get_profile(&user.sub)
        .await
        .unwrap()
        .is_none());
}

/// R5: a parked deletion whose hold disappears without the lift's shortcut (a failed or
/// interrupted lift) is released by the next sweep and completed in it.
#[tokio::test]
async fn r5_parked_deletions_are_released_by_the_sweep_once_no_hold_covers_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("parked")).await;
    app.drain().await;
    let hold = app
        .place_hold(&admin, json!({"user_id": user.sub, "reason": "audit"}))
        .await;
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204);
    assert_eq!(app.objects_of(&user, &id).await.len(), 1);
    // The hold goes, but nothing made the parked record due again.
    let audit = shared::store::AuditRecord::new(
        &admin.sub,
        "hold.lift",
        Some(&user.sub),
        None,
        None,
        "test",
        Utc::now(),
    );
    assert!(app
        .app()
        .store
        .remove_hold(
            hold["id"].as_str().unwrap(),
            &audit,
            Utc::now() + Duration::days(1)
        )
        .await
        .unwrap());
    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.deletions_released, 1, "{report:?}");
    assert_eq!(report.deletions_completed, 1, "{report:?}");
    assert!(app.objects_of(&user, &id).await.is_empty());
}

/// A child report does not replace an admin's suspension, so its dismissal cannot lift it.
#[tokio::test]
async fn k2_dismissing_a_report_keeps_an_admins_suspension() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let reporter = app.onboarded_user().await;
    let user = app.onboarded_user().await;
    let path = format!("/v1/admin/users/{}/suspension", user.sub);
    let resp = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&admin),
            Some(json!({"reason": "fraud"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let filed = report(&app, &reporter, &user).await;
    let resp = app
        .send(
            reqwest::Method::POST,
            &format!(
                "/v1/admin/reports/{}/dismiss",
                filed["id"].as_str().unwrap()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let me: Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["suspension"]["reason"], "fraud");
    assert_eq!(
        problem_code(app.generate(&user, gen_body("still suspended")).await, 403).await,
        "account_suspended"
    );
}
