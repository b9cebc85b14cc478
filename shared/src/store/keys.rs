//! Key and index names: the one place they are spelled.

use sha2::{Digest, Sha256};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const EXPIRY_INDEX: &str = "by-expiry";
pub const EXP_PK: &str = "exp_pk";
pub const EXP_AT: &str = "exp_at";
pub const LEASE_INDEX: &str = "by-lease";
pub const LEASE_PK: &str = "lease_pk";
pub const LEASE_UNTIL: &str = "lease_until";
/// DynamoDB TTL attribute: a backstop only; the sweep deletes first.
pub const TTL: &str = "ttl";

/// Index partitions are sharded so no single partition takes every write.
pub const SHARDS: u32 = 8;

pub const PROFILE: &str = "PROFILE";
pub const CREDITS: &str = "CREDITS";
pub const LEDGER_PREFIX: &str = "LEDGER#";
pub const GEN_PREFIX: &str = "GEN#";
pub const IDEM_PREFIX: &str = "IDEM#";
pub const REF_PREFIX: &str = "REF#";
pub const RATE_PREFIX: &str = "RATE#";
pub const UPLOAD_PREFIX: &str = "UPLOAD#";
pub const DOWNLOAD_PREFIX: &str = "DOWNLOAD#";
pub const VIOLATION_PREFIX: &str = "VIOLATION#";
/// The public gallery's partition: one item per published image, sorted by image id (which
/// starts with the generation's creation time).
pub const GALLERY_PK: &str = "GALLERY";
pub const HOLD_PK: &str = "HOLD";
pub const AUDIT_PK: &str = "AUDIT";
pub const REPORT_PK: &str = "REPORT";
pub const RECORD: &str = "RECORD";
pub const ACCOUNT: &str = "ACCOUNT";

/// `by-expiry` partitions: `EXP#<n>` items carry their deletion time in `exp_at`;
/// `CONTENT#<n>` items carry their creation time (due at creation + the retention in force);
/// `DEL#<n>` are deletion records, due at `exp_at` (at once, or at a recheck time).
pub const EXP: &str = "EXP#";
pub const CONTENT: &str = "CONTENT#";
pub const DEL: &str = "DEL#";
/// Deletion records parked under a legal hold: not due until a hold ends.
pub const HELD: &str = "HELD#";

pub fn user_pk(user_id: &str) -> String {
    format!("USER#{user_id}")
}

pub fn user_from_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix("USER#")
}

pub fn gen_sk(job_id: &str) -> String {
    format!("{GEN_PREFIX}{job_id}")
}

pub fn upload_sk(id: &str) -> String {
    format!("{UPLOAD_PREFIX}{id}")
}

/// The pointer from a user's partition to one of their pending deletion records.
pub fn delref_sk(id: &str) -> String {
    format!("DELREF#{id}")
}

pub const EXPORT_PREFIX: &str = "EXPORT#";
pub const EXPORT_ACTIVE: &str = "EXPORT_ACTIVE";

pub fn export_sk(id: &str) -> String {
    format!("{EXPORT_PREFIX}{id}")
}

pub fn download_sk(id: &str) -> String {
    format!("{DOWNLOAD_PREFIX}{id}")
}

pub fn idem_sk(key: &str) -> String {
    format!("{IDEM_PREFIX}{key}")
}

pub fn ledger_sk(cause_key: &str) -> String {
    format!("{LEDGER_PREFIX}{cause_key}")
}

fn shard(seed: &str) -> u32 {
    let digest = Sha256::digest(seed.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % SHARDS
}

pub fn exp_pk(seed: &str) -> String {
    format!("{EXP}{}", shard(seed))
}

pub fn content_pk(seed: &str) -> String {
    format!("{CONTENT}{}", shard(seed))
}

pub fn del_pk(seed: &str) -> String {
    format!("{DEL}{}", shard(seed))
}

pub fn held_pk(seed: &str) -> String {
    format!("{HELD}{}", shard(seed))
}

pub fn deletion_pk(id: &str) -> String {
    format!("DELETION#{id}")
}

pub fn anon_pk(anon_id: &str) -> String {
    format!("ANON#{anon_id}")
}

pub fn tombstone_pk(subject_hash: &str) -> String {
    format!("TOMBSTONE#{subject_hash}")
}

pub fn ref_sk(pk: &str, sk: &str) -> String {
    format!("{REF_PREFIX}{pk}#{sk}")
}

/// A rate counter: the action and the start of its window (seconds since the epoch).
pub fn rate_sk(action: &str, window_start: &str) -> String {
    format!("{RATE_PREFIX}{action}#{window_start}")
}

/// The partition of an anonymous caller's rate counters: a hash of the source IP.
pub fn ip_rate_pk(ip_hash: &str) -> String {
    format!("RATEIP#{ip_hash}")
}

pub fn lease_pk(seed: &str) -> String {
    format!("LEASE#{}", shard(seed))
}

/// Every shard of one `by-expiry` partition family (`EXP`, `CONTENT`, `DEL`).
pub fn all_shards(family: &'static str) -> impl Iterator<Item = String> {
    (0..SHARDS).map(move |n| format!("{family}{n}"))
}

pub fn all_lease_pks() -> impl Iterator<Item = String> {
    (0..SHARDS).map(|n| format!("LEASE#{n}"))
}
