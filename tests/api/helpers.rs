//! `spawn_app`: a fresh set of resources (own table, bucket, queues, bus) on the local AWS
//! emulator for each test, the dev host serving the API on a free port, and helpers to act as
//! users, drain the queue and check the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use devstack::{start, Stack, StackOptions};
use serde_json::{json, Value};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub stack: Stack,
}

pub struct User {
    pub sub: String,
    pub token: String,
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the suite with infra/test, which starts the local AWS emulator",
    )
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &ulid::Ulid::new().to_string().to_lowercase()[16..]
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A stack whose configuration is overridden by `env` (e.g. `IMAGE_PROVIDER`); tests drive the
/// worker and the sweep themselves.
pub async fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    spawn(env, false, None, None).await
}

/// A stack whose application's AWS calls are counted into the returned log.
pub async fn spawn_counted() -> (TestApp, Arc<devstack::calls::CallLog>) {
    let log = Arc::new(devstack::calls::CallLog::default());
    (spawn(&[], false, None, Some(log.clone())).await, log)
}

/// A stack like `infra/dev` runs it: the dev host polls the queue and fires the sweep itself.
pub async fn spawn_dev_host(sweep_every: Duration) -> TestApp {
    spawn(&[], true, Some(sweep_every), None).await
}

async fn spawn(
    env: &[(&str, &str)],
    run_workers: bool,
    sweep_every: Option<Duration>,
    calls: Option<Arc<devstack::calls::CallLog>>,
) -> TestApp {
    shared::telemetry::init_for_tests();
    let stack = start(StackOptions {
        prefix: unique("t"),
        endpoint: endpoint(),
        addr: ([127, 0, 0, 1], 0).into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        inherit_env: false,
        run_workers,
        sweep_every,
        retry_delay_secs: 0,
        jwt_secret: "test-secret".into(),
        calls,
    })
    .await
    .expect("local stack starts");
    TestApp {
        base: format!("http://{}", stack.addr),
        http: reqwest::Client::new(),
        stack,
    }
}

impl TestApp {
    pub fn app(&self) -> &shared::App {
        &self.stack.app
    }

