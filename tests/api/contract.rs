//! The API contract (`shared/openapi.json`, served at `GET /v1/openapi.json`): its operations
//! are exactly the routes of the template and the dev host, and every response the integration
//! tests receive through `TestApp::send` is validated against it (status documented, content
//! type documented, body valid against the schema).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use crate::helpers::spawn_app;

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(shared::openapi::DOCUMENT).expect("valid JSON"))
}

/// The document's path template matching a concrete path.
fn path_template(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let paths = document()["paths"].as_object()?;
    // Literal segments win over parameters (`/v1/me/data` before `/v1/me/{x}`).
    let mut best: Option<(&'static str, usize)> = None;
    for template in paths.keys() {
        let pattern: Vec<&str> = template.split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut literals = 0;
        let matched = pattern.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') && p.ends_with('}') {
                !s.is_empty()
            } else {
                literals += 1;
                p == s
            }
        });
        if matched && best.is_none_or(|(_, l)| literals > l) {
            best = Some((template.as_str(), literals));
        }
    }
    best.map(|(t, _)| t)
}

type Validators = HashMap<(String, String, String, String), jsonschema::Validator>;

fn validate(
    key: (String, String, String, String),
    schema: &Value,
    instance: &Value,
) -> Result<Vec<String>, String> {
    static CACHE: OnceLock<Mutex<Validators>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if !cache.contains_key(&key) {
        // The response's schema with the document's components beside it, so its
        // `#/components/schemas/...` references resolve.
        let mut root = schema.clone();
        if let Some(obj) = root.as_object_mut() {
            obj.insert("components".into(), document()["components"].clone());
            obj.insert(
                "$schema".into(),
                json!("https://json-schema.org/draft/2020-12/schema"),
            );
        }
        let v = jsonschema::validator_for(&root).map_err(|e| format!("schema: {e}"))?;
        cache.insert(key.clone(), v);
    }
    Ok(cache[&key]
        .iter_errors(instance)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect())
}

/// Checks one response against the document. `Err` names what does not conform.
pub fn check(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let Some(template) = path_template(path) else {
        // Not an operation of the API (the dev host's own 404 for unknown routes).
        return Ok(());
    };
    let op = &document()["paths"][template][method.to_lowercase()];
    if op.is_null() {
        return Ok(());
    }
    let responses = &op["responses"];
    let status_key = status.to_string();
    let class_key = format!("{}XX", status / 100);
    // The exact status, then its class (`4XX`), then `default`.
    let mut response = [status_key.as_str(), class_key.as_str(), "default"]
        .into_iter()
        .map(|k| &responses[k])
        .find(|r| !r.is_null())
        .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?;
    // Follow a `$ref` to components/responses.
    if let Some(r) = response["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        response = &document()["components"]["responses"][name];
    }
    let content = &response["content"];
    if body.is_empty() {
        return Ok(());
    }
    let ctype = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let media = &content[&ctype];
    if media.is_null() {
        return Err(format!(
            "{method} {template} {status}: content type {ctype:?} is not documented"
        ));
    }
    let schema = &media["schema"];
    if schema.is_null() || !ctype.contains("json") {
        return Ok(());
    }
    let instance: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{method} {template} {status}: body is not JSON: {e}"))?;
    let key = (
        method.to_string(),
        template.to_string(),
        status.to_string(),
        ctype.clone(),
    );
    let errors = validate(key, schema, &instance)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {template} {status}: body does not match the document: {}",
            errors.join("; ")
        ))
    }
}

#[test]
fn the_document_names_exactly_the_routes_of_the_template_and_the_dev_host() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            documented.insert(format!("{} {path}", method.to_uppercase()));
            let route = devstack::routes::ROUTES
                .iter()
                .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path);
            if let Some(route) = route {
                // The security scheme says what the authorizer does.
                let secured = op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
                assert_eq!(
                    secured, route.authorized,
                    "{method} {path}: security differs from the authorizer"
                );
                // S2: every operation documents its rate limit answer.
                assert!(
                    !op["responses"]["429"].is_null(),
                    "{method} {path} does not document 429"
                );
            }
        }
    }
    let routes: BTreeSet<String> = devstack::routes::ROUTES.iter().map(|r| r.key()).collect();
    assert_eq!(
        documented, routes,
        "the OpenAPI document and the routes differ"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(!doc["components"]["securitySchemes"]["bearer"].is_null());
}

#[tokio::test]
async fn the_document_is_served_and_validates_what_the_api_answers() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let served: Value = resp.json().await.unwrap();
    assert_eq!(&served, document());
    // The validator refuses what the document does not allow.
    let problem = br#"{"type":"x","title":"t","status":404,"detail":"d","code":"not_found","request_id":"r"}"#;
    assert!(check(
        "GET",
        "/v1/generations/abc",
        404,
        Some("application/problem+json"),
        problem
    )
    .is_ok());
    assert!(check(
        "GET",
        "/v1/generations/abc",
        418,
        Some("application/problem+json"),
        problem
    )
    .is_err());
    assert!(check("GET", "/v1/generations/abc", 404, Some("text/html"), b"<p>").is_err());
    assert!(check(
        "GET",
        "/v1/generations/abc",
        200,
        Some("application/json"),
        br#"{"id": 5}"#
    )
    .is_err());
}
