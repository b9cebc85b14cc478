#![recursion_limit = "256"]

use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::App::from_env::<{ retention_sweep::PORTS }>().await?;
    run(service_fn(|event| retention_sweep::handle(&app, event))).await
}
