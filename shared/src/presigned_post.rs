//! S3 presigned POST (browser-based upload) with a signed policy. aws-sdk-s3 presigns requests,
//! not POST forms, so the policy document is built here and signed with `aws-sigv4`'s own
//! signing-key and signature helpers (SigV4: the string to sign is the base64 policy).
//!
//! The policy pins the exact key (server-chosen, under the owner's prefix), the exact content
//! type, the size range, server-side encryption and the credential; S3 refuses a form that
//! breaks any condition or is sent after the expiration. Why a POST and not a presigned PUT:
//! a PUT's signature can cover `Content-Length` and `Content-Type`, but a POST policy states a
//! size *range* and S3 checks the body against it, and the whole form is one signed document.

use std::time::{Duration, SystemTime};

use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

/// The credentials and place to sign for.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
}

/// What the upload form needs: where to POST and the fields to send before the `file` field.
#[derive(Debug, Clone, Serialize)]
pub struct PresignedPost {
    pub url: String,
    /// Sent as form fields, in this order, before `file`.
    pub fields: Vec<(String, String)>,
    pub expires_at: String,
}

pub struct PostConditions<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    pub min_size: u64,
    pub max_size: u64,
}

/// Builds and signs the policy for one upload, valid for `ttl` from `now`.
pub fn presign(
    url: String,
    signer: &Signer<'_>,
    c: &PostConditions<'_>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> PresignedPost {
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!(
        "{}/{date}/{}/s3/aws4_request",
        signer.access_key_id, signer.region
    );
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    let expiration = expires.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();

    let mut fields: Vec<(String, String)> = vec![
        ("key".into(), c.key.into()),
        ("Content-Type".into(), c.content_type.into()),
        ("x-amz-server-side-encryption".into(), "AES256".into()),
        ("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()),
        ("x-amz-credential".into(), credential),
        ("x-amz-date".into(), amz_date),
    ];
    if let Some(token) = signer.session_token {
        fields.push(("x-amz-security-token".into(), token.into()));
    }
    let mut conditions: Vec<Value> = vec![json!({"bucket": c.bucket})];
    conditions.extend(
        fields
            .iter()
            .map(|(k, v)| json!(["eq", format!("${k}"), v])),
    );
    conditions.push(json!(["content-length-range", c.min_size, c.max_size]));
    let policy = json!({"expiration": expiration, "conditions": conditions});
    let policy_b64 = STANDARD.encode(policy.to_string());

    let at: SystemTime = now.into();
    let key = generate_signing_key(signer.secret_access_key, at, signer.region, "s3");
    let signature = calculate_signature(key, policy_b64.as_bytes());
    fields.push(("policy".into(), policy_b64));
    fields.push(("x-amz-signature".into(), signature));
    PresignedPost {
        url,
        fields,
        expires_at: expires.to_rfc3339(),
    }
}
