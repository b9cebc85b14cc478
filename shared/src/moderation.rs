//! Prompt moderation (S2, U5, U1): a port in front of every generation, with two parts the
//! operator configures.
//!
//! - A blocklist (`MODERATION_BLOCKLIST`): terms and `/patterns/`, matched after normalising the
//!   prompt: Unicode compatibility forms, case, diacritics (`nüde` is `nude`), invisible
//!   characters, common character substitutions (`n00d3`, `$3x`), and letters split by spacing
//!   or punctuation (`n u d e`, `n.u.d.e`). Terms match whole words (a term inside another word,
//!   like `rape` in `grape`, does not).
//! - When `MODERATION_PROVIDER=openai`, OpenAI's moderation endpoint (`POST /v1/moderations`,
//!   its real wire format), asked after the blocklist passes. Its failure refuses nothing and
//!   accepts nothing: the request answers 503 and nothing is charged.
//!
//! A refusal names its category and rule, never echoes the prompt into logs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::config::Secret;

/// Why a prompt was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `blocklist`, `moderation_endpoint` or `image_provider`.
    pub source: String,
    /// The category (the blocklist entry's, or the endpoint's first flagged category).
    pub category: String,
    /// Which rule: the blocklist entry's index and kind, or the endpoint's model.
    pub rule: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("the moderation endpoint is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Moderator: Send + Sync {
    /// `Ok(None)` when the prompt may be generated.
    async fn check(&self, prompt: &str) -> Result<Option<Refusal>, ModerationError>;
}

/// The blocklist's default: the one category no operator may serve (sexual content involving
/// minors). Operators add their own with `MODERATION_BLOCKLIST`.
pub const DEFAULT_BLOCKLIST: &str = "minors:/\\b(child|children|kid|kids|minor|minors|underage|preteen|toddler|schoolgirl|schoolboy|loli|shota)\\b.*\\b(nude|naked|sex|sexual|porn|nsfw|explicit|erotic)\\b/;minors:/\\b(nude|naked|sex|sexual|porn|nsfw|explicit|erotic)\\b.*\\b(child|children|kid|kids|minor|minors|underage|preteen|toddler|schoolgirl|schoolboy|loli|shota)\\b/;minors:child porn;minors:cp porn";

#[derive(Debug, Clone)]
enum Rule {
    /// A sequence of normalised words.
    Term(Vec<String>),
    /// A pattern over the normalised text (words joined by single spaces).
    Pattern(regex_lite::Regex),
}

#[derive(Debug, Clone)]
struct Entry {
    category: String,
    rule: Rule,
}

/// Terms and patterns, each with a category: `category:term` or `category:/pattern/` (no
/// category: `blocked`), separated by `;` or new lines.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    entries: Vec<Entry>,
}

