//! `devhost`: the local product. Provisions the resources on the emulator at
//! `AWS_ENDPOINT_URL`, then serves the API on 127.0.0.1:$PORT, runs the worker and the sweep.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use devstack::{resources, start, StackOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .context("AWS_ENDPOINT_URL must point at the local AWS emulator (use ./infra/dev)")?;
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "3000".into())
        .parse()
        .context("PORT must be a port number")?;
    let sweep_secs: u64 = std::env::var("SWEEP_EVERY_SECS")
        .map(|v| v.parse().unwrap_or(resources::SWEEP_EVERY_SECS))
        .unwrap_or(resources::SWEEP_EVERY_SECS);
    let stack = start(StackOptions {
        prefix: std::env::var("STACK_PREFIX").unwrap_or_else(|_| "imagegen-local".into()),
        endpoint,
        addr: ([127, 0, 0, 1], port).into(),
        env: HashMap::new(),
        inherit_env: true,
        run_workers: true,
        sweep_every: Some(Duration::from_secs(sweep_secs)),
        retry_delay_secs: 2,
        jwt_secret: std::env::var("DEV_JWT_SECRET")
            .unwrap_or_else(|_| "imagegen-local-dev-key".into()),
        calls: None,
    })
    .await?;
    let base = format!("http://{}", stack.addr);
    eprintln!(
        r#"
imagegen dev host on {base}  (provider: {provider}; sweep every {sweep_secs}s)
  resources: table {table}, bucket {bucket}, queue {queue}

  TOKEN=$(curl -s -X POST {base}/dev/token -H 'content-type: application/json' \
           -d '{{"sub":"alice","email":"alice@example.com"}}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -s -X POST {base}/v1/me -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
       -d '{{"display_name":"Alice","age_confirmed":true}}'
  curl -s -X POST {base}/v1/generations -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
       -H "Idempotency-Key: $(date +%s)" -d '{{"prompt":"a lighthouse at dusk","size":"1024x1024","quality":"low","n":1}}'
  curl -s {base}/v1/generations -H "authorization: Bearer $TOKEN"
  curl -s -X PATCH {base}/v1/images/<generation id>-0 -H "authorization: Bearer $TOKEN" \
       -H 'content-type: application/json' -d '{{"public":true,"copy_protected":true}}'
  curl -s {base}/v1/gallery
  curl -s -X POST {base}/v1/uploads -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
       -d '{{"content_type":"image/png","size":'$(stat -c%s photo.png)'}}'   # then send photo.png with the form
  curl -s -X POST {base}/v1/billing/checkout -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
       -d '{{"item":"pack_small"}}'      # open the url, press Pay ({stripe})
  curl -s {base}/v1/billing -H "authorization: Bearer $TOKEN"
"#,
        stripe = stack
            .stripe
            .as_ref()
            .map(|s| format!("local Stripe stand-in on {}", s.base_url))
            .unwrap_or_else(|| "Stripe".into()),
        provider = stack.app.provider().name(),
        table = stack.resources.table_name,
        bucket = stack.resources.bucket_name,
        queue = stack.resources.queue_url,
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
