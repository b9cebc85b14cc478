//! The AWS calls of every API route and background duty, counted at the application's HTTPS
//! client (`devstack::calls`, in front of the real one) against the emulator, and asserted
//! against the table below (the README shows the same table). Each row is the minimum the
//! design needs; the comments say why a row has more than one call.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// What one operation sent, as `service:Operation` with a count when more than one, sorted.
fn summary(calls: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls {
        *counts.entry(c.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .into_iter()
        .map(|(c, n)| {
            if n == 1 {
                c.to_string()
            } else {
                format!("{c} x{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expected calls of each operation.
const EXPECTED: &[(&str, &str)] = &[
    ("GET /v1/health", "dynamodb:GetItem, s3:HeadBucket, sqs:GetQueueAttributes"),
    ("GET /v1/policy", "-"),
    ("GET /v1/openapi.json", "-"),
    ("POST /v1/me (onboarding)", "dynamodb:GetItem x4, dynamodb:TransactWriteItems, events:PutEvents"),
    ("GET /v1/me", "dynamodb:GetItem x2"),
    ("PATCH /v1/me", "dynamodb:GetItem, dynamodb:UpdateItem"),
    ("GET /v1/me/consents", "dynamodb:GetItem, dynamodb:Query x2"),
    ("PUT /v1/me/consents/{purpose}", "dynamodb:GetItem x2, dynamodb:Query x4, dynamodb:TransactWriteItems, events:PutEvents"),
    ("POST /v1/uploads", "dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem"),
    ("GET /v1/uploads/{id} (first: checks the file)", "dynamodb:GetItem x3, dynamodb:Query x2, dynamodb:UpdateItem, s3:DeleteObjects, s3:GetObject, s3:HeadObject, s3:ListObjectsV2, s3:PutObject"),
    ("GET /v1/uploads/{id} (checked)", "dynamodb:GetItem x2"),
    ("POST /v1/generations", "dynamodb:GetItem x3, dynamodb:TransactWriteItems, dynamodb:UpdateItem, sqs:SendMessage"),
    ("generate (one job, one image)", "dynamodb:GetItem x2, dynamodb:Query, dynamodb:UpdateItem x2, events:PutEvents, s3:GetObject, s3:PutObject"),
    ("GET /v1/generations/{id}", "dynamodb:GetItem x2"),
    ("GET /v1/generations", "dynamodb:GetItem, dynamodb:Query"),
    ("GET /v1/images/{id}", "dynamodb:GetItem x2"),
    ("PATCH /v1/images/{id} (publish)", "dynamodb:GetItem x3, dynamodb:PutItem x2, dynamodb:Query, dynamodb:TransactWriteItems, s3:CopyObject"),
    ("GET /v1/gallery", "dynamodb:BatchGetItem, dynamodb:Query, dynamodb:UpdateItem"),
    ("GET /v1/gallery/{id}", "dynamodb:BatchGetItem, dynamodb:GetItem, dynamodb:UpdateItem"),
    ("POST /v1/images/{id}/download", "dynamodb:GetItem x2, dynamodb:PutItem, dynamodb:UpdateItem"),
    ("GET /v1/downloads", "dynamodb:GetItem, dynamodb:Query"),
    ("GET /v1/me/data", "dynamodb:BatchGetItem, dynamodb:GetItem, dynamodb:Query x2, s3:ListObjectsV2"),
    ("POST /v1/exports", "dynamodb:GetItem, dynamodb:TransactWriteItems, dynamodb:UpdateItem, sqs:SendMessage"),
    ("export (one account: 1 generation, 1 image, 1 upload)", "dynamodb:DeleteItem, dynamodb:Query x2, dynamodb:UpdateItem x2, events:PutEvents, s3:CompleteMultipartUpload, s3:CreateMultipartUpload, s3:GetObject x2, s3:UploadPart"),
    ("GET /v1/exports", "dynamodb:GetItem, dynamodb:Query"),
    ("GET /v1/exports/{id}", "dynamodb:GetItem x2"),
    ("retention-sweep (nothing due)", "dynamodb:Query x43, sqs:ReceiveMessage"),
    ("POST /v1/me/restriction", "dynamodb:GetItem x2, dynamodb:Query x4, dynamodb:TransactWriteItems"),
    ("DELETE /v1/me/restriction", "dynamodb:GetItem x2, dynamodb:Query x4, dynamodb:TransactWriteItems"),
    ("POST /v1/reports/child-account", "dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems, dynamodb:UpdateItem"),
    ("GET /v1/admin/reports", "dynamodb:Query"),
    ("POST /v1/admin/reports/{id}/dismiss", "dynamodb:GetItem x4, dynamodb:Query x2, dynamodb:TransactWriteItems x2"),
    ("POST /v1/admin/reports/{id}/confirm (deactivates the account)", "dynamodb:GetItem x5, dynamodb:Query x3, dynamodb:TransactWriteItems"),
    ("POST /v1/admin/holds", "dynamodb:GetItem, dynamodb:TransactWriteItems, dynamodb:UpdateItem, s3:DeleteObjectTagging x3, s3:ListObjectsV2"),
    ("GET /v1/admin/holds", "dynamodb:Query"),
    ("DELETE /v1/admin/holds/{id}", "dynamodb:GetItem, dynamodb:Query x9, dynamodb:TransactWriteItems, s3:ListObjectsV2, s3:PutObjectTagging x3"),
    ("POST /v1/admin/users/{id}/suspension", "dynamodb:GetItem, dynamodb:Query, dynamodb:TransactWriteItems"),
    ("DELETE /v1/admin/users/{id}/suspension", "dynamodb:GetItem, dynamodb:Query, dynamodb:TransactWriteItems"),
    ("GET /v1/admin/audit", "dynamodb:Query"),
    ("GET /v1/billing", "dynamodb:GetItem x5"),
    ("GET /v1/billing/ledger", "dynamodb:GetItem, dynamodb:Query"),
    ("PUT /v1/billing/spend-cap", "dynamodb:GetItem x5, dynamodb:TransactWriteItems"),
    ("POST /v1/billing/checkout (first: creates the customer)", "dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems x3, dynamodb:UpdateItem, ssm:GetParameter"),
    ("POST /v1/billing/checkout", "dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems x2, dynamodb:UpdateItem"),
    ("POST /v1/webhooks/stripe (checkout.session.completed, a pack)", "dynamodb:DeleteItem, dynamodb:GetItem x2, dynamodb:TransactWriteItems, events:PutEvents, ssm:GetParameter"),
    ("POST /v1/billing/portal", "dynamodb:GetItem x2, dynamodb:UpdateItem"),
    ("GET /v1/billing/invoices", "dynamodb:GetItem x2"),
    ("DELETE /v1/images/{id}", "dynamodb:DeleteItem x2, dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems, s3:DeleteObjects x2, s3:ListObjectsV2 x2"),
    ("DELETE /v1/generations/{id}", "dynamodb:DeleteItem x3, dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems, s3:ListObjectsV2"),
    ("DELETE /v1/uploads/{id}", "dynamodb:DeleteItem, dynamodb:GetItem x3, dynamodb:Query, dynamodb:TransactWriteItems, dynamodb:UpdateItem, s3:DeleteObjects, s3:ListObjectsV2"),
    ("DELETE /v1/me", "dynamodb:GetItem x5, dynamodb:Query x3, dynamodb:TransactWriteItems, events:PutEvents"),
    ("GET /v1/me/deletion", "dynamodb:GetItem"),
];

struct Counter {
    log: Arc<devstack::calls::CallLog>,
    rows: Vec<(String, String)>,
}

impl Counter {
    /// Sends one request, which must succeed, and records its calls as `operation`.
    async fn send(
        &mut self,
        app: &TestApp,
        operation: &str,
        method: Method,
        path: &str,
        user: Option<&User>,
        body: Option<Value>,
    ) -> Value {
        self.start();
        let answer = expect_ok(app.send(method, path, user, body).await).await;
        self.record(operation);
        answer
    }

    fn start(&self) {
        self.log.take();
    }
    fn record(&mut self, operation: &str) -> String {
        let s = summary(&self.log.take());
        self.rows.push((operation.to_string(), s.clone()));
        s
    }
}

/// A successful answer's JSON body (the operation is measured only when it did its work).
async fn expect_ok(resp: reqwest::Response) -> Value {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!((200..300).contains(&got), "{got}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Writes 600 synthetic items into one index partition of `family` with `exp_at` = `at`, or
/// deletes them (`at` `None`), 25 per call, with `ddb` (the host's own client: not counted).
async fn synthetic_index_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    family: &str,
    at: Option<i64>,
) {
    use aws_sdk_dynamodb::types::{AttributeValue as Av, DeleteRequest, PutRequest, WriteRequest};
    for batch in 0..24 {
        let requests = (0..25)
            .map(|i| {
                let mut item = std::collections::HashMap::from([
                    ("pk".to_string(), Av::S(format!("TEST#unexpired-{family}"))),
                    ("sk".to_string(), Av::S(format!("{batch:02}-{i:02}"))),
                ]);
                let request = WriteRequest::builder();
                match at {
                    Some(at) => {
                        item.insert("exp_pk".into(), Av::S(family.to_string()));
                        item.insert("exp_at".into(), Av::N(at.to_string()));
                        request.put_request(
                            PutRequest::builder().set_item(Some(item)).build().unwrap(),
                        )
                    }
                    None => request.delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(item))
                            .build()
                            .unwrap(),
                    ),
                }
                .build()
            })
            .collect();
        let out = ddb
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()));
    }
}

/// Every route and duty, with the number and kind of AWS calls it makes.
#[tokio::test]
async fn every_operation_makes_the_minimum_aws_calls() {
    let (app, log) = spawn_counted().await;
    let mut c = Counter {
        log,
        rows: Vec::new(),
    };
    let user = app.new_user().await;
    let other = app.onboarded_user().await;
    let admin = app.admin().await;

    // Public.
    for path in ["/v1/health", "/v1/policy", "/v1/openapi.json"] {
        c.send(&app, &format!("GET {path}"), Method::GET, path, None, None)
            .await;
    }

    // Account.
    c.send(
        &app,
        "POST /v1/me (onboarding)",
        Method::POST,
        "/v1/me",
        Some(&user),
        Some(json!({"display_name": "Ada", "age_confirmed": true})),
    )
    .await;
    c.send(&app, "GET /v1/me", Method::GET, "/v1/me", Some(&user), None)
        .await;
    c.send(
        &app,
        "PATCH /v1/me",
        Method::PATCH,
        "/v1/me",
        Some(&user),
        Some(json!({"display_name": "Ada L."})),
    )
    .await;
    c.send(
        &app,
        "GET /v1/me/consents",
        Method::GET,
        "/v1/me/consents",
        Some(&user),
        None,
    )
    .await;
    c.send(
        &app,
        "PUT /v1/me/consents/{purpose}",
        Method::PUT,
        "/v1/me/consents/marketing_email",
        Some(&user),
        Some(json!({"granted": true})),
    )
    .await;

    // Uploads.
    let bytes = crate::content::png(32, 32, [200, 30, 30]);
    c.start();
    let upload = app.new_upload(&user, "image/png", bytes.len()).await;
    c.record("POST /v1/uploads");
    let upload_id = upload["id"].as_str().unwrap().to_string();
    assert!((200..300).contains(&app.post_form(&upload, bytes).await));
    c.start();
    let checked = expect_ok(app.get(&format!("/v1/uploads/{upload_id}"), &user).await).await;
    assert_eq!(checked["status"], "ready", "{checked}");
    c.record("GET /v1/uploads/{id} (first: checks the file)");
    c.send(
        &app,
        "GET /v1/uploads/{id} (checked)",
        Method::GET,
        &format!("/v1/uploads/{upload_id}"),
        Some(&user),
        None,
    )
    .await;

    // Generation, the worker, history.
    c.start();
    let job = expect_ok(
        app.generate(
            &user,
            json!({"prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": "low",
                   "n": 1, "reference_ids": [upload_id]}),
        )
        .await,
    )
    .await;
    c.record("POST /v1/generations");
    let gen_id = job["id"].as_str().unwrap().to_string();
    c.start();
    app.drain().await;
    c.record("generate (one job, one image)");
    let done = c
        .send(
            &app,
            "GET /v1/generations/{id}",
            Method::GET,
            &format!("/v1/generations/{gen_id}"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let image_id = done["images"][0]["id"].as_str().unwrap().to_string();
    c.send(
        &app,
        "GET /v1/generations",
        Method::GET,
        "/v1/generations",
        Some(&user),
        None,
    )
    .await;

    // Images, the gallery, downloads.
    c.send(
        &app,
        "GET /v1/images/{id}",
        Method::GET,
        &format!("/v1/images/{image_id}"),
        Some(&user),
        None,
    )
    .await;
    c.start();
    expect_ok(
        app.patch_image(&user, &image_id, json!({"public": true}))
            .await,
    )
    .await;
    c.record("PATCH /v1/images/{id} (publish)");
    // The public copy is made inside S3, stored as `put` would store it.
    let copies = app.app().objects().list("public/").await.unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let tags = app.app().objects().tags(&copies[0]).await.unwrap();
    let (tag, value) = shared::objects::BACKSTOP_TAG;
    assert!(
        tags.contains(&(tag.to_string(), value.to_string())),
        "{tags:?}"
    );
    c.send(
        &app,
        "GET /v1/gallery",
        Method::GET,
        "/v1/gallery",
        None,
        None,
    )
    .await;
    c.send(
        &app,
        "GET /v1/gallery/{id}",
        Method::GET,
        &format!("/v1/gallery/{image_id}"),
        None,
        None,
    )
    .await;
    c.send(
        &app,
        "POST /v1/images/{id}/download",
        Method::POST,
        &format!("/v1/images/{image_id}/download"),
        Some(&user),
        Some(json!({})),
    )
    .await;
    c.send(
        &app,
        "GET /v1/downloads",
        Method::GET,
        "/v1/downloads",
        Some(&user),
        None,
    )
    .await;

    // Access and export.
    c.send(
        &app,
        "GET /v1/me/data",
        Method::GET,
        "/v1/me/data",
        Some(&user),
        None,
    )
    .await;
    let export = c
        .send(
            &app,
            "POST /v1/exports",
            Method::POST,
            "/v1/exports",
            Some(&user),
            Some(json!({})),
        )
        .await;
    let export_id = export["id"].as_str().unwrap().to_string();
    c.start();
    app.drain_exports().await;
    c.record("export (one account: 1 generation, 1 image, 1 upload)");
    c.send(
        &app,
        "GET /v1/exports",
        Method::GET,
        "/v1/exports",
        Some(&user),
        None,
    )
    .await;
    c.send(
        &app,
        "GET /v1/exports/{id}",
        Method::GET,
        &format!("/v1/exports/{export_id}"),
        Some(&user),
        None,
    )
    .await;

    // The sweep with nothing due, twice: its calls must not grow with unexpired content.
    let now = chrono::Utc::now();
    c.start();
    app.sweep_at(now).await;
    let idle = c.record("retention-sweep (nothing due)");
    // More unexpired content than one of the sweep's pages (500) in one shard of each family
    // it reads by time: a sweep that read it (a filter instead of a key condition) would
    // need more calls. Written with the host's own client (not counted).
    let ddb = aws_sdk_dynamodb::Client::new(&app.stack.sdk);
    let table = app.app().store.table().to_string();
    let families = [
        ("CONTENT#0", now.timestamp()),
        ("EXP#0", (now + chrono::Duration::days(10)).timestamp()),
    ];
    for (family, at) in families {
        synthetic_index_items(&ddb, &table, family, Some(at)).await;
    }
    for i in 0..3 {
        app.create(&other, gen_body(&format!("a quiet harbour {i}")))
            .await;
    }
    app.drain().await;
    c.start();
    app.sweep_at(now).await;
    let again = summary(&c.log.take());
    // The synthetic items go (the data-map walk checks every item the suite leaves).
    for (family, _) in families {
        synthetic_index_items(&ddb, &table, family, None).await;
    }
    assert_eq!(
        again, idle,
        "the idle sweep's calls grew with unexpired content"
    );

    // Restriction, reports, admin.
    c.send(
        &app,
        "POST /v1/me/restriction",
        Method::POST,
        "/v1/me/restriction",
        Some(&other),
        None,
    )
    .await;
    c.send(
        &app,
        "DELETE /v1/me/restriction",
        Method::DELETE,
        "/v1/me/restriction",
        Some(&other),
        None,
    )
    .await;
    let report = c
        .send(
            &app,
            "POST /v1/reports/child-account",
            Method::POST,
            "/v1/reports/child-account",
            Some(&user),
            Some(json!({"user_id": other.sub})),
        )
        .await;
    let report_id = report["id"].as_str().unwrap().to_string();
    c.send(
        &app,
        "GET /v1/admin/reports",
        Method::GET,
        "/v1/admin/reports",
        Some(&admin),
        None,
    )
    .await;
    c.send(
        &app,
        "POST /v1/admin/reports/{id}/dismiss",
        Method::POST,
        &format!("/v1/admin/reports/{report_id}/dismiss"),
        Some(&admin),
        Some(json!({"reason": "an adult"})),
    )
    .await;
    let child = app.onboarded_user().await;
    let report = expect_ok(
        app.send(
            Method::POST,
            "/v1/reports/child-account",
            Some(&user),
            Some(json!({"user_id": child.sub})),
        )
        .await,
    )
    .await;
    c.send(
        &app,
        "POST /v1/admin/reports/{id}/confirm (deactivates the account)",
        Method::POST,
        &format!(
            "/v1/admin/reports/{}/confirm",
            report["id"].as_str().unwrap()
        ),
        Some(&admin),
        Some(json!({"reason": "confirmed with the parent"})),
    )
    .await;
    let hold = c
        .send(
            &app,
            "POST /v1/admin/holds",
            Method::POST,
            "/v1/admin/holds",
            Some(&admin),
            Some(json!({"user_id": other.sub, "reason": "a case"})),
        )
        .await;
    c.send(
        &app,
        "GET /v1/admin/holds",
        Method::GET,
        "/v1/admin/holds",
        Some(&admin),
        None,
    )
    .await;
    c.send(
        &app,
        "DELETE /v1/admin/holds/{id}",
        Method::DELETE,
        &format!("/v1/admin/holds/{}", hold["id"].as_str().unwrap()),
        Some(&admin),
        Some(json!({"reason": "closed"})),
    )
    .await;
    let suspension = format!("/v1/admin/users/{}/suspension", other.sub);
    c.send(
        &app,
        "POST /v1/admin/users/{id}/suspension",
        Method::POST,
        &suspension,
        Some(&admin),
        Some(json!({"reason": "abuse"})),
    )
    .await;
    c.send(
        &app,
        "DELETE /v1/admin/users/{id}/suspension",
        Method::DELETE,
        &suspension,
        Some(&admin),
        Some(json!({"reason": "reviewed"})),
    )
    .await;
    c.send(
        &app,
        "GET /v1/admin/audit",
        Method::GET,
        "/v1/admin/audit",
        Some(&admin),
        None,
    )
    .await;

    // Billing, with the local Stripe stand-in (its own calls are HTTP, not AWS).
    c.send(
        &app,
        "GET /v1/billing",
        Method::GET,
        "/v1/billing",
        Some(&user),
        None,
    )
    .await;
    c.send(
        &app,
        "GET /v1/billing/ledger",
        Method::GET,
        "/v1/billing/ledger",
        Some(&user),
        None,
    )
    .await;
    c.send(
        &app,
        "PUT /v1/billing/spend-cap",
        Method::PUT,
        "/v1/billing/spend-cap",
        Some(&user),
        Some(json!({"monthly_cap": 5000})),
    )
    .await;
    let checkout = c
        .send(
            &app,
            "POST /v1/billing/checkout (first: creates the customer)",
            Method::POST,
            "/v1/billing/checkout",
            Some(&user),
            Some(json!({"item": "pack_small"})),
        )
        .await;
    c.send(
        &app,
        "POST /v1/billing/checkout",
        Method::POST,
        "/v1/billing/checkout",
        Some(&user),
        Some(json!({"item": "pack_small"})),
    )
    .await;
    let url = checkout["url"].as_str().unwrap();
    c.start();
    assert_eq!(app.http.post(url).send().await.unwrap().status(), 200);
    c.record("POST /v1/webhooks/stripe (checkout.session.completed, a pack)");
    c.send(
        &app,
        "POST /v1/billing/portal",
        Method::POST,
        "/v1/billing/portal",
        Some(&user),
        Some(json!({})),
    )
    .await;
    c.send(
        &app,
        "GET /v1/billing/invoices",
        Method::GET,
        "/v1/billing/invoices",
        Some(&user),
        None,
    )
    .await;

    // Deleting what was made, then the account.
    c.send(
        &app,
        "DELETE /v1/images/{id}",
        Method::DELETE,
        &format!("/v1/images/{image_id}"),
        Some(&user),
        None,
    )
    .await;
    c.start();
    expect_ok(app.delete_generation(&user, &gen_id).await).await;
    c.record("DELETE /v1/generations/{id}");
    c.send(
        &app,
        "DELETE /v1/uploads/{id}",
        Method::DELETE,
        &format!("/v1/uploads/{upload_id}"),
        Some(&user),
        None,
    )
    .await;
    c.start();
    expect_ok(app.delete_account(&user).await).await;
    c.record("DELETE /v1/me");
    c.send(
        &app,
        "GET /v1/me/deletion",
        Method::GET,
        "/v1/me/deletion",
        Some(&user),
        None,
    )
    .await;

    let mut failures = Vec::new();
    let mut table = String::new();
    for (op, got) in &c.rows {
        table.push_str(&format!("    ({op:?}, {got:?}),\n"));
        match EXPECTED.iter().find(|(o, _)| o == op) {
            Some((_, want)) if want == got => {}
            Some((_, want)) => failures.push(format!("{op}: expected {want}, got {got}")),
            None => failures.push(format!("{op}: not in the table")),
        }
    }
    // Every route of the API is measured.
    for route in devstack::routes::ROUTES {
        let key = route.key();
        if !c
            .rows
            .iter()
            .any(|(o, _)| o == &key || o.starts_with(&format!("{key} (")))
        {
            failures.push(format!("{key}: a route not measured"));
        }
    }
    for (op, _) in EXPECTED {
        if !c.rows.iter().any(|(o, _)| o == op) {
            failures.push(format!("{op}: in the table, not measured"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nthe calls measured:\n{table}",
        failures.join("\n")
    );
}
