//! The data map: every kind of item and object this service stores about a person, with its key
//! shape, its POLICY category, how long it is kept, how it is deleted and whether the export
//! carries it. It is the spine of the privacy promises:
//!
//! - adapters create items only through [`new_item`], which takes a [`Kind`] of this map and
//!   stamps the item with its `kind` and `retention` class, so nothing unmapped is written;
//! - `GET /v1/policy` publishes [`DATA_MAP`];
//! - a test walks every item and object the suite created and fails on anything that matches no
//!   kind here or lacks its deletion time or retention class (`tests/api/datamap.rs`).
//!
//! A feature that stores a new kind adds it here, to `/v1/me/data`, to the export and to account
//! deletion in the same change.

use serde::Serialize;

use crate::store::item::{key, s, Item};

/// How long a kind is kept, as a class; the period is in [`KindSpec::period`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionClass {
    /// R1: the content retention in force (`RETENTION_DAYS`), counted from creation; shortening
    /// it applies to stored content at the next sweep.
    Content,
    /// A fixed lifetime from creation, stamped on the item (`exp_at`).
    Fixed,
    /// R6: kept while the account is active; removed by account deletion.
    WhileAccountActive,
    /// R4: billing records, kept for the legal period under an anonymous id.
    BillingRecord,
    /// Admin records (audit, reports): the legal period, subjects replaced by anonymous ids.
    AdminRecord,
    /// Work in progress: removed as soon as the work is done.
    UntilDone,
    /// While an admin keeps it in force; removed when lifted or ended.
    WhileInForce,
    /// Holds no personal data.
    Anonymous,
}

impl RetentionClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Fixed => "fixed",
            Self::WhileAccountActive => "while_account_active",
            Self::BillingRecord => "billing_record",
            Self::AdminRecord => "admin_record",
            Self::UntilDone => "until_done",
            Self::WhileInForce => "while_in_force",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Where a kind is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    Table,
    Bucket,
}

/// Which deletion time an item of a kind must carry (checked by the data-map test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionTime {
    /// Indexed by creation time (`exp_pk` = `CONTENT#<shard>`): due at creation + retention.
    FromPolicy,
    /// Stamped: `exp_pk` = `EXP#<shard>` and `exp_at` = deletion time.
    Stamped,
    /// Due at once (`exp_pk` = `DEL#<shard>`): worked off by the sweep's first phase.
    DueNow,
    /// Lives in the user's partition and goes with the account (no time of its own).
    WithAccount,
    /// Lives in its own partition; removed by the action that ends it (lift, completion).
    ByAction,
    /// Under `users/<sub>/...`: deleted with its item (generation) or the account.
    WithOwnerItem,
    /// Stamped (`exp_at`) and removed by DynamoDB's TTL (`ttl`), never by the sweep: short-lived
    /// counters with no content.
    Ttl,
}

/// Every kind the service stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Profile,
    Balance,
    LedgerEntry,
    AnonymousLedgerEntry,
    Generation,
    Idempotency,
    DeletionRecord,
    DeletionTombstone,
    Reference,
    Hold,
    AuditRecord,
    ChildReport,
    RateCounter,
    IpRateCounter,
    Violation,
    AgeRefusalCounter,
    Payment,
    Subscription,
    StripeCustomer,
    MonthlySpend,
    PendingCheckout,
    WebhookEvent,
    GeneratedImage,
    Upload,
    UploadObject,
    PublicCopy,
    GalleryEntry,
    Download,
    Consent,
    ConsentRecord,
    DeletionPointer,
    Export,
    ExportLock,
    ExportArchive,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct KindSpec {
    #[serde(skip)]
    pub id: Kind,
    /// The `kind` attribute of its items (or the object kind's name).
    pub kind: &'static str,
    pub store: Store,
    /// `pk | sk` for items, the key pattern for objects.
    pub key_shape: &'static str,
    /// What it holds, in words.
    pub holds: &'static str,
    /// `POLICY.md` category: C1 account, C2 payment, C3 usage, C4 content.
    pub category: &'static str,
    pub retention: RetentionClass,
    /// How long, in words (periods come from configuration where one is named).
    pub period: &'static str,
    pub deletion_time: DeletionTime,
    /// How it is deleted.
    pub deletion: &'static str,
    /// Whether the account export carries it.
    pub exported: bool,
}

