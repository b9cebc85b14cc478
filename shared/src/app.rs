//! The application context: the settings and the ports of one function.
//!
//! Each function names the ports it uses ([`ports`]) and builds its context with
//! [`App::from_env`]. Only those ports are built, only their settings are read (and required),
//! and, since the choice is a constant, an optimised binary links only their adapters: a
//! function that names no object store has no S3 client in it. Using a port the function did
//! not name is a programming error, found by the integration suite, which calls every handler
//! with exactly its function's ports ([`App::only`]).
//!
//! Init parses the settings (a missing one stops the function before its first event) and
//! builds nothing else: the SDK configuration and each client are built on first use
//! (`crate::lazy`), the one HTTPS client on the first request (`crate::net`), and Stripe's key
//! and the webhook secrets are read from SSM on first use. Nothing at init reads a file, parses
//! a certificate, calls the network or fetches a secret.

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::{Config, ConfigError, ModerationSettings, ProviderConfig};
use crate::events::{EventBus, Events};
use crate::identity::{self, IdentityProvider};
use crate::lazy::SdkSource;
use crate::moderation::Moderator;
use crate::objects::{ObjectStore, Objects};
use crate::payments::Payments;
use crate::provider::{self, ImageProvider};
use crate::queue::{JobQueue, Queue};
use crate::secrets::LazySecrets;
use crate::store::Store;

/// The ports a function can name, beyond the table every function uses. Each comes with the
/// settings it requires and the IAM permissions its function is given in `template.yaml`.
pub mod ports {
    /// S3, the content bucket (`BUCKET_NAME`).
    pub const OBJECTS: u32 = 1;
    /// Cognito's user directory (`USER_POOL_ID`; another OIDC issuer when unset).
    pub const IDENTITY: u32 = 1 << 1;
    /// SQS, sending to the generation queue (`GENERATION_QUEUE_URL`).
    pub const GENERATION_QUEUE: u32 = 1 << 2;
    /// SQS, the generation queue's dead letters (`GENERATION_DLQ_URL`).
    pub const DEAD_LETTERS: u32 = 1 << 3;
    /// SQS, sending to the export queue (`EXPORT_QUEUE_URL`; exports answer 503 without it).
    pub const EXPORT_QUEUE: u32 = 1 << 4;
    /// EventBridge, the service's bus (`EVENT_BUS_NAME`).
    pub const EVENTS: u32 = 1 << 5;
    /// The image provider (`IMAGE_PROVIDER`, `OPENAI_*`).
    pub const PROVIDER: u32 = 1 << 6;
    /// Prompt moderation (`MODERATION_BLOCKLIST`, `MODERATION_PROVIDER`, `OPENAI_*`).
    pub const MODERATION: u32 = 1 << 7;
    /// Stripe's API, its key in SSM (`STRIPE_SECRET_KEY_PARAM`, `STRIPE_API_BASE`).
    pub const PAYMENTS: u32 = 1 << 8;
    /// Stripe's webhook signing secrets in SSM (`STRIPE_WEBHOOK_SECRET_PARAM`).
    pub const WEBHOOKS: u32 = 1 << 9;
    /// Every port (the dev host, which serves every function from one process).
    pub const ALL: u32 = (1 << 10) - 1;

    /// Each port's name, as `template.yaml`'s checks and the README call it.
    pub const NAMES: [(u32, &str); 10] = [
        (OBJECTS, "objects"),
        (IDENTITY, "identity"),
        (GENERATION_QUEUE, "generation_queue"),
        (DEAD_LETTERS, "dead_letters"),
        (EXPORT_QUEUE, "export_queue"),
        (EVENTS, "events"),
        (PROVIDER, "provider"),
        (MODERATION, "moderation"),
        (PAYMENTS, "payments"),
        (WEBHOOKS, "webhooks"),
    ];

    /// The names of the ports in `set`.
    pub fn names(set: u32) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(p, _)| set & p != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Everything a function with `ports` reads from its environment: the common settings and
/// those of its ports. Parsing fails naming the first missing or malformed variable.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub bucket_name: Option<String>,
    pub generation_queue_url: Option<String>,
    pub generation_dlq_url: Option<String>,
    pub event_bus_name: Option<String>,
    pub provider: Option<ProviderConfig>,
    pub moderation: Option<ModerationSettings>,
}

impl Settings {
    pub fn from_lookup(
        ports: u32,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        use crate::config::required;
        let when = |port: u32| ports & port != 0;
        Ok(Self {
            config: Config::from_lookup(lookup)?,
            bucket_name: when(ports::OBJECTS)
                .then(|| required(lookup, "BUCKET_NAME"))
                .transpose()?,
            generation_queue_url: when(ports::GENERATION_QUEUE)
                .then(|| required(lookup, "GENERATION_QUEUE_URL"))
                .transpose()?,
            generation_dlq_url: when(ports::DEAD_LETTERS)
                .then(|| required(lookup, "GENERATION_DLQ_URL"))
                .transpose()?,
            event_bus_name: when(ports::EVENTS)
                .then(|| required(lookup, "EVENT_BUS_NAME"))
                .transpose()?,
            provider: when(ports::PROVIDER)
                .then(|| ProviderConfig::from_lookup(lookup))
                .transpose()?,
            moderation: when(ports::MODERATION)
                .then(|| ModerationSettings::from_lookup(lookup))
                .transpose()?,
        })
    }
}

