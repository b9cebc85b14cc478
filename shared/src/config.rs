//! Typed configuration, parsed once at init. A missing or malformed variable fails fast with a
//! message naming it; secrets are wrapped so they never print.

use std::fmt;
use std::time::Duration;

use crate::domain::retention::RetentionPolicy;

/// A secret value (API key): `Debug` and `Display` never reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub enum ProviderConfig {
    /// The embedded renderer: draws a real image locally, no account needed.
    Local,
    /// The OpenAI Images API, or any server speaking its wire format.
    OpenAi {
        base_url: String,
        model: String,
        api_key: Secret,
    },
}

/// What prompts are screened with (S2, U5), the settings of the moderation port: the blocklist
/// and the moderation endpoint. Read only by functions that screen prompts.
#[derive(Debug, Clone)]
pub struct ModerationSettings {
    pub blocklist: crate::moderation::Blocklist,
    /// OpenAI's moderation endpoint (`MODERATION_PROVIDER=openai`): base URL, key, model.
    pub endpoint: Option<(String, Secret, String)>,
}

/// Reads one setting: trimmed, and absent when empty.
pub fn setting(lookup: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Reads a setting that must be there.
pub fn required(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    setting(lookup, name).ok_or(ConfigError::Missing(name))
}

impl ProviderConfig {
    /// `IMAGE_PROVIDER` (`local` by default) and, for `openai`, `OPENAI_BASE_URL`,
    /// `OPENAI_MODEL` and the required `OPENAI_API_KEY`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| setting(lookup, name);
        Ok(match get("IMAGE_PROVIDER").as_deref().unwrap_or("local") {
            "local" => ProviderConfig::Local,
            "openai" => ProviderConfig::OpenAi {
                base_url: get("OPENAI_BASE_URL")
                    .unwrap_or_else(|| "https://api.openai.com".to_string())
                    .trim_end_matches('/')
                    .to_string(),
                model: get("OPENAI_MODEL").unwrap_or_else(|| "gpt-image-1".to_string()),
                api_key: Secret::new(required(lookup, "OPENAI_API_KEY")?),
            },
            other => {
                return Err(ConfigError::Invalid {
                    name: "IMAGE_PROVIDER",
                    reason: format!("{other:?} is not one of \"local\", \"openai\""),
                })
            }
        })
    }
}

impl ModerationSettings {
    /// `MODERATION_BLOCKLIST` (a default list otherwise) and `MODERATION_PROVIDER` (`none` by
    /// default; `openai` requires `OPENAI_API_KEY`).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| setting(lookup, name);
        Ok(Self {
            blocklist: crate::moderation::Blocklist::parse(
                get("MODERATION_BLOCKLIST")
                    .as_deref()
                    .unwrap_or(crate::moderation::DEFAULT_BLOCKLIST),
            )
            .map_err(|reason| ConfigError::Invalid {
                name: "MODERATION_BLOCKLIST",
                reason,
            })?,
            endpoint: match get("MODERATION_PROVIDER").as_deref().unwrap_or("none") {
                "none" => None,
                "openai" => Some((
                    get("OPENAI_BASE_URL")
                        .unwrap_or_else(|| "https://api.openai.com".to_string())
                        .trim_end_matches('/')
                        .to_string(),
                    Secret::new(required(lookup, "OPENAI_API_KEY")?),
                    get("MODERATION_MODEL").unwrap_or_else(|| "omni-moderation-latest".into()),
                )),
                other => {
                    return Err(ConfigError::Invalid {
                        name: "MODERATION_PROVIDER",
                        reason: format!("{other:?} is not one of \"none\", \"openai\""),
                    })
                }
            },
        })
    }
}

/// When repeated refusals suspend an account (S2, U5).
#[derive(Debug, Clone)]
pub struct ModerationConfig {
    /// This many refusals (`VIOLATION_THRESHOLD`, default 3) ...
    pub violation_threshold: u32,
    /// ... within this window (`VIOLATION_WINDOW_HOURS`, default 24) suspend the account.
    pub violation_window: Duration,
}

/// DynamoDB point-in-time recovery window: deleted data survives in backups this long
/// (`BackupRecoveryDays` in the template; published by `GET /v1/policy`).
pub const DEFAULT_BACKUP_RECOVERY_DAYS: u32 = 7;
/// The most the template allows, below the policy's 30-day promise.
pub const MAX_BACKUP_RECOVERY_DAYS: u32 = 29;
/// Billing records and admin records are kept this long (R4).
pub const DEFAULT_LEGAL_RETENTION_YEARS: u32 = 6;

