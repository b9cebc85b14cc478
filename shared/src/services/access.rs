//! The right of access (D1): `GET /v1/me/data` lists, for every kind of the data map, what is
//! held about the caller, how many, and when each will be deleted (or its retention class where
//! deletion is not time-based). It is built from the data map and from what the stores actually
//! hold: the caller's partition (each item carries its `kind`), the records their references
//! name, their gallery entries, holds and pending deletions, and their objects. A kind added to
//! the map shows up here with no other change.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app::App;
use crate::datamap::{self, KindSpec, DATA_MAP};
use crate::domain::cursor;
use crate::domain::generation::image_id;
use crate::error::ApiError;
use crate::http::Caller;
use crate::services::accounts::require_onboarded;
use crate::services::generations::parse_limit;
use crate::store::item::Item;
use crate::store::keys;

/// One thing held: its id (a key, or an object key) and when it is deleted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Held {
    pub id: String,
    /// `None`: not time-based (see the kind's retention), or already being deleted.
    pub delete_at: Option<String>,
    /// Hidden from the API and handed to the deletion pipeline (kept only by a legal hold).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deletion_pending: bool,
}

#[derive(Debug, Serialize)]
pub struct KindAccess {
    pub kind: &'static str,
    pub holds: &'static str,
    pub category: &'static str,
    pub store: datamap::Store,
    pub retention: &'static str,
    pub period: &'static str,
    pub deletion: &'static str,
    pub exported: bool,
    pub count: usize,
    /// The soonest deletion time among them.
    pub next_deletion: Option<String>,
    pub items: Vec<Held>,
    /// More of this kind: `GET /v1/me/data?kind=<kind>&cursor=...`.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DataAccess {
    pub generated_at: String,
    /// A legal hold (R5) names the caller: the deletion dates below wait until it ends.
    pub deletion_suspended_by_hold: bool,
    pub kinds: Vec<KindAccess>,
}

fn time(ts: i64) -> Option<String> {
    DateTime::from_timestamp(ts, 0).map(|t| t.to_rfc3339())
}

fn attr_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn attr_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// When a stored item is deleted, from how it is indexed.
fn item_deletion(app: &App, item: &Item) -> (Option<String>, bool) {
    if item.contains_key("deleted_at") {
        return (None, true);
    }
    let exp_pk = attr_s(item, keys::EXP_PK).unwrap_or("");
    let exp_at = attr_n(item, keys::EXP_AT);
    if exp_pk.starts_with(keys::EXP) {
        (exp_at.and_then(time), false)
    } else if exp_pk.starts_with(keys::CONTENT) {
        // Indexed by creation time: due at creation + the retention in force.
        let at = exp_at
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .and_then(|created| app.config.retention.content_delete_at(created));
        (at.map(|t| t.to_rfc3339()), false)
    } else if exp_pk.starts_with(keys::DEL) || exp_pk.starts_with(keys::HELD) {
        (None, true)
    } else if item.contains_key(keys::TTL) {
        // Removed by DynamoDB's TTL (rate counters) at their `ttl`.
        (attr_n(item, keys::TTL).and_then(time), false)
    } else {
        (None, false)
    }
}

