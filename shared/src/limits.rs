//! Rate limits (S2, U5): the one place they are configured.
//!
//! Every limited action has one counter per subject and fixed window: the user for signed-in
//! routes, a hash of the source IP for anonymous ones. A request takes its slot with one
//! conditional `UpdateItem` (`ADD uses 1` if `uses < max`), so concurrent requests never race
//! past the limit and nothing is read first; a refused request gets 429 `rate_limited` with
//! `Retry-After` (the seconds left in the window). Counters carry a DynamoDB TTL a day after their
//! window, so they cost the sweep nothing.
//!
//! Defaults (see [`Action::default_limit`]) can be changed with `RATE_LIMITS`, e.g.
//! `generate=30/60,gallery=300/60` (`action=max/window seconds`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;

/// Who a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The signed-in user (the JWT's subject).
    User,
    /// The request's source IP as API Gateway saw it (anonymous routes).
    Ip,
}

/// Every limited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /v1/generations`: costs the operator a provider call.
    Generate,
    /// `POST /v1/uploads`: storage and a decode.
    Upload,
    /// `POST /v1/images/{id}/download`: presigned egress.
    Download,
    /// `POST /v1/exports`: reads everything a user holds.
    Export,
    /// `POST /v1/billing/checkout` and `POST /v1/billing/portal`: Stripe API calls.
    Checkout,
    /// `POST /v1/reports/child-account`: each report suspends an account at once.
    ChildReport,
    /// `GET /v1/gallery`, `GET /v1/gallery/{id}`: anonymous reads, per source IP.
    Gallery,
}

pub const ACTIONS: &[Action] = &[
    Action::Generate,
    Action::Upload,
    Action::Download,
    Action::Export,
    Action::Checkout,
    Action::ChildReport,
    Action::Gallery,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window_secs: u32,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Export => "export",
            Self::Checkout => "checkout",
            Self::ChildReport => "child_report",
            Self::Gallery => "gallery",
        }
    }

    pub fn scope(self) -> Scope {
        match self {
            Self::Gallery => Scope::Ip,
            _ => Scope::User,
        }
    }

    /// The defaults, chosen so a person using the product never meets them and a script does:
    /// a generation takes seconds to render, so 20 a minute is well above a human's pace and
    /// still bounds what a stolen token can spend before credits run out; exports are one at a
    /// time anyway; checkout sessions are created by a click; child reports suspend at once, so
    /// they are scarce (`CHILD_REPORTS_PER_DAY`); a gallery page per second per IP is a fast
    /// reader.
    pub fn default_limit(self) -> Limit {
        let (max, window_secs) = match self {
            Self::Generate => (20, 60),
            Self::Upload => (30, 60),
            Self::Download => (120, 60),
            Self::Export => (5, 3600),
            Self::Checkout => (10, 600),
            Self::ChildReport => (5, 86_400),
            Self::Gallery => (120, 60),
        };
        Limit { max, window_secs }
    }

    fn by_name(name: &str) -> Option<Self> {
        ACTIONS.iter().copied().find(|a| a.name() == name)
    }
}

/// The limits in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits(HashMap<Action, Limit>);

