//! Opaque list cursors: base64url of the last key seen. The partition is always the caller's
//! own, so a forged cursor can at most skip within the caller's data; a malformed one is 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Invalid;

const PREFIX: &str = "v1:";

pub fn encode(sort_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{sort_key}"))
}

/// Decodes a cursor and checks that it points into the expected key range.
pub fn decode(cursor: &str, expected_prefix: &str) -> Result<String, Invalid> {
    let bad = || Invalid::new("invalid_cursor", "cursor is not one this API returned");
    if cursor.len() > 512 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let key = text.strip_prefix(PREFIX).ok_or_else(bad)?;
    if !key.starts_with(expected_prefix) || key.len() <= expected_prefix.len() {
        return Err(bad());
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_forgeries() {
        let c = encode("GEN#01J");
        assert_eq!(decode(&c, "GEN#").unwrap(), "GEN#01J");
        assert!(decode("not base64!", "GEN#").is_err());
        assert!(decode(&encode("PROFILE"), "GEN#").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("GEN#01J"), "GEN#").is_err());
    }
}
