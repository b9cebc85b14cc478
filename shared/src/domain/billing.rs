//! Billing's vocabulary (C2, U2): the catalog of credit packs and plans (configuration, not
//! code), and Stripe's webhook signature scheme.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One thing a user can buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// Our id (`pack_small`, `plan_monthly`): what a checkout names.
    pub id: String,
    /// Stripe's price id.
    pub price_id: String,
    pub credits: u64,
    /// Price in the currency's smallest unit.
    pub amount: u64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// One-time credit packs (Checkout mode `payment`).
    pub packs: Vec<CatalogItem>,
    /// Monthly plans (Checkout mode `subscription`): their credits are granted per paid invoice.
    pub plans: Vec<CatalogItem>,
}

/// The catalog a fresh deployment starts with (`BILLING_CATALOG` replaces it).
pub const DEFAULT_CATALOG: &str = include_str!("../../catalog.default.json");

impl Catalog {
    pub fn parse(json: &str) -> Result<Self, String> {
        let c: Catalog = serde_json::from_str(json).map_err(|e| format!("not a catalog: {e}"))?;
        let all: Vec<&CatalogItem> = c.packs.iter().chain(&c.plans).collect();
        for item in &all {
            if item.credits == 0 || item.amount == 0 || item.currency.len() != 3 {
                return Err(format!(
                    "{}: credits, amount and a 3-letter currency are required",
                    item.id
                ));
            }
        }
        for (i, a) in all.iter().enumerate() {
            if all[..i]
                .iter()
                .any(|b| b.id == a.id || b.price_id == a.price_id)
            {
                return Err(format!("{}: ids and price ids must be unique", a.id));
            }
        }
        Ok(c)
    }

    pub fn pack(&self, id: &str) -> Option<&CatalogItem> {
        self.packs.iter().find(|p| p.id == id)
    }

    pub fn plan(&self, id: &str) -> Option<&CatalogItem> {
        self.plans.iter().find(|p| p.id == id)
    }

    pub fn plan_by_price(&self, price_id: &str) -> Option<&CatalogItem> {
        self.plans.iter().find(|p| p.price_id == price_id)
    }

    /// A pack or plan by its Stripe price id.
    pub fn by_price(&self, price_id: &str) -> Option<&CatalogItem> {
        self.packs
            .iter()
            .chain(&self.plans)
            .find(|i| i.price_id == price_id)
    }
}

/// Stripe's signature tolerance.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `v1` signature Stripe sends: hex HMAC-SHA256 of `{t}.{payload}` under the secret.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload).finalize().into_bytes())
}

/// Verifies a `Stripe-Signature` header (`t=...,v1=...[,v1=...]`) against every configured
/// secret (more than one during a roll): any `v1` matching any secret within the tolerance.
pub fn verify(
    header: &str,
    payload: &[u8],
    secrets: &[String],
    now: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let mac = mac(secret, t, payload);
        for sig in &signatures {
            // `verify_slice` compares in constant time.
            if let Ok(bytes) = hex::decode(sig) {
                if mac.clone().verify_slice(&bytes).is_ok() {
                    return Ok(());
                }
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    fn header(secret: &str, t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", sign(secret, t, body))
    }

    #[test]
    fn u2_valid_signature_is_accepted() {
        let t = 1_795_000_000;
        assert_eq!(
            verify(&header(SECRET, t, BODY), BODY, &[SECRET.into()], t + 10),
            Ok(())
        );
    }

    #[test]
    fn u2_wrong_secret_tampered_body_and_stale_timestamps_are_refused() {
        let t = 1_795_000_000;
        let secrets = [SECRET.to_string()];
        assert_eq!(
            verify(&header("whsec_other", t, BODY), BODY, &secrets, t),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered[10] = b'X';
        assert_eq!(
            verify(&header(SECRET, t, BODY), &tampered, &secrets, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header(SECRET, t, BODY), BODY, &secrets, t + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header(SECRET, t, BODY), BODY, &secrets, t + 300),
            Ok(())
        );
        assert_eq!(
            verify("v1=abc", BODY, &secrets, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&format!("t={t}"), BODY, &secrets, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("", BODY, &secrets, t),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn u2_any_v1_matches_any_secret_during_a_roll() {
        let t = 1_795_000_000;
        let old = "whsec_old";
        let new = "whsec_new";
        // Stripe signs with both secrets during a roll: two v1 values.
        let both = format!("t={t},v1={},v1={}", sign(old, t, BODY), sign(new, t, BODY));
        assert_eq!(verify(&both, BODY, &[new.into()], t), Ok(()));
        assert_eq!(verify(&both, BODY, &[old.into()], t), Ok(()));
        // We hold both secrets while we roll ours: a header signed with either passes.
        let only_old = header(old, t, BODY);
        assert_eq!(
            verify(&only_old, BODY, &[new.into(), old.into()], t),
            Ok(())
        );
    }

    #[test]
    fn default_catalog_parses_and_checks() {
        let c = Catalog::parse(DEFAULT_CATALOG).unwrap();
        assert!(!c.packs.is_empty() && !c.plans.is_empty());
        assert!(Catalog::parse(r#"{"packs":[],"plans":[{"id":"a","price_id":"p","credits":0,"amount":1,"currency":"usd"}]}"#).is_err());
        assert!(Catalog::parse(r#"{"packs":[{"id":"a","price_id":"p","credits":1,"amount":1,"currency":"usd"},{"id":"a","price_id":"q","credits":1,"amount":1,"currency":"usd"}],"plans":[]}"#).is_err());
    }
}