/// The settings every function reads: the table and the product's rules, each with a default.
/// What only some functions use (the bucket, the queues, the bus, the image provider, the
/// moderation endpoint) is read by the port that uses it (`crate::app::Settings`).
#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    pub retention: RetentionPolicy,
    /// Credits granted once when an account is onboarded.
    pub signup_credits: u64,
    /// Timeout of one provider call.
    pub provider_timeout: Duration,
    /// Retries of a provider call on transient errors, within one delivery.
    pub provider_max_retries: u32,
    /// How long a worker's claim on a running job lasts before it counts as stuck; longer than
    /// the `generate` function's timeout (300 s), so a live invocation never loses its job.
    pub job_lease: Duration,
    /// How long a job may stay queued before the sweep fails and refunds it.
    pub queue_timeout: Duration,
    /// Lifetime of presigned download URLs.
    pub download_url_ttl: Duration,
    /// Version of the published privacy policy.
    pub policy_version: String,
    /// The Cognito user pool whose users are deleted with their accounts (`None`: another OIDC
    /// issuer, whose users this service cannot delete).
    pub user_pool_id: Option<String>,
    /// The group claim that grants the admin routes.
    pub admin_group: String,
    /// Days deleted data can survive in point-in-time-recovery backups (1 to 29).
    pub backup_recovery_days: u32,
    /// Years billing and admin records are kept after an account's deletion.
    pub legal_retention_years: u32,
    /// Child-account reports one user may send per day.
    pub child_reports_per_day: u32,
    /// Rate limits (S2): defaults in `crate::limits`, changed with `RATE_LIMITS`.
    pub rate_limits: crate::limits::RateLimits,
    pub moderation: ModerationConfig,
    /// What users can buy (`BILLING_CATALOG`, JSON; a default catalog otherwise).
    pub catalog: crate::domain::billing::Catalog,
    /// The SSM parameter (SecureString) holding the Stripe webhook signing secret(s), comma-
    /// separated during a roll. Unset: billing is not configured.
    pub stripe_webhook_secret_param: Option<String>,
    /// The SSM parameter (SecureString) holding the Stripe secret key. Unset: checkout, portal
    /// and invoices answer 503 `billing_not_configured`.
    pub stripe_secret_key_param: Option<String>,
    /// Another Stripe API base (a local stand-in); Stripe's own when unset.
    pub stripe_api_base: Option<String>,
    /// Where Checkout and the portal send the user back.
    pub checkout_success_url: String,
    pub checkout_cancel_url: String,
    pub portal_return_url: String,
    /// Below this balance, `credits.low` goes on the bus (once per crossing).
    pub low_balance_threshold: u64,
    /// The purposes a user can consent to (U4, D7), each off until granted
    /// (`CONSENT_PURPOSES`, comma-separated; `marketing_email` by default).
    pub consent_purposes: Vec<String>,
    /// The export queue (`EXPORT_QUEUE_URL`; exports answer 503 without it).
    pub export_queue_url: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// `marketing_email` by default; each purpose 1 to 40 of `a-z` and `_`.