    pub async fn token(&self, sub: &str, email: Option<&str>) -> String {
        let resp = self
            .http
            .post(format!("{}/dev/token", self.base))
            .json(&json!({"sub": sub, "email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A signed-in user who has not onboarded yet.
    pub async fn new_user(&self) -> User {
        let sub = unique("user-");
        let token = self.token(&sub, Some(&format!("{sub}@example.com"))).await;
        User { sub, token }
    }

    /// A user who has onboarded (and received the signup credits).
    pub async fn onboarded_user(&self) -> User {
        let user = self.new_user().await;
        let resp = self
            .send(
                reqwest::Method::POST,
                "/v1/me",
                Some(&user),
                Some(json!({"display_name": "Tester", "age_confirmed": true})),
            )
            .await;
        assert_eq!(resp.status(), 201);
        user
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&User>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let method_name = method.to_string();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(u) = user {
            req = req.bearer_auth(&u.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        contract_checked(&method_name, path, req.send().await.unwrap()).await
    }

    /// A GET that must answer JSON (any status), parsed.
    pub async fn get_json(&self, path: &str, user: &User) -> Value {
        self.get(path, user).await.json().await.unwrap()
    }

    /// The actions of the audit log, newest first, as an admin reads them.
    pub async fn audit_actions(&self, admin: &User) -> Vec<String> {
        self.get_json("/v1/admin/audit", admin).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn get(&self, path: &str, user: &User) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, Some(user), None)
            .await
    }

    pub async fn generate(&self, user: &User, body: Value) -> reqwest::Response {
        self.send(
            reqwest::Method::POST,
            "/v1/generations",
            Some(user),
            Some(body),
        )
        .await
    }

    /// Delivers queued messages to the worker, as the event source mapping would, until the
    /// queue is empty.
    pub async fn drain(&self) {
        let mut idle = 0;
        while idle < 2 {
            let n = devstack::workers::deliver_once(self.app(), &self.stack.queue, 10, 0)
                .await
                .expect("delivery works");
            idle = if n == 0 { idle + 1 } else { 0 };
        }
    }

    /// Delivers queued export messages to the export worker until the queue is empty.
    pub async fn drain_exports(&self) {
        let mut idle = 0;
        while idle < 2 {
            let n = devstack::workers::deliver_once(self.app(), &self.stack.export_queue, 10, 0)
                .await
                .expect("delivery works");
            idle = if n == 0 { idle + 1 } else { 0 };
        }
    }

    pub async fn job(&self, user: &User, id: &str) -> Value {
        let resp = self.get(&format!("/v1/generations/{id}"), user).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn balance(&self, user: &User) -> i64 {
        self.app()
            .store
            .balance(&user.sub)
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// The ledger invariant: the sum of a user's entries equals the balance; returns the
    /// balance.
    pub async fn assert_ledger_consistent(&self, user: &User) -> i64 {
        let balance = self.balance(user).await;
        let entries = self.app().store.ledger_entries(&user.sub).await.unwrap();
        let sum: i64 = entries.iter().map(|e| e.amount).sum();
        assert_eq!(
            sum, balance,
            "ledger {entries:?} does not add up to {balance}"
        );
        balance
    }

    /// Events published on the bus (through the local tap queue).
    pub async fn events(&self) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.stack.sdk);
        let mut out = Vec::new();
        loop {
            let r = sqs
                .receive_message()
                .queue_url(&self.stack.resources.events_tap_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            if r.messages().is_empty() {
                break;
            }
            for m in r.messages() {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                sqs.delete_message()
                    .queue_url(&self.stack.resources.events_tap_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        out
    }
}

/// Checks a problem+json answer and returns its code.
pub async fn problem_code(resp: reqwest::Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string());
    body["code"].as_str().expect("a stable code").to_string()
}

/// Validates a response against the OpenAPI document (panics naming what does not conform)
/// and hands it back unread.
pub async fn contract_checked(
    method: &str,
    path: &str,
    resp: reqwest::Response,
) -> reqwest::Response {
    let status = resp.status();
    let headers = resp.headers().clone();
    let version = resp.version();
    let bytes = resp.bytes().await.unwrap();
    let path = path.split('?').next().unwrap();
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok());
    if let Err(e) = crate::contract::check(method, path, status.as_u16(), ctype, &bytes) {
        panic!(
            "the response does not conform to shared/openapi.json: {e}\nbody: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let mut rebuilt = http::Response::builder().status(status).version(version);
    for (k, v) in &headers {
        rebuilt = rebuilt.header(k, v);
    }
    reqwest::Response::from(rebuilt.body(bytes).unwrap())
}

pub fn gen_body(prompt: &str) -> Value {
    json!({"prompt": prompt, "size": "1024x1024", "quality": "low", "n": 1})
}

// ---------------------------------------------------------------------------------------------
// A local server speaking the OpenAI Images API wire format.

#[derive(Clone, Debug)]
pub enum StubReply {
    /// 200 with `b64_json` images drawn to the request's size and format.
    Images,
    /// An error status with an OpenAI error envelope carrying `code`.
    Error(u16, Option<&'static str>),
    /// An error status whose message, type and code all echo the prompt (a compatible server
    /// that quotes its input).
    Echo(u16),
}

#[derive(Default)]
struct StubState {
    script: Mutex<Vec<StubReply>>,
    requests: Mutex<Vec<Value>>,
    calls: AtomicUsize,
}

pub struct OpenAiStub {
    pub base_url: String,
    state: Arc<StubState>,
}

pub const STUB_KEY: &str = "sk-test-local-stub";

impl OpenAiStub {
    /// Answers with `script` in order; once it runs out, the last reply repeats.
    pub async fn start(script: Vec<StubReply>) -> Self {
        let state = Arc::new(StubState {
            script: Mutex::new(script),
            ..Default::default()
        });
        let router = Router::new()
            .route("/v1/images/generations", post(images))
            .route("/v1/images/edits", post(edits))
            .route("/v1/moderations", post(moderations))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IMAGE_PROVIDER", "openai".into()),
            ("OPENAI_BASE_URL", self.base_url.clone()),
            ("OPENAI_API_KEY", STUB_KEY.into()),
            ("PROVIDER_TIMEOUT_SECS", "5".into()),
        ]
    }
}

fn unauthorized(headers: &axum::http::HeaderMap) -> Option<axum::response::Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (auth != format!("Bearer {STUB_KEY}")).then(|| {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
        )
            .into_response()
    })
}

async fn images(
    State(state): State<Arc<StubState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let mut req: Value = serde_json::from_slice(&body).expect("JSON request");
    req["endpoint"] = json!("generations");
    state.requests.lock().unwrap().push(req.clone());
    reply(&state, req)
}

/// `POST /v1/images/edits`: `multipart/form-data` with text fields and `image[]` file parts.
/// Recorded as JSON: the text fields, and each image's file name, content type and bytes
/// (base64).
async fn edits(
    State(state): State<Arc<StubState>>,
    headers: axum::http::HeaderMap,
    mut form: axum::extract::Multipart,
) -> axum::response::Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let mut req = json!({"endpoint": "edits", "images": []});
    while let Some(field) = form.next_field().await.expect("a multipart body") {
        let name = field.name().unwrap_or("").to_string();
        if name == "image[]" {
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(str::to_string);
            let bytes = field.bytes().await.unwrap();
            req["images"].as_array_mut().unwrap().push(json!({
                "file_name": file_name,
                "content_type": content_type,
                "b64": base64::engine::general_purpose::STANDARD.encode(&bytes),
            }));
        } else {
            let text = field.text().await.unwrap();
            req[name.as_str()] = match name.as_str() {
                "n" => json!(text.parse::<u64>().expect("n is a number")),
                _ => json!(text),
            };
        }
    }
    state.requests.lock().unwrap().push(req.clone());
    reply(&state, req)
}

/// `POST /v1/moderations` in OpenAI's wire format: flags inputs containing `forbidden` (as
/// violence), fails with 503 on `moderation-down`, passes everything else.
async fn moderations(
    State(state): State<Arc<StubState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let mut req: Value = serde_json::from_slice(&body).expect("JSON request");
    req["endpoint"] = json!("moderations");
    state.requests.lock().unwrap().push(req.clone());
    let input = req["input"].as_str().unwrap_or("");
    if input.contains("moderation-down") {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"message": "The server is overloaded.", "type": "server_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    let flagged = input.contains("forbidden");
    let names = [
        "harassment",
        "hate",
        "illicit",
        "self-harm",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    ];
    let categories: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| (n.to_string(), json!(flagged && *n == "violence")))
        .collect();
    let scores: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                json!(if flagged && *n == "violence" {
                    0.93
                } else {
                    0.0001
                }),
            )
        })
        .collect();
    axum::Json(json!({
        "id": "modr-0123",
        "model": req["model"],
        "results": [{
            "flagged": flagged,
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {"violence": ["text"]},
        }],
    }))
    .into_response()
}

fn reply(state: &StubState, req: Value) -> axum::response::Response {
    let reply = {
        let mut script = state.script.lock().unwrap();
        if script.len() > 1 {
            script.remove(0)
        } else {
            script.first().cloned().unwrap_or(StubReply::Images)
        }
    };
    match reply {
        StubReply::Images => {
            let (w, h) = req["size"].as_str().unwrap().split_once('x').unwrap();
            let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
            let format = shared::domain::generation::OutputFormat::parse(
                req["output_format"].as_str().unwrap(),
            )
            .unwrap();
            let n = req["n"].as_u64().unwrap() as u8;
            let data: Vec<Value> = (0..n)
                .map(|i| {
                    let img = shared::provider::local::render(
                        req["prompt"].as_str().unwrap(),
                        1,
                        i,
                        w,
                        h,
                    );
                    let bytes = shared::provider::local::encode(&img, format).unwrap();
                    json!({"b64_json": base64::engine::general_purpose::STANDARD.encode(bytes)})
                })
                .collect();
            axum::Json(json!({
                "created": 1_795_345_200,
                "data": data,
                "usage": {"total_tokens": 100, "input_tokens": 50, "output_tokens": 50,
                          "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}},
            }))
            .into_response()
        }
        StubReply::Echo(status) => {
            let prompt = req["prompt"].as_str().unwrap_or("").to_string();
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"error": {
                    "message": format!("cannot draw: {prompt}"),
                    "type": prompt,
                    "param": "prompt",
                    "code": prompt,
                }})),
            )
                .into_response()
        }
        StubReply::Error(status, code) => (
            axum::http::StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"error": {
                "message": if code == Some("moderation_blocked") {
                    "Your request was rejected as a result of our safety system."
                } else {
                    "The server had an error while processing your request."
                },
                "type": if status >= 500 { "server_error" } else { "invalid_request_error" },
                "param": null,
                "code": code,
            }})),
        )
            .into_response(),
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl TestApp {
    /// Requests a generation that must be accepted; returns its id.
    pub async fn create(&self, user: &User, body: Value) -> String {
        let resp = self.generate(user, body).await;
        assert_eq!(resp.status(), 202);
        let job: Value = resp.json().await.unwrap();
        job["id"].as_str().unwrap().to_string()
    }
}