/// Everything held about `user_id`, by kind name.
pub async fn collect(
    app: &App,
    user_id: &str,
) -> anyhow::Result<BTreeMap<&'static str, Vec<Held>>> {
    let mut held: BTreeMap<&'static str, Vec<Held>> = BTreeMap::new();
    let mut add = |spec: &'static KindSpec, h: Held| held.entry(spec.kind).or_default().push(h);
    let mut references = Vec::new();
    let mut gallery_candidates = Vec::new();
    // When each generation's and upload's objects go: with their item.
    let mut owner_deletion: HashMap<String, (Option<String>, bool)> = HashMap::new();
    let mut object_deletion: HashMap<String, (Option<String>, bool)> = HashMap::new();

    for item in app.store.user_partition(user_id).await? {
        let Some(spec) = attr_s(&item, "kind").and_then(datamap::by_name) else {
            continue;
        };
        let id = attr_s(&item, keys::SK).unwrap_or_default().to_string();
        let (delete_at, pending) = item_deletion(app, &item);
        if let (Some(rpk), Some(rsk)) = (attr_s(&item, "ref_pk"), attr_s(&item, "ref_sk")) {
            references.push((rpk.to_string(), rsk.to_string()));
        }
        if spec.id == datamap::Kind::Generation {
            let (job, _) = crate::store::job_from_item(&item)?;
            owner_deletion.insert(job.id.clone(), (delete_at.clone(), pending));
            for (index, img) in job.images.iter().enumerate() {
                // An image deleted on its own is pending, whatever its generation's date.
                if img.deleted_at.is_some() {
                    object_deletion.insert(img.key.clone(), (None, true));
                }
                if let Some(shown) = &img.shown {
                    add(
                        datamap::spec_of(datamap::Kind::PublicCopy),
                        Held {
                            id: shown.key.clone(),
                            delete_at: delete_at.clone(),
                            deletion_pending: pending || img.deleted_at.is_some(),
                        },
                    );
                    if img.public {
                        gallery_candidates.push(image_id(&job.id, index));
                    }
                }
            }
        }
        if spec.id == datamap::Kind::Upload {
            if let Some(upload) = id.strip_prefix(keys::UPLOAD_PREFIX) {
                let at = attr_s(&item, "delete_at").map(str::to_string);
                owner_deletion.insert(upload.to_string(), (at.clone(), pending));
            }
        }
        add(
            spec,
            Held {
                id,
                delete_at,
                deletion_pending: pending,
            },
        );
    }

    // Records elsewhere that name the user.
    let mut elsewhere = app.store.batch_get(&references).await?;
    elsewhere.extend(app.store.gallery_entries_of(&gallery_candidates).await?);
    elsewhere.extend(app.store.holds_of(user_id).await?);
    for item in elsewhere {
        let Some(spec) = attr_s(&item, "kind").and_then(datamap::by_name) else {
            continue;
        };
        let id = format!(
            "{} | {}",
            attr_s(&item, keys::PK).unwrap_or_default(),
            attr_s(&item, keys::SK).unwrap_or_default()
        );
        let (mut delete_at, pending) = item_deletion(app, &item);
        if spec.id == datamap::Kind::Hold {
            delete_at = attr_s(&item, "until").map(str::to_string);
        }
        add(
            spec,
            Held {
                id,
                delete_at,
                deletion_pending: pending,
            },
        );
    }

    // Objects under the user's prefix, each with its owner item's deletion time.
    for key in app
        .objects()
        .list(&crate::objects::user_prefix(user_id))
        .await?
    {
        let Some(spec) = datamap::object_kind(&key) else {
            continue;
        };
        let owner = key.split('/').nth(3).unwrap_or_default();
        let (delete_at, pending) = object_deletion
            .get(&key)
            .or_else(|| owner_deletion.get(owner))
            .cloned()
            .unwrap_or((None, true));
        add(
            spec,
            Held {
                id: key,
                delete_at,
                deletion_pending: pending,
            },
        );
    }
    for items in held.values_mut() {
        items.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(held)
}

/// `GET /v1/me/data` (every kind, the first `limit` items of each) or, with `kind`, one kind's
/// items after `cursor`.
pub async fn get(
    app: &App,
    caller: &Caller,
    kind: Option<&str>,
    limit: Option<&str>,
    after: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DataAccess, ApiError> {
    require_onboarded(app, caller).await?;
    let limit = parse_limit(limit)? as usize;
    let only = match kind {
        Some(k) => Some(datamap::by_name(k).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_kind",
                format!("{k:?} is not a kind of the data map"),
            )
        })?),
        None => None,
    };
    let start = match (after, only) {
        (Some(c), Some(spec)) => Some(cursor::decode(c, &format!("{}|", spec.kind))?),
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "a cursor goes with the kind it came from",
            ))
        }
        _ => None,
    };
    let mut held = collect(app, caller.user_id.as_str()).await?;
    let deletion_suspended_by_hold = held
        .get(datamap::spec_of(datamap::Kind::Hold).kind)
        .is_some_and(|h| !h.is_empty());
    let kinds = DATA_MAP
        .iter()
        .filter(|spec| only.is_none_or(|o| o.id == spec.id))
        .map(|spec| {
            let all = held.remove(spec.kind).unwrap_or_default();
            let next_deletion = all.iter().filter_map(|h| h.delete_at.clone()).min();
            let count = all.len();
            let after_id = start
                .as_deref()
                .and_then(|s| s.strip_prefix(&format!("{}|", spec.kind)));
            let rest: Vec<Held> = all
                .into_iter()
                .filter(|h| after_id.is_none_or(|a| h.id.as_str() > a))
                .collect();
            let more = rest.len() > limit;
            let items: Vec<Held> = rest.into_iter().take(limit).collect();
            let next_cursor = more
                .then(|| items.last())
                .flatten()
                .map(|h| cursor::encode(&format!("{}|{}", spec.kind, h.id)));
            KindAccess {
                kind: spec.kind,
                holds: spec.holds,
                category: spec.category,
                store: spec.store,
                retention: spec.retention.as_str(),
                period: spec.period,
                deletion: spec.deletion,
                exported: spec.exported,
                count,
                next_deletion,
                items,
                next_cursor,
            }
        })
        .collect();
    Ok(DataAccess {
        generated_at: now.to_rfc3339(),
        deletion_suspended_by_hold,
        kinds,
    })
}