fn consent_purposes(raw: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = raw
        .unwrap_or("marketing_email")
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    for p in &list {
        let valid = (1..=40).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && p != crate::services::consents::RESTRICTION;
        if !valid {
            return Err(ConfigError::Invalid {
                name: "CONSENT_PURPOSES",
                reason: format!("{p:?} is not 1 to 40 of a-z and _ (or is reserved)"),
            });
        }
    }
    Ok(list)
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| -> Option<String> {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().map_err(|e| ConfigError::Invalid {
                    name,
                    reason: e.to_string(),
                }),
            }
        };

        let ranged = |name: &'static str,
                      default: u32,
                      range: std::ops::RangeInclusive<u32>|
         -> Result<u32, ConfigError> {
            let v = number(name, u64::from(default))?;
            u32::try_from(v)
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("{v} is not within {range:?}"),
                })
        };

        let retention = match get("RETENTION_DAYS") {
            None => RetentionPolicy::default(),
            Some(v) => RetentionPolicy::parse(&v).map_err(|reason| ConfigError::Invalid {
                name: "RETENTION_DAYS",
                reason,
            })?,
        };

        let child_reports_per_day = ranged("CHILD_REPORTS_PER_DAY", 5, 1..=100)?;
        let rate_limits =
            crate::limits::RateLimits::parse(get("RATE_LIMITS").as_deref(), child_reports_per_day)
                .map_err(|reason| ConfigError::Invalid {
                    name: "RATE_LIMITS",
                    reason,
                })?;

        let moderation = ModerationConfig {
            violation_threshold: ranged("VIOLATION_THRESHOLD", 3, 1..=1000)?,
            violation_window: Duration::from_secs(
                u64::from(ranged("VIOLATION_WINDOW_HOURS", 24, 1..=24 * 90)?) * 3600,
            ),
        };

        Ok(Self {
            table_name: required("TABLE_NAME")?,
            retention,
            signup_credits: number("SIGNUP_CREDITS", 10)?,
            provider_timeout: Duration::from_secs(number("PROVIDER_TIMEOUT_SECS", 60)?),
            provider_max_retries: number("PROVIDER_MAX_RETRIES", 2)? as u32,
            job_lease: Duration::from_secs(number("JOB_LEASE_SECS", 600)?),
            queue_timeout: Duration::from_secs(number("JOB_QUEUE_TIMEOUT_SECS", 3600)?),
            download_url_ttl: Duration::from_secs(number("DOWNLOAD_URL_TTL_SECS", 300)?),
            policy_version: get("POLICY_VERSION").unwrap_or_else(|| "2026-11-22".to_string()),
            user_pool_id: get("USER_POOL_ID"),
            admin_group: get("ADMIN_GROUP").unwrap_or_else(|| "admins".to_string()),
            backup_recovery_days: ranged(
                "BACKUP_RECOVERY_DAYS",
                DEFAULT_BACKUP_RECOVERY_DAYS,
                1..=MAX_BACKUP_RECOVERY_DAYS,
            )?,
            legal_retention_years: ranged(
                "LEGAL_RETENTION_YEARS",
                DEFAULT_LEGAL_RETENTION_YEARS,
                1..=10,
            )?,
            child_reports_per_day,
            rate_limits,
            moderation,
            catalog: crate::domain::billing::Catalog::parse(
                get("BILLING_CATALOG")
                    .as_deref()
                    .unwrap_or(crate::domain::billing::DEFAULT_CATALOG),
            )
            .map_err(|reason| ConfigError::Invalid {
                name: "BILLING_CATALOG",
                reason,
            })?,
            stripe_webhook_secret_param: get("STRIPE_WEBHOOK_SECRET_PARAM"),
            stripe_secret_key_param: get("STRIPE_SECRET_KEY_PARAM"),
            stripe_api_base: get("STRIPE_API_BASE"),
            checkout_success_url: get("CHECKOUT_SUCCESS_URL")
                .unwrap_or_else(|| "https://imagegen.invalid/billing/success".into()),
            checkout_cancel_url: get("CHECKOUT_CANCEL_URL")
                .unwrap_or_else(|| "https://imagegen.invalid/billing/cancel".into()),
            low_balance_threshold: number("LOW_BALANCE_THRESHOLD", 5)?,
            consent_purposes: consent_purposes(get("CONSENT_PURPOSES").as_deref())?,
            export_queue_url: get("EXPORT_QUEUE_URL"),
            portal_return_url: get("PORTAL_RETURN_URL")
                .unwrap_or_else(|| "https://imagegen.invalid/billing".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([("TABLE_NAME", "t")])
    }

    #[test]
    fn missing_variable_is_named() {
        let mut env = base();
        env.remove("TABLE_NAME");
        let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err, ConfigError::Missing("TABLE_NAME"));
    }

    #[test]
    fn defaults_and_secret_never_prints() {
        let mut env = base();
        env.insert("IMAGE_PROVIDER", "openai");
        env.insert("OPENAI_API_KEY", "sk-very-secret");
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        let cfg = Config::from_lookup(lookup).unwrap();
        let provider = ProviderConfig::from_lookup(&lookup).unwrap();
        assert!(!format!("{provider:?}").contains("sk-very-secret"));
        assert_eq!(cfg.signup_credits, 10);
        assert_eq!(cfg.retention.content_days(), Some(14));
        assert_eq!(cfg.backup_recovery_days, DEFAULT_BACKUP_RECOVERY_DAYS);
        assert_eq!(cfg.user_pool_id, None);
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }

    #[test]
    fn r3_backup_window_above_29_days_is_refused() {
        let mut env = base();
        env.insert("BACKUP_RECOVERY_DAYS", "35");
        let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "BACKUP_RECOVERY_DAYS",
                ..
            }
        ));
    }

    #[test]
    fn unknown_provider_is_rejected() {
        let mut env = base();
        env.insert("IMAGE_PROVIDER", "dalle-by-hand");
        let err = ProviderConfig::from_lookup(&|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "IMAGE_PROVIDER",
                ..
            }
        ));
    }
}
