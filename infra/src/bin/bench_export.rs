//! `bench-export`: the export's cost against a plain copy of the same objects, in one run.
//!
//! 1. A user with 64 generated images, each replaced by 16 MiB of random bytes (1 GiB in all,
//!    or `MiB` from the first argument), through the real API and worker.
//! 2. A plain copy: every object streamed from S3 and back into S3 with the same multipart
//!    adapter the export uses; its time and the process's peak RSS.
//! 3. The export of that user: its time, throughput and the process's peak RSS.
//!
//! Peak RSS is the process's high-water mark (`VmHWM`), reset before each phase through
//! `/proc/self/clear_refs`. The emulator holds the bytes in its own process; the figures are
//! this process's. Run it with `infra/bench-export [MiB]`.

use std::collections::HashMap;
use std::time::Instant;

use devstack::{start, StackOptions};
use serde_json::{json, Value};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total_mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1024);
    let object_mib = 16;
    let objects = (total_mib / object_mib).max(1);
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| anyhow::anyhow!("run through infra/bench-export"))?;
    let stack = start(StackOptions {
        prefix: format!(
            "benchx{}",
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
    let app = stack.app.clone();
    let base = format!("http://{}", stack.addr);
    let http = reqwest::Client::new();
    let token = stack
        .jwt
        .mint("bench-user", Some("bench@example.com"), &[])?;
    http.post(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .json(&json!({"display_name": "Bench", "age_confirmed": true}))
        .send()
        .await?
        .error_for_status()?;
    let mut ids = Vec::new();
    for i in 0..objects.div_ceil(4) {
        let n = (objects - i * 4).min(4);
        let job: Value = http
            .post(format!("{base}/v1/generations"))
            .bearer_auth(&token)
            .json(&json!({"prompt": format!("bench {i}"), "size": "1024x1024", "quality": "low", "n": n}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(job["id"].as_str().unwrap_or_default().to_string());
    }
    // Wait for the worker, then swap every image for 16 MiB of random bytes.
    let mut keys = Vec::new();
    for id in &ids {
        loop {
            let job: Value = http
                .get(format!("{base}/v1/generations/{id}"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if job["status"] == "succeeded" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let job = app
            .store
            .get_job("bench-user", id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {id} missing"))?;
        keys.extend(job.images.iter().map(|i| i.key.clone()));
    }
    for key in &keys {
        let bytes: Vec<u8> = (0..object_mib * 1024 * 1024)
            .map(|_| rand::random::<u8>())
            .collect();
        app.objects().put(key, bytes, "image/png", true).await?;
    }
    let bytes_total = (keys.len() * object_mib * 1024 * 1024) as f64;
    let mib = bytes_total / (1024.0 * 1024.0);
    println!("{} objects of {object_mib} MiB ({mib:.0} MiB)", keys.len());

    // A plain copy through the same streaming adapter.
    reset_peak_rss();
    let started = Instant::now();
    for key in &keys {
        let reader = app
            .objects()
            .get_stream(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{key} missing"))?;
        let (commit, committed) = tokio::sync::oneshot::channel();
        let _ = commit.send(true);
        app.objects()
            .put_stream(
                &format!("bench/copy/{key}"),
                "application/octet-stream",
                false,
                reader,
                committed,
            )
            .await?;
    }
    let copy_secs = started.elapsed().as_secs_f64();
    let copy_rss = peak_rss_mib();

    // The export.
    reset_peak_rss();
    let started = Instant::now();
    let export: Value = http
        .post(format!("{base}/v1/exports"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = export["id"].as_str().unwrap_or_default().to_string();
    let done = loop {
        let e: Value = http
            .get(format!("{base}/v1/exports/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if e["status"] == "ready" {
            break e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let export_secs = started.elapsed().as_secs_f64();
    let export_rss = peak_rss_mib();

    println!();
    println!(
        "{:<14} {:>10} {:>12} {:>14}",
        "phase", "seconds", "MiB/s", "peak RSS MiB"
    );
    println!(
        "{:<14} {:>10.1} {:>12.1} {:>14.0}",
        "plain copy",
        copy_secs,
        mib / copy_secs,
        copy_rss
    );
    println!(
        "{:<14} {:>10.1} {:>12.1} {:>14.0}",
        "export",
        export_secs,
        mib / export_secs,
        export_rss
    );
    println!();
    println!(
        "export: {} files, {:.0} MiB archive; throughput {:.2}x the plain copy (target >= 0.8); peak RSS target <= 128 MiB",
        done["files"],
        done["size"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        copy_secs / export_secs
    );
    Ok(())
}
