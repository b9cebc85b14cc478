//! Reference uploads, generation with references, images, the public gallery, copy protection
//! and download history (C4, R2, S1, U1, G1, G2, G3).

use std::io::Cursor;

use base64::Engine;
use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

pub(crate) fn png(w: u32, h: u32, colour: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            colour[0].wrapping_add((x % 16) as u8),
            colour[1].wrapping_add((y % 16) as u8),
            colour[2],
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A PNG with a text chunk (metadata that must never reach a provider).
fn png_with_text(w: u32, h: u32, colour: [u8; 3]) -> Vec<u8> {
    let plain = png(w, h, colour);
    let mut chunk = Vec::new();
    let data = b"Comment\0taken at 51.5N 0.1W by someone's phone";
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = b"tEXt".to_vec();
    body.extend_from_slice(data);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    // After the signature and the IHDR chunk (8 + 25 bytes).
    let mut out = plain[..33].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&plain[33..]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose header claims 30000x30000 pixels: a decompression bomb's header.
fn bomb() -> Vec<u8> {
    let mut bytes = png(8, 8, [10, 10, 10]);
    bytes[16..20].copy_from_slice(&30_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&30_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn chunk_types(png: &[u8]) -> Vec<String> {
    let mut at = 8;
    let mut types = vec![];
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        types.push(String::from_utf8_lossy(&png[at + 4..at + 8]).to_string());
        at += 12 + len;
    }
    types
}

impl TestApp {
    /// The objects stored for one upload.
    async fn upload_objects(&self, user: &User, id: &str) -> Vec<String> {
        self.app()
            .objects()
            .list(&shared::objects::upload_prefix(&user.sub, id))
            .await
            .unwrap()
    }

    pub(crate) async fn new_upload(&self, user: &User, content_type: &str, size: usize) -> Value {
        let resp = self
            .send(
                Method::POST,
                "/v1/uploads",
                Some(user),
                Some(json!({"content_type": content_type, "size": size})),
            )
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    /// Sends `bytes` with the upload form, as a browser would.
    pub(crate) async fn post_form(&self, upload: &Value, bytes: Vec<u8>) -> u16 {
        let form_spec = &upload["upload"];
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in form_spec["fields"].as_object().unwrap() {
            form = form.text(k.clone(), v.as_str().unwrap().to_string());
        }
        let ct = form_spec["fields"]["Content-Type"]
            .as_str()
            .unwrap()
            .to_string();
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("photo")
                .mime_str(&ct)
                .unwrap(),
        );
        reqwest::Client::new()
            .post(form_spec["url"].as_str().unwrap())
            .multipart(form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A checked, ready upload of `bytes` (PNG); returns its id.
    pub(crate) async fn ready_upload(&self, user: &User, bytes: Vec<u8>) -> String {
        let upload = self.new_upload(user, "image/png", bytes.len()).await;
        let status = self.post_form(&upload, bytes).await;
        assert!((200..300).contains(&status), "the form upload: {status}");
        let id = upload["id"].as_str().unwrap().to_string();
        let checked = self.get_json(&format!("/v1/uploads/{id}"), user).await;
        assert_eq!(checked["status"], "ready", "{checked}");
        id
    }

    pub(crate) async fn patch_image(
        &self,
        user: &User,
        id: &str,
        body: Value,
    ) -> reqwest::Response {
        self.send(
            Method::PATCH,
            &format!("/v1/images/{id}"),
            Some(user),
            Some(body),
        )
        .await
    }

    pub(crate) async fn anonymous(&self, path: &str) -> reqwest::Response {
        self.send(Method::GET, path, None, None).await
    }

    async fn gallery_ids(&self) -> Vec<String> {
        let body: Value = self
            .anonymous("/v1/gallery?limit=100")
            .await
            .json()
            .await
            .unwrap();
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// A finished generation's first image id.
    pub(crate) async fn image_of_new_generation(&self, user: &User, prompt: &str) -> String {
        let id = self.create(user, gen_body(prompt)).await;
        self.drain().await;
        let job = self.job(user, &id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        job["images"][0]["id"].as_str().unwrap().to_string()
    }
}

async fn fetch(url: &str) -> Vec<u8> {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.bytes().await.unwrap().to_vec()
}

/// S3's POST policy check, written from its documentation: the signature over the base64
/// policy with the SigV4 key derivation, the expiration, and every condition against the form.
fn s3_would_accept(
    fields: &Value,
    file_len: u64,
    secret: &str,
    region: &str,
) -> Result<(), String> {
    let f = |k: &str| fields[k].as_str().map(str::to_string);
    let policy_b64 = f("policy").ok_or("no policy")?;
    let credential = f("x-amz-credential").ok_or("no credential")?;
    let date = credential.split('/').nth(1).ok_or("bad credential")?;
    let hmac = |key: &[u8], data: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    let k = hmac(&k, b"aws4_request");
    let signature = hex::encode(hmac(&k, policy_b64.as_bytes()));
    if Some(signature) != f("x-amz-signature") {
        return Err("signature does not match".into());
    }
    let policy: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&policy_b64)
            .unwrap(),
    )
    .unwrap();
    let expiration =
        chrono::DateTime::parse_from_rfc3339(policy["expiration"].as_str().unwrap()).unwrap();
    if expiration < Utc::now() {
        return Err("policy expired".into());
    }
    for c in policy["conditions"].as_array().unwrap() {
        match c {
            Value::Object(o) => {
                for (k, v) in o {
                    if k != "bucket" && fields[k] != *v {
                        return Err(format!("{k} is not {v}"));
                    }
                }
            }
            Value::Array(a) if a[0] == "eq" => {
                let name = a[1].as_str().unwrap().trim_start_matches('$');
                if fields[name] != a[2] {
                    return Err(format!("{name} is not {}", a[2]));
                }
            }
            Value::Array(a) if a[0] == "content-length-range" => {
                let (lo, hi) = (a[1].as_u64().unwrap(), a[2].as_u64().unwrap());
                if !(lo..=hi).contains(&file_len) {
                    return Err(format!("{file_len} bytes is outside {lo}..={hi}"));
                }
            }
            other => return Err(format!("unknown condition {other}")),
        }
    }
    Ok(())
}

/// S1: the upload form is signed for one server-chosen key under the owner's prefix, one type
/// and a size range; the signature recomputed independently matches; S3 would refuse a form
/// sent to another prefix, with another type or too large. A real file sent with the form is
/// checked, kept only as a re-encoded PNG without metadata, and the file as sent is gone.
#[tokio::test]
async fn s1_upload_form_is_signed_for_one_key_type_and_size() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let file = png_with_text(64, 48, [200, 40, 40]);
    let upload = app.new_upload(&user, "image/png", file.len()).await;
    assert_eq!(upload["status"], "pending");
    let id = upload["id"].as_str().unwrap();
    let fields = upload["upload"]["fields"].clone();
    let own_key = format!("users/{}/uploads/{id}/original", user.sub);
    assert_eq!(fields["key"], own_key.as_str());
    assert_eq!(fields["Content-Type"], "image/png");
    assert_eq!(fields["x-amz-server-side-encryption"], "AES256");
    let expires =
        chrono::DateTime::parse_from_rfc3339(upload["upload"]["expires_at"].as_str().unwrap())
            .unwrap();
    assert!(expires <= Utc::now() + Duration::minutes(10) + Duration::seconds(5));

    let len = file.len() as u64;
    s3_would_accept(&fields, len, "test", "us-east-1").expect("the form as issued");
    let mut other = fields.clone();
    other["key"] = json!("users/someone-else/uploads/x/original");
    assert!(s3_would_accept(&other, len, "test", "us-east-1").is_err());
    let mut html = fields.clone();
    html["Content-Type"] = json!("text/html");
    assert!(s3_would_accept(&html, len, "test", "us-east-1").is_err());
    assert!(s3_would_accept(&fields, len + 1, "test", "us-east-1")
        .unwrap_err()
        .contains("outside"));
    assert!(s3_would_accept(&fields, len, "wrong-secret", "us-east-1").is_err());

    // Unknown type and oversize declarations are refused before any form is issued.
    let resp = app
        .send(
            Method::POST,
            "/v1/uploads",
            Some(&user),
            Some(json!({"content_type": "image/gif", "size": 10})),
        )
        .await;
    assert_eq!(problem_code(resp, 400).await, "unsupported_content_type");
    let resp = app
        .send(
            Method::POST,
            "/v1/uploads",
            Some(&user),
            Some(json!({"content_type": "image/png", "size": 50_000_000})),
        )
        .await;
    assert_eq!(problem_code(resp, 413).await, "upload_too_large");

    let status = app.post_form(&upload, file).await;
    assert!(
        (200..300).contains(&status),
        "the emulator took the form: {status}"
    );
    let checked = app.get_json(&format!("/v1/uploads/{id}"), &user).await;
    assert_eq!(checked["status"], "ready", "{checked}");
    assert_eq!(
        (checked["width"].as_u64(), checked["height"].as_u64()),
        (Some(64), Some(48))
    );
    let keys = app.upload_objects(&user, id).await;
    assert_eq!(
        keys,
        vec![format!("users/{}/uploads/{id}/reference.png", user.sub)]
    );
    let kept = app.app().objects().get(&keys[0]).await.unwrap().unwrap();
    let chunks = chunk_types(&kept);
    assert!(
        !chunks
            .iter()
            .any(|c| c == "tEXt" || c == "eXIf" || c == "iTXt"),
        "{chunks:?}"
    );

    // Another user cannot see it; its owner deletes it and nothing remains.
    let stranger = app.onboarded_user().await;
    assert_eq!(
        app.get(&format!("/v1/uploads/{id}"), &stranger)
            .await
            .status(),
        404
    );
    let resp = app
        .send(
            Method::DELETE,
            &format!("/v1/uploads/{id}"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.get(&format!("/v1/uploads/{id}"), &user).await.status(),
        404
    );
    assert!(app.upload_objects(&user, id).await.is_empty());
}

/// S1: clients lie. A file of another type than declared, larger than declared, a decompression
/// bomb, a polyglot and a truncated image are each rejected with a readable reason, and nothing
/// of them remains; a form never used is rejected once it has expired.
#[tokio::test]
async fn s1_uploads_that_lie_are_rejected_with_a_reason_and_nothing_remains() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let real = png(32, 32, [20, 200, 20]);
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let mut polyglot = real.clone();
    polyglot.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00<script>alert(1)</script>");
    let truncated = real[..real.len() - 30].to_vec();
    let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        ("wrong type", jpeg.clone(), jpeg.len(), "not the PNG"),
        (
            "larger than declared",
            real.clone(),
            100,
            "more than the 100 declared",
        ),
        (
            "decompression bomb",
            bomb(),
            bomb().len(),
            "larger than 4096x4096",
        ),
        (
            "polyglot",
            polyglot.clone(),
            polyglot.len(),
            "follow the end",
        ),
        ("truncated", truncated.clone(), truncated.len(), "truncated"),
    ];
    for (what, bytes, declared, reason) in cases {
        let upload = app.new_upload(&user, "image/png", declared).await;
        let id = upload["id"].as_str().unwrap();
        // Sent straight to the key, as a client ignoring the policy would (the emulator does
        // not enforce it).
        app.app()
            .objects()
            .put(
                &format!("users/{}/uploads/{id}/original", user.sub),
                bytes,
                "image/png",
                false,
            )
            .await
            .unwrap();
        let checked = app.get_json(&format!("/v1/uploads/{id}"), &user).await;
        assert_eq!(checked["status"], "rejected", "{what}: {checked}");
        let why = checked["reason"].as_str().unwrap();
        assert!(why.contains(reason), "{what}: {why}");
        assert!(
            app.upload_objects(&user, id).await.is_empty(),
            "{what}: nothing of it remains"
        );
        // A rejected upload cannot be used.
        let mut body = gen_body("with a bad reference");
        body["reference_ids"] = json!([id]);
        assert_eq!(
            problem_code(app.generate(&user, body).await, 409).await,
            "upload_rejected"
        );
    }

    // A form never used: pending while it works, rejected once it has expired.
    let upload = app.new_upload(&user, "image/webp", 1000).await;
    let id = upload["id"].as_str().unwrap();
    let caller = caller(&user);
    let view = shared::services::uploads::get(app.app(), &caller, id, Utc::now())
        .await
        .unwrap();
    assert_eq!(view.status, "pending");
    let view =
        shared::services::uploads::get(app.app(), &caller, id, Utc::now() + Duration::minutes(11))
            .await
            .unwrap();
    assert_eq!(view.status, "rejected");
    assert!(view.reason.unwrap().contains("expired"));
    assert_eq!(
        app.assert_ledger_consistent(&user).await,
        10,
        "nothing was charged"
    );
}

/// R2: an upload is deleted 24 hours after the last generation that used it (each use moves
/// its deletion time), unused ones 24 hours after upload, and all of them with the account.
#[tokio::test]
async fn r2_uploads_are_deleted_24_hours_after_their_last_use_and_with_the_account() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let used = app.ready_upload(&user, png(32, 32, [1, 1, 200])).await;
    let unused = app.ready_upload(&user, png(32, 32, [200, 1, 1])).await;
    let t0 = Utc::now();
    // Used 20 hours from now (a clock the test controls).
    let mut body = gen_body("twenty hours later");
    body["reference_ids"] = json!([used]);
    let (status, _) = shared::services::generations::create(
        app.app(),
        &caller(&user),
        &body,
        None,
        t0 + Duration::hours(20),
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    let upload_item = |id: String| {
        let app = &app;
        let user = &user;
        async move { app.app().store.get_upload(&user.sub, &id).await.unwrap() }
    };

    let report = app.sweep_at(t0 + Duration::hours(25)).await;
    assert_eq!(report.uploads_expired, 1, "{report:?}");
    assert!(
        upload_item(unused.clone()).await.is_none(),
        "unused: gone 24 h after upload"
    );
    assert!(app.upload_objects(&user, &unused).await.is_empty());
    let kept = upload_item(used.clone()).await.expect("used 20 h in: kept");
    assert!(kept.last_used_at.is_some());
    assert_eq!(
        app.get(&format!("/v1/uploads/{used}"), &user)
            .await
            .status(),
        200
    );

    let report = app.sweep_at(t0 + Duration::hours(45)).await;
    assert_eq!(report.uploads_expired, 1, "{report:?}");
    assert!(
        upload_item(used.clone()).await.is_none(),
        "gone 24 h after its last use"
    );
    assert!(app.upload_objects(&user, &used).await.is_empty());

    // At account deletion, with everything else of the account.
    let other = app.ready_upload(&user, png(16, 16, [9, 9, 9])).await;
    assert_eq!(app.delete_account(&user).await.status(), 202);
    app.sweep_at(Utc::now()).await;
    assert!(upload_item(other.clone()).await.is_none());
    assert!(app.upload_objects(&user, &other).await.is_empty());
}

/// U1, S1: a generation with references sends the provider the re-encoded references (on the
/// images edit endpoint, in its multipart wire format), never the files as sent; the local
/// renderer's picture visibly differs from the same prompt without them; another user's upload
/// id is 404.
#[tokio::test]
async fn u1_generation_with_references_reaches_the_provider_reencoded_and_changes_the_picture() {
    // The local renderer.
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let reference = app
        .ready_upload(&user, png_with_text(300, 200, [250, 250, 0]))
        .await;
    let plain = app
        .create(&user, json!({"prompt": "a quiet harbour", "size": "1024x1024", "quality": "low", "n": 1, "seed": 42}))
        .await;
    let referenced = app
        .create(&user, json!({"prompt": "a quiet harbour", "size": "1024x1024", "quality": "low", "n": 1, "seed": 42, "reference_ids": [reference]}))
        .await;
    app.drain().await;
    let decode = |bytes: Vec<u8>| image::load_from_memory(&bytes).unwrap().to_rgb8();
    let a = decode(
        fetch(
            app.job(&user, &plain).await["images"][0]["url"]
                .as_str()
                .unwrap(),
        )
        .await,
    );
    let view = app.job(&user, &referenced).await;
    assert_eq!(view["reference_ids"], json!([reference]));
    let b = decode(fetch(view["images"][0]["url"].as_str().unwrap()).await);
    let differing = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
    assert!(
        differing > 1024 * 1024 / 2,
        "only {differing} pixels differ"
    );
    // The yellow reference shows: the referenced picture is yellower on average.
    let yellow = |img: &image::RgbImage| {
        img.pixels()
            .map(|p| f64::from(p.0[0]) + f64::from(p.0[1]) - 2.0 * f64::from(p.0[2]))
            .sum::<f64>()
    };
    assert!(yellow(&b) > yellow(&a));

    let stranger = app.onboarded_user().await;
    let mut body = gen_body("borrowing someone's photo");
    body["reference_ids"] = json!([reference]);
    assert_eq!(
        problem_code(app.generate(&stranger, body).await, 404).await,
        "upload_not_found"
    );
    assert_eq!(app.assert_ledger_consistent(&stranger).await, 10);

    // A reference deleted before the job ran: the job fails, refunded, and nothing is sent.
    let before = app.balance(&user).await;
    let gone = app.ready_upload(&user, png(20, 20, [5, 5, 5])).await;
    let job = app
        .create(
            &user,
            json!({"prompt": "too late", "size": "1024x1024", "quality": "low", "n": 1, "reference_ids": [gone]}),
        )
        .await;
    let resp = app
        .send(
            Method::DELETE,
            &format!("/v1/uploads/{gone}"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    app.drain().await;
    let failed = app.job(&user, &job).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure"]["code"], "reference_missing");
    assert_eq!(app.balance(&user).await, before);

    // A server speaking the OpenAI wire format receives the re-encoded copy on /images/edits.
    let stub = OpenAiStub::start(vec![StubReply::Images]).await;
    let env = stub.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(&env).await;
    let user = app.onboarded_user().await;
    let sent = png_with_text(120, 80, [0, 128, 255]);
    let reference = app.ready_upload(&user, sent.clone()).await;
    let id = app
        .create(&user, json!({"prompt": "a paper boat", "size": "1024x1024", "quality": "low", "n": 1, "reference_ids": [reference]}))
        .await;
    app.drain().await;
    assert_eq!(app.job(&user, &id).await["status"], "succeeded");
    let req = &stub.requests()[0];
    assert_eq!(req["endpoint"], "edits");
    assert_eq!(req["model"], "gpt-image-1");
    assert_eq!(req["prompt"], "a paper boat");
    assert_eq!(req["n"], 1);
    assert!(req.get("user").is_none(), "U1: no user identifier");
    let images = req["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["content_type"], "image/png");
    let received = base64::engine::general_purpose::STANDARD
        .decode(images[0]["b64"].as_str().unwrap())
        .unwrap();
    let stored = app
        .app()
        .objects()
        .get(&shared::services::uploads::reference_key(
            &user.sub, &reference,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, stored, "the re-encoded copy is what was sent");
    assert_ne!(received, sent, "never the file as uploaded");
    assert!(!chunk_types(&received).contains(&"tEXt".to_string()));
    assert_eq!(decode(received), decode(sent.clone()), "the same pixels");
}

/// G1: images are private by default; publishing is explicit and puts the image in the public
/// feed; unpublishing, deleting the image or its generation, and suspending the account take it
/// out at once (a restored account's published images come back). Private ids are 404 to
/// everyone else.
#[tokio::test]
async fn g1_images_are_private_by_default_and_publishing_is_revocable() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let stranger = app.onboarded_user().await;
    let id = app.image_of_new_generation(&user, "a lighthouse").await;
    let own = app.get_json(&format!("/v1/images/{id}"), &user).await;
    assert_eq!(
        (own["public"].as_bool(), own["copy_protected"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(!app.gallery_ids().await.contains(&id));
    assert_eq!(
        app.anonymous(&format!("/v1/gallery/{id}")).await.status(),
        404
    );
    assert_eq!(
        app.get(&format!("/v1/images/{id}"), &stranger)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.patch_image(&stranger, &id, json!({"public": true}))
            .await
            .status(),
        404
    );

    let resp = app.patch_image(&user, &id, json!({"public": true})).await;
    assert_eq!(resp.status(), 200);
    assert!(app.gallery_ids().await.contains(&id));
    let public: Value = app
        .anonymous(&format!("/v1/gallery/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(public["id"], id.as_str());
    assert!(
        public.get("prompt").is_none() && public.get("owner").is_none(),
        "{public}"
    );
    let seen = app.get_json(&format!("/v1/images/{id}"), &stranger).await;
    assert_eq!(seen["variant"], "original");

    app.patch_image(&user, &id, json!({"public": false})).await;
    assert!(!app.gallery_ids().await.contains(&id), "gone at once");
    assert_eq!(
        app.anonymous(&format!("/v1/gallery/{id}")).await.status(),
        404
    );
    assert_eq!(
        app.get(&format!("/v1/images/{id}"), &stranger)
            .await
            .status(),
        404
    );

    // Suspension takes it out; restoring brings it back. A suspended account cannot publish
    // anew, but may change its settings.
    app.patch_image(&user, &id, json!({"public": true})).await;
    let private = app.image_of_new_generation(&user, "kept private").await;
    let admin = app.admin().await;
    let path = format!("/v1/admin/users/{}/suspension", user.sub);
    let resp = app
        .send(
            Method::POST,
            &path,
            Some(&admin),
            Some(json!({"reason": "review"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert!(!app.gallery_ids().await.contains(&id));
    assert_eq!(
        app.anonymous(&format!("/v1/gallery/{id}")).await.status(),
        404
    );
    let resp = app
        .patch_image(&user, &private, json!({"public": true}))
        .await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");
    let resp = app
        .patch_image(&user, &id, json!({"copy_protected": true}))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(!app.gallery_ids().await.contains(&id), "still not listed");
    app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert!(app.gallery_ids().await.contains(&id), "restored");
    let back: Value = app
        .anonymous(&format!("/v1/gallery/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        back["variant"], "preview",
        "restored as it is now: protected"
    );

    // A child-account report suspends at once: out of the gallery too.
    let reporter = app.onboarded_user().await;
    let resp = app
        .send(
            Method::POST,
            "/v1/reports/child-account",
            Some(&reporter),
            Some(json!({"user_id": user.sub})),
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert!(!app.gallery_ids().await.contains(&id));
    let report = app.get_json("/v1/admin/reports", &admin).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/admin/reports/{report}/dismiss"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(app.gallery_ids().await.contains(&id), "dismissed: restored");

    // Even if removing the entries failed, the gallery checks each owner as it reads: a
    // suspension written behind its back hides the image all the same.
    app.suspend_behind_the_back(&user).await;
    assert!(!app.gallery_ids().await.contains(&id));
    assert_eq!(
        app.anonymous(&format!("/v1/gallery/{id}")).await.status(),
        404
    );
    assert_eq!(
        app.get(&format!("/v1/images/{id}"), &stranger)
            .await
            .status(),
        404
    );
    app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert!(app.gallery_ids().await.contains(&id));

    // Deleting the image, or its generation, takes it out too.
    let resp = app
        .send(
            Method::DELETE,
            &format!("/v1/images/{id}"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert!(!app.gallery_ids().await.contains(&id));
    assert_eq!(
        app.get(&format!("/v1/images/{id}"), &user).await.status(),
        404
    );
    let (job, _) = id.split_once('-').unwrap();
    assert!(
        app.objects_of(&user, job).await.is_empty(),
        "its object is gone"
    );
    assert!(app.job(&user, job).await["images"]
        .as_array()
        .unwrap()
        .is_empty());

    let other = app
        .image_of_new_generation(&user, "a second lighthouse")
        .await;
    app.patch_image(&user, &other, json!({"public": true}))
        .await;
    assert!(app.gallery_ids().await.contains(&other));
    let (job, _) = other.split_once('-').unwrap();
    assert_eq!(app.delete_generation(&user, job).await.status(), 204);
    assert!(!app.gallery_ids().await.contains(&other));

    // Malformed and unknown ids are simply not found.
    for bad in [
        "x",
        "01m81fhng9b3v9wq139qsamm56-9",
        "../../etc",
        "01m81fhng9b3v9wq139qsamm56-0",
    ] {
        assert_eq!(
            app.anonymous(&format!("/v1/gallery/{bad}")).await.status(),
            404,
            "{bad}"
        );
    }
}

/// G2: a copy-protected public image gives everyone else only a reduced, watermarked preview,
/// and no download; its owner still downloads the original; when it stops being public and
/// protected, the preview goes.
#[tokio::test]
async fn g2_copy_protected_images_give_others_only_a_watermarked_preview() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let stranger = app.onboarded_user().await;
    let id = app
        .image_of_new_generation(&user, "a red kite over hills")
        .await;
    let resp = app
        .patch_image(&user, &id, json!({"public": true, "copy_protected": true}))
        .await;
    assert_eq!(resp.status(), 200);

    let public: Value = app
        .anonymous(&format!("/v1/gallery/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(public["variant"], "preview");
    let shown_url = public["url"].as_str().unwrap().to_string();
    assert!(shown_url.contains("/public/"), "{public}");
    assert!(
        !public.to_string().contains(&user.sub),
        "no owner id: {public}"
    );
    // The record that guarded the new copy until the change committed went with it: a sweep
    // later leaves the copy in place.
    app.sweep_at(Utc::now() + Duration::minutes(20)).await;
    let preview = fetch(public["url"].as_str().unwrap()).await;
    let preview = image::load_from_memory(&preview).unwrap();
    assert!(preview.width() <= 512 && preview.height() <= 512);
    let own = app.get_json(&format!("/v1/images/{id}"), &user).await;
    let original = image::load_from_memory(&fetch(own["url"].as_str().unwrap()).await).unwrap();
    assert!(original.width() > preview.width());
    // Watermarked: not merely the original scaled down.
    let scaled = original
        .resize(
            preview.width(),
            preview.height(),
            image::imageops::FilterType::Triangle,
        )
        .to_rgb8();
    let differing = scaled
        .pixels()
        .zip(preview.to_rgb8().pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 24))
        .count();
    assert!(differing > 2000, "watermark: {differing} pixels differ");

    // Every other path for anyone else: the image route shows the preview, downloads refused.
    let seen = app.get_json(&format!("/v1/images/{id}"), &stranger).await;
    assert_eq!(seen["variant"], "preview");
    assert!(seen["url"].as_str().unwrap().contains("/public/"));
    assert!(!seen.to_string().contains(&user.sub));
    // Nor through the generation (its id is in the image id).
    let (job, _) = id.split_once('-').unwrap();
    assert_eq!(
        app.get(&format!("/v1/generations/{job}"), &stranger)
            .await
            .status(),
        404
    );
    for body in [
        None,
        Some(json!({"variant": "original"})),
        Some(json!({"variant": "preview"})),
    ] {
        let resp = app
            .send(
                Method::POST,
                &format!("/v1/images/{id}/download"),
                Some(&stranger),
                body,
            )
            .await;
        assert_eq!(problem_code(resp, 403).await, "copy_protected");
    }
    let feed: Value = app.anonymous("/v1/gallery").await.json().await.unwrap();
    let entry = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap();
    assert!(entry["url"].as_str().unwrap().contains("/public/"));
    assert!(
        !feed.to_string().contains(&user.sub),
        "no owner id in the feed"
    );

    // The owner downloads the original.
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/images/{id}/download"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let link: Value = resp.json().await.unwrap();
    assert_eq!(link["variant"], "original");
    let got = image::load_from_memory(&fetch(link["url"].as_str().unwrap()).await).unwrap();
    assert_eq!(
        (got.width(), got.height()),
        (original.width(), original.height())
    );

    // Protection lifted while public: the preview gives way to a copy of the original, and
    // goes; unpublished: that copy goes too.
    let public_copies = || async { app.app().objects().list("public/").await.unwrap() };
    let preview_key = shown_url
        .split("/public/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    assert!(public_copies()
        .await
        .contains(&format!("public/{preview_key}")));
    app.patch_image(&user, &id, json!({"copy_protected": false}))
        .await;
    let copies = public_copies().await;
    assert!(
        !copies.contains(&format!("public/{preview_key}")),
        "{copies:?}"
    );
    let plain: Value = app
        .anonymous(&format!("/v1/gallery/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["variant"], "original");
    let copy_key = format!(
        "public/{}",
        plain["url"]
            .as_str()
            .unwrap()
            .split("/public/")
            .nth(1)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
    );
    assert!(public_copies().await.contains(&copy_key));
    app.patch_image(&user, &id, json!({"public": false, "copy_protected": true}))
        .await;
    assert!(!public_copies().await.contains(&copy_key));
    // Protection kept, but private again: nobody else sees anything.
    assert_eq!(
        app.get(&format!("/v1/images/{id}"), &stranger)
            .await
            .status(),
        404
    );
}

/// G3: every download is recorded (who, which image, when, which variant) and listed for the
/// owner, including downloads of their public images by others, who are not named.
#[tokio::test]
async fn g3_downloads_are_recorded_and_listed_for_the_owner() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let stranger = app.onboarded_user().await;
    let id = app
        .image_of_new_generation(&user, "a field of poppies")
        .await;
    assert_eq!(
        app.send(
            Method::POST,
            &format!("/v1/images/{id}/download"),
            Some(&stranger),
            None
        )
        .await
        .status(),
        404,
        "private: not even found"
    );
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/images/{id}/download"),
            Some(&user),
            None,
        )
        .await;
    let link: Value = resp.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(
        url.contains("response-content-disposition=attachment"),
        "{url}"
    );
    assert!(link["filename"].as_str().unwrap().starts_with(&id));
    app.patch_image(&user, &id, json!({"public": true})).await;
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/images/{id}/download"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .send(
            Method::POST,
            &format!("/v1/images/{id}/download"),
            Some(&stranger),
            Some(json!({"variant": "poster"})),
        )
        .await;
    assert_eq!(problem_code(resp, 400).await, "invalid_variant");

    let history = app.get_json("/v1/downloads", &user).await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(items[0]["by"], "other", "newest first");
    assert_eq!(items[1]["by"], "owner");
    for d in items {
        assert_eq!(d["image_id"], id.as_str());
        assert_eq!(d["variant"], "original");
        assert!(d["downloaded_at"].is_string());
        assert!(
            !d.to_string().contains(&stranger.sub),
            "the downloader is not named"
        );
    }
    let theirs = app.get_json("/v1/downloads", &stranger).await;
    assert!(theirs["items"].as_array().unwrap().is_empty());
    let page = app.get_json("/v1/downloads?limit=1", &user).await;
    let next = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!("/v1/downloads?limit=1&cursor={next}"), &user)
        .await;
    assert_eq!(rest["items"][0]["by"], "owner");
}

/// R5 over R2: a hold on the owner keeps an expired upload's objects (it is hidden from the
/// API); lifting the hold lets the pipeline finish.
#[tokio::test]
async fn r5_a_hold_keeps_an_expired_upload_until_it_is_lifted() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let id = app.ready_upload(&user, png(16, 16, [7, 70, 140])).await;
    let admin = app.admin().await;
    let hold = app
        .place_hold(
            &admin,
            json!({"user_id": user.sub, "reason": "legal request"}),
        )
        .await;
    let later = Utc::now() + Duration::hours(25);
    let report = app.sweep_at(later).await;
    assert_eq!(report.uploads_expired, 1, "{report:?}");
    assert_eq!(
        app.get(&format!("/v1/uploads/{id}"), &user).await.status(),
        404
    );
    let prefix = shared::objects::upload_prefix(&user.sub, &id);
    assert_eq!(
        app.app().objects().list(&prefix).await.unwrap().len(),
        1,
        "held"
    );

    let path = format!("/v1/admin/holds/{}", hold["id"].as_str().unwrap());
    assert_eq!(
        app.send(Method::DELETE, &path, Some(&admin), None)
            .await
            .status(),
        204
    );
    app.sweep_at(later).await;
    assert!(app.app().objects().list(&prefix).await.unwrap().is_empty());
    assert!(app
        .app()
        .store
        .get_upload(&user.sub, &id)
        .await
        .unwrap()
        .is_none());
}
