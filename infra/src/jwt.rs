//! Local tokens: `POST /dev/token` signs them with a local dev key, and the dev host verifies
//! bearer tokens as API Gateway's JWT authorizer would (signature, issuer, audience, expiry).
//! Never deployed: on AWS the authorizer verifies the identity provider's tokens.

use std::collections::HashMap;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

pub const DEV_ISSUER: &str = "https://dev-idp.imagegen.local";
pub const DEV_AUDIENCE: &str = "imagegen-local";
/// Lifetime of a dev token.
pub const TOKEN_HOURS: i64 = 12;

#[derive(Clone)]
pub struct DevJwt {
    secret: Vec<u8>,
}

impl DevJwt {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    pub fn mint(
        &self,
        sub: &str,
        email: Option<&str>,
        groups: &[String],
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "sub": sub,
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "iat": now,
            "exp": now + TOKEN_HOURS * 3600,
            "token_use": "id",
        });
        if let Some(email) = email {
            claims["email"] = json!(email);
        }
        if !groups.is_empty() {
            claims["cognito:groups"] = json!(groups);
        }
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    /// Verifies a token and returns its claims flattened to strings, as API Gateway puts them in
    /// `requestContext.authorizer.jwt.claims` (arrays become `[a b]`).
    pub fn verify(&self, token: &str) -> Option<HashMap<String, String>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[DEV_ISSUER]);
        validation.set_audience(&[DEV_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<HashMap<String, Value>>(
            token,
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .ok()?;
        Some(
            data.claims
                .into_iter()
                .map(|(k, v)| {
                    let flat = match v {
                        Value::String(s) => s,
                        Value::Array(items) => format!(
                            "[{}]",
                            items
                                .iter()
                                .map(|i| i
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| i.to_string()))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        other => other.to_string(),
                    };
                    (k, flat)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let jwt = DevJwt::new("k1");
        let token = jwt
            .mint("user-1", Some("a@example.com"), &["admin".into()])
            .unwrap();
        let claims = jwt.verify(&token).unwrap();
        assert_eq!(claims["sub"], "user-1");
        assert_eq!(claims["cognito:groups"], "[admin]");
        assert!(DevJwt::new("k2").verify(&token).is_none());
        assert!(jwt.verify("not.a.token").is_none());
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'x');
        assert!(jwt.verify(&tampered).is_none());
    }
}
