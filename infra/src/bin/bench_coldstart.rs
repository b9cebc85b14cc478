//! `bench-coldstart`: each function's cold start against a local Lambda Runtime API, next to a
//! bare `lambda_runtime` function built with the same profile.
//!
//! For every function, 21 times, each paired with a start of `bare-function` (which goes first
//! alternates): start the process with
//! `AWS_LAMBDA_RUNTIME_API` pointing at a local server speaking the Runtime API
//! (`/runtime/invocation/next`, `.../response`, `.../error`, `/runtime/init/error`), and time
//! - init: from the process's start to its first `next` (all it does before the first event),
//! - first: from handing it its first event (its sample in `events/`) to its answer,
//! - warm: the same for a second event.
//!
//! It prints the medians, their ratios to the bare function's taken alongside, init + first
//! (what the first caller waits for) and each binary's stripped size.
//! The functions run against the local emulator with freshly provisioned resources, as `infra/dev`
//! configures them. Run it with `infra/bench-coldstart`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::mpsc;

const RUNS: usize = 21;

#[derive(Debug)]
enum Seen {
    Next(Instant),
    Done(Instant, bool),
    InitError,
}

struct Api {
    events: Mutex<Vec<Value>>,
    seen: mpsc::UnboundedSender<Seen>,
    served: Mutex<u32>,
}

async fn next(State(api): State<Arc<Api>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let _ = api.seen.send(Seen::Next(Instant::now()));
    let event = api.events.lock().unwrap().pop();
    let Some(event) = event else {
        // No more events: the process waits here until it is stopped.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = {
        let mut served = api.served.lock().unwrap();
        *served += 1;
        format!("req-{served}")
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    (
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bench".to_string(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_string(),
            ),
            ("content-type", "application/json".to_string()),
        ],
        event.to_string(),
    )
        .into_response()
}

async fn response(State(api): State<Arc<Api>>, UrlPath(_id): UrlPath<String>) -> &'static str {
    let _ = api.seen.send(Seen::Done(Instant::now(), true));
    "{}"
}

async fn error(State(api): State<Arc<Api>>, UrlPath(_id): UrlPath<String>) -> &'static str {
    let _ = api.seen.send(Seen::Done(Instant::now(), false));
    "{}"
}

async fn init_error(State(api): State<Arc<Api>>) -> &'static str {
    let _ = api.seen.send(Seen::InitError);
    "{}"
}

struct Run {
    init: f64,
    first: f64,
    warm: f64,
    ok: bool,
}