impl Blocklist {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for entry in raw
            .split([';', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (category, body) = match entry.split_once(':') {
                Some((c, b))
                    if !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                {
                    (c.to_string(), b.trim())
                }
                _ => ("blocked".to_string(), entry),
            };
            let rule = if body.len() > 2 && body.starts_with('/') && body.ends_with('/') {
                let pattern = &body[1..body.len() - 1];
                Rule::Pattern(
                    regex_lite::Regex::new(pattern)
                        .map_err(|e| format!("pattern {pattern:?}: {e}"))?,
                )
            } else {
                let words = words(body);
                if words.is_empty() {
                    return Err(format!("{entry:?} has no letters or digits"));
                }
                Rule::Term(words)
            };
            entries.push(Entry { category, rule });
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn check(&self, prompt: &str) -> Option<Refusal> {
        // `1` stands for `i` or `l`: both readings are checked.
        ['i', 'l']
            .into_iter()
            .find_map(|one| self.check_reading(prompt, one))
    }

    fn check_reading(&self, prompt: &str, one: char) -> Option<Refusal> {
        let (words, spelled) = tokens(prompt, one);
        let text = words.join(" ");
        self.entries.iter().enumerate().find_map(|(i, e)| {
            let hit = match &e.rule {
                Rule::Term(term) => {
                    let joined = term.concat();
                    words.windows(term.len()).any(|w| w == term.as_slice())
                        // `pipebomb`, `pipe-bomb` written as one word
                        || (term.len() > 1 && words.contains(&joined))
                        || spelled.iter().any(|s| s.contains(&joined))
                }
                Rule::Pattern(re) => re.is_match(&text),
            };
            hit.then(|| Refusal {
                source: "blocklist".into(),
                category: e.category.clone(),
                rule: format!(
                    "blocklist #{} ({})",
                    i + 1,
                    match e.rule {
                        Rule::Term(_) => "term",
                        Rule::Pattern(_) => "pattern",
                    }
                ),
            })
        })
    }
}

/// One character after compatibility decomposition and case folding, with the common
/// substitutions undone (`one` is what `1` reads as); `None` for combining marks and invisible
/// characters.
fn fold(c: char, one: char) -> Option<char> {
    if unicode_normalization::char::is_combining_mark(c)
        || matches!(c, '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
    {
        return None;
    }
    Some(match c {
        '0' => 'o',
        '1' => one,
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        '9' => 'g',
        'ß' => 's',
        'æ' => 'a',
        'ø' => 'o',
        'đ' => 'd',
        'ł' => 'l',
        c => c,
    })
}

/// A term as words (`1` read as `i`).
pub fn words(text: &str) -> Vec<String> {
    tokens(text, 'i').0
}

/// The text as words: NFKD, lowercase, marks and invisible characters dropped, substitutions
/// undone, split on anything else that is not a letter or digit. Runs of single letters
/// (`n u d e`, `n.u.d.e`) become one word; they are also returned apart, since their spelling
/// hides where words end (`p i p e b o m b`).
fn tokens(text: &str, one: char) -> (Vec<String>, Vec<String>) {
    let mut raw: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in text.nfkd().flat_map(char::to_lowercase) {
        let Some(c) = fold(c, one) else { continue };
        if c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            raw.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        raw.push(current);
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut spelled = Vec::new();
    let mut run = String::new();
    let mut flush = |run: &mut String, out: &mut Vec<String>| {
        if run.chars().count() > 1 {
            spelled.push(run.clone());
        }
        if !run.is_empty() {
            out.push(std::mem::take(run));
        }
    };
    for w in raw {
        if w.chars().count() == 1 {
            run.push_str(&w);
            continue;
        }
        flush(&mut run, &mut out);
        out.push(w);
    }
    flush(&mut run, &mut out);
    (out, spelled)
}

/// OpenAI's moderation endpoint, in its wire format.
pub struct OpenAiModeration {
    /// Each call's limit (the process's one HTTPS client is shared; see `crate::net`).
    timeout: Duration,
    base_url: String,
    api_key: Secret,
    model: String,
}

#[derive(Serialize)]
struct ModerationRequest<'a> {
    model: &'a str,
    input: &'a str,
}

#[derive(Deserialize)]
struct ModerationResponse {
    results: Vec<ModerationResult>,
}

#[derive(Deserialize)]
struct ModerationResult {
    flagged: bool,
    #[serde(default)]
    categories: std::collections::BTreeMap<String, serde_json::Value>,
}

impl OpenAiModeration {
    pub fn new(base_url: &str, api_key: Secret, model: &str, timeout: Duration) -> Self {
        Self {
            // The shared client follows no redirect: the configured endpoint answers itself.
            timeout,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            model: model.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Moderator for OpenAiModeration {
    async fn check(&self, prompt: &str) -> Result<Option<Refusal>, ModerationError> {
        let resp = crate::net::https()
            .post(format!("{}/v1/moderations", self.base_url))
            .timeout(self.timeout)
            .bearer_auth(self.api_key.expose())
            .json(&ModerationRequest {
                model: &self.model,
                input: prompt,
            })
            .send()
            .await
            // The error's text names the URL, never the body.
            .map_err(|e| ModerationError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            // The body is not logged: a server that echoes its input would put the prompt there.
            return Err(ModerationError::Unavailable(format!("status {status}")));
        }
        let body: ModerationResponse = resp.json().await.map_err(|_| {
            ModerationError::Unavailable("a response not in the moderation format".into())
        })?;
        let Some(result) = body.results.first() else {
            return Err(ModerationError::Unavailable("no result".into()));
        };
        if !result.flagged {
            return Ok(None);
        }
        // Stored and shown to the user: only a category name that looks like one.
        let category = result
            .categories
            .iter()
            .find(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                (1..=64).contains(&k.len())
                    && k.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/".contains(&b)
                    })
            })
            .unwrap_or("flagged")
            .to_string();
        Ok(Some(Refusal {
            source: "moderation_endpoint".into(),
            category,
            rule: format!("openai moderation ({})", self.model),
        }))
    }
}

/// The configured moderation: the blocklist, then the endpoint when there is one.
pub struct Moderation {
    pub blocklist: Blocklist,
    pub endpoint: Option<Box<dyn Moderator>>,
}

#[async_trait::async_trait]
impl Moderator for Moderation {
    async fn check(&self, prompt: &str) -> Result<Option<Refusal>, ModerationError> {
        if let Some(r) = self.blocklist.check(prompt) {
            return Ok(Some(r));
        }
        match &self.endpoint {
            Some(endpoint) => endpoint.check(prompt).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Blocklist {
        Blocklist::parse("weapons:pipe bomb; gore:/\\bbehead\\w*/; nude; violence:kill it; sex")
            .unwrap()
    }

    #[test]
    fn s2_obfuscated_terms_are_found() {
        let l = list();
        for prompt in [
            "a PIPE BOMB",
            "how to build a p i p e  b o m b",
            "p.i.p.e b.o.m.b diagram",
            "pípé bömb",
            "p\u{200b}ipe bomb",
            "PIPE-BOMB",
            "a pipebomb",
            "ｐｉｐｅ ｂｏｍｂ",
            "a beheading scene",
            "NUD3 portrait",
            "s3x",
            "ki11 it",
            "nude",
            "NUDE!",
        ] {
            assert!(l.check(prompt).is_some(), "{prompt:?} should be refused");
        }
        let r = l.check("a pipe bomb").unwrap();
        assert_eq!(r.category, "weapons");
        assert_eq!(r.rule, "blocklist #1 (term)");
        assert_eq!(l.check("nude").unwrap().category, "blocked");
    }

    #[test]
    fn s2_innocent_prompts_pass() {
        let l = list();
        for prompt in [
            "a pipe organ in a bomb shelter",
            "nudes of colour: a palette study in beige",
            "a bowl of grapes",
            "a plumber's pipe",
        ] {
            assert!(l.check(prompt).is_none(), "{prompt:?} should pass");
        }
        let default = Blocklist::parse(DEFAULT_BLOCKLIST).unwrap();
        assert!(default.check("a kid flying a kite").is_none());
        assert!(default.check("n.a.k.e.d k1ds").is_some());
        assert!(default.check("underage and nsfw").is_some());
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Blocklist::parse("x:/(/").is_err());
        assert!(Blocklist::parse("x:!!!  ").is_err());
    }
}
