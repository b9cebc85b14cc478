//! Export (D4, R7): `POST /v1/exports` queues one export at a time per user; the `export`
//! worker streams one ZIP into S3 by multipart upload: one JSON file per kind the data map marks
//! exported, the original files (generated images, reference uploads) under readable names, and
//! `manifest.json` listing every file with its size and SHA-256. Memory stays at one upload part
//! and one read buffer whatever the export's size: each object is streamed from S3 into the
//! archive, and the archive into S3. An export is deleted 7 days after it is created (R7),
//! through the deletion pipeline, and with the account.

use chrono::{DateTime, Duration, Utc};
use futures::io::AsyncWriteExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tracing::instrument;

use crate::app::App;
use crate::datamap::{self, Store as Where, DATA_MAP};
use crate::error::ApiError;
use crate::http::Caller;
use crate::services::accounts::require_onboarded;
use crate::services::deletion;
use crate::services::generations::is_job_id;
use crate::store::{ExportRecord, Started};

/// R7: how long an export is kept.
pub const EXPORT_DAYS: i64 = 7;
/// How long one export may hold the user's lock (a dead worker's lock runs out).
pub const LOCK_MINUTES: i64 = 30;
/// The export queue's `maxReceiveCount`: the last delivery marks the export failed.
pub const MAX_DELIVERIES: u32 = 5;
const READ_BUFFER: usize = 64 * 1024;
/// Between the archive writer and the uploader.
const PIPE_BUFFER: usize = 256 * 1024;

/// What the export queue carries: ids only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportMessage {
    pub user_id: String,
    pub export_id: String,
}

#[derive(Debug, Serialize)]
pub struct ExportView {
    pub id: String,
    pub status: String,
    pub created_at: String,
    pub delete_at: String,
    pub size: Option<u64>,
    pub files: Option<u64>,
    pub completed_at: Option<String>,
    /// A short-lived link to the ZIP, when ready.
    pub download_url: Option<String>,
}

async fn view(app: &App, r: &ExportRecord) -> Result<ExportView, ApiError> {
    let download_url = match r.status.as_str() {
        "ready" => Some(
            app.objects()
                .presign_download(
                    &archive_key(&r.user_id, &r.id),
                    app.config.download_url_ttl,
                    &format!("export-{}.zip", r.id),
                )
                .await?,
        ),
        _ => None,
    };
    Ok(ExportView {
        id: r.id.clone(),
        status: r.status.clone(),
        created_at: r.created_at.clone(),
        delete_at: r.delete_at.clone(),
        size: r.size,
        files: r.files,
        completed_at: r.completed_at.clone(),
        download_url,
    })
}

pub fn archive_key(user_id: &str, export_id: &str) -> String {
    format!(
        "{}export.zip",
        crate::objects::export_prefix(user_id, export_id)
    )
}

