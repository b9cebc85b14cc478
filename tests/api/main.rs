//! Integration tests against the local stack (moto server through the real SDK clients).
//! One test binary; each test has its own resources and users, so they run in parallel.
//! Test names carry the POLICY.md ids they prove.

mod helpers;

mod abuse;
mod access;
mod account_deletion;
mod accounts;
mod admin;
mod billing;
mod calls;
mod consents;
mod content;
mod contract;
mod datamap;
mod deletion;
mod devhost;
mod emulator;
mod errors;
mod events_fixtures;
mod exports;
mod flow;
mod generations;
mod idempotency;
mod providers;
mod sweep;
mod template;
