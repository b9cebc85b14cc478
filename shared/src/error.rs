//! The one mapping from failures to HTTP: problem+json (RFC 9457) with a stable `code`.
//! Internal errors are logged and answered with a generic body; their text never reaches a client.

use crate::domain::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Something the client can fix or should know: a 4xx with a stable code.
    #[error("{status} {code}: {detail}")]
    Client {
        status: u16,
        code: &'static str,
        detail: String,
    },
    /// A rate limit is spent (S2): 429 `rate_limited` with `Retry-After`.
    #[error("429 rate_limited: {detail}")]
    RateLimited { retry_after: u64, detail: String },
    /// A dependency is briefly unavailable (throttling, contention): 503, safe to retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Everything else: 500, logged with its cause chain.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn client(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(400, code, detail)
    }
    pub fn unauthorized() -> Self {
        Self::client(401, "unauthorized", "a valid bearer token is required")
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(403, code, detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::client(404, "not_found", format!("{what} not found"))
    }
    pub fn onboarding_required() -> Self {
        Self::forbidden(
            "onboarding_required",
            "complete onboarding with POST /v1/me before using this route",
        )
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Client { status, .. } => *status,
            Self::RateLimited { .. } => 429,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Client { code, .. } => code,
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The detail safe to show a client.
    pub fn public_detail(&self) -> String {
        match self {
            Self::Client { detail, .. } | Self::RateLimited { detail, .. } => detail.clone(),
            Self::Unavailable(_) => "the service is busy; retry shortly".into(),
            Self::Internal(_) => "an internal error occurred".into(),
        }
    }

    pub fn title(&self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Content Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(c) = e.downcast_ref::<crate::store::Contention>() {
            return Self::Unavailable(c.to_string());
        }
        if let Some(a) = e.downcast_ref::<crate::store::Ambiguous>() {
            tracing::warn!(error = %a, "a write's outcome is unknown");
            return Self::Unavailable(a.to_string());
        }
        Self::Internal(e)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::bad_request(e.code, e.detail)
    }
}
