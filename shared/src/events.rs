//! The EventBridge adapter: domain events on the custom bus, for integrations such as email.
//! Events carry ids and outcomes, never prompt text.

use anyhow::Context;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use serde_json::Value;

pub const SOURCE: &str = "imagegen";

/// The events port.
#[async_trait::async_trait]
pub trait Events: Send + Sync {
    /// Publishes one event (`detail_type` such as `generation.completed`).
    async fn publish(&self, detail_type: &str, detail: &Value) -> anyhow::Result<()>;
}

#[derive(Clone)]
pub struct EventBus {
    client: crate::lazy::Lazy<Client>,
    bus: String,
}

impl EventBus {
    pub fn new(sdk: &crate::lazy::SdkSource, bus: impl Into<String>) -> Self {
        Self {
            client: crate::lazy::Lazy::new(sdk, Client::new),
            bus: bus.into(),
        }
    }

    async fn client(&self) -> &Client {
        self.client.get().await
    }
}

#[async_trait::async_trait]
impl Events for EventBus {
    async fn publish(&self, detail_type: &str, detail: &Value) -> anyhow::Result<()> {
        let out = self
            .client()
            .await
            .put_events()
            .entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(SOURCE)
                    .detail_type(detail_type)
                    .detail(detail.to_string())
                    .build(),
            )
            .send()
            .await
            .with_context(|| format!("publishing {detail_type}"))?;
        if out.failed_entry_count() > 0 {
            anyhow::bail!("publishing {detail_type}: {:?}", out.entries());
        }
        Ok(())
    }
}
