//! C1 / D2: the profile fields a user can set, each parsed at the edge.

use serde_json::{Map, Value};

use super::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(Invalid::new(
                "invalid_display_name",
                format!("display_name must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid::new(
                "invalid_display_name",
                "display_name must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarUrl(String);

impl AvatarUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        let host = raw.strip_prefix("https://").unwrap_or("");
        let host = host.split(['/', '?', '#']).next().unwrap_or("");
        if raw.len() > Self::MAX_LEN
            || host.is_empty()
            || raw.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Invalid::new(
                "invalid_avatar_url",
                format!(
                    "avatar_url must be an https:// URL of at most {} characters",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// User preferences: a flat JSON object of scalar values, bounded in size.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Preferences(Map<String, Value>);

impl Preferences {
    pub const MAX_KEYS: usize = 32;
    pub const MAX_KEY_LEN: usize = 64;
    pub const MAX_VALUE_LEN: usize = 256;

    pub fn parse(value: &Value) -> Result<Self, Invalid> {
        let invalid = |detail: String| Invalid::new("invalid_preferences", detail);
        let map = value
            .as_object()
            .ok_or_else(|| invalid("preferences must be a JSON object".into()))?;
        if map.len() > Self::MAX_KEYS {
            return Err(invalid(format!("at most {} preferences", Self::MAX_KEYS)));
        }
        for (key, v) in map {
            if key.is_empty() || key.len() > Self::MAX_KEY_LEN {
                return Err(invalid(format!(
                    "preference names must be 1 to {} bytes",
                    Self::MAX_KEY_LEN
                )));
            }
            match v {
                Value::Bool(_) | Value::Number(_) | Value::Null => {}
                Value::String(s) if s.chars().count() <= Self::MAX_VALUE_LEN => {}
                Value::String(_) => {
                    return Err(invalid(format!(
                        "preference {key:?} is longer than {} characters",
                        Self::MAX_VALUE_LEN
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "preference {key:?} must be a string, number, boolean or null"
                    )))
                }
            }
        }
        Ok(Self(map.clone()))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn d2_profile_values_are_validated() {
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"x".repeat(65)).is_err());
        assert!(DisplayName::parse("a\u{0007}b").is_err());
        assert!(AvatarUrl::parse("https://cdn.example.com/a.png").is_ok());
        assert!(AvatarUrl::parse("http://cdn.example.com/a.png").is_err());
        assert!(AvatarUrl::parse("javascript:alert(1)").is_err());
        assert!(Preferences::parse(&json!({"theme": "dark", "grid": 3})).is_ok());
        assert!(Preferences::parse(&json!({"nested": {"a": 1}})).is_err());
        assert!(Preferences::parse(&json!([1, 2])).is_err());
    }
}
