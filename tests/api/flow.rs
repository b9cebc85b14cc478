use serde_json::{json, Value};

use crate::helpers::*;

/// G4, U1, U3, S1: onboard, generate, the worker runs, the download URL returns a valid image
/// of the requested size and format; the object is encrypted; events are published.
#[tokio::test]
async fn g4_s1_whole_flow_onboard_generate_download() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = app
        .generate(
            &user,
            json!({"prompt": "a lighthouse at dusk", "size": "1536x1024", "quality": "medium", "n": 2, "seed": 42, "output_format": "webp"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["credits_charged"], 6);
    let id = job["id"].as_str().unwrap().to_string();

    app.drain().await;
    let job = app.job(&user, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["seed"], 42);
    assert!(job["delete_at"].is_string());
    let images = job["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let mut first_bytes = Vec::new();
    for img in images {
        assert_eq!(
            (img["width"].as_u64(), img["height"].as_u64()),
            (Some(1536), Some(1024))
        );
        assert_eq!(img["format"], "webp");
        let download = reqwest::get(img["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(download.status(), 200);
        assert_eq!(download.headers()["content-type"], "image/webp");
        let bytes = download.bytes().await.unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::WebP
        );
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (1536, 1024));
        if first_bytes.is_empty() {
            first_bytes = bytes.to_vec();
        } else {
            assert_ne!(first_bytes, bytes.to_vec(), "the two images differ");
        }
    }

    // S1: encrypted at rest, under the owner's prefix.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&app.stack.sdk)
            .force_path_style(true)
            .build(),
    );
    let keys = app
        .app()
        .objects()
        .list(&format!("users/{}/generations/{id}/", user.sub))
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    let head = s3
        .head_object()
        .bucket(&app.stack.resources.bucket_name)
        .key(&keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );

    // U3: the stored item records that the provider was called in no-training mode.
    let ddb = aws_sdk_dynamodb::Client::new(&app.stack.sdk);
    let item = ddb
        .get_item()
        .table_name(&app.stack.resources.table_name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{}", user.sub)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("GEN#{id}")),
        )
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    assert_eq!(item["training_use"].as_s().unwrap(), "none");
    assert_eq!(item["provider"].as_s().unwrap(), "local");

    assert_eq!(app.assert_ledger_consistent(&user).await, 4);
    let events = app.events().await;
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail-type"] == "generation.completed")
        .collect();
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0]["detail"]["generation_id"], id.as_str());
    assert!(
        !completed[0].to_string().contains("lighthouse"),
        "events never carry the prompt"
    );
}

#[tokio::test]
async fn health_and_r1_published_policy() {
    let app = spawn_app_with(&[("RETENTION_DAYS", "14")]).await;
    let resp = app
        .http
        .get(format!("{}/v1/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let policy: Value = app
        .http
        .get(format!("{}/v1/policy", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(policy["retention"]["content_retention_days"], 14);
    assert_eq!(policy["retention"]["training_use"], "never");
    assert!(policy["prices"].as_array().unwrap().len() >= 9);
    // R3: the deletion promise includes the backup window, honestly.
    assert_eq!(
        policy["retention"]["deleted_content_purged_from_backups_within_days"],
        shared::config::DEFAULT_BACKUP_RECOVERY_DAYS
    );
    assert_eq!(
        policy["retention"]["deletion_promise"],
        "gone from live stores within 24 h, from backups within 7 days"
    );
    // The catalog is published beside the per-image prices.
    assert_eq!(policy["catalog"]["packs"][0]["id"], "pack_small");
    assert_eq!(policy["catalog"]["plans"][0]["credits"], 200);
    // The data map is published: every kind, what it holds, how long it is kept.
    let map = policy["data_map"].as_array().unwrap();
    assert_eq!(map.len(), shared::datamap::DATA_MAP.len());
    let generation = map.iter().find(|k| k["kind"] == "generation").unwrap();
    assert_eq!(generation["category"], "C4");
    assert_eq!(generation["retention"], "content");
    assert!(generation["holds"].as_str().unwrap().contains("prompt"));
    assert!(generation["period"].is_string() && generation["deletion"].is_string());
}
