//! Generation requests and jobs (G4: the user's task history with settings and status).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// Prompt length limits, in characters.
pub const PROMPT_MIN_CHARS: usize = 1;
pub const PROMPT_MAX_CHARS: usize = 4_000;
/// Images per request.
pub const N_MIN: u8 = 1;
pub const N_MAX: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() || !(PROMPT_MIN_CHARS..=PROMPT_MAX_CHARS).contains(&chars) {
            return Err(Invalid::new(
                "invalid_prompt",
                format!("prompt must be {PROMPT_MIN_CHARS} to {PROMPT_MAX_CHARS} characters and not blank"),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Invalid::new(
                "invalid_prompt",
                "prompt must not contain control characters",
            ));
        }
        Ok(Self(raw.to_string()))
    }

    /// A prompt as it was stored: accepted under the input rules of its day, so it is not
    /// checked against today's (a tightened limit must not make old jobs unreadable).
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Declares a closed set of string values with `parse`, `as_str` and serde support.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $code:literal, { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Invalid::new($code, format!(
                        "{raw:?} is not one of {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Output sizes offered (the gpt-image-1 sizes).
    ImageSize, "invalid_size", {
        Square = "1024x1024",
        Landscape = "1536x1024",
        Portrait = "1024x1536",
    }
);

impl ImageSize {
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Self::Square => (1024, 1024),
            Self::Landscape => (1536, 1024),
            Self::Portrait => (1024, 1536),
        }
    }
}

string_enum!(Quality, "invalid_quality", { Low = "low", Medium = "medium", High = "high" });

string_enum!(OutputFormat, "invalid_output_format", { Png = "png", Jpeg = "jpeg", Webp = "webp" });

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }
}

string_enum!(
    /// Where a job is in its life.
    JobStatus, "invalid_status", {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceled = "canceled",
    }
);

/// The body of `POST /v1/generations` as sent; `GenerationSettings::parse` validates it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationRequestBody {
    pub prompt: String,
    pub size: String,
    pub quality: String,
    pub n: u8,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub output_format: Option<String>,
    /// The caller's own validated uploads to use as references (at most
    /// [`super::upload::MAX_REFERENCES`]).
    #[serde(default)]
    pub reference_ids: Vec<String>,
}

/// Validated generation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationSettings {
    pub prompt: Prompt,
    pub size: ImageSize,
    pub quality: Quality,
    pub n: u8,
    pub seed: u64,
    pub output_format: OutputFormat,
    /// Upload ids (shape-checked; ownership and state are checked against the store).
    pub reference_ids: Vec<String>,
}

impl GenerationSettings {
    /// Validates the body; a missing seed is drawn at random so every job is reproducible.
    pub fn parse(body: &GenerationRequestBody) -> Result<Self, Invalid> {
        if !(N_MIN..=N_MAX).contains(&body.n) {
            return Err(Invalid::new(
                "invalid_n",
                format!("n must be {N_MIN} to {N_MAX}"),
            ));
        }
        Ok(Self {
            prompt: Prompt::parse(&body.prompt)?,
            size: ImageSize::parse(&body.size)?,
            quality: Quality::parse(&body.quality)?,
            n: body.n,
            seed: body
                .seed
                .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            output_format: match &body.output_format {
                Some(f) => OutputFormat::parse(f)?,
                None => OutputFormat::Png,
            },
            reference_ids: parse_reference_ids(&body.reference_ids)?,
        })
    }
}

/// Reference ids: at most [`super::upload::MAX_REFERENCES`], no repeats. An id of the wrong
/// shape is kept: it is simply not found (404), like another user's.
fn parse_reference_ids(ids: &[String]) -> Result<Vec<String>, Invalid> {
    let max = super::upload::MAX_REFERENCES;
    if ids.len() > max {
        return Err(Invalid::new(
            "invalid_reference_ids",
            format!("at most {max} reference images per generation"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if !ids.iter().all(|id| seen.insert(id)) {
        return Err(Invalid::new(
            "invalid_reference_ids",
            "a reference image is listed twice",
        ));
    }
    Ok(ids.to_vec())
}

/// One stored image of a generation, with its own settings (G1, G2). Its id is
/// `<generation id>-<index>` ([`image_id`]): as unguessable as the generation id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub bytes: u64,
    /// G1: published in the public gallery (private by default).
    #[serde(default)]
    pub public: bool,
    /// G2: others get only the watermarked preview, and no download.
    #[serde(default)]
    pub copy_protected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// What others see while it is public: a copy of the original, or (copy-protected) the
    /// reduced, watermarked preview; stored under `public/<token>/`, a key that names neither
    /// the owner nor anything guessable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<Shown>,
    /// Deleted on its own (`DELETE /v1/images/{id}`): hidden, its objects in the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// The public copy of a published image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    pub key: String,
    /// `original` (a copy of it) or `preview` (copy-protected).
    pub variant: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub bytes: u64,
}

impl Shown {
    /// The prefix its deletion removes: `public/<token>/`.
    pub fn prefix(&self) -> String {
        match self.key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => self.key.clone(),
        }
    }
}

/// The id of image `index` of generation `job_id`.
pub fn image_id(job_id: &str, index: usize) -> String {
    format!("{job_id}-{index}")
}

/// The generation id and index of an image id, if it has that shape (anything else is not
/// found and never reaches a key).
pub fn parse_image_id(id: &str) -> Option<(&str, usize)> {
    let (job, index) = id.split_once('-')?;
    let valid_job = job.len() == 26
        && job
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let index: usize = match index.as_bytes() {
        [d] if d.is_ascii_digit() => usize::from(d - b'0'),
        _ => return None,
    };
    (valid_job && index < usize::from(N_MAX)).then_some((job, index))
}

/// A generation job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub user_id: String,
    pub status: JobStatus,
    pub settings: GenerationSettings,
    pub cost: u64,
    pub refunded: u64,
    pub images: Vec<StoredImage>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub idempotency_key: Option<String>,
}

/// What the queue carries: ids only, never the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub user_id: String,
    pub job_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> GenerationRequestBody {
        GenerationRequestBody {
            prompt: "a lighthouse at dusk".into(),
            size: "1024x1024".into(),
            quality: "low".into(),
            n: 1,
            seed: Some(7),
            output_format: None,
            reference_ids: vec![],
        }
    }

    #[test]
    fn limits_are_enforced() {
        assert!(GenerationSettings::parse(&body()).is_ok());
        let mut b = body();
        b.prompt = "x".repeat(PROMPT_MAX_CHARS);
        assert!(GenerationSettings::parse(&b).is_ok());
        b.prompt = "x".repeat(PROMPT_MAX_CHARS + 1);
        assert_eq!(
            GenerationSettings::parse(&b).unwrap_err().code,
            "invalid_prompt"
        );
        let mut b = body();
        b.n = 5;
        assert_eq!(GenerationSettings::parse(&b).unwrap_err().code, "invalid_n");
        let mut b = body();
        b.size = "4096x4096".into();
        assert_eq!(
            GenerationSettings::parse(&b).unwrap_err().code,
            "invalid_size"
        );
        let mut b = body();
        b.output_format = Some("gif".into());
        assert_eq!(
            GenerationSettings::parse(&b).unwrap_err().code,
            "invalid_output_format"
        );
    }
}
