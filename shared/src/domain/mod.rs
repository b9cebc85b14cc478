//! Domain values and rules. Values are parsed at the edge (`parse` constructors), so an invalid
//! prompt, size or user id cannot exist past it.

pub mod age;
pub mod billing;
pub mod credits;
pub mod cursor;
pub mod generation;
pub mod preview;
pub mod pricing;
pub mod profile;
pub mod retention;
pub mod upload;
pub mod user;

/// A rejected input: a stable machine-readable code plus a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Invalid {
    pub code: &'static str,
    pub detail: String,
}

impl Invalid {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}