impl TestApp {
    pub async fn delete_generation(&self, user: &User, id: &str) -> reqwest::Response {
        self.send(
            reqwest::Method::DELETE,
            &format!("/v1/generations/{id}"),
            Some(user),
            None,
        )
        .await
    }

    /// The keys stored for one generation.
    pub async fn objects_of(&self, user: &User, id: &str) -> Vec<String> {
        self.app()
            .objects()
            .list(&shared::objects::generation_prefix(&user.sub, id))
            .await
            .unwrap()
    }
}

impl TestApp {
    /// Runs the retention sweep as if the clock read `now`.
    pub async fn sweep_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> shared::services::sweep::SweepReport {
        shared::services::sweep::run(self.app(), now).await.unwrap()
    }
}

impl TestApp {
    /// Claims a job as worker `owner` would, with a lease of `lease_secs`; the claim must win.
    pub async fn claim(
        &self,
        user: &User,
        id: &str,
        owner: &str,
        now: chrono::DateTime<chrono::Utc>,
        lease_secs: u64,
    ) {
        let outcome = self
            .app()
            .store
            .claim_job(&user.sub, id, owner, now, Duration::from_secs(lease_secs))
            .await
            .unwrap();
        assert!(
            matches!(outcome, shared::store::ClaimOutcome::Claimed(_)),
            "claim by {owner} lost"
        );
    }

