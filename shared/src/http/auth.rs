//! The caller, from the claims API Gateway's JWT authorizer verified and put in the request
//! context. Functions never see an unverified token.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::domain::user::UserId;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

impl Caller {
    /// Reads the verified claims; a request without them is 401.
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        #[allow(unreachable_patterns)]
        let claims = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|jwt| &jwt.claims),
            _ => None,
        }
        .ok_or_else(ApiError::unauthorized)?;
        let sub = claims.get("sub").ok_or_else(ApiError::unauthorized)?;
        let user_id = UserId::parse(sub).map_err(|_| ApiError::unauthorized())?;
        let email = claims.get("email").filter(|e| !e.is_empty()).cloned();
        Ok(Self {
            user_id,
            email,
            groups: claims
                .get("cognito:groups")
                .or_else(|| claims.get("groups"))
                .map(|g| parse_group_claim(g))
                .unwrap_or_default(),
        })
    }
}

/// API Gateway flattens array claims to a string such as `[admin editors]`.
pub fn parse_group_claim(raw: &str) -> Vec<String> {
    raw.trim_matches(|c| c == '[' || c == ']')
        .split([' ', ','])
        .map(|s| s.trim_matches('"').trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_claims_in_api_gateway_shape() {
        assert_eq!(
            parse_group_claim("[admin editors]"),
            vec!["admin", "editors"]
        );
        assert_eq!(parse_group_claim("admin"), vec!["admin"]);
        assert!(parse_group_claim("[]").is_empty());
    }
}
