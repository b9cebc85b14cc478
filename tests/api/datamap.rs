//! The data map holds: every item in every table and every object in every bucket the suite
//! created matches a kind of `shared::datamap::DATA_MAP`, carries that kind's retention class,
//! and has the deletion time its kind promises. Run by `infra/test` after the whole suite, on
//! the same emulator (`cargo test -- --ignored data_map`).

use shared::datamap::{by_name, DeletionTime, Store as Where, DATA_MAP};

fn key_matches(shape: &str, value: &str) -> bool {
    // `USER#<sub>` matches `USER#...`: the literal part before the first `<`.
    let literal = shape.split('<').next().unwrap_or("");
    value.starts_with(literal) && (shape.contains('<') || value == shape)
}

use shared::datamap::object_matches;

#[test]
fn object_shapes_match_as_meant() {
    assert!(object_matches(
        "users/<sub>/generations/<id>/<n>.<ext>",
        "users/a/generations/b/0.png"
    ));
    assert!(!object_matches(
        "users/<sub>/generations/<id>/<n>.<ext>",
        "users/a/uploads/b/0.png"
    ));
    assert!(!object_matches("users/<sub>/x", "users/a/x/y"));
}

#[tokio::test]
#[ignore = "run by infra/test after the whole suite, over everything the suite stored"]
async fn r3_r4_data_map_covers_every_item_and_object_the_suite_stored() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("run through infra/test");
    let sdk = devstack::local_sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = ddb.list_tables().limit(100).send().await.unwrap();
    let mut names: Vec<String> = tables.table_names().to_vec();
    let mut start = tables.last_evaluated_table_name().map(str::to_string);
    while let Some(s) = start {
        let page = ddb
            .list_tables()
            .exclusive_start_table_name(s)
            .send()
            .await
            .unwrap();
        names.extend(page.table_names().iter().cloned());
        start = page.last_evaluated_table_name().map(str::to_string);
    }
    assert!(!names.is_empty(), "the suite ran first and left its tables");
    let mut checked = 0;
    let mut problems = Vec::new();
    for table in &names {
        for item in crate::helpers::scan_table(&sdk, table).await {
            checked += 1;
            let get = |a: &str| {
                item.get(a)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let (pk, sk, kind) = (get("pk"), get("sk"), get("kind"));
            let Some(spec) = by_name(&kind) else {
                problems.push(format!(
                    "{table}: {pk} | {sk}: kind {kind:?} is not in the data map"
                ));
                continue;
            };
            let (pk_shape, sk_shape) = spec.key_shape.split_once(" | ").unwrap();
            if spec.store != Where::Table
                || !key_matches(pk_shape, &pk)
                || !key_matches(sk_shape, &sk)
            {
                problems.push(format!(
                    "{table}: {pk} | {sk} does not have the key shape of {kind}"
                ));
            }
            if get("retention") != spec.retention.as_str() {
                problems.push(format!(
                    "{table}: {pk} | {sk} ({kind}) lacks retention {:?}",
                    spec.retention.as_str()
                ));
            }
            let exp_pk = get("exp_pk");
            let has_exp_at = item.contains_key("exp_at");
            let ok = match spec.deletion_time {
                DeletionTime::FromPolicy => {
                    // Hidden (deleted) content has left the index: its record deletes it.
                    exp_pk.starts_with("CONTENT#") && has_exp_at || item.contains_key("deleted_at")
                }
                DeletionTime::Stamped => {
                    // Hidden (deleted) ones have left the index: their record deletes them.
                    exp_pk.starts_with("EXP#") && has_exp_at || item.contains_key("deleted_at")
                }
                // Due, or parked under a legal hold until it ends.
                DeletionTime::DueNow => {
                    (exp_pk.starts_with("DEL#") || exp_pk.starts_with("HELD#")) && has_exp_at
                }
                DeletionTime::WithAccount => pk.starts_with("USER#"),
                DeletionTime::ByAction => true,
                DeletionTime::WithOwnerItem => false,
                DeletionTime::Ttl => has_exp_at && item.contains_key("ttl"),
            };
            if !ok {
                problems.push(format!(
                    "{table}: {pk} | {sk} ({kind}) lacks its deletion time ({:?})",
                    spec.deletion_time
                ));
            }
        }
    }
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let object_kinds: Vec<_> = DATA_MAP
        .iter()
        .filter(|k| k.store == Where::Bucket)
        .collect();
    for bucket in s3.list_buckets().send().await.unwrap().buckets() {
        let objects = shared::objects::ObjectStore::new(s3.clone(), bucket.name().unwrap());
        for key in shared::objects::Objects::list(&objects, "").await.unwrap() {
            checked += 1;
            if !object_kinds
                .iter()
                .any(|k| object_matches(k.key_shape, &key))
            {
                problems.push(format!(
                    "{}: object {key} matches no kind of the data map",
                    bucket.name().unwrap()
                ));
            }
        }
    }
    assert!(checked > 0);
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