/// `POST /v1/exports`: 202 with the export (one in progress per user).
#[instrument(skip_all, fields(user_id = %caller.user_id))]
pub async fn create(
    app: &App,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<ExportView, ApiError> {
    require_onboarded(app, caller).await?;
    crate::limits::take_for_user(
        app,
        crate::limits::Action::Export,
        caller.user_id.as_str(),
        now,
    )
    .await?;
    let Some(queue_url) = app.config.export_queue_url.clone() else {
        return Err(ApiError::client(
            503,
            "exports_not_configured",
            "exports are not configured on this deployment",
        ));
    };
    let user_id = caller.user_id.as_str();
    let record = ExportRecord {
        id: ulid::Ulid::from_datetime(now.into())
            .to_string()
            .to_lowercase(),
        user_id: user_id.into(),
        status: "queued".into(),
        created_at: now.to_rfc3339(),
        delete_at: (now + Duration::days(EXPORT_DAYS)).to_rfc3339(),
        size: None,
        files: None,
        completed_at: None,
        error: None,
        deleted_at: None,
    };
    match app
        .store
        .start_export(&record, now + Duration::minutes(LOCK_MINUTES), now)
        .await?
    {
        Started::Created => {}
        Started::InProgress => {
            return Err(ApiError::client(
                409,
                "export_in_progress",
                "an export is already being made; wait for it to be ready",
            ))
        }
        Started::Inactive => {
            require_onboarded(app, caller).await?;
            return Err(ApiError::Unavailable(
                "the account changed meanwhile".into(),
            ));
        }
    }
    let msg = ExportMessage {
        user_id: user_id.into(),
        export_id: record.id.clone(),
    };
    if let Err(e) = app
        .queue()
        .send_to(
            &queue_url,
            &serde_json::to_value(&msg).expect("an export message serialises"),
        )
        .await
    {
        // Nothing will build it: failed now, and the lock freed, so the user can ask again.
        tracing::error!(error = ?e, "export not queued");
        app.store
            .set_export_status(user_id, &record.id, &["queued"], "failed", &[])
            .await?;
        app.store.release_export_lock(user_id, &record.id).await?;
        return Err(ApiError::Unavailable(
            "the export could not be queued".into(),
        ));
    }
    view(app, &record).await
}

/// `GET /v1/exports`.
pub async fn list(app: &App, caller: &Caller) -> Result<Value, ApiError> {
    require_onboarded(app, caller).await?;
    let mut items = Vec::new();
    for r in app.store.list_exports(caller.user_id.as_str()).await? {
        items.push(view(app, &r).await?);
    }
    Ok(json!({ "items": items }))
}

/// `GET /v1/exports/{id}`.
pub async fn get(app: &App, caller: &Caller, id: &str) -> Result<ExportView, ApiError> {
    require_onboarded(app, caller).await?;
    if !is_job_id(id) {
        return Err(ApiError::not_found("export"));
    }
    match app.store.get_export(caller.user_id.as_str(), id).await? {
        Some(r) if r.deleted_at.is_none() => view(app, &r).await,
        _ => Err(ApiError::not_found("export")),
    }
}

/// The worker: builds the export once (a redelivery of a built, failed or deleted export does
/// nothing).
#[instrument(skip_all, fields(user_id = %msg.user_id, export_id = %msg.export_id))]
pub async fn run(app: &App, msg: &ExportMessage, now: DateTime<Utc>) -> anyhow::Result<()> {
    let (user_id, id) = (msg.user_id.as_str(), msg.export_id.as_str());
    if !app
        .store
        .set_export_status(user_id, id, &["queued", "running"], "running", &[])
        .await?
    {
        tracing::info!("export already built, failed or deleted");
        app.store.release_export_lock(user_id, id).await?;
        return Ok(());
    }
    let backstop = !app.store.holds_in_force(now).await?.covers(user_id, None);
    let (size, files) = build(app, user_id, id, backstop).await?;
    let done = app
        .store
        .set_export_status(
            user_id,
            id,
            &["running"],
            "ready",
            &[
                ("size", crate::store::item::n(size)),
                ("files", crate::store::item::n(files)),
                (
                    "completed_at",
                    crate::store::item::s(Utc::now().to_rfc3339()),
                ),
            ],
        )
        .await?;
    app.store.release_export_lock(user_id, id).await?;
    if done {
        // Ids and a size only: a user who restricts processing still learns it is ready.
        crate::services::worker::publish_unchecked(
            app,
            "export.ready",
            json!({"user_id": user_id, "export_id": id, "size": size}),
        )
        .await;
        tracing::info!(size, files, "export ready");
    } else if app
        .store
        .get_export(user_id, id)
        .await?
        .is_none_or(|e| e.deleted_at.is_some())
    {
        // Deleted (with the account, or expired) while it was built: the archive this run
        // wrote goes too.
        tracing::info!("export deleted while it was built; removing its archive");
        app.objects()
            .delete_prefix(&crate::objects::export_prefix(user_id, id))
            .await?;
    }
    Ok(())
}

/// After the last delivery: the export failed for good; its user may ask again at once.
pub async fn give_up(app: &App, msg: &ExportMessage, error: &str) -> anyhow::Result<()> {
    let reason: String = error.chars().take(500).collect();
    app.store
        .set_export_status(
            &msg.user_id,
            &msg.export_id,
            &["queued", "running"],
            "failed",
            &[("error", crate::store::item::s(reason))],
        )
        .await?;
    app.store
        .release_export_lock(&msg.user_id, &msg.export_id)
        .await
}

/// Streams the archive into S3; returns its size and how many files it holds.
async fn build(app: &App, user_id: &str, id: &str, backstop: bool) -> anyhow::Result<(u64, u64)> {
    let (writer, reader) = tokio::io::duplex(PIPE_BUFFER);
    let (commit, committed) = tokio::sync::oneshot::channel();
    let objects = app.objects_shared();
    let key = archive_key(user_id, id);
    let upload = tokio::spawn(async move {
        objects
            .put_stream(
                &key,
                "application/zip",
                backstop,
                Box::new(reader),
                committed,
            )
            .await
    });
    let written = write_archive(app, user_id, id, writer).await;
    // Commit only a whole archive; anything else aborts the upload.
    let _ = commit.send(written.is_ok());
    let uploaded = upload.await?;
    match (written, uploaded) {
        (Ok(files), Ok(size)) => Ok((size, files)),
        // The upload failed first (the writer then saw the pipe close): its cause.
        (Ok(_), Err(e)) => Err(e),
        (Err(w), Err(u)) => Err(w.context(format!("upload: {u:#}"))),
        (Err(w), Ok(_)) => Err(w),
    }
}

/// Internal attributes that say nothing about the person.
const INTERNAL: &[&str] = &[
    "pk",
    "sk",
    "kind",
    "retention",
    "exp_pk",
    "exp_at",
    "lease_pk",
    "lease_until",
    "lease_owner",
    "ttl",
];

#[derive(Serialize)]
struct ManifestEntry {
    name: String,
    size: u64,
    sha256: String,
}

async fn write_archive(
    app: &App,
    user_id: &str,
    export_id: &str,
    writer: tokio::io::DuplexStream,
) -> anyhow::Result<u64> {
    use async_zip::{Compression, ZipEntryBuilder};
    let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(writer);
    let mut manifest: Vec<ManifestEntry> = Vec::new();

    // One JSON file per exported kind, from the user's partition (deleted items left out).
    let items = app.store.user_partition(user_id).await?;
    let mut generations = Vec::new();
    let mut uploads = Vec::new();
    for spec in DATA_MAP
        .iter()
        .filter(|k| k.exported && k.store == Where::Table)
    {
        let mut records = Vec::new();
        for item in &items {
            let kind = item.get("kind").and_then(|v| v.as_s().ok());
            if kind.map(String::as_str) != Some(spec.kind) || item.contains_key("deleted_at") {
                continue;
            }
            let mut value: Value = serde_dynamo::from_item(item.clone())?;
            if let Some(map) = value.as_object_mut() {
                for name in INTERNAL {
                    map.remove(*name);
                }
            }
            match spec.id {
                datamap::Kind::Generation => generations.push(value.clone()),
                datamap::Kind::Upload => uploads.push(value.clone()),
                _ => {}
            }
            records.push(value);
        }
        let bytes = serde_json::to_vec_pretty(&records)?;
        let name = format!("data/{}.json", spec.kind);
        manifest.push(ManifestEntry {
            name: name.clone(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        zip.write_entry_whole(
            ZipEntryBuilder::new(name.into(), Compression::Stored),
            &bytes,
        )
        .await?;
    }

    // The original files, streamed.
    let mut originals: Vec<(String, String)> = Vec::new();
    for g in &generations {
        let (Some(gid), Some(images)) = (g["id"].as_str(), g["images"].as_array()) else {
            continue;
        };
        let day = g["created_at"]
            .as_str()
            .unwrap_or("")
            .get(..10)
            .unwrap_or("");
        for (n, img) in images.iter().enumerate() {
            if img.get("deleted_at").is_some() {
                continue;
            }
            if let Some(key) = img["key"].as_str() {
                let ext = key.rsplit('.').next().unwrap_or("bin");
                originals.push((key.to_string(), format!("images/{day}_{gid}_{n}.{ext}")));
            }
        }
    }
    for u in &uploads {
        if let (Some(uid), Some("ready")) = (u["id"].as_str(), u["status"].as_str()) {
            let day = u["created_at"]
                .as_str()
                .unwrap_or("")
                .get(..10)
                .unwrap_or("");
            originals.push((
                crate::services::uploads::reference_key(user_id, uid),
                format!("uploads/{day}_{uid}.png"),
            ));
        }
    }
    let mut buf = vec![0u8; READ_BUFFER];
    for (key, name) in originals {
        let Some(mut reader) = app.objects().get_stream(&key).await? else {
            tracing::warn!(key, "an original is missing; left out");
            continue;
        };
        let mut entry = zip
            .write_entry_stream(ZipEntryBuilder::new(
                name.clone().into(),
                Compression::Stored,
            ))
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            entry.write_all(&buf[..n]).await?;
        }
        entry.close().await?;
        manifest.push(ManifestEntry {
            name,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }

    let files = manifest.len() as u64;
    let doc = json!({
        "export_id": export_id,
        "created_at": Utc::now().to_rfc3339(),
        "policy_version": app.config.policy_version,
        "files": manifest,
    });
    zip.write_entry_whole(
        ZipEntryBuilder::new("manifest.json".to_string().into(), Compression::Stored),
        &serde_json::to_vec_pretty(&doc)?,
    )
    .await?;
    let mut inner = zip.close().await?.into_inner();
    tokio::io::AsyncWriteExt::shutdown(&mut inner).await?;
    Ok(files + 1)
}

/// R7 in the sweep: an export whose time has come goes through the pipeline.
pub async fn expire(
    app: &App,
    holds: &crate::store::HoldSet,
    user_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<deletion::Executed>> {
    match app.store.hide_export(user_id, id, "expiry", now).await? {
        Some(record) => Ok(Some(deletion::execute(app, &record.id, holds, now).await?)),
        None => Ok(None),
    }
}
