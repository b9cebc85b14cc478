//! The OpenAI Images API (`POST /v1/images/generations`, gpt-image-1 shape; with reference
//! images, `POST /v1/images/edits` as `multipart/form-data` with one `image[]` part each). Base URL, model
//! and key come from configuration, so any server speaking this wire format works.
//!
//! Errors: `400` with code `moderation_blocked` is a moderation refusal (final); `429`, `5xx`,
//! timeouts and connection failures are transient; any other failure is final. API data is not
//! used for training by OpenAI (U3); the request carries no user identifier.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{ImageProvider, ProviderError, ProviderRequest};
use crate::config::Secret;

pub struct OpenAiImages {
    /// Each call's limit (the process's one HTTPS client is shared; see `crate::net`).
    timeout: Duration,
    url: String,
    edits_url: String,
    model: String,
    api_key: Secret,
}

#[derive(Serialize)]
struct ImagesRequest<'a> {
    model: &'a str,
    prompt: &'a str,
    n: u8,
    size: &'a str,
    quality: &'a str,
    output_format: &'a str,
    moderation: &'a str,
}

#[derive(Deserialize)]
struct ImagesResponse {
    data: Vec<ImageData>,
}

#[derive(Deserialize)]
struct ImageData {
    b64_json: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl OpenAiImages {
    pub fn new(base_url: &str, model: &str, api_key: Secret, timeout: Duration) -> Self {
        // The shared client follows no redirect: the configured endpoint answers itself.
        Self {
            timeout,
            url: format!("{}/v1/images/generations", base_url.trim_end_matches('/')),
            edits_url: format!("{}/v1/images/edits", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
        }
    }
}

/// An identifier from a provider's answer (an error `code` or `type`), only when it looks like
/// one: a server that echoes its input must not get the prompt into a log line (C3).
fn identifier(raw: Option<&str>) -> Option<&str> {
    // The error codes and types OpenAI documents; anything else is not repeated.
    const KNOWN: &[&str] = &[
        "moderation_blocked",
        "content_policy_violation",
        "rate_limit_exceeded",
        "insufficient_quota",
        "invalid_api_key",
        "billing_hard_limit_reached",
        "model_not_found",
        "invalid_value",
        "invalid_request_error",
        "image_generation_user_error",
        "server_error",
        "api_error",
        "requests",
        "tokens",
    ];
    raw.filter(|s| KNOWN.contains(s))
}

/// Classifies a non-success answer. The detail names the status and the error's code and type,
/// never its message (which may quote the prompt).
fn classify(status: u16, body: &str) -> ProviderError {
    let parsed = serde_json::from_str::<ErrorEnvelope>(body).ok();
    let code = parsed.as_ref().and_then(|e| e.error.code.clone());
    let kind = parsed.as_ref().and_then(|e| e.error.kind.clone());
    let detail = format!(
        "HTTP {status}, code {}, type {}",
        identifier(code.as_deref()).unwrap_or("-"),
        identifier(kind.as_deref()).unwrap_or("-")
    );
    match status {
        400 if code.as_deref() == Some("moderation_blocked") => ProviderError::Moderation(detail),
        408 | 409 | 429 | 500..=599 => ProviderError::Transient(detail),
        _ => ProviderError::Permanent(detail),
    }
}

#[async_trait]
impl ImageProvider for OpenAiImages {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn generate(&self, req: &ProviderRequest<'_>) -> Result<Vec<Vec<u8>>, ProviderError> {
        let request = if req.references.is_empty() {
            let body = ImagesRequest {
                model: &self.model,
                prompt: req.prompt,
                n: req.n,
                size: req.size.as_str(),
                quality: req.quality.as_str(),
                output_format: req.output_format.as_str(),
                moderation: "auto",
            };
            crate::net::https()
                .post(&self.url)
                .timeout(self.timeout)
                .json(&body)
        } else {
            let mut form = reqwest::multipart::Form::new()
                .text("model", self.model.clone())
                .text("prompt", req.prompt.to_string())
                .text("n", req.n.to_string())
                .text("size", req.size.as_str())
                .text("quality", req.quality.as_str())
                .text("output_format", req.output_format.as_str());
            for (i, png) in req.references.iter().enumerate() {
                let part = reqwest::multipart::Part::bytes(png.clone())
                    .file_name(format!("reference-{i}.png"))
                    .mime_str("image/png")
                    .map_err(|e| ProviderError::Permanent(format!("building the request: {e}")))?;
                form = form.part("image[]", part);
            }
            crate::net::https()
                .post(&self.edits_url)
                .timeout(self.timeout)
                .multipart(form)
        };
        let resp = request
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|e| {
                ProviderError::Transient(format!("request failed: {}", e.without_url()))
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            ProviderError::Transient(format!("reading the response failed: {}", e.without_url()))
        })?;
        if !(200..300).contains(&status) {
            return Err(classify(status, &text));
        }
        let parsed: ImagesResponse = serde_json::from_str(&text)
            // Only where it failed: serde's message can quote the body.
            .map_err(|e| {
                ProviderError::Permanent(format!(
                    "unexpected response ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })?;
        let images = parsed
            .data
            .into_iter()
            .map(|d| {
                let b64 = d.b64_json.ok_or_else(|| {
                    ProviderError::Permanent("response item without b64_json".into())
                })?;
                STANDARD
                    .decode(b64)
                    .map_err(|e| ProviderError::Permanent(format!("bad base64 in response: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if images.len() != usize::from(req.n) {
            return Err(ProviderError::Permanent(format!(
                "asked for {} images, got {}",
                req.n,
                images.len()
            )));
        }
        Ok(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_follow_the_wire_format() {
        let moderation = r#"{"error":{"message":"Your request was rejected","type":"image_generation_user_error","param":null,"code":"moderation_blocked"}}"#;
        assert!(matches!(
            classify(400, moderation),
            ProviderError::Moderation(_)
        ));
        assert!(matches!(classify(429, "{}"), ProviderError::Transient(_)));
        assert!(matches!(classify(503, "oops"), ProviderError::Transient(_)));
        assert!(matches!(
            classify(400, r#"{"error":{"message":"bad size","code":null}}"#),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(classify(401, "{}"), ProviderError::Permanent(_)));
    }

    /// C3: a server that echoes its input gets no prompt text into an error (and so a log line).
    #[test]
    fn c3_provider_errors_never_carry_the_answer_text() {
        let echo = r#"{"error":{"message":"bad prompt: a secret castle","type":"a secret castle","code":"a secret castle"}}"#;
        let one_word = r#"{"error":{"message":"castle","type":"castle","code":"castle"}}"#;
        for status in [400, 429, 500] {
            let e = classify(status, echo).to_string();
            assert!(!e.contains("secret"), "{e}");
            let e = classify(status, one_word).to_string();
            assert!(!e.contains("castle"), "{e}");
        }
        let e = classify(
            400,
            r#"{"error":{"message":"x","type":"invalid_request_error","code":"moderation_blocked"}}"#,
        );
        assert_eq!(
            e,
            ProviderError::Moderation(
                "HTTP 400, code moderation_blocked, type invalid_request_error".into()
            )
        );
    }
}