    pub async fn idempotency_record_exists(&self, user: &User, key: &str) -> bool {
        self.app()
            .store
            .get_idempotency(&user.sub, key)
            .await
            .unwrap()
            .is_some()
    }
}

// ---------------------------------------------------------------------------------------------
// Privacy: admins, the identity provider, faults in front of the real S3 adapter, the raw stores.

pub const ADMIN_GROUP: &str = "admins";

impl TestApp {
    /// A signed-in member of the admin group (not onboarded: admins need no account).
    pub async fn admin(&self) -> User {
        let sub = unique("admin-");
        let resp = self
            .http
            .post(format!("{}/dev/token", self.base))
            .json(&json!({"sub": sub, "groups": [ADMIN_GROUP]}))
            .send()
            .await
            .unwrap();
        let token = resp.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        User { sub, token }
    }

    pub fn cognito(&self) -> aws_sdk_cognitoidentityprovider::Client {
        aws_sdk_cognitoidentityprovider::Client::new(&self.stack.sdk)
    }

    /// A user signed up in the (emulated) Cognito user pool, signed in with its subject.
    pub async fn cognito_user(&self) -> User {
        let email = format!("{}@example.com", unique("c"));
        let out = self
            .cognito()
            .admin_create_user()
            .user_pool_id(&self.stack.resources.user_pool_id)
            .username(&email)
            .send()
            .await
            .unwrap();
        let sub = out.user().unwrap().username().unwrap().to_string();
        let token = self.token(&sub, Some(&email)).await;
        User { sub, token }
    }

