//! The dev host's background side, as `infra/dev` runs it.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// The poller delivers queued jobs to the worker, and the schedule fires the sweep (which
/// clears the dead-letter queue).
#[tokio::test]
async fn dev_host_polls_the_queue_and_fires_the_schedule() {
    let app = spawn_dev_host(Duration::from_secs(1)).await;
    let user = app.onboarded_user().await;
    let id = app.create(&user, gen_body("delivered by the poller")).await;

    let sqs = aws_sdk_sqs::Client::new(&app.stack.sdk);
    sqs.send_message()
        .queue_url(&app.stack.resources.dlq_url)
        .message_body("not a job message")
        .send()
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.job(&user, &id).await;
        let dlq = sqs
            .get_queue_attributes()
            .queue_url(&app.stack.resources.dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let waiting = dlq
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .cloned()
            .unwrap_or_default();
        if job["status"] == "succeeded" && waiting == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {} and {waiting} dead letters after 30 s",
            job["status"]
        );
        sleep_ms(200).await;
    }
    app.assert_ledger_consistent(&user).await;
}