/// A function's context. The ports it did not name are absent.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub store: Store,
    /// The ports this context has ([`ports`]).
    pub ports: u32,
    objects: Option<Arc<dyn Objects>>,
    identity: Option<Arc<dyn IdentityProvider>>,
    queue: Option<Arc<dyn Queue>>,
    events: Option<Arc<dyn Events>>,
    provider: Option<Arc<dyn ImageProvider>>,
    /// Prompt moderation: the blocklist, then the moderation endpoint when configured.
    moderation: Option<Arc<dyn Moderator>>,
    /// Stripe's webhook signing secrets (`None`: not configured).
    stripe_webhook_secrets: Option<Arc<LazySecrets>>,
    /// Stripe's API, when its secret key is configured.
    payments: Option<Arc<dyn Payments>>,
}

/// Loads the AWS SDK configuration (region, credentials, `AWS_ENDPOINT_URL`) once, with the
/// process's one HTTPS client. Reads the environment only; credentials are resolved on the
/// first call.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::net::sdk_http_client())
        .load()
        .await
}

impl App {
    /// A function's context with the ports `P`, from the environment. Fails fast naming what
    /// is missing; a function that names ports it does not need requires their settings too.
    pub async fn from_env<const P: u32>() -> anyhow::Result<Self> {
        let settings = Settings::from_lookup(P, &|name| std::env::var(name).ok())?;
        Ok(Self::wire::<P>(settings, &SdkSource::from_env()))
    }

    /// Builds the ports `P` from `settings`. `P` is a constant so that an optimised build of a
    /// function drops the code of every port it does not name.
    pub fn wire<const P: u32>(settings: Settings, sdk: &SdkSource) -> Self {
        let Settings {
            config,
            bucket_name,
            generation_queue_url,
            generation_dlq_url,
            event_bus_name,
            provider,
            moderation,
        } = settings;
        let objects = match bucket_name {
            Some(bucket) if P & ports::OBJECTS != 0 => {
                Some(Arc::new(ObjectStore::lazy(sdk, bucket)) as Arc<dyn Objects>)
            }
            _ => None,
        };
        let identity = (P & ports::IDENTITY != 0)
            .then(|| identity::from_config(config.user_pool_id.as_deref(), sdk));
        let queue = (P & (ports::GENERATION_QUEUE | ports::DEAD_LETTERS | ports::EXPORT_QUEUE)
            != 0)
            .then(|| {
                Arc::new(JobQueue::new(sdk, generation_queue_url, generation_dlq_url))
                    as Arc<dyn Queue>
            });
        let events = match event_bus_name {
            Some(bus) if P & ports::EVENTS != 0 => {
                Some(Arc::new(EventBus::new(sdk, bus)) as Arc<dyn Events>)
            }
            _ => None,
        };
        let provider = match provider {
            Some(p) if P & ports::PROVIDER != 0 => {
                Some(provider::from_config(&p, config.provider_timeout))
            }
            _ => None,
        };
        let moderation = match moderation {
            Some(m) if P & ports::MODERATION != 0 => Some(Arc::new(crate::moderation::Moderation {
                blocklist: m.blocklist,
                endpoint: m.endpoint.map(|(base, key, model)| {
                    Box::new(crate::moderation::OpenAiModeration::new(
                        &base,
                        key,
                        &model,
                        // Well inside an API function's 29 s: a hanging endpoint is a 503.
                        std::time::Duration::from_secs(10),
                    )) as Box<dyn Moderator>
                }),
            }) as Arc<dyn Moderator>),
            _ => None,
        };
        let payments = match &config.stripe_secret_key_param {
            Some(param) if P & ports::PAYMENTS != 0 => Some(Arc::new(
                crate::payments::LazyStripe::new(sdk, param, config.stripe_api_base.as_deref()),
            ) as Arc<dyn Payments>),
            _ => None,
        };
        let stripe_webhook_secrets = match &config.stripe_webhook_secret_param {
            Some(param) if P & ports::WEBHOOKS != 0 => Some(Arc::new(LazySecrets::new(sdk, param))),
            _ => None,
        };
        Self {
            store: Store::lazy(sdk, &config.table_name),
            ports: P,
            objects,
            identity,
            queue,
            events,
            provider,
            moderation,
            stripe_webhook_secrets,
            payments,
            config,
        }
    }

