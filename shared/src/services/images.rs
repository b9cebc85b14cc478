//! Images (G1, G2, G3, S1): each generated image is addressable by an unguessable id. Its owner
//! reads, publishes, protects, deletes and downloads it; everyone else reaches only published
//! images, and of a copy-protected one only its watermarked preview, never a download. Each
//! download is recorded in the owner's history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::app::App;
use crate::domain::cursor;
use crate::domain::generation::{image_id, parse_image_id, Job, JobStatus, Shown, StoredImage};
use crate::error::ApiError;
use crate::http::Caller;
use crate::objects::public_prefix;
use crate::services::accounts::require_onboarded;
use crate::services::deletion;
use crate::services::generations::{parse_limit, Page};
use crate::store::keys::DOWNLOAD_PREFIX;
use crate::store::{Changed, DeletionRecord, DownloadRecord, GalleryEntry, ImageChange};

/// An image as its owner sees it.
#[derive(Debug, Serialize)]
pub struct ImageView {
    pub id: String,
    pub generation_id: String,
    /// A short-lived link to view it.
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub bytes: u64,
    pub public: bool,
    pub copy_protected: bool,
    pub published_at: Option<String>,
    pub created_at: String,
}

/// A published image as everyone else sees it: the preview when copy-protected.
#[derive(Debug, Serialize)]
pub struct PublicImageView {
    pub id: String,
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub copy_protected: bool,
    /// `preview` (reduced and watermarked) or `original`.
    pub variant: &'static str,
    pub published_at: String,
    pub created_at: String,
}

pub async fn public_view(app: &App, e: &GalleryEntry) -> Result<PublicImageView, ApiError> {
    Ok(PublicImageView {
        id: e.image_id.clone(),
        url: app
            .objects()
            .presign_get(&e.key, app.config.download_url_ttl)
            .await?,
        width: e.width,
        height: e.height,
        format: e.format.clone(),
        copy_protected: e.copy_protected,
        variant: if e.copy_protected {
            "preview"
        } else {
            "original"
        },
        published_at: e.published_at.clone(),
        created_at: e.created_at.clone(),
    })
}

async fn owner_view(app: &App, job: &Job, index: usize) -> Result<ImageView, ApiError> {
    let img = &job.images[index];
    Ok(ImageView {
        id: image_id(&job.id, index),
        generation_id: job.id.clone(),
        url: app
            .objects()
            .presign_get(&img.key, app.config.download_url_ttl)
            .await?,
        width: img.width,
        height: img.height,
        format: img.format.clone(),
        bytes: img.bytes,
        public: img.public,
        copy_protected: img.copy_protected,
        published_at: img.published_at.clone(),
        created_at: job.created_at.to_rfc3339(),
    })
}

/// Where an id leads for this caller.
enum Found {
    Own(Job, usize),
    Public(GalleryEntry),
}

/// The caller's own image, or else a published one; anything else (unpublished, deleted,
/// malformed) is simply not found.
async fn find(app: &App, caller: &Caller, id: &str) -> Result<Found, ApiError> {
    let (job_id, index) = parse_image_id(id).ok_or_else(|| ApiError::not_found("image"))?;
    if let Some(job) = own_image(app, caller.user_id.as_str(), job_id, index).await? {
        return Ok(Found::Own(job, index));
    }
    match app.store.gallery_entry(id).await? {
        Some(e)
            if app
                .store
                .listed_owners(std::slice::from_ref(&e.owner))
                .await?
                .contains(&e.owner) =>
        {
            Ok(Found::Public(e))
        }
        _ => Err(ApiError::not_found("image")),
    }
}

async fn own_image(
    app: &App,
    user_id: &str,
    job_id: &str,
    index: usize,
) -> anyhow::Result<Option<Job>> {
    Ok(app.store.get_job(user_id, job_id).await?.filter(|job| {
        job.status == JobStatus::Succeeded
            && job
                .images
                .get(index)
                .is_some_and(|img| img.deleted_at.is_none())
    }))
}

