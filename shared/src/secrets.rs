//! Secrets read once at init from SSM Parameter Store (SecureString), never from plain
//! environment variables or template defaults.

use anyhow::Context;
use aws_config::SdkConfig;

use crate::config::Secret;

/// A comma-separated list of secrets (several during a roll).
pub async fn read_list(sdk: &SdkConfig, name: &str) -> anyhow::Result<Vec<Secret>> {
    let out = aws_sdk_ssm::Client::new(sdk)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .with_context(|| format!("reading the secret parameter {name}"))?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .with_context(|| format!("the secret parameter {name} has no value"))?;
    let secrets: Vec<Secret> = value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(Secret::new)
        .collect();
    anyhow::ensure!(!secrets.is_empty(), "the secret parameter {name} is empty");
    Ok(secrets)
}

/// A list of secrets read from SSM on first use (and again after a failed read), not at init.
pub struct LazySecrets {
    sdk: crate::lazy::SdkSource,
    param: String,
    secrets: tokio::sync::OnceCell<Vec<Secret>>,
}

impl LazySecrets {
    pub fn new(sdk: &crate::lazy::SdkSource, param: &str) -> Self {
        Self {
            sdk: sdk.clone(),
            param: param.to_string(),
            secrets: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn get(&self) -> anyhow::Result<&[Secret]> {
        self.secrets
            .get_or_try_init(|| async { read_list(self.sdk.get().await, &self.param).await })
            .await
            .map(Vec::as_slice)
    }
}
