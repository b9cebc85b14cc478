use lambda_runtime::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::App::from_env::<{ generate::PORTS }>().await?;
    run(service_fn(|event| generate::handle(&app, event))).await
}
