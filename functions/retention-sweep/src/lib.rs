//! `retention-sweep`: fired by an EventBridge schedule; runs the sweep once. The invocation
//! succeeds even when items failed: a failed invocation would be retried by the scheduler on top
//! of the next run. Failures are counted in CloudWatch metrics (Embedded Metric Format in the
//! log) and logged with their items; the next run retries them.

/// What this function uses beyond the table (its IAM policy and settings in `template.yaml`
/// say the same).
pub const PORTS: u32 = {
    use shared::app::ports;
    ports::OBJECTS | ports::EVENTS | ports::IDENTITY | ports::DEAD_LETTERS | ports::PAYMENTS
};

use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};
use shared::services::sweep::{self, SweepReport};
use shared::App;
use tracing::Instrument;

pub const METRIC_NAMESPACE: &str = "imagegen/retention-sweep";

pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<SweepReport, Error> {
    let span = tracing::info_span!("sweep", request_id = %event.context.request_id);
    let report = sweep::run(app, Utc::now()).instrument(span).await?;
    // One line in CloudWatch's Embedded Metric Format: CloudWatch turns it into metrics.
    println!("{}", emf(&report, Utc::now().timestamp_millis()));
    Ok(report)
}

/// The report as an Embedded Metric Format document (every counter a metric, `Count` unit).
pub fn emf(report: &SweepReport, timestamp_ms: i64) -> Value {
    let mut doc = serde_json::to_value(report).expect("a report serializes");
    // Metric values are numbers: flags count as 0 or 1.
    for value in doc
        .as_object_mut()
        .expect("a report is an object")
        .values_mut()
    {
        if let Some(flag) = value.as_bool() {
            *value = json!(u8::from(flag));
        }
    }
    let names: Vec<Value> = doc
        .as_object()
        .expect("a report is an object")
        .keys()
        .map(|k| json!({"Name": k, "Unit": "Count"}))
        .collect();
    doc["_aws"] = json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": METRIC_NAMESPACE,
            "Dimensions": [[]],
            "Metrics": names,
        }],
    });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweep errors are metrics (the invocation itself succeeds): every counter of the report
    /// is a numeric CloudWatch metric in the Embedded Metric Format.
    #[test]
    fn r3_sweep_report_is_published_as_embedded_metrics() {
        let report = SweepReport {
            errors: 2,
            deletions_completed: 5,
            out_of_time: true,
            ..Default::default()
        };
        let doc = emf(&report, 1_795_000_000_000);
        let metrics = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            METRIC_NAMESPACE
        );
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(doc[name].is_u64(), "{name} is a number");
        }
        assert!(metrics.iter().any(|m| m["Name"] == "errors"));
        assert_eq!(doc["errors"], 2);
        assert_eq!(doc["out_of_time"], 1);
    }
}
