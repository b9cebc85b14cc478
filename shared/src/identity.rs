//! The identity provider's user directory: deleting a user whose account is deleted (R4) or
//! whose sign-up was refused (K1). Cognito through the real SDK (`AdminDeleteUser`); with
//! another OIDC issuer there is no directory this service may change, and deletion is the
//! operator's (documented in the README).

use std::sync::Arc;

use crate::lazy::{Lazy, SdkSource};

#[async_trait::async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Deletes the user; a user that does not exist is already deleted.
    async fn delete_user(&self, username: &str) -> anyhow::Result<()>;
    fn name(&self) -> &'static str;
}

pub fn from_config(user_pool_id: Option<&str>, sdk: &SdkSource) -> Arc<dyn IdentityProvider> {
    match user_pool_id {
        Some(pool) => Arc::new(Cognito {
            client: Lazy::new(sdk, aws_sdk_cognitoidentityprovider::Client::new),
            pool: pool.to_string(),
        }),
        None => Arc::new(External),
    }
}

/// A Cognito user pool whose usernames are the subjects (email as the sign-in alias).
pub struct Cognito {
    client: Lazy<aws_sdk_cognitoidentityprovider::Client>,
    pool: String,
}

#[async_trait::async_trait]
impl IdentityProvider for Cognito {
    async fn delete_user(&self, username: &str) -> anyhow::Result<()> {
        match self
            .client
            .get()
            .await
            .admin_delete_user()
            .user_pool_id(&self.pool)
            .username(username)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_user_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(e).context("deleting the identity-provider user")),
        }
    }

    fn name(&self) -> &'static str {
        "cognito"
    }
}

/// Another OIDC issuer: nothing here can delete its users.
pub struct External;

#[async_trait::async_trait]
impl IdentityProvider for External {
    async fn delete_user(&self, _username: &str) -> anyhow::Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "external"
    }
}
