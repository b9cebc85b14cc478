//! `generate`: the SQS worker. Reports per message: only failed message ids are returned, so
//! the queue redelivers just those.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use shared::domain::generation::JobMessage;
use shared::services::worker;
use shared::App;
use tracing::Instrument;

pub async fn handle(app: &App, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let request_id = event.context.request_id.clone();
    let mut response = SqsBatchResponse::default();
    for record in event.payload.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let span =
            tracing::info_span!("message", request_id = %request_id, message_id = %message_id);
        let outcome = async {
            let msg: JobMessage = serde_json::from_str(record.body.as_deref().unwrap_or_default())
                .map_err(|e| format!("not a job message: {e}"))?;
            let worker_id = format!("{request_id}/{message_id}");
            worker::process(app, &msg, &worker_id)
                .await
                .map_err(|e| format!("{e} (retryable: {})", e.retryable))
        }
        .instrument(span.clone())
        .await;
        if let Err(reason) = outcome {
            span.in_scope(
                || tracing::error!(reason = %reason, "message failed; it will be redelivered"),
            );
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}
