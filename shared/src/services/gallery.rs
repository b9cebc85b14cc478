//! The public gallery (G1, G2): published images, newest first, for anyone, signed in or not.
//! It serves only what the gallery entries name: a copy-protected image's preview, never its
//! original; an unpublished or unknown id is 404, and ids are not guessable.

use crate::app::App;
use crate::domain::cursor;
use crate::domain::generation::parse_image_id;
use crate::error::ApiError;
use crate::services::generations::{parse_limit, Page};
use crate::services::images::{public_view, PublicImageView};

/// `GET /v1/gallery`: newest first, `limit` 1 to 100, opaque cursor.
pub async fn list(
    app: &App,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<PublicImageView>, ApiError> {
    let limit = parse_limit(limit)?;
    let start = after
        .map(|c| {
            cursor::decode(c, "").and_then(|sk| match parse_image_id(&sk) {
                Some(_) => Ok(sk),
                None => Err(crate::domain::Invalid::new(
                    "invalid_cursor",
                    "cursor is not one this API returned",
                )),
            })
        })
        .transpose()?;
    let (entries, last) = app.store.list_gallery(limit, start).await?;
    // Only accounts in good standing: an entry whose removal at a suspension or deletion
    // failed is never shown.
    let owners: Vec<String> = entries.iter().map(|e| e.owner.clone()).collect();
    let listed = app.store.listed_owners(&owners).await?;
    let mut items = Vec::with_capacity(entries.len());
    for e in entries.iter().filter(|e| listed.contains(&e.owner)) {
        items.push(public_view(app, e).await?);
    }
    Ok(Page {
        items,
        next_cursor: last.map(|sk| cursor::encode(&sk)),
    })
}

/// `GET /v1/gallery/{id}`.
pub async fn get(app: &App, id: &str) -> Result<PublicImageView, ApiError> {
    if parse_image_id(id).is_none() {
        return Err(ApiError::not_found("image"));
    }
    match app.store.gallery_entry(id).await? {
        Some(e)
            if app
                .store
                .listed_owners(std::slice::from_ref(&e.owner))
                .await?
                .contains(&e.owner) =>
        {
            public_view(app, &e).await
        }
        _ => Err(ApiError::not_found("image")),
    }
}
