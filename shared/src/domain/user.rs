//! The signed-in subject.

use super::Invalid;

/// The identity provider's subject (`sub` claim): the key of everything a user owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '|')
            });
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(Invalid::new(
                "invalid_subject",
                "the token's subject is not usable",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_that_could_break_keys_are_rejected() {
        assert!(UserId::parse("4f1c-9a_b").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a#b").is_err());
        assert!(UserId::parse("a/b").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
    }
}
