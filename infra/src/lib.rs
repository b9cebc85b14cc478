//! The local stack: provisioning on the AWS emulator (moto server), and the dev host that runs
//! every function's handler in one process. A development tool, never deployed.

pub mod calls;
pub mod host;
pub mod jwt;
pub mod resources;
pub mod routes;
pub mod stripe_standin;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use shared::app::{ports, Settings};
use shared::App;

pub use resources::Resources;

/// The SDK configuration for the emulator: fixed region and dummy credentials.
pub async fn local_sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        // A client of this stack's own: pooled connections belong to the runtime that opened
        // them, and each test has its own runtime.
        .http_client(shared::net::sdk_http_client_on(shared::net::new_client()))
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        .load()
        .await
}

pub struct StackOptions {
    /// Resource names are `<prefix>-<suffix>`.
    pub prefix: String,
    pub endpoint: String,
    pub addr: SocketAddr,
    /// Configuration variables that win over everything else.
    pub env: HashMap<String, String>,
    /// Whether the process environment supplies the rest of the configuration.
    pub inherit_env: bool,
    pub run_workers: bool,
    pub sweep_every: Option<Duration>,
    pub retry_delay_secs: i32,
    pub jwt_secret: String,
    /// Counts the application's AWS calls (tests of the calls per operation).
    pub calls: Option<Arc<calls::CallLog>>,
}

pub struct Stack {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub resources: Resources,
    pub jwt: jwt::DevJwt,
    pub queue: workers::QueueTarget,
    pub export_queue: workers::QueueTarget,
    pub sdk: SdkConfig,
    /// The local Stripe stand-in, when no Stripe key is configured.
    pub stripe: Option<stripe_standin::Handle>,
}

/// Provisions the resources, builds the application and starts serving.
pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
    let sdk = local_sdk_config(&opts.endpoint).await;
    let setting = |name: &str| {
        opts.env
            .get(name)
            .cloned()
            .or_else(|| opts.inherit_env.then(|| std::env::var(name).ok()).flatten())
    };
    let retention = match setting("RETENTION_DAYS") {
        Some(v) => shared::domain::retention::RetentionPolicy::parse(v.trim())
            .map_err(|e| anyhow::anyhow!("RETENTION_DAYS: {e}"))?,
        None => Default::default(),
    };
    let resources = resources::provision(&sdk, &opts.prefix, retention)
        .await
        .with_context(|| {
            format!(
                "provisioning on {} (is the emulator running?)",
                opts.endpoint
            )
        })?;
    let mut provisioned: HashMap<&str, String> = resources.env().into_iter().collect();
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("binding {}", opts.addr))?;
    let addr = listener.local_addr()?;
    // Real Stripe test-mode keys for local work (`STRIPE_SECRET_KEY`, and the secret that
    // `stripe listen` prints as `STRIPE_WEBHOOK_SECRET`) go where the functions read them: SSM.
    if let Some(secret) = setting("STRIPE_WEBHOOK_SECRET") {
        resources::store_secret(&sdk, &resources.stripe_webhook_secret_param, &secret).await?;
    }
    if let Some(key) = setting("STRIPE_SECRET_KEY") {
        resources::store_secret(&sdk, &resources.stripe_secret_key_param, &key).await?;
        provisioned.insert(
            "STRIPE_SECRET_KEY_PARAM",
            resources.stripe_secret_key_param.clone(),
        );
    }
    // Without a Stripe key of its own, the stack talks to the local stand-in, which sends its
    // webhooks to this dev host, signed with the provisioned secret.
    let stripe = if setting("STRIPE_SECRET_KEY_PARAM").is_none()
        && setting("STRIPE_SECRET_KEY").is_none()
    {
        let secret = resources::read_secret(&sdk, &resources.stripe_webhook_secret_param).await?;
        let catalog = shared::domain::billing::Catalog::parse(
            setting("BILLING_CATALOG")
                .as_deref()
                .unwrap_or(shared::domain::billing::DEFAULT_CATALOG),
        )
        .map_err(|e| anyhow::anyhow!("BILLING_CATALOG: {e}"))?;
        let webhook_host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let handle = stripe_standin::start(
            format!("http://{webhook_host}/v1/webhooks/stripe"),
            secret,
            catalog,
        )
        .await?;
        provisioned.insert(
            "STRIPE_SECRET_KEY_PARAM",
            resources.stripe_secret_key_param.clone(),
        );
        provisioned.insert("STRIPE_API_BASE", handle.base_url.clone());
        Some(handle)
    } else {
        None
    };
    // Every port: the host serves each function with only its own (`App::only`).
    let settings = Settings::from_lookup(ports::ALL, &|name| {
        opts.env
            .get(name)
            .cloned()
            .or_else(|| provisioned.get(name).cloned())
            .or_else(|| setting(name))
    })?;
    let app_sdk = match &opts.calls {
        Some(log) => sdk
            .to_builder()
            .http_client(
                log.client(
                    sdk.http_client()
                        .expect("the stack's SDK configuration has an HTTP client"),
                ),
            )
            .build(),
        None => sdk.clone(),
    };
    let app = Arc::new(App::wire::<{ ports::ALL }>(
        settings,
        &shared::lazy::SdkSource::ready(app_sdk),
    ));
    let jwt = jwt::DevJwt::new(opts.jwt_secret.as_bytes());
    let router = host::router(Arc::new(host::Host {
        app: app.clone(),
        jwt: jwt.clone(),
    }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        {
            tracing::error!(error = %e, "dev host stopped");
        }
    });
    let export_queue = workers::QueueTarget {
        worker: workers::Worker::Export,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        url: resources.export_queue_url.clone(),
        arn: resources.export_queue_arn.clone(),
        retry_delay_secs: opts.retry_delay_secs,
    };
    let queue = workers::QueueTarget {
        worker: workers::Worker::Generate,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        url: resources.queue_url.clone(),
        arn: resources.queue_arn.clone(),
        retry_delay_secs: opts.retry_delay_secs,
    };
    if opts.run_workers {
        tokio::spawn(workers::poll(app.clone(), queue.clone()));
        tokio::spawn(workers::poll(app.clone(), export_queue.clone()));
    }
    if let Some(every) = opts.sweep_every {
        tokio::spawn(workers::schedule_sweep(app.clone(), every));
    }
    Ok(Stack {
        addr,
        app,
        resources,
        jwt,
        queue,
        export_queue,
        sdk,
        stripe,
    })
}
