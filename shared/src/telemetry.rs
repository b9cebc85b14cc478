//! JSON logs through `tracing-subscriber`. Spans carry the request id and the user id; prompt
//! text is never a field of any span or event.

use tracing_subscriber::{fmt, EnvFilter};

type JsonBuilder = fmt::SubscriberBuilder<
    fmt::format::JsonFields,
    fmt::format::Format<fmt::format::Json>,
    EnvFilter,
>;

/// JSON lines with the current span's fields, filtered by `RUST_LOG` (`info` by default).
fn json_subscriber() -> JsonBuilder {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
}

/// Installs the JSON subscriber once (later calls are no-ops, so tests may call it freely).
pub fn init() {
    let _ = json_subscriber().try_init();
}

/// Test runs: the same JSON lines, kept in memory (so tests can read what would be logged,
/// [`captured`]) and printed too when `RUST_LOG` asks for them.
pub fn init_for_tests() {
    let _ = json_subscriber().with_writer(|| Capture).try_init();
}

static CAPTURED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("RUST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line logged since the test process started (after [`init_for_tests`]).
pub fn captured() -> String {
    String::from_utf8_lossy(&CAPTURED.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}