    pub async fn cognito_user_exists(&self, sub: &str) -> bool {
        self.cognito()
            .admin_get_user()
            .user_pool_id(&self.stack.resources.user_pool_id)
            .username(sub)
            .send()
            .await
            .is_ok()
    }

    pub async fn onboard(&self, user: &User) -> reqwest::Response {
        self.send(
            reqwest::Method::POST,
            "/v1/me",
            Some(user),
            Some(json!({"display_name": "Tester Name", "age_confirmed": true})),
        )
        .await
    }

    /// Every item of this test's table (a Scan is fine in tests).
    pub async fn scan_table(
        &self,
    ) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        scan_table(&self.stack.sdk, &self.stack.resources.table_name).await
    }

    /// Every item of the table as JSON (`serde_dynamo`).
    pub async fn scan_json(&self) -> Vec<Value> {
        self.scan_table()
            .await
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).expect("an item maps to JSON"))
            .collect()
    }

    /// Suspends `user` with a plain write to the profile, behind the application's back (no
    /// gallery update): what a failed follow-up leaves.
    pub async fn suspend_behind_the_back(&self, user: &User) {
        aws_sdk_dynamodb::Client::new(&self.stack.sdk)
            .update_item()
            .table_name(&self.stack.resources.table_name)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{}", user.sub)),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
            )
            .update_expression("SET suspension_reason = :r")
            .expression_attribute_values(
                ":r",
                aws_sdk_dynamodb::types::AttributeValue::S("test".into()),
            )
            .send()
            .await
            .unwrap();
    }

    /// Every object key of this test's bucket.
    pub async fn all_objects(&self) -> Vec<String> {
        self.app().objects().list("").await.unwrap()
    }

    /// The same application with S3 deletes failing (`fail_deletes` on).
    pub fn with_failing_deletes(&self) -> (shared::App, Arc<FaultyObjects>) {
        let faulty = Arc::new(FaultyObjects {
            inner: self.app().objects_shared(),
            fail_deletes: std::sync::atomic::AtomicBool::new(true),
            fail_uploads: std::sync::atomic::AtomicBool::new(false),
        });
        (self.app().clone().with_objects(faulty.clone()), faulty)
    }

    /// `DELETE /v1/me` with the confirmation.
    pub async fn delete_account(&self, user: &User) -> reqwest::Response {
        self.send(
            reqwest::Method::DELETE,
            "/v1/me",
            Some(user),
            Some(json!({"confirm": "delete my account"})),
        )
        .await
    }

    pub async fn place_hold(&self, admin: &User, body: Value) -> Value {
        let resp = self
            .send(
                reqwest::Method::POST,
                "/v1/admin/holds",
                Some(admin),
                Some(body),
            )
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }
}

pub async fn scan_table(
    sdk: &aws_config::SdkConfig,
    table: &str,
) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(out.items().iter().cloned());
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

