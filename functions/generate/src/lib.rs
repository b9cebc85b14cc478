//! `generate`: the SQS worker. Reports per message: only failed message ids are returned, so
//! the queue redelivers just those.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS | ports::PROVIDER
};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use shared::domain::generation::JobMessage;
use shared::services::worker;
use shared::App;
use tracing::Instrument;

pub async fn handle(app: &App, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let request_id = event.context.request_id.clone();
    // The records of a batch are independent jobs: process them concurrently, so a batch takes
    // as long as its slowest job rather than the sum of all.
    let outcomes = futures::future::join_all(event.payload.records.into_iter().map(|record| {
        let message_id = record.message_id.clone().unwrap_or_default();
        let span =
            tracing::info_span!("message", request_id = %request_id, message_id = %message_id);
        let worker_id = format!("{request_id}/{message_id}");
        async move {
            let outcome: Result<(), String> = async {
                let msg: JobMessage =
                    serde_json::from_str(record.body.as_deref().unwrap_or_default())
                        .map_err(|e| format!("not a job message: {e}"))?;
                worker::process(app, &msg, &worker_id)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e} (retryable: {})", e.retryable))
            }
            .await;
            if let Err(reason) = &outcome {
                tracing::error!(reason = %reason, "message failed; it will be redelivered");
            }
            (message_id, outcome.is_err())
        }
        .instrument(span)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, failed) in outcomes {
        if failed {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}
