//! The application context: configuration and the adapters, built once per cold start.

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::Config;
use crate::events::EventBus;
use crate::identity::{self, IdentityProvider};
use crate::objects::{ObjectStore, Objects};
use crate::provider::{self, ImageProvider};
use crate::queue::JobQueue;
use crate::store::Store;

#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub objects: Arc<dyn Objects>,
    pub identity: Arc<dyn IdentityProvider>,
    pub queue: JobQueue,
    pub events: EventBus,
    pub provider: Arc<dyn ImageProvider>,
    /// Prompt moderation: the blocklist, then the moderation endpoint when configured.
    pub moderation: Arc<dyn crate::moderation::Moderator>,
    /// Stripe's webhook signing secrets, read once at init from SSM (empty: not configured).
    pub stripe_webhook_secrets: Arc<Vec<crate::config::Secret>>,
    /// Stripe's API, when its secret key is configured.
    pub payments: Option<Arc<dyn crate::payments::Payments>>,
}

/// Loads the AWS SDK configuration (region, credentials, `AWS_ENDPOINT_URL`) once.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

impl App {
    /// Builds everything from the environment; fails fast naming what is missing.
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = Config::from_env()?;
        let sdk = sdk_config().await;
        Self::new(config, &sdk)?.with_secrets(&sdk).await
    }

    pub fn new(config: Config, sdk: &SdkConfig) -> anyhow::Result<Self> {
        // A custom endpoint (the local emulator) serves buckets by path, not by host name.
        let s3_conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        let provider = provider::from_config(&config.provider, config.provider_timeout)?;
        Ok(Self {
            store: Store::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name),
            objects: Arc::new(
                ObjectStore::new(aws_sdk_s3::Client::from_conf(s3_conf), &config.bucket_name)
                    .with_signing(sdk),
            ),
            identity: identity::from_config(config.user_pool_id.as_deref(), sdk),
            queue: JobQueue::new(
                aws_sdk_sqs::Client::new(sdk),
                &config.generation_queue_url,
                &config.generation_dlq_url,
            ),
            events: EventBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                &config.event_bus_name,
            ),
            provider,
            moderation: Arc::new(crate::moderation::Moderation {
                blocklist: config.moderation.blocklist.clone(),
                endpoint: config
                    .moderation
                    .endpoint
                    .as_ref()
                    .map(|(base, key, model)| {
                        Box::new(crate::moderation::OpenAiModeration::new(
                            base,
                            key.clone(),
                            model,
                            // Well inside an API function's 29 s: a hanging endpoint is a 503.
                            std::time::Duration::from_secs(10),
                        )) as Box<dyn crate::moderation::Moderator>
                    }),
            }),
            stripe_webhook_secrets: Arc::new(vec![]),
            payments: None,
            config,
        })
    }

    /// Reads the secrets the configuration names (once, at init). Secrets never live in plain
    /// environment variables or template defaults.
    pub async fn with_secrets(mut self, sdk: &SdkConfig) -> anyhow::Result<Self> {
        if let Some(param) = &self.config.stripe_webhook_secret_param {
            self.stripe_webhook_secrets = Arc::new(crate::secrets::read_list(sdk, param).await?);
        }
        if let Some(param) = &self.config.stripe_secret_key_param {
            // Not fatal: the rest of the product (and the sweep's other work) goes on; what
            // needs Stripe answers 503 or is retried.
            match crate::secrets::read_list(sdk, param).await.and_then(|key| {
                crate::payments::Stripe::new(
                    key[0].expose(),
                    self.config.stripe_api_base.as_deref(),
                )
            }) {
                Ok(stripe) => self.payments = Some(Arc::new(stripe)),
                Err(e) => {
                    tracing::error!(error = ?e, "Stripe is not configured: its key could not be read")
                }
            }
        }
        Ok(self)
    }

    /// The same application with another object store (tests put a fault-injecting wrapper in
    /// front of the real adapter).
    pub fn with_objects(mut self, objects: Arc<dyn Objects>) -> Self {
        self.objects = objects;
        self
    }

    /// The same application with another table adapter (tests put one whose client fails
    /// chosen calls in front of the real emulator).
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// The same application with another image provider (tests, dev host).
    pub fn with_provider(mut self, provider: Arc<dyn ImageProvider>) -> Self {
        self.provider = provider;
        self
    }
}
