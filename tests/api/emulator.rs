//! The emulator keeps the semantics the code relies on (`infra/moto/transactions.py` replaces
//! moto's whole-table rollback with an item-by-item one): a cancelled transaction leaves every
//! item it touched as it was.

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};

use crate::helpers::spawn_app;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn key(pk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [("pk".to_string(), s(pk)), ("sk".to_string(), s("ITEM"))].into()
}

/// A transaction of several writes whose last condition fails: the writes before it were
/// applied by the emulator, and all of them are undone.
#[tokio::test]
async fn a_cancelled_transaction_of_several_items_leaves_all_of_them_unchanged() {
    let app = spawn_app().await;
    let table = app.app().store.table().to_string();
    let ddb = aws_sdk_dynamodb::Client::new(&app.stack.sdk);
    for (pk, n) in [("B", "5"), ("C", "7"), ("D", "9")] {
        let mut item = key(pk);
        item.insert("n".into(), AttributeValue::N(n.into()));
        item.insert("note".into(), s("before"));
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    let before = app.scan_json().await;
    for fail_at in [3usize, 1] {
        let mut items = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&table)
                        .set_item(Some({
                            let mut a = key("A");
                            a.insert("note".into(), s("new"));
                            a
                        }))
                        .build()
                        .unwrap(),
                )
                .build(),
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&table)
                        .set_key(Some(key("B")))
                        .update_expression("ADD n :one SET note = :after")
                        .expression_attribute_values(":one", AttributeValue::N("1".into()))
                        .expression_attribute_values(":after", s("after"))
                        .build()
                        .unwrap(),
                )
                .build(),
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&table)
                        .set_key(Some(key("C")))
                        .build()
                        .unwrap(),
                )
                .build(),
        ];
        // A condition that fails: D exists.
        items.insert(
            fail_at,
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&table)
                        .set_key(Some(key("D")))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        );
        let err = ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .expect_err("the transaction is cancelled");
        let cancel = err.into_service_error();
        assert!(cancel.is_transaction_canceled_exception(), "{cancel:?}");
        assert_eq!(app.scan_json().await, before, "failing at {fail_at}");
    }
    // And one that commits applies every write.
    let committed = ddb
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&table)
                        .set_key(Some(key("B")))
                        .update_expression("ADD n :one")
                        .expression_attribute_values(":one", AttributeValue::N("1".into()))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&table)
                        .set_key(Some(key("C")))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(committed.is_ok());
    let after = app.scan_json().await;
    assert!(after.iter().any(|i| i["pk"] == "B" && i["n"] == 6));
    assert!(!after.iter().any(|i| i["pk"] == "C"));
    // These items are the test's own, in no kind of the data map: they go.
    for pk in ["B", "D"] {
        ddb.delete_item()
            .table_name(&table)
            .set_key(Some(key(pk)))
            .send()
            .await
            .unwrap();
    }
}
