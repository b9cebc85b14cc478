//! The SQS adapter: the generation queue and its dead-letter queue.

use anyhow::Context;
use aws_sdk_sqs::Client;

use crate::domain::generation::JobMessage;

#[derive(Clone)]
pub struct JobQueue {
    client: Client,
    queue_url: String,
    dlq_url: String,
}

/// A message read from the dead-letter queue.
pub struct DeadLetter {
    pub receipt_handle: String,
    pub body: String,
}

impl JobQueue {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }

    pub async fn enqueue(&self, msg: &JobMessage) -> anyhow::Result<()> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(serde_json::to_string(msg)?)
            .send()
            .await
            .context("sending the job message")?;
        Ok(())
    }

    /// Sends a JSON message to another queue of the service (the export queue).
    pub async fn send_to(&self, url: &str, body: &impl serde::Serialize) -> anyhow::Result<()> {
        self.client
            .send_message()
            .queue_url(url)
            .message_body(serde_json::to_string(body)?)
            .send()
            .await
            .context("sending a message")?;
        Ok(())
    }

    /// Up to ten dead-lettered messages (no long poll: the sweep must not wait).
    pub async fn receive_dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
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

    pub async fn delete_dead_letter(&self, receipt_handle: &str) -> anyhow::Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .context("deleting a dead letter")?;
        Ok(())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .send()
            .await
            .context("reaching the generation queue")?;
        Ok(())
    }
}