#[allow(clippy::too_many_arguments)]
const fn spec(
    id: Kind,
    kind: &'static str,
    store: Store,
    key_shape: &'static str,
    holds: &'static str,
    category: &'static str,
    retention: RetentionClass,
    period: &'static str,
    deletion_time: DeletionTime,
    deletion: &'static str,
    exported: bool,
) -> KindSpec {
    KindSpec {
        id,
        kind,
        store,
        key_shape,
        holds,
        category,
        retention,
        period,
        deletion_time,
        deletion,
        exported,
    }
}

use DeletionTime as T;
use RetentionClass as R;
use Store::{Bucket, Table};

pub const DATA_MAP: &[KindSpec] = &[
    spec(Kind::Profile, "profile", Table, "USER#<sub> | PROFILE",
        "email, display name, avatar URL, preferences, how the age was confirmed, suspension state, a billing flag (a reversal left the balance negative)",
        "C1", R::WhileAccountActive, "while the account is active",
        T::WithAccount, "account deletion (removed within one sweep)", true),
    spec(Kind::Balance, "balance", Table, "USER#<sub> | CREDITS",
        "the credit balance", "C2", R::WhileAccountActive, "while the account is active",
        T::WithAccount, "account deletion (the ledger keeps the history)", true),
    spec(Kind::LedgerEntry, "ledger", Table, "USER#<sub> | LEDGER#<cause>",
        "one credit grant, debit or refund and its cause", "C2", R::BillingRecord,
        "while the account is active, then the legal period under an anonymous id",
        T::WithAccount, "account deletion moves it to ANON#<id>", true),
    spec(Kind::AnonymousLedgerEntry, "anonymous_ledger", Table, "ANON#<id> | LEDGER#<cause>",
        "a billing record of a deleted account, with no link to the person", "C2",
        R::BillingRecord, "the legal period (LEGAL_RETENTION_YEARS) from the account's deletion",
        T::Stamped, "the sweep, at its deletion time", false),
    spec(Kind::Generation, "generation", Table, "USER#<sub> | GEN#<id>",
        "prompt, settings, reference upload ids, status, image metadata, and each image's public-gallery and copy-protection settings",
        "C4", R::Content,
        "RETENTION_DAYS from creation (or until deleted)", T::FromPolicy,
        "the deletion pipeline: user DELETE, expiry, account deletion", true),
    spec(Kind::Idempotency, "idempotency", Table, "USER#<sub> | IDEM#<key>",
        "the first response to an Idempotency-Key (includes the prompt)", "C4", R::Fixed,
        "24 hours", T::Stamped, "the sweep; with its generation through the pipeline", false),
    spec(Kind::DeletionRecord, "deletion_record", Table, "DELETION#<id> | RECORD",
        "what remains to be removed after a deletion (keys, object prefixes)", "C4",
        R::UntilDone, "until everything it names is gone", T::DueNow,
        "removed by the sweep once its work is done", false),
    spec(Kind::DeletionTombstone, "deletion_tombstone", Table, "TOMBSTONE#<sha256> | ACCOUNT",
        "that an account was deleted and when (so the same identity gets no second signup grant); keyed by a hash of the subject",
        "C1", R::BillingRecord, "the legal period (LEGAL_RETENTION_YEARS)", T::Stamped,
        "the sweep, at its deletion time", false),
    spec(Kind::Reference, "reference", Table, "USER#<sub> | REF#<pk>#<sk>",
        "that an admin record names this user (so account deletion can anonymize it)", "C1",
        R::WhileAccountActive, "while the account is active", T::WithAccount,
        "account deletion replaces the subject in the named record, then removes it", false),
    spec(Kind::Hold, "legal_hold", Table, "HOLD | <id>",
        "a legal hold on a user or one generation: reason, placer, end", "C3",
        R::WhileInForce, "until lifted or ended (its history stays in the audit log)",
        T::ByAction, "lifting it, or the sweep at its end", false),
    spec(Kind::AuditRecord, "audit", Table, "AUDIT | <time>#<id>",
        "an admin action: who, what, when, why, outcome", "C3", R::AdminRecord,
        "the legal period (LEGAL_RETENTION_YEARS)", T::Stamped,
        "the sweep, at its deletion time; subjects become anonymous ids on account deletion",
        false),
    spec(Kind::ChildReport, "child_report", Table, "REPORT | <id>",
        "a report that an account belongs to a child, and its review", "C3", R::AdminRecord,
        "the legal period (LEGAL_RETENTION_YEARS)", T::Stamped,
        "the sweep, at its deletion time; subjects become anonymous ids on account deletion",
        false),
    spec(Kind::RateCounter, "rate_counter", Table, "USER#<sub> | RATE#<action>#<window start>",
        "how many requests of one rate-limited action (generations, uploads, downloads, exports, checkouts, reports) the user made in one window (S2)",
        "C3", R::Fixed, "a day after its window ends (at most 2 days)", T::Ttl,
        "DynamoDB TTL, or account deletion", false),
    spec(Kind::IpRateCounter, "ip_rate_counter", Table, "RATEIP#<hash of the IP> | RATE#<action>#<window start>",
        "how many anonymous requests (the public gallery) came from one source IP in one window, keyed by a hash of the address, never the address (S2)",
        "C3", R::Fixed, "a day after its window ends (at most 2 days)", T::Ttl,
        "DynamoDB TTL", false),
    spec(Kind::Violation, "violation", Table, "USER#<sub> | VIOLATION#<id>",
        "a prompt refused by moderation (S2, U5): when, which category and rule, the source (blocklist, moderation endpoint or the image provider), and the prompt as sent",
        "C3", R::Content, "RETENTION_DAYS from the refusal (R1: the prompt is content)",
        T::FromPolicy, "the sweep (R1 expiry), account deletion", true),
    spec(Kind::AgeRefusalCounter, "age_refusal_counter", Table, "STATS#age_refusals | <day>",
        "a daily count of refused under-13 sign-ups, with no identity (K1)", "C3",
        R::Anonymous, "1 year", T::Stamped, "the sweep, at its deletion time", false),
    spec(Kind::Payment, "payment", Table, "PAYMENT#<payment intent or invoice> | PAYMENT",
        "a Stripe payment intent (or invoice) id, the user it granted credits to, the ledger cause of the grant (a Checkout Session or invoice id), the credits, amount and currency, the cumulative refund and its time, the dispute state, the credits reversed and a version (C2: ids and amounts, never card data)",
        "C2", R::BillingRecord, "the legal period (LEGAL_RETENTION_YEARS)", T::Stamped,
        "the sweep, at its deletion time; the subject becomes an anonymous id on account deletion",
        false),
    spec(Kind::Subscription, "subscription", Table, "USER#<sub> | SUBSCRIPTION",
        "the Stripe subscription and customer ids, the plan, its status (and its rank), current period end, and the Stripe time of that state",
        "C2", R::WhileAccountActive, "while the account is active", T::WithAccount,
        "account deletion", true),
    spec(Kind::StripeCustomer, "stripe_customer", Table, "USER#<sub> | STRIPE_CUSTOMER",
        "the user's Stripe customer id, their monthly spend cap and how many checkouts they opened (C2: ids only, never card data)",
        "C2", R::WhileAccountActive, "while the account is active", T::WithAccount,
        "account deletion", true),
    spec(Kind::MonthlySpend, "monthly_spend", Table, "USER#<sub> | SPEND#<yyyy-mm>",
        "how much the user paid in a month, for the spend cap", "C2", R::Fixed,
        "2 months", T::Stamped, "the sweep, or account deletion", true),
    spec(Kind::PendingCheckout, "pending_checkout", Table, "USER#<sub> | PENDING#<session> (PENDING#res-<id> while its session is made)",
        "an open Checkout Session's amount and whether it is a plan, so open sessions count against the spend cap",
        "C2", R::Fixed, "until paid or expired (at most 24 hours; a reservation at most 5 minutes)", T::Stamped,
        "the paid or expired webhook, the session replacing its reservation, the sweep, or account deletion", false),
    spec(Kind::WebhookEvent, "webhook_event", Table, "EVENT#<stripe event id> | EVENT",
        "that a Stripe event was applied (its id and type), so a redelivery changes nothing",
        "C2", R::Fixed, "30 days (Stripe retries for 3)", T::Stamped,
        "the sweep, at its deletion time", false),
    spec(Kind::GeneratedImage, "generated_image", Bucket,
        "users/<sub>/generations/<id>/<n>.<ext>", "a generated image", "C4", R::Content,
        "with its generation", T::WithOwnerItem,
        "the deletion pipeline; S3 lifecycle backstop (tag backstop=on) 2 days after the retention",
        true),
    spec(Kind::PublicCopy, "public_copy", Bucket, "public/<token>/<image id>.<ext>",
        "what others see of a published image: a copy of it, or its reduced, watermarked preview when copy-protected; its key names neither the owner nor anything guessable",
        "C4", R::Content, "while the image is published", T::ByAction,
        "the deletion pipeline: at unpublishing or a change of copy protection (at once, at the latest within one sweep), with its image or generation, at account deletion; S3 lifecycle backstop (tag backstop=on)",
        false),
    spec(Kind::Upload, "upload", Table, "USER#<sub> | UPLOAD#<id>",
        "a reference image upload: declared type and size, its check's outcome (and why it was rejected), dimensions, last use",
        "C4", R::Fixed,
        "R2: 24 hours after the last generation that used it (after its upload while unused), never longer than RETENTION_DAYS",
        T::Stamped, "the deletion pipeline: user DELETE, expiry, account deletion", true),
    spec(Kind::UploadObject, "upload_object", Bucket,
        "users/<sub>/uploads/<id>/<original or reference.png>",
        "a reference image: the file as sent (until it is checked) and its re-encoded copy without metadata",
        "C4", R::Fixed, "with its upload (R2)", T::WithOwnerItem,
        "the deletion pipeline with its upload; the file as sent is deleted by its check",
        true),
    spec(Kind::GalleryEntry, "gallery_entry", Table, "GALLERY | <image id>",
        "a published image: which object is shown (the preview when copy-protected), its size, when published, its owner (never shown)",
        "C4", R::Content, "while the image is published and the account is in good standing",
        T::ByAction,
        "unpublishing, deleting the image or its generation, suspension, account deletion (at once)",
        false),
    spec(Kind::Download, "download", Table, "USER#<sub> | DOWNLOAD#<id>",
        "one download of the user's image: which image and variant, when, and whether by the owner or another user (not named)",
        "C4", R::Fixed,
        "RETENTION_DAYS from the download (a year when content is kept until deleted)",
        T::Stamped, "the sweep, at its deletion time, or account deletion", true),
    spec(Kind::Consent, "consent", Table, "USER#<sub> | CONSENT#<purpose>",
        "the current state of one consent (or of the restriction of processing): granted or not, when, from where, under which policy version",
        "C1", R::WhileAccountActive, "while the account is active", T::WithAccount,
        "account deletion", true),
    spec(Kind::ConsentRecord, "consent_record", Table, "USER#<sub> | CONSENTLOG#<id>",
        "one change of a consent or of the restriction of processing: purpose, granted or withdrawn, when, source, policy version (append-only)",
        "C1", R::WhileAccountActive, "while the account is active", T::WithAccount,
        "account deletion", true),
    spec(Kind::DeletionPointer, "deletion_pointer", Table, "USER#<sub> | DELREF#<id>",
        "that a deletion of the user's data is pending (the id of its record), so access finds it",
        "C4", R::UntilDone, "until the deletion is done", T::WithAccount,
        "removed with its record once the work is done, or by account deletion", false),
    spec(Kind::Export, "export", Table, "USER#<sub> | EXPORT#<id>",
        "an export of the user's data: its status, size, file count, when it was made and when it is deleted",
        "C1", R::Fixed, "R7: 7 days from its creation", T::Stamped,
        "the deletion pipeline with its archive: expiry, account deletion", false),
    spec(Kind::ExportLock, "export_lock", Table, "USER#<sub> | EXPORT_ACTIVE",
        "which export of the user is being built (one at a time)", "C1", R::UntilDone,
        "until the export is built or failed (at most its lease)", T::WithAccount,
        "removed when the export ends, or by account deletion", false),
    spec(Kind::ExportArchive, "export_archive", Bucket, "users/<sub>/exports/<id>/export.zip",
        "a ZIP of everything the data map marks exported, with the original files and a manifest of SHA-256 hashes",
        "C1", R::Fixed, "R7: 7 days from its creation", T::WithOwnerItem,
        "the deletion pipeline with its export; S3 lifecycle backstop (tag backstop=on)", false),
];