/// `GET /v1/images/{id}`.
pub async fn get(app: &App, caller: &Caller, id: &str) -> Result<serde_json::Value, ApiError> {
    require_onboarded(app, caller).await?;
    let value = match find(app, caller, id).await? {
        Found::Own(job, index) => serde_json::to_value(owner_view(app, &job, index).await?),
        Found::Public(e) => serde_json::to_value(public_view(app, &e).await?),
    };
    value.map_err(|e| ApiError::Internal(e.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    pub public: Option<bool>,
    #[serde(default)]
    pub copy_protected: Option<bool>,
}

/// `PATCH /v1/images/{id}` `{public, copy_protected}` (owner only). Publishing is explicit and
/// revocable (G1): unpublishing removes the image from the gallery in the same transaction, and
/// its public copy within one sweep (at once, normally).
#[instrument(skip_all, fields(user_id = %caller.user_id, image = %id))]
pub async fn patch(
    app: &App,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    now: DateTime<Utc>,
) -> Result<ImageView, ApiError> {
    let profile = require_onboarded(app, caller).await?;
    if body.public.is_none() && body.copy_protected.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "send public, copy_protected or both",
        ));
    }
    let user_id = caller.user_id.as_str();
    let (job_id, index) = parse_image_id(id).ok_or_else(|| ApiError::not_found("image"))?;
    // A suspended account keeps its settings but is not listed (its entries come back when it
    // is restored); it cannot publish anew.
    let listed = profile.suspension.is_none() && profile.restricted_at.is_none();
    for _ in 0..3 {
        let job = own_image(app, user_id, job_id, index)
            .await?
            .ok_or_else(|| ApiError::not_found("image"))?;
        let old = &job.images[index];
        if body.public == Some(true) && !old.public && !listed {
            return Err(not_listed(app, user_id).await);
        }
        let mut new = old.clone();
        new.public = body.public.unwrap_or(old.public);
        new.copy_protected = body.copy_protected.unwrap_or(old.copy_protected);
        new.published_at = match (old.public, new.public) {
            (_, false) => None,
            (false, true) => Some(now.to_rfc3339()),
            (true, true) => old.published_at.clone(),
        };
        // What others see while it is public: a copy of the original, or the preview.
        let wanted = new.public.then_some(if new.copy_protected {
            "preview"
        } else {
            "original"
        });
        // A new copy is named by a deletion record before it is written, due in a while: the
        // change's transaction removes that record; if the change does not commit (a
        // conflict, an error, a crash), the record removes the copy.
        let mut pending = None;
        let mut gone = vec![];
        match (wanted, &old.shown) {
            (Some(v), Some(s)) if s.variant == v => {}
            (Some(v), _) => {
                let token = hex::encode(rand::random::<[u8; 16]>());
                let record = DeletionRecord::generation_objects(
                    user_id,
                    &job.id,
                    vec![public_prefix(&token)],
                    "unused_public_copy",
                    now,
                );
                app.store
                    .put_deletion_record(&record, now + chrono::Duration::minutes(15))
                    .await?;
                pending = Some(record);
                let shown = make_shown(app, user_id, &job, index, old, v, &token).await;
                new.shown = Some(match shown {
                    Ok(s) => s,
                    Err(e) => {
                        deletion::execute_now(app, pending.as_ref().expect("set above"), now).await;
                        return Err(e);
                    }
                });
                gone.extend(old.shown.as_ref().map(|s| s.prefix()));
            }
            (None, _) => {
                new.shown = None;
                gone.extend(old.shown.as_ref().map(|s| s.prefix()));
            }
        }
        // G1: a public copy no longer shown goes through the pipeline.
        let record = (!gone.is_empty()).then(|| {
            DeletionRecord::generation_objects(user_id, &job.id, gone, "unpublished", now)
        });
        let entry = match (new.public, listed) {
            (true, true) => {
                GalleryEntry::of(user_id, &job.id, index, &new, &job.created_at.to_rfc3339())
            }
            _ => None,
        };
        let seen = job.updated_at.to_rfc3339();
        let change = ImageChange {
            user_id,
            job_id: &job.id,
            index,
            seen: &seen,
            image: &new,
            entry,
            record: record.as_ref(),
            pending_record: pending.as_ref().map(|r| r.id.as_str()),
        };
        let outcome = app.store.change_image(change, now).await;
        if !matches!(outcome, Ok(Changed::Applied)) {
            // The copy just made is not used: its record removes it now (or the sweep).
            if let Some(r) = &pending {
                deletion::execute_now(app, r, now).await;
            }
        }
        match outcome? {
            Changed::Applied => {
                if let Some(r) = &record {
                    deletion::execute_now(app, r, now).await;
                }
                tracing::info!(
                    public = new.public,
                    copy_protected = new.copy_protected,
                    "image settings changed"
                );
                let job = own_image(app, user_id, job_id, index)
                    .await?
                    .ok_or_else(|| ApiError::not_found("image"))?;
                return owner_view(app, &job, index).await;
            }
            Changed::NotListed => return Err(not_listed(app, user_id).await),
            Changed::Conflict => continue,
        }
    }
    Err(ApiError::Unavailable("the image changed meanwhile".into()))
}

