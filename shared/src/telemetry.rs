//! JSON logs through `tracing-subscriber`. Spans carry the request id and the user id; prompt
//! text is never a field of any span or event.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the JSON subscriber once (later calls are no-ops, so tests may call it freely).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// Test runs: logs only when `RUST_LOG` asks for them, so passing tests stay silent.
pub fn init_for_tests() {
    if std::env::var_os("RUST_LOG").is_some() {
        init();
    }
}
