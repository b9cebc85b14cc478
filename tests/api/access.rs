//! The right of access (D1): `GET /v1/me/data` against what the stores actually hold.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Whether an attribute (at any depth) mentions `needle`.
fn mentions(v: &AttributeValue, needle: &str) -> bool {
    match v {
        AttributeValue::S(s) => s.contains(needle),
        AttributeValue::L(l) => l.iter().any(|v| mentions(v, needle)),
        AttributeValue::M(m) => m.values().any(|v| mentions(v, needle)),
        AttributeValue::Ss(ss) => ss.iter().any(|s| s.contains(needle)),
        _ => false,
    }
}

fn s(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// D1: after using every feature, the caller's `/v1/me/data` lists every kind the stores hold
/// about them (the data-map test's view: their partition, every item elsewhere that names them,
/// their objects and public copies), with the right counts and deletion dates.
#[tokio::test]
async fn d1_access_lists_every_kind_held_with_its_deletion_dates() {
    let app =
        crate::helpers::spawn_app_with(&[("MODERATION_BLOCKLIST", "abuse:forbiddenword")]).await;
    let user = app.onboarded_user().await;
    let stranger = app.onboarded_user().await;
    let admin = app.admin().await;
    // A refused prompt: a violation record (U5).
    let refused = app.generate(&user, gen_body("a forbiddenword")).await;
    assert_eq!(refused.status(), 400);

    // Every feature: a reference upload, generations (one with an Idempotency-Key), a public
    // image downloaded by another user and by its owner, a protected one, a purchase, a report,
    // a hold, and a generation deleted under that hold.
    let reference = {
        let png = {
            let mut out = Vec::new();
            image::RgbImage::from_pixel(24, 24, image::Rgb([10, 200, 30]))
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        };
        let upload: Value = app
            .send(
                Method::POST,
                "/v1/uploads",
                Some(&user),
                Some(json!({"content_type": "image/png", "size": png.len()})),
            )
            .await
            .json()
            .await
            .unwrap();
        let id = upload["id"].as_str().unwrap().to_string();
        app.app()
            .objects()
            .put(
                &format!("users/{}/uploads/{id}/original", user.sub),
                png,
                "image/png",
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            app.get_json(&format!("/v1/uploads/{id}"), &user).await["status"],
            "ready"
        );
        id
    };
    let resp = app
        .send(
            Method::POST,
            "/v1/generations",
            Some(&user),
            Some(json!({"prompt": "a garden", "size": "1024x1024", "quality": "low", "n": 2, "reference_ids": [reference]})),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let first = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = app
        .http
        .post(format!("{}/v1/generations", app.base))
        .bearer_auth(&user.token)
        .header("idempotency-key", "access-test-1")
        .json(&gen_body("to be deleted under a hold"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.drain().await;
    let image = format!("{first}-0");
    let protected = format!("{first}-1");
    for (id, body) in [
        (&image, json!({"public": true})),
        (&protected, json!({"public": true, "copy_protected": true})),
    ] {
        let resp = app
            .send(
                Method::PATCH,
                &format!("/v1/images/{id}"),
                Some(&user),
                Some(body),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    for who in [&stranger, &user] {
        let resp = app
            .send(
                Method::POST,
                &format!("/v1/images/{image}/download"),
                Some(who),
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let paid = stripe_object(
        "checkout.session",
        json!({"id": unique("cs_"), "mode": "payment", "payment_status": "paid",
               "client_reference_id": user.sub, "metadata": {"user_id": user.sub, "item": "pack_small"},
               "payment_intent": unique("pi_"), "amount_total": 500, "currency": "usd"}),
    );
    let event = stripe_event(&unique("evt_"), "checkout.session.completed", 1, paid);
    assert_eq!(app.deliver(&event).await.status(), 200);
    let resp = app
        .send(
            Method::POST,
            "/v1/reports/child-account",
            Some(&user),
            Some(json!({"user_id": stranger.sub})),
        )
        .await;
    assert_eq!(resp.status(), 202);
    app.place_hold(
        &admin,
        json!({"user_id": user.sub, "reason": "legal request"}),
    )
    .await;
    assert_eq!(app.delete_generation(&user, &second).await.status(), 204);

    // What the stores hold about the user, found the data-map test's way.
    let items: Vec<_> = app
        .scan_table()
        .await
        .into_iter()
        .filter(|i| {
            s(i, "pk") == format!("USER#{}", user.sub) || i.values().any(|v| mentions(v, &user.sub))
        })
        .collect();
    let mut text_of_items = String::new();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for item in &items {
        expected.insert(s(item, "kind"));
        text_of_items.push_str(&format!("{item:?}"));
    }
    for key in app.all_objects().await {
        if key.contains(&user.sub) || text_of_items.contains(&key) {
            let kind = shared::datamap::object_kind(&key).expect("a mapped object");
            expected.insert(kind.kind.to_string());
        }
    }
    for kind in [
        "upload",
        "upload_object",
        "public_copy",
        "gallery_entry",
        "download",
        "payment",
        "audit",
        "child_report",
        "legal_hold",
        "deletion_record",
        "reference",
        "idempotency",
        "generated_image",
    ] {
        assert!(
            expected.contains(kind),
            "the scenario stores a {kind}: {expected:?}"
        );
    }

    let data = app.get_json("/v1/me/data?limit=100", &user).await;
    assert_eq!(data["deletion_suspended_by_hold"], true, "the hold is said");
    let kinds = data["kinds"].as_array().unwrap();
    assert_eq!(
        kinds.len(),
        shared::datamap::DATA_MAP.len(),
        "every kind of the map is listed"
    );
    let listed: BTreeSet<String> = kinds
        .iter()
        .filter(|k| k["count"].as_u64().unwrap() > 0)
        .map(|k| k["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed, expected,
        "access lists exactly what the stores hold"
    );

    // Counts and deletion dates.
    let by_kind: HashMap<&str, &Value> = kinds
        .iter()
        .map(|k| (k["kind"].as_str().unwrap(), k))
        .collect();
    let find = |kind: &str, id: &str| -> Value {
        by_kind[kind]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{kind} {id} not listed: {}", by_kind[kind]))
            .clone()
    };
    for item in &items {
        let kind = s(item, "kind");
        let pk = s(item, "pk");
        let id = if pk == format!("USER#{}", user.sub) {
            s(item, "sk")
        } else {
            format!("{pk} | {}", s(item, "sk"))
        };
        let listed = find(&kind, &id);
        let exp_pk = s(item, "exp_pk");
        let exp_at = item
            .get("exp_at")
            .and_then(|v| v.as_n().ok())
            .map(|n| n.parse::<i64>().unwrap());
        if item.contains_key("deleted_at") {
            assert_eq!(listed["deletion_pending"], true, "{kind} {id}");
        } else if exp_pk.starts_with("EXP#") {
            let at = chrono::DateTime::from_timestamp(exp_at.unwrap(), 0).unwrap();
            assert_eq!(listed["delete_at"], at.to_rfc3339(), "{kind} {id}");
        } else if exp_pk.starts_with("CONTENT#") {
            let created = chrono::DateTime::from_timestamp(exp_at.unwrap(), 0).unwrap();
            let at = created + Duration::days(14);
            assert_eq!(listed["delete_at"], at.to_rfc3339(), "{kind} {id}: R1");
        }
    }
    assert_eq!(by_kind["download"]["count"], 2);
    assert_eq!(by_kind["gallery_entry"]["count"], 2);
    // The upload's date is R2's: 24 hours after its last use.
    let upload = find("upload", &format!("UPLOAD#{reference}"));
    let at = chrono::DateTime::parse_from_rfc3339(upload["delete_at"].as_str().unwrap()).unwrap();
    assert!(at > Utc::now() + Duration::hours(23) && at <= Utc::now() + Duration::hours(24));

    // Nothing of another user (the report names whom it reports, but access shows only ids).
    assert!(!data.to_string().contains(&stranger.sub), "{data}");

    // One kind, paginated.
    let page = app
        .get_json("/v1/me/data?kind=generated_image&limit=1", &user)
        .await;
    assert_eq!(page["kinds"].as_array().unwrap().len(), 1);
    let total = page["kinds"][0]["count"].as_u64().unwrap();
    let mut seen = page["kinds"][0]["items"].as_array().unwrap().len() as u64;
    let mut cursor = page["kinds"][0]["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let next = app
            .get_json(
                &format!("/v1/me/data?kind=generated_image&limit=1&cursor={c}"),
                &user,
            )
            .await;
        seen += next["kinds"][0]["items"].as_array().unwrap().len() as u64;
        cursor = next["kinds"][0]["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, total);
    let resp = app.get("/v1/me/data?kind=nonsense", &user).await;
    assert_eq!(problem_code(resp, 400).await, "invalid_kind");
}
