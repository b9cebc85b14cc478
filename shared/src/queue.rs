//! The queue port and its SQS adapter: the generation queue, its dead-letter queue and the
//! export queue. A function is given the queues it uses (`crate::app::ports`); using another is
//! an error naming it.

use anyhow::Context;
use aws_sdk_sqs::Client;

use crate::domain::generation::JobMessage;

#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// Sends a job to the generation queue.
    async fn enqueue(&self, msg: &JobMessage) -> anyhow::Result<()>;
    /// Sends a JSON message to another queue of the service (the export queue).
    async fn send_to(&self, url: &str, body: &serde_json::Value) -> anyhow::Result<()>;
    /// Up to ten dead-lettered messages (no long poll: the sweep must not wait).
    async fn receive_dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>>;
    async fn delete_dead_letter(&self, receipt_handle: &str) -> anyhow::Result<()>;
    /// Reaches the generation queue (health).
    async fn ping(&self) -> anyhow::Result<()>;
}

#[derive(Clone)]
pub struct JobQueue {
    client: crate::lazy::Lazy<Client>,
    queue_url: Option<String>,
    dlq_url: Option<String>,
}

/// A message read from the dead-letter queue.
pub struct DeadLetter {
    pub receipt_handle: String,
    pub body: String,
}

impl JobQueue {
    /// The SQS adapter, with the generation queue and the dead-letter queue when given.
    pub fn new(
        sdk: &crate::lazy::SdkSource,
        queue_url: Option<String>,
        dlq_url: Option<String>,
    ) -> Self {
        Self {
            client: crate::lazy::Lazy::new(sdk, Client::new),
            queue_url,
            dlq_url,
        }
    }

    async fn client(&self) -> &Client {
        self.client.get().await
    }

    fn queue_url(&self) -> anyhow::Result<&str> {
        self.queue_url
            .as_deref()
            .context("this function has no generation queue (GENERATION_QUEUE_URL)")
    }

    fn dlq_url(&self) -> anyhow::Result<&str> {
        self.dlq_url
            .as_deref()
            .context("this function has no dead-letter queue (GENERATION_DLQ_URL)")
    }
}

#[async_trait::async_trait]
impl Queue for JobQueue {
    async fn enqueue(&self, msg: &JobMessage) -> anyhow::Result<()> {
        self.client()
            .await
            .send_message()
            .queue_url(self.queue_url()?)
            .message_body(serde_json::to_string(msg)?)
            .send()
            .await
            .context("sending the job message")?;
        Ok(())
    }

    async fn send_to(&self, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
        self.client()
            .await
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(body)?)
            .send()
            .await
            .context("sending a message")?;
        Ok(())
    }

    async fn receive_dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let out = self
            .client()
            .await
            .receive_message()
            .queue_url(self.dlq_url()?)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(60)
            .send()
            .await
            .context("reading the dead-letter queue")?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(DeadLetter {
                    receipt_handle: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    async fn delete_dead_letter(&self, receipt_handle: &str) -> anyhow::Result<()> {
        self.client()
            .await
            .delete_message()
            .queue_url(self.dlq_url()?)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .context("deleting a dead letter")?;
        Ok(())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.client()
            .await
            .get_queue_attributes()
            .queue_url(self.queue_url()?)
            .send()
            .await
            .context("reaching the generation queue")?;
        Ok(())
    }
}
