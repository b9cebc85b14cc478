//! `export`: the SQS worker that builds exports (D4). Reports per message: only failed message
//! ids are returned, so the queue redelivers just those; a message for an export already built
//! does nothing (idempotent by export id).

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS
};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};
use shared::services::exports::{self, ExportMessage};
use shared::App;
use tracing::Instrument;

pub async fn handle(app: &App, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let request_id = event.context.request_id.clone();
    let mut response = SqsBatchResponse::default();
    // One at a time: an export streams many objects and must keep its memory bounded.
    for record in event.payload.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let receives: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let span =
            tracing::info_span!("message", request_id = %request_id, message_id = %message_id);
        let outcome: Result<(), String> = async {
            let msg: ExportMessage =
                serde_json::from_str(record.body.as_deref().unwrap_or_default())
                    .map_err(|e| format!("not an export message: {e}"))?;
            match exports::run(app, &msg, chrono::Utc::now()).await {
                Ok(()) => Ok(()),
                // The queue's last delivery (its redrive policy's maxReceiveCount): failed
                // for good, so the user sees it and may ask again.
                Err(e) if receives >= exports::MAX_DELIVERIES => {
                    let reason = format!("{e:#}");
                    tracing::error!(reason = %reason, "export failed for good");
                    exports::give_up(app, &msg, &reason)
                        .await
                        .map_err(|e| format!("{e:#}"))
                }
                Err(e) => Err(format!("{e:#}")),
            }
        }
        .instrument(span)
        .await;
        if let Err(reason) = outcome {
            tracing::error!(reason = %reason, "export failed; it will be redelivered");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}