/// Why an account cannot publish: suspended, or restricting processing (D6).
async fn not_listed(app: &App, user_id: &str) -> ApiError {
    match app.store.get_profile(user_id).await {
        Ok(Some(p)) if p.restricted_at.is_some() && p.suspension.is_none() => ApiError::forbidden(
            "account_restricted",
            "this account restricts processing: lift it (DELETE /v1/me/restriction) to publish",
        ),
        _ => ApiError::forbidden(
            "account_suspended",
            "this account is suspended: its images cannot be published",
        ),
    }
}

/// Makes the public copy of image `index` (G1, G2): a copy of the original, or its preview,
/// under a fresh random key.
#[allow(clippy::too_many_arguments)]
async fn make_shown(
    app: &App,
    user_id: &str,
    job: &Job,
    index: usize,
    img: &StoredImage,
    variant: &str,
    token: &str,
) -> Result<Shown, ApiError> {
    let backstop = !app
        .store
        .holds_in_force(Utc::now())
        .await?
        .covers(user_id, Some(&job.id));
    let public_key =
        |ext: &str| format!("{}{}.{ext}", public_prefix(token), image_id(&job.id, index));
    let (key, size, width, height, format) = if variant == "preview" {
        let original = app.objects().get(&img.key).await?.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("image object {} missing", img.key))
        })?;
        let (bytes, w, h) =
            tokio::task::spawn_blocking(move || crate::domain::preview::render(&original))
                .await
                .map_err(|e| ApiError::Internal(e.into()))??;
        let key = public_key("jpg");
        let size = bytes.len() as u64;
        app.objects()
            .put(&key, bytes, "image/jpeg", backstop)
            .await?;
        (key, size, w, h, "jpeg".to_string())
    } else {
        // The original as it is: copied within S3, no bytes through the function.
        let format = crate::domain::generation::OutputFormat::parse(&img.format)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
        let key = public_key(format.extension());
        app.objects()
            .copy(&img.key, &key, format.content_type(), backstop)
            .await?;
        (key, img.bytes, img.width, img.height, img.format.clone())
    };
    Ok(Shown {
        key,
        variant: variant.into(),
        width,
        height,
        format,
        bytes: size,
    })
}

