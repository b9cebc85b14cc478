//! Domain operations: what the functions call. Handlers translate events to these calls and
//! the results back to responses.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod billing;
pub mod billing_account;
pub mod consents;
pub mod deletion;
pub mod exports;
pub mod gallery;
pub mod generations;
pub mod images;
pub mod moderation;
pub mod sweep;
pub mod uploads;
pub mod worker;
