//! Export (D4, R7): one ZIP of everything the data map marks exported, with the original files
//! and a manifest of SHA-256 hashes; deleted 7 days after it is made and with the account.

use std::io::{Cursor, Read};

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

impl TestApp {
    async fn request_export(&self, user: &User) -> reqwest::Response {
        self.send(Method::POST, "/v1/exports", Some(user), None)
            .await
    }

    async fn ready_export(&self, user: &User) -> Value {
        let resp = self.request_export(user).await;
        assert_eq!(resp.status(), 202);
        let export: Value = resp.json().await.unwrap();
        self.drain_exports().await;
        let id = export["id"].as_str().unwrap();
        let done = self.get_json(&format!("/v1/exports/{id}"), user).await;
        assert_eq!(done["status"], "ready", "{done}");
        done
    }
}

fn png() -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 100, 0]))
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// D4: the export opens with a standard ZIP reader; its manifest lists every file with the
/// right size and SHA-256; it holds one JSON file for every kind the data map marks exported
/// and every original file (generated images, uploads); nothing of another user; one export
/// at a time.
#[tokio::test]
async fn d4_the_export_is_a_standard_zip_with_every_record_kind_and_original_and_a_manifest() {
    let app =
        crate::helpers::spawn_app_with(&[("MODERATION_BLOCKLIST", "abuse:forbiddenword")]).await;
    let user = app.onboarded_user().await;
    let other = app.onboarded_user().await;
    // A refused prompt: a violation record (U5), exported.
    let refused = app
        .generate(&user, crate::helpers::gen_body("a forbiddenword"))
        .await;
    assert_eq!(refused.status(), 400);
    // Some of everything: images, an upload, a consent, a download, a published image.
    let upload: Value = app
        .send(
            Method::POST,
            "/v1/uploads",
            Some(&user),
            Some(json!({"content_type": "image/png", "size": png().len()})),
        )
        .await
        .json()
        .await
        .unwrap();
    let upload_id = upload["id"].as_str().unwrap().to_string();
    app.app()
        .objects()
        .put(
            &format!("users/{}/uploads/{upload_id}/original", user.sub),
            png(),
            "image/png",
            false,
        )
        .await
        .unwrap();
    app.get_json(&format!("/v1/uploads/{upload_id}"), &user)
        .await;
    let job = app
        .create(
            &user,
            json!({"prompt": "an orchard", "size": "1024x1024", "quality": "low", "n": 2, "reference_ids": [upload_id]}),
        )
        .await;
    let theirs = app.create(&other, gen_body("someone else's garden")).await;
    app.drain().await;
    app.send(
        Method::PATCH,
        &format!("/v1/images/{job}-0"),
        Some(&user),
        Some(json!({"public": true})),
    )
    .await;
    app.send(
        Method::POST,
        &format!("/v1/images/{job}-0/download"),
        Some(&other),
        None,
    )
    .await;
    app.send(
        Method::PUT,
        "/v1/me/consents/marketing_email",
        Some(&user),
        Some(json!({"granted": true})),
    )
    .await;

    let resp = app.request_export(&user).await;
    assert_eq!(resp.status(), 202);
    let first: Value = resp.json().await.unwrap();
    assert_eq!(first["status"], "queued");
    assert_eq!(
        problem_code(app.request_export(&user).await, 409).await,
        "export_in_progress",
        "one at a time"
    );
    app.drain_exports().await;
    let id = first["id"].as_str().unwrap();
    let done = app.get_json(&format!("/v1/exports/{id}"), &user).await;
    assert_eq!(done["status"], "ready", "{done}");
    let delete_at =
        chrono::DateTime::parse_from_rfc3339(done["delete_at"].as_str().unwrap()).unwrap();
    assert!(
        delete_at > Utc::now() + Duration::days(6) && delete_at <= Utc::now() + Duration::days(7)
    );
    let events = app.events().await;
    assert!(events
        .iter()
        .any(|e| e["detail-type"] == "export.ready" && e["detail"]["export_id"] == id));

    let bytes = reqwest::get(done["download_url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert_eq!(done["size"].as_u64().unwrap(), bytes.len() as u64);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.clone())).expect("a standard ZIP");
    let mut manifest = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len() + 1, zip.len(), "every entry is in the manifest");
    for f in files {
        let name = f["name"].as_str().unwrap();
        let mut content = Vec::new();
        zip.by_name(name)
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(f["size"].as_u64().unwrap(), content.len() as u64, "{name}");
        assert_eq!(f["sha256"], hex::encode(Sha256::digest(&content)), "{name}");
    }
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    for spec in shared::datamap::DATA_MAP
        .iter()
        .filter(|k| k.exported && k.store == shared::datamap::Store::Table)
    {
        assert!(
            names.contains(&format!("data/{}.json", spec.kind).as_str()),
            "{} missing",
            spec.kind
        );
    }
    // Each kind's file holds what access counts for it (nothing hidden in this scenario).
    let data = app.get_json("/v1/me/data", &user).await;
    let mut counts = std::collections::HashMap::new();
    for k in data["kinds"].as_array().unwrap() {
        counts.insert(
            k["kind"].as_str().unwrap().to_string(),
            k["count"].as_u64().unwrap(),
        );
    }
    for spec in shared::datamap::DATA_MAP
        .iter()
        .filter(|k| k.exported && k.store == shared::datamap::Store::Table)
    {
        let mut s = String::new();
        zip.by_name(&format!("data/{}.json", spec.kind))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        let records: Vec<Value> = serde_json::from_str(&s).unwrap();
        assert_eq!(records.len() as u64, counts[spec.kind], "{}", spec.kind);
    }
    let images: Vec<_> = names.iter().filter(|n| n.starts_with("images/")).collect();
    assert_eq!(images.len(), 2, "every generated image: {names:?}");
    assert!(images.iter().all(|n| n.contains(&job)));
    assert!(names
        .iter()
        .any(|n| n.starts_with("uploads/") && n.contains(&upload_id)));
    // The records: the generation with its prompt and settings, the consent history, the
    // download of the published image.
    let mut read = |name: &str| -> Value {
        let mut s = String::new();
        zip.by_name(name).unwrap().read_to_string(&mut s).unwrap();
        serde_json::from_str(&s).unwrap()
    };
    let generations = read("data/generation.json");
    assert_eq!(generations[0]["prompt"], "an orchard");
    assert_eq!(generations[0]["images"][0]["public"], true);
    assert_eq!(read("data/consent_record.json")[0]["granted"], true);
    assert_eq!(read("data/download.json")[0]["by"], "other");
    // Nothing of another user.
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&other.sub) && !text.contains(&theirs),
        "another user's data"
    );

    // The lock is free again.
    assert_eq!(app.request_export(&user).await.status(), 202);
}