/// A wrapper in front of the real S3 adapter that fails deletes while `fail_deletes` is on.
pub struct FaultyObjects {
    pub inner: Arc<dyn shared::objects::Objects>,
    pub fail_deletes: std::sync::atomic::AtomicBool,
    /// Streamed uploads fail after their first MiB (a part upload that keeps failing).
    pub fail_uploads: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl shared::objects::Objects for FaultyObjects {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()> {
        self.inner.put(key, bytes, content_type, backstop).await
    }
    async fn copy(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        backstop: bool,
    ) -> anyhow::Result<()> {
        self.inner.copy(from, to, content_type, backstop).await
    }
    async fn presign_get(&self, key: &str, ttl: Duration) -> anyhow::Result<String> {
        self.inner.presign_get(key, ttl).await
    }
    async fn presign_download(
        &self,
        key: &str,
        ttl: Duration,
        filename: &str,
    ) -> anyhow::Result<String> {
        self.inner.presign_download(key, ttl, filename).await
    }
    async fn presign_post(
        &self,
        key: &str,
        content_type: &str,
        max_size: u64,
        ttl: Duration,
    ) -> anyhow::Result<shared::presigned_post::PresignedPost> {
        self.inner
            .presign_post(key, content_type, max_size, ttl)
            .await
    }
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }
    async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        self.inner.size(key).await
    }
    async fn get_stream(&self, key: &str) -> anyhow::Result<Option<shared::objects::ByteReader>> {
        self.inner.get_stream(key).await
    }
    async fn put_stream(
        &self,
        key: &str,
        content_type: &str,
        backstop: bool,
        reader: shared::objects::ByteReader,
        commit: tokio::sync::oneshot::Receiver<bool>,
    ) -> anyhow::Result<u64> {
        if self.fail_uploads.load(Ordering::SeqCst) {
            use tokio::io::AsyncReadExt;
            let mut reader = reader;
            let mut first = vec![0u8; 1 << 20];
            let _ = reader.read_exact(&mut first).await;
            anyhow::bail!("injected fault: UploadPart failed");
        }
        self.inner
            .put_stream(key, content_type, backstop, reader, commit)
            .await
    }
    async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<usize> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            anyhow::bail!("injected fault: S3 DeleteObjects timed out");
        }
        self.inner.delete_prefix(prefix).await
    }
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn set_backstop(&self, prefix: &str, on: bool) -> anyhow::Result<usize> {
        self.inner.set_backstop(prefix, on).await
    }
    async fn tags(&self, key: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.inner.tags(key).await
    }
    async fn ping(&self) -> anyhow::Result<()> {
        self.inner.ping().await
    }
}

/// The caller a handler would see for `user`.
pub fn caller(user: &User) -> shared::http::Caller {
    shared::http::Caller {
        user_id: shared::domain::user::UserId::parse(&user.sub).unwrap(),
        email: None,
        groups: vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// Stripe: events built from Stripe's own example objects, signed as Stripe signs them.

fn stripe_fixtures() -> &'static Value {
    static FIXTURES: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../infra/stripe/fixtures3.json");
        let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        all["resources"].clone()
    })
}

/// Stripe's example object of `resource` with `changes` merged in (objects merge, the rest
/// replaces).
pub fn stripe_object(resource: &str, changes: Value) -> Value {
    fn merge(base: &mut Value, changes: &Value) {
        match (base, changes) {
            (Value::Object(b), Value::Object(c)) => {
                for (k, v) in c {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (b, c) => *b = c.clone(),
        }
    }
    let mut object = stripe_fixtures()[resource].clone();
    assert!(object.is_object(), "no Stripe fixture for {resource}");
    merge(&mut object, &changes);
    object
}

/// An event as Stripe sends it (Stripe's example event with this type and object).
pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    stripe_object(
        "event",
        json!({"id": id, "type": kind, "created": created, "data": {"object": object}}),
    )
}

impl TestApp {
    pub async fn webhook_secret(&self) -> String {
        let secrets = self.app().webhook_secrets().expect("webhooks configured");
        secrets.get().await.unwrap()[0].expose().to_string()
    }

    /// Delivers `event` to the webhook route, signed now with the deployment's secret.
    pub async fn deliver(&self, event: &Value) -> reqwest::Response {
        let body = event.to_string();
        let t = chrono::Utc::now().timestamp();
        let sig = shared::domain::billing::sign(&self.webhook_secret().await, t, body.as_bytes());
        self.deliver_signed(&body, &format!("t={t},v1={sig}")).await
    }

    pub async fn deliver_signed(&self, body: &str, signature: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/webhooks/stripe", self.base))
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}