impl RateLimits {
    /// The defaults, with `child_report` from `CHILD_REPORTS_PER_DAY`, then `RATE_LIMITS`.
    pub fn parse(raw: Option<&str>, child_reports_per_day: u32) -> Result<Self, String> {
        let mut limits: HashMap<Action, Limit> =
            ACTIONS.iter().map(|a| (*a, a.default_limit())).collect();
        limits.insert(
            Action::ChildReport,
            Limit {
                max: child_reports_per_day,
                window_secs: 86_400,
            },
        );
        for entry in raw.unwrap_or("").split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let parsed = entry.split_once('=').and_then(|(name, value)| {
                let (max, window) = value.split_once('/')?;
                let max: u32 = max.trim().parse().ok()?;
                let window_secs: u32 = window.trim().parse().ok()?;
                ((1..=1_000_000).contains(&max) && (1..=86_400).contains(&window_secs))
                    .then_some((name.trim(), Limit { max, window_secs }))
            });
            let (name, limit) = parsed.ok_or_else(|| {
                format!("{entry:?} is not action=max/window_seconds (max 1 to 1000000, window 1 to 86400)")
            })?;
            let action = Action::by_name(name).ok_or_else(|| {
                let known: Vec<_> = ACTIONS.iter().map(|a| a.name()).collect();
                format!("{name:?} is not one of {}", known.join(", "))
            })?;
            limits.insert(action, limit);
        }
        Ok(Self(limits))
    }

    pub fn get(&self, action: Action) -> Limit {
        self.0
            .get(&action)
            .copied()
            .unwrap_or_else(|| action.default_limit())
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::parse(None, Action::ChildReport.default_limit().max).expect("defaults are valid")
    }
}

/// The fixed window `now` falls in: its start and its end (seconds since the epoch).
pub fn window(limit: Limit, now: DateTime<Utc>) -> (i64, i64) {
    let w = i64::from(limit.window_secs);
    let start = now.timestamp().div_euclid(w) * w;
    (start, start + w)
}

/// A source IP as counters name it: a hash, so the table never holds the address itself.
pub fn ip_subject(ip: &str) -> String {
    hex::encode(&Sha256::digest(format!("imagegen-rate:{ip}").as_bytes())[..16])
}

/// Takes one use of `action` for `subject` (a user id, or [`ip_subject`]); 429 when the window's
/// uses are spent.
pub async fn take(
    app: &App,
    action: Action,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let limit = app.config.rate_limits.get(action);
    let (start, end) = window(limit, now);
    let taken = app
        .store
        .take_rate_slot(action, subject, start, end, limit.max)
        .await?;
    if taken {
        Ok(())
    } else {
        let retry_after = (end - now.timestamp()).max(1) as u64;
        tracing::info!(action = action.name(), retry_after, "rate limited");
        Err(ApiError::RateLimited {
            retry_after,
            detail: format!(
                "at most {} {} requests per {} s; retry after {retry_after} s",
                limit.max,
                action.name(),
                limit.window_secs
            ),
        })
    }
}

/// [`take`] for a signed-in caller.
pub async fn take_for_user(
    app: &App,
    action: Action,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    debug_assert_eq!(action.scope(), Scope::User);
    take(app, action, user_id, now).await
}

/// [`take`] for an anonymous caller, by source IP (no IP: one shared bucket, never unlimited).
pub async fn take_for_ip(
    app: &App,
    action: Action,
    source_ip: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    debug_assert_eq!(action.scope(), Scope::Ip);
    take(
        app,
        action,
        &ip_subject(source_ip.unwrap_or("unknown")),
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s2_limits_parse_and_refuse_nonsense() {
        let l = RateLimits::parse(Some("generate=3/10, gallery=1000/60"), 7).unwrap();
        assert_eq!(
            l.get(Action::Generate),
            Limit {
                max: 3,
                window_secs: 10
            }
        );
        assert_eq!(l.get(Action::Gallery).max, 1000);
        assert_eq!(l.get(Action::ChildReport).max, 7);
        assert_eq!(l.get(Action::Upload), Action::Upload.default_limit());
        for bad in [
            "generate=0/10",
            "generate=3",
            "nope=1/1",
            "generate=1/0",
            "x",
        ] {
            assert!(RateLimits::parse(Some(bad), 5).is_err(), "{bad}");
        }
    }

    #[test]
    fn s2_windows_are_aligned() {
        let limit = Limit {
            max: 1,
            window_secs: 60,
        };
        let t = DateTime::from_timestamp(125, 0).unwrap();
        assert_eq!(window(limit, t), (120, 180));
        assert_ne!(ip_subject("10.0.0.1"), ip_subject("10.0.0.2"));
        assert!(!ip_subject("10.0.0.1").contains("10.0"));
    }
}