async fn cold_start(bin: &Path, env: &[(String, String)], event: &Value) -> anyhow::Result<Run> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let api = Arc::new(Api {
        // Popped from the end: the first event last.
        events: Mutex::new(vec![event.clone(), event.clone()]),
        seen: tx,
        served: Mutex::new(0),
    });
    let router = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1000.0;
    let mut marks = Vec::new();
    let mut ok = true;
    while marks.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Seen::Next(t))) => marks.push(t),
            Ok(Some(Seen::Done(t, good))) => {
                ok &= good;
                marks.push(t)
            }
            Ok(Some(Seen::InitError)) => anyhow::bail!("{} failed at init", bin.display()),
            _ => anyhow::bail!("{} did not finish two invocations", bin.display()),
        }
    }
    let _ = child.kill().await;
    server.abort();
    // next, done, next, done, next
    Ok(Run {
        init: ms(started, marks[0]),
        first: ms(marks[0], marks[1]),
        warm: ms(marks[2], marks[3]),
        ok,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stripped_mib(bin: &Path) -> f64 {
    let out = std::env::temp_dir().join(format!("stripped-{}", std::process::id()));
    let size = std::process::Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&out).ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .unwrap_or(f64::NAN);
    let _ = std::fs::remove_file(out);
    size
}

/// The function's first sample event in `events/` (`<function>-*.json`, sorted).
fn sample_event(root: &Path, function: &str) -> anyhow::Result<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(root.join("events"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{function}-")) && n.ends_with(".json"))
        })
        .collect();
    names.sort();
    let first = names
        .first()
        .ok_or_else(|| anyhow::anyhow!("no sample event for {function}"))?;
    Ok(serde_json::from_str(&std::fs::read_to_string(first)?)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = PathBuf::from(
        std::env::var("BENCH_BIN_DIR")
            .unwrap_or_else(|_| root.join("target/release").to_string_lossy().into_owned()),
    );
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| anyhow::anyhow!("run through infra/bench-coldstart"))?;
    let sdk = devstack::local_sdk_config(&endpoint).await;
    let prefix = format!(
        "benchc{}",
        &ulid::Ulid::new().to_string().to_lowercase()[18..]
    );
    let resources = devstack::resources::provision(&sdk, &prefix, Default::default()).await?;
    let mut env: Vec<(String, String)> = resources
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "bench"),
        ("RUST_LOG", "info"),
    ] {
        env.push((k.to_string(), v.to_string()));
    }
    let functions = [
        "bare-function",
        "account",
        "generations",
        "public",
        "uploads",
        "images",
        "gallery",
        "exports",
        "billing",
        "admin",
        "stripe-webhook",
        "generate",
        "export",
        "retention-sweep",
    ];
    println!(
        "median of {RUNS} cold starts; ratios to bare-function (a bare lambda_runtime function)"
    );
    println!(
        "{:<16} {:>9} {:>6} {:>10} {:>6} {:>13} {:>6} {:>9} {:>6} {:>12}",
        "function",
        "init ms",
        "x",
        "first ms",
        "x",
        "init+first ms",
        "x",
        "warm ms",
        "x",
        "stripped MiB"
    );
    // Each cold start of a function is paired with one of the bare function, so both see the
    // same machine (frequency, cache, neighbours); each function's ratios are to the bare starts
    // taken alongside its own.
    let bare_bin = bins.join("bare-function");
    let bare_event = serde_json::json!({"ping": true});
    let medians = |runs: &[Run]| {
        (
            median(runs.iter().map(|r| r.init).collect()),
            median(runs.iter().map(|r| r.first).collect()),
            median(runs.iter().map(|r| r.warm).collect()),
            median(runs.iter().map(|r| r.init + r.first).collect()),
        )
    };
    let mut all_bare = Vec::new();
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for function in functions.into_iter().filter(|f| *f != "bare-function") {
        let bin = bins.join(function);
        let event = sample_event(&root, function)?;
        let (mut runs, mut bare) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            // Which goes first alternates, so neither gains from the other's warmed caches.
            if i % 2 == 0 {
                bare.push(cold_start(&bare_bin, &env, &bare_event).await?);
                runs.push(cold_start(&bin, &env, &event).await?);
            } else {
                runs.push(cold_start(&bin, &env, &event).await?);
                bare.push(cold_start(&bare_bin, &env, &bare_event).await?);
            }
        }
        let (init, first, warm, both) = medians(&runs);
        let (bi, bf, bw, bb) = medians(&bare);
        worst = worst.max(init / bi);
        rows.push(format!(
            "{function:<16} {init:>9.2} {:>6.2} {first:>10.2} {:>6.2} {both:>13.2} {:>6.2} {warm:>9.2} {:>6.2} {:>12.1}{}",
            init / bi,
            first / bf,
            both / bb,
            warm / bw,
            stripped_mib(&bin),
            if runs.iter().all(|r| r.ok) { "" } else { "  (answered with an invocation error)" }
        ));
        all_bare.extend(bare);
    }
    let (bi, bf, bw, bb) = medians(&all_bare);
    println!(
        "{:<16} {bi:>9.2} {:>6.2} {bf:>10.2} {:>6.2} {bb:>13.2} {:>6.2} {bw:>9.2} {:>6.2} {:>12.1}",
        "bare-function",
        1.0,
        1.0,
        1.0,
        1.0,
        stripped_mib(&bare_bin)
    );
    for row in rows {
        println!("{row}");
    }
    println!("worst init ratio: {worst:.2} (target at most 1.2)");
    Ok(())
}
