//! The common crate: domain rules, AWS adapters, HTTP plumbing and configuration shared by every
//! Lambda function of the image-generation backend.

pub mod app;
pub mod config;
pub mod datamap;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod identity;
pub mod lazy;
pub mod limits;
pub mod moderation;
pub mod net;
pub mod objects;
pub mod openapi;
pub mod payments;
pub mod presigned_post;
pub mod provider;
pub mod queue;
pub mod secrets;
pub mod services;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Config;
pub use error::ApiError;
