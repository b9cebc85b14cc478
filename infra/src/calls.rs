//! Counting the AWS calls an operation makes: a wrapper in front of the process's real HTTPS
//! client (`shared::net`) that names each request's operation before sending it on unchanged.
//! The stack's application can be given one (`StackOptions::calls`); the host's own clients
//! (provisioning, the queue pollers standing in for Lambda's event source mappings) are not
//! counted.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// The operations sent, in order (`dynamodb:GetItem`, `s3:PutObject`, ...).
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<String>>,
}

impl CallLog {
    /// The calls since the last `take`, and a fresh start.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// An SDK HTTP client that records into this log, in front of `inner`.
    pub fn client(self: &Arc<Self>, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(Counting {
            inner,
            log: self.clone(),
        })
    }
}

#[derive(Debug)]
struct Counting {
    inner: SharedHttpClient,
    log: Arc<CallLog>,
}

impl HttpClient for Counting {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(CountingConnector {
            inner: self.inner.http_connector(settings, components),
            log: self.log.clone(),
        })
    }
}

#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    log: Arc<CallLog>,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.log.calls.lock().unwrap().push(operation(&request));
        self.inner.call(request)
    }
}

/// The operation a request performs: from `X-Amz-Target` for the JSON protocols (DynamoDB,
/// SQS, EventBridge, Cognito, SSM), from the method and query for S3's REST protocol.
pub fn operation(request: &HttpRequest) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        let (service, op) = target.split_once('.').unwrap_or(("?", target));
        let service = match service {
            s if s.starts_with("DynamoDB") => "dynamodb",
            "AmazonSQS" => "sqs",
            "AWSEvents" => "events",
            "AWSCognitoIdentityProviderService" => "cognito-idp",
            "AmazonSSM" => "ssm",
            other => other,
        };
        return format!("{service}:{op}");
    }
    let uri = request.uri();
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    // The dev host addresses buckets by path (`/<bucket>/<key>`).
    let path = path
        .split_once("://")
        .map_or(path, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let has_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let has = |name: &str| {
        query
            .split('&')
            .any(|kv| kv == name || kv.starts_with(&format!("{name}=")))
    };
    let op = match request.method() {
        "GET" if has("list-type") => "ListObjectsV2",
        "GET" if has("tagging") => "GetObjectTagging",
        "GET" => "GetObject",
        "HEAD" if has_key => "HeadObject",
        "HEAD" => "HeadBucket",
        "PUT" if has("tagging") => "PutObjectTagging",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if request.headers().get("x-amz-copy-source").is_some() => "CopyObject",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("tagging") => "DeleteObjectTagging",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        other => return format!("s3:{other}?"),
    };
    format!("s3:{op}")
}
