//! The dev host's background side: polls the generation queue and delivers real SQS event
//! batches to the `generate` handler, honouring partial batch failures (failed messages are
//! made visible again after a short delay, successful ones deleted), and fires the sweep on
//! its schedule.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use lambda_runtime::{Context as LambdaContext, LambdaEvent};
use serde_json::{json, Value};
use shared::App;

/// Which function a queue feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worker {
    Generate,
    Export,
}

/// Where a worker's queue is.
#[derive(Clone)]
pub struct QueueTarget {
    pub worker: Worker,
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub arn: String,
    /// Seconds before a failed message is visible again (AWS waits the visibility timeout).
    pub retry_delay_secs: i32,
}

fn lambda_context(function: &str) -> LambdaContext {
    let mut ctx = LambdaContext::default();
    ctx.request_id = ulid::Ulid::new().to_string().to_lowercase();
    ctx.invoked_function_arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{function}");
    ctx.deadline = (chrono::Utc::now().timestamp_millis()
        + i64::from(crate::resources::GENERATE_TIMEOUT_SECS) * 1000) as u64;
    ctx
}

/// Receives one batch (up to `batch_size`) and delivers it; returns how many messages came.
pub async fn deliver_once(
    app: &App,
    q: &QueueTarget,
    batch_size: i32,
    wait_secs: i32,
) -> anyhow::Result<usize> {
    let out = q
        .sqs
        .receive_message()
        .queue_url(&q.url)
        .max_number_of_messages(batch_size)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .context("receiving from the generation queue")?;
    let messages = out.messages();
    if messages.is_empty() {
        return Ok(0);
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": q.arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
    let response = match q.worker {
        Worker::Generate => {
            generate::handle(
                &app.only(generate::PORTS),
                LambdaEvent::new(event, lambda_context("generate")),
            )
            .await
        }
        Worker::Export => {
            export::handle(
                &app.only(export::PORTS),
                LambdaEvent::new(event, lambda_context("export")),
            )
            .await
        }
    }
    .map_err(|e| anyhow::anyhow!("worker handler failed: {e}"))?;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for m in messages {
        let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else {
            continue;
        };
        if failed.contains(&id) {
            q.sqs
                .change_message_visibility()
                .queue_url(&q.url)
                .receipt_handle(handle)
                .visibility_timeout(q.retry_delay_secs)
                .send()
                .await
                .context("returning a failed message")?;
        } else {
            q.sqs
                .delete_message()
                .queue_url(&q.url)
                .receipt_handle(handle)
                .send()
                .await
                .context("deleting a processed message")?;
        }
    }
    Ok(messages.len())
}

/// Polls forever, like the SQS event source mapping (batch size 5).
pub async fn poll(app: Arc<App>, q: QueueTarget) {
    loop {
        match deliver_once(&app, &q, 5, 1).await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = ?e, "queue delivery failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The scheduled event EventBridge sends.
pub fn scheduled_event(rule: &str) -> Value {
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string().to_lowercase(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": [format!("arn:aws:events:us-east-1:000000000000:rule/{rule}")],
        "detail": {},
    })
}

/// Runs the sweep once, as its schedule would.
pub async fn sweep_once(app: &App) -> anyhow::Result<shared::services::sweep::SweepReport> {
    retention_sweep::handle(
        &app.only(retention_sweep::PORTS),
        LambdaEvent::new(
            scheduled_event("retention-sweep"),
            lambda_context("retention-sweep"),
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!("sweep failed: {e}"))
}

/// Fires the sweep every `every`.
pub async fn schedule_sweep(app: Arc<App>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(e) = sweep_once(&app).await {
            tracing::error!(error = ?e, "scheduled sweep failed");
        }
    }
}
