//! `bench-load`: the local stack under load, driven through the real HTTP API as a user would.
//!
//! `N` users send `M` generation requests, `C` at a time, while the dev host's worker runs them
//! against an image provider. With `--provider flaky` (the default) that provider is a local
//! server in the OpenAI Images wire format that fails half of its calls the ways real providers
//! do (429 with `Retry-After`, 500, 503, a moderation refusal, a slow answer past the timeout);
//! `--provider local` uses the embedded renderer.
//!
//! Prints the accepted requests per second for each tenth of the run, the jobs finished per
//! second, the latency of one history read before and after, and the emulator's peak RSS
//! (`VmHWM` of `MOTO_PID`, which `infra/bench-load` exports). Run it with
//! `infra/bench-load [--requests 2000] [--users 10] [--concurrency 8] [--provider flaky|local]
//! [--wait 300]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use base64::Engine;
use devstack::{start, StackOptions};
use serde_json::{json, Value};

fn moto_rss_mib(field: &str) -> f64 {
    let Ok(pid) = std::env::var("MOTO_PID") else {
        return f64::NAN;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// A provider in the OpenAI Images wire format failing half of its calls.
async fn flaky_provider() -> anyhow::Result<String> {
    let png = shared::provider::local::encode(
        &shared::provider::local::render("bench", 1, 0, 1024, 1024),
        shared::domain::generation::OutputFormat::Png,
    )?;
    let b64 = Arc::new(base64::engine::general_purpose::STANDARD.encode(png));
    let calls = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().route(
        "/v1/images/generations",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (b64, calls) = (b64.clone(), calls.clone());
            async move {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                let error = |status: u16, kind: &str, code: Option<&str>| {
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("retry-after", "1")],
                        axum::Json(json!({"error": {"message": "failing on purpose", "type": kind, "param": null, "code": code}})),
                    )
                        .into_response()
                };
                // Every other call fails, in turn each of the ways providers fail.
                match call % 10 {
                    1 => error(429, "requests", Some("rate_limit_exceeded")),
                    3 => error(500, "server_error", None),
                    5 => error(503, "server_error", None),
                    7 => error(400, "image_generation_user_error", Some("moderation_blocked")),
                    9 => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        error(500, "server_error", None)
                    }
                    _ => {
                        let n = body["n"].as_u64().unwrap_or(1) as usize;
                        let data: Vec<Value> =
                            (0..n).map(|_| json!({"b64_json": b64.as_str()})).collect();
                        axum::Json(json!({"created": 1, "data": data})).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = arg("--requests", "2000").parse()?;
    let users: usize = arg("--users", "10").parse()?;
    let concurrency: usize = arg("--concurrency", "8").parse()?;
    let provider = arg("--provider", "flaky");
    // How long to wait for the jobs after the last request (they finish at the worker's pace).
    let wait_secs: u64 = arg("--wait", "300").parse()?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| anyhow::anyhow!("run through infra/bench-load"))?;
    let mut env = HashMap::from([
        ("SIGNUP_CREDITS".to_string(), "1000000".to_string()),
        // The benchmark measures the stack, not the limits or the suspensions.
        ("RATE_LIMITS".to_string(), "generate=1000000/60".to_string()),
        ("VIOLATION_THRESHOLD".to_string(), "1000".to_string()),
    ]);
    if provider == "flaky" {
        env.insert("IMAGE_PROVIDER".into(), "openai".into());
        env.insert("OPENAI_BASE_URL".into(), flaky_provider().await?);
        env.insert("OPENAI_API_KEY".into(), "sk-bench".into());
        env.insert("PROVIDER_TIMEOUT_SECS".into(), "2".into());
        env.insert("PROVIDER_MAX_RETRIES".into(), "1".into());
    }
    let stack = start(StackOptions {
        prefix: format!(
            "benchl{}",
            &ulid::Ulid::new().to_string().to_lowercase()[18..]
        ),
        endpoint,
        addr: ([127, 0, 0, 1], 0).into(),
        env,
        inherit_env: false,
        run_workers: true,
        // As infra/dev runs it: the sweep refunds jobs whose messages went to the DLQ.
        sweep_every: Some(Duration::from_secs(10)),
        retry_delay_secs: 2,
        jwt_secret: "bench".into(),
        calls: None,
    })
    .await?;
    let base = format!("http://{}", stack.addr);
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for u in 0..users {
        let token = stack.jwt.mint(
            &format!("load-{u}"),
            Some(&format!("load-{u}@example.com")),
            &[],
        )?;
        http.post(format!("{base}/v1/me"))
            .bearer_auth(&token)
            .json(&json!({"display_name": format!("Load {u}"), "age_confirmed": true}))
            .send()
            .await?
            .error_for_status()?;
        tokens.push(token);
    }
    let read_latency = |token: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let t = Instant::now();
            let _ = http
                .get(format!("{base}/v1/generations?limit=20"))
                .bearer_auth(&token)
                .send()
                .await;
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let read_before = read_latency(tokens[0].clone()).await;
    println!(
        "{requests} generation requests from {users} users, {concurrency} at a time, provider {provider}"
    );

    let next = Arc::new(AtomicUsize::new(0));
    let accepted_at: Arc<Mutex<Vec<f64>>> = Arc::default();
    let job_ids: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let rss_peak = Arc::new(Mutex::new(0f64));
    let started = Instant::now();
    let sampler = {
        let rss_peak = rss_peak.clone();
        tokio::spawn(async move {
            loop {
                let now = moto_rss_mib("VmRSS:");
                {
                    let mut peak = rss_peak.lock().unwrap();
                    if now > *peak {
                        *peak = now;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, base, tokens) = (http.clone(), base.clone(), tokens.clone());
        let (next, accepted_at, job_ids, refused) = (
            next.clone(),
            accepted_at.clone(),
            job_ids.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    return;
                }
                let user = i % tokens.len();
                let resp = http
                    .post(format!("{base}/v1/generations"))
                    .bearer_auth(&tokens[user])
                    .json(&json!({"prompt": format!("a lighthouse, load {i}"), "size": "1024x1024", "quality": "low", "n": 1}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 202 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        let now = started.elapsed().as_secs_f64();
                        let count = {
                            let mut times = accepted_at.lock().unwrap();
                            times.push(now);
                            times.len()
                        };
                        // Progress as it happens (a slow run can be stopped and still read).
                        if count % (requests / 10).max(1) == 0 {
                            eprintln!(
                                "  {count:>5} accepted at {now:>7.1} s, emulator RSS {:.0} MiB",
                                moto_rss_mib("VmRSS:")
                            );
                        }
                        if let Some(id) = body["id"].as_str() {
                            job_ids.lock().unwrap().push((user, id.to_string()));
                        }
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let submitted = started.elapsed().as_secs_f64();
    let mut times = accepted_at.lock().unwrap().clone();
    times.sort_by(f64::total_cmp);
    println!(
        "accepted {} of {requests} in {submitted:.1} s ({} refused)",
        times.len(),
        refused.load(Ordering::SeqCst)
    );
    let mut rates = Vec::new();
    let tenth = (times.len() / 10).max(1);
    let mut previous = 0.0;
    for k in 0..10 {
        let end = if k == 9 {
            times.len()
        } else {
            ((k + 1) * tenth).min(times.len())
        };
        if end == 0 || k * tenth >= times.len() {
            break;
        }
        let t = times[end - 1];
        let rate = (end - k * tenth) as f64 / (t - previous).max(1e-6);
        rates.push(rate);
        println!(
            "  tenth {:>2}: requests {:>5}-{:>5}, {rate:>6.1} accepted/s",
            k + 1,
            k * tenth + 1,
            end
        );
        previous = t;
    }

    // Every job to a final state (the worker runs in this process): each user's history is
    // read every 3 s (a page of 100 at a time), so the polling adds little load.
    let ids = job_ids.lock().unwrap().clone();
    let accepted_ids: std::collections::HashSet<String> =
        ids.iter().map(|(_, id)| id.clone()).collect();
    let mut finished = 0;
    let mut last_done = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    eprintln!("  waiting for the jobs to finish");
    while Instant::now() < deadline {
        let mut done = 0;
        for u in 0..users {
            let mut after = None;
            loop {
                let (jobs, last) = stack
                    .app
                    .store
                    .list_jobs(&format!("load-{u}"), 100, after)
                    .await?;
                done += jobs
                    .iter()
                    .filter(|j| accepted_ids.contains(&j.id))
                    .filter(|j| matches!(j.status.as_str(), "succeeded" | "failed"))
                    .count();
                after = last;
                if after.is_none() {
                    break;
                }
            }
        }
        if done > finished {
            last_done = started.elapsed().as_secs_f64();
        }
        finished = done;
        if finished >= ids.len() {
            break;
        }
        if started.elapsed().as_secs_f64() - last_done > 120.0 {
            println!(
                "no job finished for 2 minutes; {} still open",
                ids.len() - finished
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    sampler.abort();
    let read_after = read_latency(tokens[0].clone()).await;
    let first = rates.first().copied().unwrap_or(0.0);
    let last = rates.last().copied().unwrap_or(0.0);
    println!(
        "jobs finished: {finished} of {} in {last_done:.1} s from the first request ({:.1} jobs/s)",
        ids.len(),
        finished as f64 / last_done.max(1e-6)
    );
    println!(
        "last tenth / first tenth: {:.2} (target at least 0.67)",
        last / first.max(1e-6)
    );
    println!(
        "history read (GET /v1/generations): {read_before:.0} ms before, {read_after:.0} ms after"
    );
    println!(
        "emulator RSS: peak {:.0} MiB sampled, VmHWM {:.0} MiB (target under 1024)",
        *rss_peak.lock().unwrap(),
        moto_rss_mib("VmHWM:")
    );
    Ok(())
}