/// R7: an export is gone 7 days after it is made (a clock the test controls), through the
/// deletion pipeline, and at account deletion.
#[tokio::test]
async fn r7_an_export_is_deleted_after_7_days_and_with_the_account() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    app.create(&user, gen_body("kept a week")).await;
    app.drain().await;
    let export = app.ready_export(&user).await;
    let id = export["id"].as_str().unwrap().to_string();
    let archive = shared::services::exports::archive_key(&user.sub, &id);
    assert!(app.app().objects().size(&archive).await.unwrap().is_some());

    let report = app.sweep_at(Utc::now() + Duration::days(6)).await;
    assert_eq!(report.exports_expired, 0);
    assert_eq!(
        app.get(&format!("/v1/exports/{id}"), &user).await.status(),
        200
    );
    let report = app
        .sweep_at(Utc::now() + Duration::days(7) + Duration::minutes(1))
        .await;
    assert_eq!(report.exports_expired, 1, "{report:?}");
    assert_eq!(
        app.get(&format!("/v1/exports/{id}"), &user).await.status(),
        404
    );
    assert!(app.app().objects().size(&archive).await.unwrap().is_none());
    assert!(app
        .app()
        .store
        .get_export(&user.sub, &id)
        .await
        .unwrap()
        .is_none());

    // At account deletion.
    let export = app.ready_export(&user).await;
    let archive = shared::services::exports::archive_key(&user.sub, export["id"].as_str().unwrap());
    assert_eq!(app.delete_account(&user).await.status(), 202);
    app.sweep_at(Utc::now()).await;
    assert!(app.app().objects().size(&archive).await.unwrap().is_none());
}

/// A part upload that fails mid-export: the worker returns at once (the archive writer is not
/// left waiting on a full pipe), nothing is stored, and after the last delivery the export is
/// failed and the user may ask again.
#[tokio::test]
async fn a_failed_upload_aborts_the_export_and_the_last_delivery_frees_the_user() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    app.create(
        &user,
        json!({"prompt": "a long export", "size": "1536x1024", "quality": "low", "n": 4}),
    )
    .await;
    app.drain().await;
    let resp = app.request_export(&user).await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (faulty_app, faulty) = app.with_failing_deletes();
    faulty
        .fail_deletes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    faulty
        .fail_uploads
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let msg = shared::services::exports::ExportMessage {
        user_id: user.sub.clone(),
        export_id: id.clone(),
    };
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        shared::services::exports::run(&faulty_app, &msg, Utc::now()),
    )
    .await
    .expect("the worker does not hang");
    let err = outcome.expect_err("the export failed");
    assert!(format!("{err:#}").contains("injected fault"), "{err:#}");
    let archive = shared::services::exports::archive_key(&user.sub, &id);
    assert!(app.app().objects().size(&archive).await.unwrap().is_none());
    assert_eq!(
        problem_code(app.request_export(&user).await, 409).await,
        "export_in_progress"
    );
    shared::services::exports::give_up(app.app(), &msg, &format!("{err:#}"))
        .await
        .unwrap();
    let failed = app.get_json(&format!("/v1/exports/{id}"), &user).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        app.request_export(&user).await.status(),
        202,
        "free to ask again"
    );
}
