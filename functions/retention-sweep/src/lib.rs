//! `retention-sweep`: fired by an EventBridge schedule; runs the sweep once.

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::services::sweep::{self, SweepReport};
use shared::App;
use tracing::Instrument;

pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<SweepReport, Error> {
    let span = tracing::info_span!("sweep", request_id = %event.context.request_id);
    let report = sweep::run(app, Utc::now()).instrument(span).await?;
    if report.errors > 0 {
        // Fail the invocation so it shows in the function's error metrics; the work done is
        // kept and the rest is retried on the next run.
        return Err(format!("sweep finished with {} errors: {report:?}", report.errors).into());
    }
    Ok(report)
}
