//! Image providers behind one narrow port: the embedded local renderer (default) and the OpenAI
//! Images API (or any server speaking its wire format).

pub mod local;
mod openai;

pub use local::LocalRenderer;
pub use openai::OpenAiImages;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::ProviderConfig;
use crate::domain::generation::{ImageSize, OutputFormat, Quality};

/// What a provider is asked for. Carries no user identity (U1: prompts go to the provider only
/// to generate and moderate).
#[derive(Debug, Clone)]
pub struct ProviderRequest<'a> {
    pub prompt: &'a str,
    pub size: ImageSize,
    pub quality: Quality,
    pub n: u8,
    pub seed: u64,
    pub output_format: OutputFormat,
    /// Reference images: re-encoded PNGs without metadata (never the files as sent).
    pub references: &'a [Vec<u8>],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: throttling, 5xx, timeouts, connection failures.
    #[error("transient provider error: {0}")]
    Transient(String),
    /// The provider's moderation refused the prompt: final, refunded.
    #[error("refused by moderation: {0}")]
    Moderation(String),
    /// Any other final failure: refunded.
    #[error("provider error: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait ImageProvider: Send + Sync {
    /// A short name recorded on each generation.
    fn name(&self) -> &'static str;
    /// Encoded images in the requested format, one per requested image.
    async fn generate(&self, req: &ProviderRequest<'_>) -> Result<Vec<Vec<u8>>, ProviderError>;
}

pub fn from_config(cfg: &ProviderConfig, timeout: Duration) -> Arc<dyn ImageProvider> {
    match cfg {
        ProviderConfig::Local => Arc::new(LocalRenderer),
        ProviderConfig::OpenAi {
            base_url,
            model,
            api_key,
        } => Arc::new(OpenAiImages::new(base_url, model, api_key.clone(), timeout)),
    }
}
