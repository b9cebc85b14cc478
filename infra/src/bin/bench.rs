//! `bench`: rerunnable figures for the local stack, printed as a table.
//!
//! 1. the embedded renderer: milliseconds to draw and encode one image per size and format;
//! 2. `POST /v1/generations` accept latency (p50/p95/max) and rate at a given concurrency;
//! 3. end to end: time until every accepted job has succeeded, with the worker polling SQS.
//!
//! Run it with `infra/bench [requests] [concurrency]` (which starts the emulator). The API
//! figures include the emulator (moto), so they compare runs of this project on one machine;
//! they are not a prediction of latency on AWS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devstack::{start, StackOptions};
use serde_json::{json, Value};
use shared::domain::generation::{ImageSize, OutputFormat};
use shared::provider::local::{encode, render};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| anyhow::anyhow!("run through infra/bench"))?;

    println!("renderer (draw + encode one image, median of 3)");
    println!(
        "{:<12} {:>8} {:>8} {:>8}",
        "size", "png ms", "jpeg ms", "webp ms"
    );
    for size in ImageSize::ALL {
        let (w, h) = size.dimensions();
        let mut row = Vec::new();
        for format in OutputFormat::ALL {
            let mut times: Vec<Duration> = (0..3)
                .map(|i| {
                    let t = Instant::now();
                    let img = render("a lighthouse at dusk, oil on canvas", i, 0, w, h);
                    encode(&img, *format).expect("encodes");
                    t.elapsed()
                })
                .collect();
            times.sort();
            row.push(ms(times[1]));
        }
        println!(
            "{:<12} {:>8.1} {:>8.1} {:>8.1}",
            size.as_str(),
            row[0],
            row[1],
            row[2]
        );
    }

    let stack = start(StackOptions {
        prefix: format!(
            "bench{}",
            &ulid::Ulid::new().to_string().to_lowercase()[18..]
        ),
        endpoint,
        addr: ([127, 0, 0, 1], 0).into(),
        env: HashMap::from([("SIGNUP_CREDITS".to_string(), "1000000".to_string())]),
        inherit_env: false,
        run_workers: true,
        sweep_every: None,
        retry_delay_secs: 2,
        jwt_secret: "bench".into(),
        calls: None,
    })
    .await?;
    let base = format!("http://{}", stack.addr);
    let http = reqwest::Client::new();
    let token = stack
        .jwt
        .mint("bench-user", Some("bench@example.com"), &[])?;
    let onboard = http
        .post(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .json(&json!({"display_name": "Bench", "age_confirmed": true}))
        .send()
        .await?;
    anyhow::ensure!(
        onboard.status().is_success(),
        "onboarding failed: {}",
        onboard.status()
    );

    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..requests {
        let permit = semaphore.clone().acquire_owned().await?;
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = http
                .post(format!("{base}/v1/generations"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("bench-{i}"))
                .json(&json!({"prompt": format!("bench image {i}"), "size": "1024x1024", "quality": "low", "n": 1}))
                .send()
                .await;
            drop(permit);
            let ok = matches!(&resp, Ok(r) if r.status() == 202);
            (t.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (d, ok) = t.await?;
        latencies.push(d);
        if !ok {
            failures += 1;
        }
    }
    let accept_window = started.elapsed();
    latencies.sort();
    println!();
    println!("POST /v1/generations: {requests} requests, concurrency {concurrency}, {failures} not accepted");
    println!(
        "  p50 {:.1} ms   p95 {:.1} ms   max {:.1} ms   {:.1} req/s",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        ms(*latencies.last().expect("at least one request")),
        requests as f64 / accept_window.as_secs_f64()
    );

    // Wait for the worker to finish everything that was accepted.
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let mut succeeded = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/v1/generations?limit=100");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            succeeded += page["items"]
                .as_array()
                .map(|items| items.iter().filter(|j| j["status"] == "succeeded").count())
                .unwrap_or(0);
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        if succeeded >= requests - failures || Instant::now() > deadline {
            break succeeded;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total = started.elapsed();
    println!(
        "end to end: {done} images succeeded in {:.1} s ({:.2} jobs/s, one worker polling batches of 5)",
        total.as_secs_f64(),
        done as f64 / total.as_secs_f64()
    );
    Ok(())
}
