use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::App::from_env::<{ account::PORTS }>().await?;
    run(service_fn(|req| account::handle(&app, req))).await
}