/// `DELETE /v1/images/{id}`: one image of a generation, gone from the API and the gallery at
/// once, its objects through the pipeline.
#[instrument(skip_all, fields(user_id = %caller.user_id, image = %id))]
pub async fn delete(
    app: &App,
    caller: &Caller,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    require_onboarded(app, caller).await?;
    let user_id = caller.user_id.as_str();
    let (job_id, index) = parse_image_id(id).ok_or_else(|| ApiError::not_found("image"))?;
    for _ in 0..3 {
        let job = own_image(app, user_id, job_id, index)
            .await?
            .ok_or_else(|| ApiError::not_found("image"))?;
        let img = &job.images[index];
        let mut prefixes = vec![format!(
            "{}{index}.",
            crate::objects::generation_prefix(user_id, job_id)
        )];
        prefixes.extend(img.shown.as_ref().map(|s| s.prefix()));
        let record =
            DeletionRecord::generation_objects(user_id, job_id, prefixes, "user_request", now);
        if app
            .store
            .delete_image(
                user_id,
                job_id,
                index,
                &job.updated_at.to_rfc3339(),
                &job.images[index].key,
                &record,
                now,
            )
            .await?
        {
            deletion::execute_now(app, &record, now).await;
            tracing::info!("image deleted");
            return Ok(());
        }
    }
    Err(ApiError::Unavailable("the image changed meanwhile".into()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadBody {
    /// `original` (default) or `preview`.
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DownloadLink {
    pub url: String,
    pub filename: String,
    pub variant: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize)]
pub struct DownloadView {
    pub id: String,
    pub image_id: String,
    pub generation_id: String,
    pub by: String,
    pub variant: String,
    pub downloaded_at: String,
}

/// `POST /v1/images/{id}/download`: a short-lived link that saves the file, and a record of it
/// in the owner's history (G3). Others may download only published images that are not
/// copy-protected (G2).
#[instrument(skip_all, fields(user_id = %caller.user_id, image = %id))]
pub async fn download(
    app: &App,
    caller: &Caller,
    id: &str,
    body: DownloadBody,
    now: DateTime<Utc>,
) -> Result<DownloadLink, ApiError> {
    require_onboarded(app, caller).await?;
    crate::limits::take_for_user(
        app,
        crate::limits::Action::Download,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    let variant = body.variant.as_deref().unwrap_or("original");
    if !matches!(variant, "original" | "preview") {
        return Err(ApiError::bad_request(
            "invalid_variant",
            "variant must be original or preview",
        ));
    }
    let (owner, generation_id, key, ext, by) = match find(app, caller, id).await? {
        Found::Own(job, index) => {
            let img = &job.images[index];
            let (key, ext) = match (variant, &img.shown) {
                ("original", _) => (img.key.clone(), extension(&img.key)),
                (_, Some(p)) if p.variant == "preview" => (p.key.clone(), "jpg".to_string()),
                (_, _) => {
                    return Err(ApiError::client(
                        409,
                        "no_preview",
                        "this image has a preview only while it is public and copy-protected",
                    ))
                }
            };
            (job.user_id.clone(), job.id.clone(), key, ext, "owner")
        }
        Found::Public(e) => {
            if e.copy_protected {
                return Err(ApiError::forbidden(
                    "copy_protected",
                    "its owner protects this image from copying: it can only be viewed, as a preview",
                ));
            }
            if variant != "original" {
                return Err(ApiError::client(
                    409,
                    "no_preview",
                    "this image has no preview",
                ));
            }
            let ext = extension(&e.key);
            (
                e.owner.clone(),
                e.generation_id.clone(),
                e.key.clone(),
                ext,
                "other",
            )
        }
    };
    let filename = format!("{id}.{ext}");
    let ttl = app.config.download_url_ttl;
    let url = app.objects().presign_download(&key, ttl, &filename).await?;
    // Recorded before the link is given: no download leaves the history out.
    let days = app.config.retention.content_days().unwrap_or(365);
    let record = DownloadRecord {
        id: ulid::Ulid::from_datetime(now.into())
            .to_string()
            .to_lowercase(),
        image_id: id.to_string(),
        generation_id,
        by: by.into(),
        variant: variant.into(),
        downloaded_at: now.to_rfc3339(),
        delete_at: (now + chrono::Duration::days(i64::from(days))).to_rfc3339(),
    };
    app.store.put_download(&owner, &record).await?;
    tracing::info!(by, variant, "download issued");
    Ok(DownloadLink {
        url,
        filename,
        variant: variant.into(),
        expires_at: (now + chrono::Duration::from_std(ttl).unwrap_or_default()).to_rfc3339(),
    })
}

fn extension(key: &str) -> String {
    key.rsplit_once('.')
        .map(|(_, e)| e.to_string())
        .unwrap_or_else(|| "bin".into())
}

/// `GET /v1/downloads`: downloads of the caller's images, theirs and others', newest first.
pub async fn downloads(
    app: &App,
    caller: &Caller,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<DownloadView>, ApiError> {
    require_onboarded(app, caller).await?;
    let limit = parse_limit(limit)?;
    let start = after
        .map(|c| cursor::decode(c, DOWNLOAD_PREFIX))
        .transpose()?;
    let (records, last) = app
        .store
        .list_downloads(caller.user_id.as_str(), limit, start)
        .await?;
    Ok(Page {
        items: records
            .into_iter()
            .map(|d| DownloadView {
                id: d.id,
                image_id: d.image_id,
                generation_id: d.generation_id,
                by: d.by,
                variant: d.variant,
                downloaded_at: d.downloaded_at,
            })
            .collect(),
        next_cursor: last.map(|sk| cursor::encode(&sk)),
    })
}