    /// The same context with only the ports in `ports` (the dev host and the tests call each
    /// handler with exactly what its function has).
    pub fn only(&self, ports: u32) -> Self {
        let mut app = self.clone();
        let has = |p: u32| ports & p != 0;
        app.ports = self.ports & ports;
        if !has(ports::OBJECTS) {
            app.objects = None;
        }
        if !has(ports::IDENTITY) {
            app.identity = None;
        }
        let queues = ports & (ports::GENERATION_QUEUE | ports::DEAD_LETTERS | ports::EXPORT_QUEUE);
        app.queue = match app.queue.take() {
            Some(q) if queues != 0 => Some(Arc::new(NamedQueues {
                inner: q,
                ports: queues,
            })),
            _ => None,
        };
        if !has(ports::EXPORT_QUEUE) {
            app.config.export_queue_url = None;
        }
        if !has(ports::EVENTS) {
            app.events = None;
        }
        if !has(ports::PROVIDER) {
            app.provider = None;
        }
        if !has(ports::MODERATION) {
            app.moderation = None;
        }
        if !has(ports::PAYMENTS) {
            app.payments = None;
        }
        if !has(ports::WEBHOOKS) {
            app.stripe_webhook_secrets = None;
        }
        app
    }

    pub fn objects(&self) -> &dyn Objects {
        missing(self.objects.as_deref(), "objects")
    }

    /// The object store itself (tests wrap it).
    pub fn objects_shared(&self) -> Arc<dyn Objects> {
        self.objects.clone().expect("an object store")
    }

    pub fn identity(&self) -> &dyn IdentityProvider {
        missing(self.identity.as_deref(), "identity")
    }

    pub fn queue(&self) -> &dyn Queue {
        missing(self.queue.as_deref(), "a queue")
    }

    pub fn events(&self) -> &dyn Events {
        missing(self.events.as_deref(), "events")
    }

    pub fn provider(&self) -> &dyn ImageProvider {
        missing(self.provider.as_deref(), "provider")
    }

    pub fn moderation(&self) -> &dyn Moderator {
        missing(self.moderation.as_deref(), "moderation")
    }

    /// Stripe's API: `None` when the deployment has no Stripe key (503
    /// `billing_not_configured`). A function without the port may not ask.
    pub fn payments(&self) -> Option<&dyn Payments> {
        self.named(ports::PAYMENTS, "payments");
        self.payments.as_deref()
    }

    /// Stripe's webhook signing secrets: `None` when not configured.
    pub fn webhook_secrets(&self) -> Option<&LazySecrets> {
        self.named(ports::WEBHOOKS, "webhooks");
        self.stripe_webhook_secrets.as_deref()
    }

    /// The same application without Stripe configured (tests).
    pub fn without_payments(mut self) -> Self {
        self.payments = None;
        self
    }

    fn named(&self, port: u32, name: &str) {
        if self.ports & port == 0 {
            no_port(name);
        }
    }

    /// The same application with another object store (tests put a fault-injecting wrapper in
    /// front of the real adapter).
    pub fn with_objects(mut self, objects: Arc<dyn Objects>) -> Self {
        self.objects = Some(objects);
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
        self.provider = Some(provider);
        self
    }
}

/// A port the function did not name: a programming error (its `PORTS`, its IAM policy and its
/// settings must name it), never something a request can cause.
fn missing<'a, T: ?Sized>(port: Option<&'a T>, name: &str) -> &'a T {
    match port {
        Some(p) => p,
        None => no_port(name),
    }
}

fn no_port(name: &str) -> ! {
    panic!("this function has no {name} port: add it to the function's PORTS")
}

/// The queue of a function that names only some of the queue ports (the dev host and the tests
/// share one adapter with every queue URL): the others are refused as on AWS, where the
/// function has neither their URL nor the permission.
struct NamedQueues {
    inner: Arc<dyn Queue>,
    ports: u32,
}

impl NamedQueues {
    fn check(&self, port: u32, name: &str) {
        if self.ports & port == 0 {
            no_port(name);
        }
    }
}

#[async_trait::async_trait]
impl Queue for NamedQueues {
    async fn enqueue(&self, msg: &crate::domain::generation::JobMessage) -> anyhow::Result<()> {
        self.check(ports::GENERATION_QUEUE, "generation_queue");
        self.inner.enqueue(msg).await
    }
    async fn send_to(&self, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        self.check(ports::EXPORT_QUEUE, "export_queue");
        self.inner.send_to(url, body).await
    }
    async fn receive_dead_letters(&self) -> anyhow::Result<Vec<crate::queue::DeadLetter>> {
        self.check(ports::DEAD_LETTERS, "dead_letters");
        self.inner.receive_dead_letters().await
    }
    async fn delete_dead_letter(&self, receipt_handle: &str) -> anyhow::Result<()> {
        self.check(ports::DEAD_LETTERS, "dead_letters");
        self.inner.delete_dead_letter(receipt_handle).await
    }
    async fn ping(&self) -> anyhow::Result<()> {
        self.check(ports::GENERATION_QUEUE, "generation_queue");
        self.inner.ping().await
    }
}
