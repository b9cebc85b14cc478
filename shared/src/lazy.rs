//! The AWS SDK configuration and clients, built on first use rather than at init.
//!
//! Loading the SDK configuration and constructing a client (its endpoint resolver parses the
//! partition table and compiles its patterns) costs a fraction of a millisecond each; a
//! function's first event pays only for the clients it calls, and no event pays twice.

use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

/// Where the SDK configuration comes from: the environment, loaded on the first use of any
/// client (functions), or one already loaded (the dev host, tests).
#[derive(Clone)]
pub struct SdkSource(Arc<OnceCell<SdkConfig>>);

impl SdkSource {
    pub fn from_env() -> Self {
        Self(Arc::new(OnceCell::new()))
    }

    pub fn ready(sdk: SdkConfig) -> Self {
        Self(Arc::new(OnceCell::new_with(Some(sdk))))
    }

    pub async fn get(&self) -> &SdkConfig {
        self.0.get_or_init(crate::app::sdk_config).await
    }
}

type Build<C> = Box<dyn Fn(&SdkConfig) -> C + Send + Sync>;

struct Inner<C> {
    source: Option<SdkSource>,
    build: Option<Build<C>>,
    value: OnceCell<C>,
}

/// A client (or anything built from the SDK configuration), built once, on first use.
pub struct Lazy<C>(Arc<Inner<C>>);

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C> Lazy<C> {
    pub fn new(
        source: &SdkSource,
        build: impl Fn(&SdkConfig) -> C + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(Inner {
            source: Some(source.clone()),
            build: Some(Box::new(build)),
            value: OnceCell::new(),
        }))
    }

    /// One already built (tests put a client with an interceptor in).
    pub fn ready(value: C) -> Self {
        Self(Arc::new(Inner {
            source: None,
            build: None,
            value: OnceCell::new_with(Some(value)),
        }))
    }

    pub async fn get(&self) -> &C {
        self.0
            .value
            .get_or_init(|| async {
                let source = self.0.source.as_ref().expect("a lazy value has a source");
                let build = self.0.build.as_ref().expect("a lazy value has a builder");
                build(source.get().await)
            })
            .await
    }
}