pub fn spec_of(kind: Kind) -> &'static KindSpec {
    DATA_MAP
        .iter()
        .find(|s| s.id == kind)
        .expect("every Kind has an entry in DATA_MAP")
}

pub fn by_name(name: &str) -> Option<&'static KindSpec> {
    DATA_MAP.iter().find(|s| s.kind == name)
}

/// Whether an object key has a bucket kind's shape: `users/<sub>/generations/<id>/<n>.<ext>`
/// matches `users/u1/generations/g1/0.png` (the same number of segments, literal segments equal,
/// `<...>` segments not empty).
pub fn object_matches(shape: &str, key: &str) -> bool {
    let (s, k): (Vec<&str>, Vec<&str>) = (shape.split('/').collect(), key.split('/').collect());
    s.len() == k.len()
        && s.iter().zip(&k).all(|(s, k)| {
            if s.contains('<') {
                !k.is_empty()
            } else {
                s == k
            }
        })
}

/// The bucket kind an object key belongs to.
pub fn object_kind(key: &str) -> Option<&'static KindSpec> {
    DATA_MAP
        .iter()
        .find(|k| k.store == Store::Bucket && object_matches(k.key_shape, key))
}

/// A new item of `kind`: its key, `kind` and `retention` attributes. Every item the adapters
/// create starts here.
pub fn new_item(kind: Kind, pk: impl Into<String>, sk: impl Into<String>) -> Item {
    let spec = spec_of(kind);
    debug_assert_eq!(spec.store, Store::Table, "{:?} is not a table kind", kind);
    let mut item = key(pk, sk);
    item.insert("kind".into(), s(spec.kind));
    item.insert("retention".into(), s(spec.retention.as_str()));
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_mapped_once() {
        let all = [
            Kind::Profile,
            Kind::Balance,
            Kind::LedgerEntry,
            Kind::AnonymousLedgerEntry,
            Kind::Generation,
            Kind::Idempotency,
            Kind::DeletionRecord,
            Kind::DeletionTombstone,
            Kind::Reference,
            Kind::Hold,
            Kind::AuditRecord,
            Kind::ChildReport,
            Kind::RateCounter,
            Kind::IpRateCounter,
            Kind::Violation,
            Kind::AgeRefusalCounter,
            Kind::Payment,
            Kind::Subscription,
            Kind::StripeCustomer,
            Kind::MonthlySpend,
            Kind::PendingCheckout,
            Kind::WebhookEvent,
            Kind::GeneratedImage,
            Kind::Upload,
            Kind::UploadObject,
            Kind::PublicCopy,
            Kind::GalleryEntry,
            Kind::Download,
            Kind::Consent,
            Kind::ConsentRecord,
            Kind::DeletionPointer,
            Kind::Export,
            Kind::ExportLock,
            Kind::ExportArchive,
        ];
        assert_eq!(all.len(), DATA_MAP.len());
        for k in all {
            assert_eq!(DATA_MAP.iter().filter(|s| s.id == k).count(), 1, "{k:?}");
        }
        let mut names: Vec<_> = DATA_MAP.iter().map(|s| s.kind).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DATA_MAP.len());
    }
}
