//! The process's one HTTPS client. Every AWS SDK client (through [`sdk_http_client`]) and every
//! `reqwest` caller (the OpenAI Images API, the moderation endpoint) send through the same
//! connection pool and TLS configuration.
//!
//! Nothing happens at init: the client is built on its first request. Its trust roots are
//! Mozilla's, compiled into the binary (`webpki-roots`, already in parsed form), so no
//! certificate file is read or parsed, ever. The SDK's own default client would read and parse
//! the platform's ~150 CA files while the first SDK client is constructed, before the first
//! event.

use std::sync::OnceLock;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// How long establishing a connection may take (the SDK's own default is 3.1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static HTTPS: OnceLock<reqwest::Client> = OnceLock::new();

/// The shared client, built on first use. Redirects are never followed: AWS answers its own
/// redirects as errors the SDK handles, and the configured OpenAI endpoints answer themselves.
/// Per-call limits are set on each request (`RequestBuilder::timeout`).
pub fn https() -> &'static reqwest::Client {
    HTTPS.get_or_init(new_client)
}

/// A client configured as [`https`] is.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // Lambda freezes a sandbox between events; a connection idle longer than this is
        // likely closed at the other end.
        .pool_idle_timeout(Duration::from_secs(50))
        .build()
        .expect("the HTTPS client builds (no files, no native roots)")
}

/// The AWS SDK's HTTP client: [`https`] behind the SDK's connector interface.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(SdkHttp { client: None })
}

/// The same over a client of its own: the dev host gives each stack one, since a pooled
/// connection belongs to the Tokio runtime that opened it (each test has its own runtime).
pub fn sdk_http_client_on(client: reqwest::Client) -> SharedHttpClient {
    SharedHttpClient::new(SdkHttp {
        client: Some(client),
    })
}

#[derive(Debug, Clone)]
struct SdkHttp {
    client: Option<reqwest::Client>,
}

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(SdkConnector {
            client: self.client.clone(),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Debug)]
struct SdkConnector {
    client: Option<reqwest::Client>,
    /// The SDK's read timeout, when configured (none by default); applied to the whole call,
    /// streamed body included. The SDK's connect timeout gives way to [`CONNECT_TIMEOUT`].
    read_timeout: Option<Duration>,
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let read_timeout = self.read_timeout;
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?
                .map(reqwest::Body::wrap);
            let mut request = reqwest::Request::try_from(request)
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            if let Some(t) = read_timeout {
                *request.timeout_mut() = Some(t);
            }
            let response = client
                .as_ref()
                .unwrap_or_else(|| https())
                .execute(request)
                .await
                .map_err(connector_error)?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Timeouts and connection failures are transient to the SDK's retry strategy (it retries
/// them); anything else is not.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}
