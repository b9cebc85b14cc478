//! Conditional transactions: every balance change goes through here. Conflicts between
//! concurrent transactions are retried with jittered backoff; a cancelled transaction reports
//! which of its items failed their condition.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::TransactWriteItem;
use aws_sdk_dynamodb::Client;

/// Contention that outlasted the retries: the caller should answer 503 and the client retry.
#[derive(Debug, thiserror::Error)]
#[error("write contention on {0}")]
pub struct Contention(pub &'static str);

/// A transaction sent whose outcome is unknown (a timeout, or the connection lost after
/// sending): it may have committed. Callers re-read what it would have written; the client
/// gets 503 and may retry (with its `Idempotency-Key`).
#[derive(Debug, thiserror::Error)]
#[error("the outcome of transaction {what} is unknown: {cause}")]
pub struct Ambiguous {
    pub what: &'static str,
    pub cause: String,
}

pub enum TxnOutcome {
    Committed,
    /// Item `i` of the transaction failed its condition when `failed[i]` is true.
    ConditionFailed(Vec<bool>),
}

impl TxnOutcome {
    pub fn failed_at(&self, index: usize) -> bool {
        match self {
            Self::Committed => false,
            Self::ConditionFailed(f) => f.get(index).copied().unwrap_or(false),
        }
    }
}

const ATTEMPTS: u32 = 8;

pub async fn transact(
    client: &Client,
    what: &'static str,
    items: Vec<TransactWriteItem>,
) -> anyhow::Result<TxnOutcome> {
    for attempt in 0..ATTEMPTS {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(TxnOutcome::Committed),
            Err(e) => e,
        };
        let retryable = match &err {
            SdkError::ServiceError(service) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(cancel) => {
                    let codes: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    if codes.contains(&"ConditionalCheckFailed") {
                        return Ok(TxnOutcome::ConditionFailed(
                            codes
                                .iter()
                                .map(|c| *c == "ConditionalCheckFailed")
                                .collect(),
                        ));
                    }
                    // Another writer got there first, or capacity: worth another try. Anything
                    // else (validation, item size) is a bug to surface, not to retry.
                    codes.iter().all(|c| {
                        matches!(
                            *c,
                            "None"
                                | "TransactionConflict"
                                | "ThrottlingError"
                                | "ProvisionedThroughputExceeded"
                        )
                    })
                }
                TransactWriteItemsError::TransactionInProgressException(_)
                | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
                | TransactWriteItemsError::ThrottlingException(_)
                | TransactWriteItemsError::RequestLimitExceeded(_) => true,
                _ => false,
            },
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => {
                return Err(anyhow::Error::new(Ambiguous {
                    what,
                    cause: format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err)),
                }));
            }
            _ => false,
        };
        if !retryable {
            return Err(anyhow!(err).context(format!("transaction {what}")));
        }
        let base = 20u64 << attempt.min(5);
        let jitter = rand::random::<u64>() % base;
        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
    }
    Err(anyhow!(Contention(what)))
}
