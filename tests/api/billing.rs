//! Stripe webhooks (C2, U2, U5, S2): signatures, exactly-once grants, plans, refunds and
//! disputes netted, a soak of shuffled duplicates. Events are Stripe's own example objects with
//! the fields that matter set, signed as Stripe signs them.

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

const PACK: &str = "pack_small"; // 50 credits for 500 cents in the default catalog
const PLAN_PRICE: &str = "price_local_plan_monthly"; // 200 credits a month

fn paid_session(user: &User, session: &str, pi: &str, status: &str) -> Value {
    stripe_object(
        "checkout.session",
        json!({"id": session, "mode": "payment", "payment_status": status,
               "client_reference_id": user.sub, "metadata": {"user_id": user.sub, "item": PACK},
               "payment_intent": pi, "amount_total": 500, "currency": "usd"}),
    )
}

fn plan_invoice(user: &User, invoice: &str, reason: &str, pi: &str) -> Value {
    let mut inv = stripe_object(
        "invoice",
        json!({"id": invoice, "billing_reason": reason, "amount_paid": 1200, "currency": "usd",
               "status": "paid",
               "parent": {"type": "subscription_details",
                          "subscription_details": {"metadata": {"user_id": user.sub}, "subscription": "sub_1"}}}),
    );
    inv["lines"]["data"][0]["pricing"] = json!({"type": "price_details",
        "price_details": {"price": PLAN_PRICE, "product": "prod_1"}, "unit_amount_decimal": "1200"});
    // Older API versions name the payment intent on the invoice.
    inv["payment_intent"] = json!(pi);
    inv
}

fn charge(pi: &str, amount_refunded: u64) -> Value {
    stripe_object(
        "charge",
        json!({"payment_intent": pi, "amount": 500, "amount_refunded": amount_refunded,
               "refunded": amount_refunded == 500}),
    )
}

fn dispute(pi: &str, status: &str) -> Value {
    stripe_object(
        "dispute",
        json!({"payment_intent": pi, "amount": 500, "status": status}),
    )
}

async fn ok(app: &TestApp, event: &Value) -> Value {
    let resp = app.deliver(event).await;
    assert_eq!(resp.status(), 200, "{event}");
    resp.json().await.unwrap()
}

/// U2: valid signatures are accepted; a wrong secret, a tampered body, a stale or a missing
/// signature get 400 and change nothing; two `v1` values during a roll pass.
#[tokio::test]
async fn u2_webhook_signatures_are_verified_as_stripe_signs_them() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let event = stripe_event(
        &unique("evt_"),
        "checkout.session.completed",
        1,
        paid_session(&user, &unique("cs_"), &unique("pi_"), "paid"),
    );
    let body = event.to_string();
    let t = Utc::now().timestamp();
    let secret = app.webhook_secret().await;
    let good = shared::domain::billing::sign(&secret, t, body.as_bytes());
    let wrong = shared::domain::billing::sign("whsec_wrong", t, body.as_bytes());
    let stale_t = t - 301;
    let stale = shared::domain::billing::sign(&secret, stale_t, body.as_bytes());
    let cases = [
        (
            body.clone(),
            format!("t={t},v1={wrong}"),
            "invalid_signature",
        ),
        (
            body.replace(&user.sub, "someone-else"),
            format!("t={t},v1={good}"),
            "invalid_signature",
        ),
        (
            body.clone(),
            format!("t={stale_t},v1={stale}"),
            "stale_signature",
        ),
        (body.clone(), String::new(), "missing_signature"),
    ];
    for (b, sig, code) in cases {
        assert_eq!(
            problem_code(app.deliver_signed(&b, &sig).await, 400).await,
            code
        );
    }
    assert_eq!(
        app.balance(&user).await,
        10,
        "a refused delivery changes nothing"
    );
    let rolled = format!("t={t},v1={wrong},v1={good}");
    let resp = app.deliver_signed(&body, &rolled).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.assert_ledger_consistent(&user).await, 60);
}

/// U2: the same event three times, then twice concurrently: one ledger entry.
#[tokio::test]
async fn u2_the_same_event_delivered_again_and_concurrently_books_once() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let event = stripe_event(
        &unique("evt_"),
        "checkout.session.completed",
        1,
        paid_session(&user, &unique("cs_"), &unique("pi_"), "paid"),
    );
    let first = ok(&app, &event).await;
    assert_eq!(first["outcome"], "applied");
    for _ in 0..2 {
        assert_eq!(ok(&app, &event).await["outcome"], "duplicate");
    }
    let (a, b) = tokio::join!(app.deliver(&event), app.deliver(&event));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(app.assert_ledger_consistent(&user).await, 60);
    let grants = app.app().store.ledger_entries(&user.sub).await.unwrap();
    assert_eq!(
        grants
            .iter()
            .filter(|e| e.cause.starts_with("grant:checkout:"))
            .count(),
        1
    );
}

/// U2: completed (paid), async success and a redelivery of both: one grant. An unpaid checkout
/// grants nothing until its asynchronous payment succeeds.
#[tokio::test]
async fn u2_a_pack_is_granted_once_and_only_when_paid() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let session = unique("cs_");
    let pi = unique("pi_");
    let unpaid = stripe_event(
        &unique("evt_"),
        "checkout.session.completed",
        1,
        paid_session(&user, &session, &pi, "unpaid"),
    );
    assert_eq!(ok(&app, &unpaid).await["outcome"], "ignored");
    assert_eq!(app.balance(&user).await, 10);
    let succeeded = stripe_event(
        &unique("evt_"),
        "checkout.session.async_payment_succeeded",
        2,
        paid_session(&user, &session, &pi, "paid"),
    );
    let completed_paid = stripe_event(
        &unique("evt_"),
        "checkout.session.completed",
        3,
        paid_session(&user, &session, &pi, "paid"),
    );
    let (a, b) = tokio::join!(app.deliver(&succeeded), app.deliver(&completed_paid));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    ok(&app, &succeeded).await;
    assert_eq!(app.assert_ledger_consistent(&user).await, 60);
    let granted: Vec<Value> = app
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e["detail-type"] == "credits.granted"
                && e["detail"]["user_id"] == user.sub.as_str()
                && e["detail"]["cause"]
                    .as_str()
                    .unwrap()
                    .starts_with("grant:checkout")
        })
        .collect();
    assert_eq!(granted.len(), 1);
}

/// U2: plan invoices for creation and each cycle grant once; a manual invoice grants nothing;
/// `invoice.paid` before anything else about the subscription still grants; `deleted` before
/// `updated` ends canceled.
#[tokio::test]
async fn u2_subscription_invoices_grant_once_each_and_the_latest_state_wins() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    // The first invoice arrives before the checkout event or any subscription event.
    let create = stripe_event(
        &unique("evt_"),
        "invoice.paid",
        10,
        plan_invoice(&user, &unique("in_"), "subscription_create", &unique("pi_")),
    );
    assert_eq!(ok(&app, &create).await["outcome"], "applied");
    ok(&app, &create).await;
    let cycle = stripe_event(
        &unique("evt_"),
        "invoice.paid",
        20,
        plan_invoice(&user, &unique("in_"), "subscription_cycle", &unique("pi_")),
    );
    ok(&app, &cycle).await;
    let manual = stripe_event(
        &unique("evt_"),
        "invoice.paid",
        21,
        plan_invoice(&user, &unique("in_"), "manual", &unique("pi_")),
    );
    assert_eq!(ok(&app, &manual).await["outcome"], "ignored");
    assert_eq!(app.assert_ledger_consistent(&user).await, 410);

    let sub = |status: &str| {
        let mut sub = stripe_object(
            "subscription",
            json!({"id": "sub_1", "status": status, "customer": "cus_1",
                   "metadata": {"user_id": user.sub}}),
        );
        sub["items"]["data"][0]["price"]["id"] = json!(PLAN_PRICE);
        sub
    };
    let updated = stripe_event(
        &unique("evt_"),
        "customer.subscription.updated",
        30,
        sub("active"),
    );
    let deleted = stripe_event(
        &unique("evt_"),
        "customer.subscription.deleted",
        40,
        sub("canceled"),
    );
    ok(&app, &deleted).await;
    assert_eq!(
        ok(&app, &updated).await["outcome"],
        "duplicate",
        "an older state never wins"
    );
    // Even with the same timestamp, canceled is final for that subscription.
    let same_second = stripe_event(
        &unique("evt_"),
        "customer.subscription.updated",
        40,
        sub("active"),
    );
    ok(&app, &same_second).await;
    let state = app
        .app()
        .store
        .subscription(&user.sub)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, "canceled");
    assert_eq!(state.plan.as_deref(), Some("plan_monthly"));
}

/// U5: partial refunds, in any order, claw back exactly the refunded share; a refund after the
/// credits were spent leaves a negative balance, a flag, and 402 on generation.
#[tokio::test]
async fn u5_refunds_claw_back_in_proportion_whatever_the_order() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 60);
    // 40% refunded, then (delivered late) 20%: cumulative amounts, so the late one changes nothing.
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 3, charge(&pi, 200)),
    )
    .await;
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 2, charge(&pi, 100)),
    )
    .await;
    assert_eq!(
        app.assert_ledger_consistent(&user).await,
        40,
        "50 * 200/500 = 20 clawed back"
    );
    // Spend everything, then the rest is refunded: the balance goes negative.
    for _ in 0..5 {
        app.create(
            &user,
            json!({"prompt": "spend", "size": "1024x1024", "quality": "high", "n": 2}),
        )
        .await;
    }
    assert_eq!(app.balance(&user).await, 0);
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 4, charge(&pi, 500)),
    )
    .await;
    assert_eq!(app.assert_ledger_consistent(&user).await, -30);
    let me: Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["billing_flag"], "negative_balance_after_reversal");
    assert_eq!(me["credits_balance"], -30);
    assert_eq!(
        problem_code(app.generate(&user, gen_body("more")).await, 402).await,
        "insufficient_credits"
    );
}

/// S2, U5: a dispute claws back everything and suspends; winning it reinstates and restores; a
/// refund after that claws back only its share: never more or less than the netting says.
#[tokio::test]
async fn s2_dispute_then_won_then_refund_nets_exactly() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ),
    )
    .await;
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.created",
            2,
            dispute(&pi, "needs_response"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 10);
    assert_eq!(
        problem_code(app.generate(&user, gen_body("during a dispute")).await, 403).await,
        "account_suspended"
    );
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.closed",
            3,
            dispute(&pi, "won"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 60, "reinstated");
    assert_eq!(app.generate(&user, gen_body("after")).await.status(), 202);
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 4, charge(&pi, 250)),
    )
    .await;
    assert_eq!(
        app.assert_ledger_consistent(&user).await,
        34,
        "60 - 1 spent - 25 for half refunded"
    );
    // A late duplicate of the dispute's opening cannot re-open a won dispute.
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.created",
            2,
            dispute(&pi, "needs_response"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 34);
    let payment = app.app().store.get_payment(&pi).await.unwrap().unwrap();
    assert_eq!((payment.reversed, payment.dispute.as_str()), (25, "won"));
}

/// A refund whose grant has not arrived yet gets 503, so Stripe retries it later.
#[tokio::test]
async fn a_refund_before_its_grant_is_retried_by_stripe() {
    let app = spawn_app().await;
    let resp = app
        .deliver(&stripe_event(
            &unique("evt_"),
            "charge.refunded",
            Utc::now().timestamp(),
            charge(&unique("pi_"), 100),
        ))
        .await;
    assert_eq!(resp.status(), 503);
    let unknown = app
        .deliver(&stripe_event(
            &unique("evt_"),
            "customer.created",
            1,
            stripe_object("customer", json!({})),
        ))
        .await;
    assert_eq!(unknown.status(), 200);
}

/// U2: a soak of 50 distinct events (packs, plan invoices, refunds, a dispute) delivered 200
/// times, shuffled and duplicated, 8 at once: the ledger equals the expected one and sums to
/// the balance.
#[tokio::test]
async fn u2_soak_of_shuffled_duplicated_concurrent_deliveries() {
    use rand::seq::SliceRandom;
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let mut events = Vec::new();
    let mut expected: i64 = 10;
    let mut pis = Vec::new();
    for i in 0..20 {
        let pi = unique("pi_");
        events.push(stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            i,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ));
        pis.push(pi);
        expected += 50;
    }
    for i in 0..20 {
        events.push(stripe_event(
            &unique("evt_"),
            "invoice.paid",
            100 + i,
            plan_invoice(&user, &unique("in_"), "subscription_cycle", &unique("pi_")),
        ));
        expected += 200;
    }
    // Refunds of the first nine packs' halves, and a dispute lost on the tenth. Their grants
    // may arrive later: then they get 503 and are delivered again, as Stripe would.
    for pi in &pis[..9] {
        events.push(stripe_event(
            &unique("evt_"),
            "charge.refunded",
            Utc::now().timestamp(),
            charge(pi, 250),
        ));
        expected -= 25;
    }
    events.push(stripe_event(
        &unique("evt_"),
        "charge.dispute.closed",
        Utc::now().timestamp(),
        dispute(&pis[9], "lost"),
    ));
    expected -= 50;
    assert_eq!(events.len(), 50);
    let mut deliveries: Vec<Value> = (0..200).map(|i| events[i % 50].clone()).collect();
    deliveries.shuffle(&mut rand::rng());
    for batch in deliveries.chunks(8) {
        futures::future::join_all(batch.iter().map(|e| app.deliver(e))).await;
    }
    // Anything answered 503 (its grant came later) is delivered again, as Stripe retries.
    for e in &events {
        let resp = app.deliver(e).await;
        assert_eq!(resp.status(), 200, "{}", e["type"]);
    }
    assert_eq!(app.assert_ledger_consistent(&user).await, expected);
    let entries = app.app().store.ledger_entries(&user.sub).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.cause.starts_with("grant:"))
            .count(),
        41
    );
}

/// C2: no stored item holds anything card-like (a 13 to 19 digit number), and billing items
/// hold only the documented fields.
#[tokio::test]
async fn c2_billing_items_hold_ids_and_amounts_never_card_data() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    let mut session = paid_session(&user, &unique("cs_"), &pi, "paid");
    session["customer_details"]["name"] = json!("Card Holder 4242424242424242");
    ok(
        &app,
        &stripe_event(&unique("evt_"), "checkout.session.completed", 1, session),
    )
    .await;
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 2, charge(&pi, 100)),
    )
    .await;
    let allowed = [
        "pk",
        "sk",
        "kind",
        "retention",
        "exp_pk",
        "exp_at",
        "payment_intent",
        "user_id",
        "grant",
        "credits",
        "amount",
        "currency",
        "refunded",
        "dispute",
        "reversed",
        "version",
        "type",
        "applied_at",
        "subscription_id",
        "customer_id",
        "plan",
        "status",
        "current_period_end",
        "stripe_updated",
        "status_rank",
        "refund_ts",
    ];
    let card_like = |s: &str| {
        let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
        s.split(|c: char| !c.is_ascii_digit())
            .any(|run| (13..=19).contains(&run.len()))
            && digits.len() >= 13
    };
    for item in app.scan_table().await {
        let kind = item["kind"].as_s().unwrap().clone();
        for (name, value) in &item {
            if let Ok(text) = value.as_s() {
                assert!(
                    !card_like(text),
                    "{kind}.{name} looks like card data: {text}"
                );
            }
            if ["payment", "webhook_event", "subscription"].contains(&kind.as_str()) {
                assert!(
                    allowed.contains(&name.as_str()),
                    "{kind} holds an undocumented {name}"
                );
            }
        }
    }
}

/// C2, U2: the user sees their balance, plan and subscription, and the ledger newest first with
/// the balance after each entry, paginated.
#[tokio::test]
async fn c2_billing_overview_and_ledger_with_balances_after_each_entry() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ),
    )
    .await;
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "invoice.paid",
            2,
            plan_invoice(&user, &unique("in_"), "subscription_create", &unique("pi_")),
        ),
    )
    .await;
    let mut sub = stripe_object(
        "subscription",
        json!({"id": "sub_9", "status": "active",
        "customer": "cus_9", "metadata": {"user_id": user.sub}}),
    );
    sub["items"]["data"][0]["price"]["id"] = json!(PLAN_PRICE);
    ok(
        &app,
        &stripe_event(&unique("evt_"), "customer.subscription.updated", 3, sub),
    )
    .await;
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 4, charge(&pi, 500)),
    )
    .await;
    app.create(&user, gen_body("one image")).await;

    let billing: Value = app.get_json("/v1/billing", &user).await;
    assert_eq!(billing["balance"], 10 + 50 + 200 - 50 - 1);
    assert_eq!(billing["plan"], "plan_monthly");
    assert_eq!(billing["subscription_status"], "active");

    let page: Value = app.get_json("/v1/billing/ledger?limit=3", &user).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["kind"], "debit");
    assert_eq!(items[0]["balance_after"], 209);
    assert_eq!(items[1]["kind"], "reversal");
    assert_eq!(items[1]["balance_after"], 210);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(
            &format!("/v1/billing/ledger?limit=3&cursor={cursor}"),
            &user,
        )
        .await
        .json()
        .await
        .unwrap();
    let rest = rest["items"].as_array().unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest.last().unwrap()["cause"], "grant:signup");
    assert_eq!(rest.last().unwrap()["balance_after"], 10);
    assert_eq!(
        problem_code(app.get("/v1/billing/ledger?cursor=bogus", &user).await, 400).await,
        "invalid_cursor"
    );
}

/// U5: on current API versions an invoice no longer names its payment intent; the
/// `invoice_payment.paid` event links it (in either order with `invoice.paid`), so a refund of a
/// plan charge claws back its share.
#[tokio::test]
async fn u5_plan_charges_are_linked_through_invoice_payments_and_refunds_claw_back() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let invoice_id = unique("in_");
    let pi = unique("pi_");
    let mut invoice = plan_invoice(&user, &invoice_id, "subscription_create", "unused");
    invoice.as_object_mut().unwrap().remove("payment_intent");
    let link = stripe_event(
        &unique("evt_"),
        "invoice_payment.paid",
        Utc::now().timestamp(),
        stripe_object(
            "invoice_payment",
            json!({"invoice": invoice_id, "amount_paid": 1200,
            "payment": {"type": "payment_intent", "payment_intent": pi}}),
        ),
    );
    // The link first: its grant is not known yet, so Stripe is asked to retry.
    assert_eq!(app.deliver(&link).await.status(), 503);
    ok(
        &app,
        &stripe_event(&unique("evt_"), "invoice.paid", 1, invoice),
    )
    .await;
    assert_eq!(ok(&app, &link).await["outcome"], "applied");
    let mut refunded = charge(&pi, 600);
    refunded["amount"] = json!(1200);
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 2, refunded),
    )
    .await;
    assert_eq!(app.assert_ledger_consistent(&user).await, 10 + 200 - 100);
    // An event about a payment this service never granted, long past: ignored, not retried.
    let stray = stripe_event(
        &unique("evt_"),
        "charge.refunded",
        1,
        charge(&unique("pi_"), 100),
    );
    assert_eq!(ok(&app, &stray).await["outcome"], "ignored");
}

/// S2: an inquiry takes nothing back and suspends nobody; a dispute that is won restores only
/// the dispute's own suspension (an admin's stays); a lost dispute keeps everything reversed.
#[tokio::test]
async fn s2_inquiries_take_nothing_and_a_won_dispute_keeps_an_admins_suspension() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ),
    )
    .await;
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.created",
            2,
            dispute(&pi, "warning_needs_response"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 60);
    assert_eq!(
        app.generate(&user, gen_body("not suspended"))
            .await
            .status(),
        202
    );
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.closed",
            3,
            dispute(&pi, "warning_closed"),
        ),
    )
    .await;
    assert_eq!(app.balance(&user).await, 59);

    let path = format!("/v1/admin/users/{}/suspension", user.sub);
    let resp = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&admin),
            Some(json!({"reason": "fraud"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let pi2 = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            4,
            paid_session(&user, &unique("cs_"), &pi2, "paid"),
        ),
    )
    .await;
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.created",
            5,
            dispute(&pi2, "needs_response"),
        ),
    )
    .await;
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "charge.dispute.funds_reinstated",
            6,
            dispute(&pi2, "won"),
        ),
    )
    .await;
    let me: Value = app.get_json("/v1/me", &user).await;
    assert_eq!(me["suspension"]["reason"], "fraud");
    assert_eq!(app.assert_ledger_consistent(&user).await, 109);
}

/// R4, C2: Stripe events about a deleted account change nothing under its subject: grants and
/// subscription updates are ignored, a later refund only updates the payment's record.
#[tokio::test]
async fn r4_stripe_events_after_account_deletion_write_nothing_under_the_subject() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let pi = unique("pi_");
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &pi, "paid"),
        ),
    )
    .await;
    assert_eq!(app.delete_account(&user).await.status(), 202);
    app.sweep_at(Utc::now()).await;
    let renewal = stripe_event(
        &unique("evt_"),
        "invoice.paid",
        2,
        plan_invoice(&user, &unique("in_"), "subscription_cycle", &unique("pi_")),
    );
    assert_eq!(ok(&app, &renewal).await["outcome"], "ignored");
    let mut sub = stripe_object(
        "subscription",
        json!({"id": "sub_x", "status": "active",
        "metadata": {"user_id": user.sub}}),
    );
    sub["items"]["data"][0]["price"]["id"] = json!(PLAN_PRICE);
    assert_eq!(
        ok(
            &app,
            &stripe_event(&unique("evt_"), "customer.subscription.updated", 3, sub)
        )
        .await["outcome"],
        "ignored"
    );
    ok(
        &app,
        &stripe_event(&unique("evt_"), "charge.refunded", 4, charge(&pi, 500)),
    )
    .await;
    for item in app.scan_table().await {
        assert!(!format!("{item:?}").contains(&user.sub), "{item:?}");
    }
    let payment = app.app().store.get_payment(&pi).await.unwrap().unwrap();
    assert!(payment.user_id.starts_with("anon:"));
    assert_eq!(payment.reversed, 50);
}

async fn post_json(
    app: &TestApp,
    user: &User,
    path: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(&user.token)
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn set_cap(app: &TestApp, user: &User, body: Value) -> reqwest::Response {
    app.http
        .put(format!("{}/v1/billing/spend-cap", app.base))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Pays a Checkout Session on the stand-in's hosted page, as a person would.
async fn pay(app: &TestApp, url: &str) {
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Pay"));
    let paid = app.http.post(url).send().await.unwrap();
    assert_eq!(paid.status(), 200);
}

/// U2, C2: the whole purchase through the dev host and the local Stripe stand-in: a pack and a
/// plan bought through Checkout (the stand-in sends the signed webhooks Stripe would), one
/// customer per user, invoices, the portal, the spend cap, and the refusals.
#[tokio::test]
async fn u2_a_person_buys_a_pack_and_a_plan_end_to_end() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let first = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        Some("buy-1"),
    )
    .await;
    assert_eq!(first.status(), 201);
    let url = first.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // The same Idempotency-Key gets the same session (forwarded to Stripe).
    let again = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        Some("buy-1"),
    )
    .await;
    assert_eq!(again.json::<Value>().await.unwrap()["url"], url.as_str());
    pay(&app, &url).await;
    assert_eq!(app.balance(&user).await, 60);

    let plan = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    assert_eq!(plan.status(), 201);
    pay(
        &app,
        plan.json::<Value>().await.unwrap()["url"].as_str().unwrap(),
    )
    .await;
    assert_eq!(app.assert_ledger_consistent(&user).await, 260);
    let billing: Value = app.get_json("/v1/billing", &user).await;
    assert_eq!(billing["plan"], "plan_monthly");
    assert_eq!(billing["subscription_status"], "active");
    assert_eq!(billing["spent_this_month"], 500 + 1200);
    let invoices: Value = app.get_json("/v1/billing/invoices", &user).await;
    let invoices = invoices["items"].as_array().unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["amount"], 1200);
    assert_eq!(invoices[0]["status"], "paid");
    let portal = post_json(&app, &user, "/v1/billing/portal", json!({}), None).await;
    assert_eq!(portal.status(), 201);
    assert!(portal.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .contains("/portal/cus_"));
    // One Stripe customer for the user, whatever the number of checkouts.
    let customers: Vec<String> = app
        .stack
        .stripe
        .as_ref()
        .unwrap()
        .sent()
        .iter()
        .filter(|e| e["type"] == "checkout.session.completed")
        .map(|e| {
            e["data"]["object"]["customer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0], customers[1]);

    // A second plan, the spend cap, unknown items: clear 4xx answers.
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    assert_eq!(problem_code(resp, 409).await, "already_subscribed");
    let cap = set_cap(&app, &user, json!({"monthly_cap": 2000})).await;
    assert_eq!(cap.status(), 200);
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(problem_code(resp, 409).await, "spend_cap_reached");
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "gold"}),
        None,
    )
    .await;
    assert_eq!(problem_code(resp, 400).await, "unknown_item");
    let bad_cap = set_cap(&app, &user, json!({"monthly_cap": -5})).await;
    assert_eq!(problem_code(bad_cap, 400).await, "invalid_spend_cap");
}

/// A suspended account cannot check out; without a Stripe key, billing answers 503
/// `billing_not_configured` and the rest of the product works.
#[tokio::test]
async fn suspended_accounts_cannot_buy_and_unconfigured_billing_is_503() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = app.onboarded_user().await;
    let resp = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/admin/users/{}/suspension", user.sub),
            Some(&admin),
            Some(json!({"reason": "chargebacks"})),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(problem_code(resp, 403).await, "account_suspended");

    let other = app.onboarded_user().await;
    let unconfigured = app.app().clone().without_payments();
    let err = shared::services::billing_account::checkout(
        &unconfigured,
        &caller(&other),
        shared::services::billing_account::CheckoutBody { item: PACK.into() },
        None,
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert_eq!((err.status(), err.code()), (503, "billing_not_configured"));
    assert_eq!(
        app.generate(&other, gen_body("still works")).await.status(),
        202
    );
}

/// U2: `credits.low` goes on the bus once per crossing of the low-balance threshold (5).
#[tokio::test]
async fn u2_credits_low_is_announced_once_per_crossing() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let lows = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| {
                e["detail-type"] == "credits.low" && e["detail"]["user_id"] == user.sub.as_str()
            })
            .count()
    };
    let _ = app.events().await;
    let big = json!({"prompt": "big", "size": "1024x1024", "quality": "high", "n": 2});
    app.create(&user, big.clone()).await; // 10 -> 2: crosses
    app.create(&user, gen_body("small")).await; // 2 -> 1: still low
    assert_eq!(lows(app.events().await), 1);
    ok(
        &app,
        &stripe_event(
            &unique("evt_"),
            "checkout.session.completed",
            1,
            paid_session(&user, &unique("cs_"), &unique("pi_"), "paid"),
        ),
    )
    .await; // 51
    for _ in 0..6 {
        app.create(&user, big.clone()).await; // 51 -> 3: crosses again
    }
    assert_eq!(app.balance(&user).await, 3);
    assert_eq!(lows(app.events().await), 1);
}

/// U2: the request's Idempotency-Key reaches Stripe: reused with another item it is 422, not a
/// 5xx; a malformed one is 400; the portal is only for users who bought something.
#[tokio::test]
async fn u2_checkout_idempotency_keys_and_portal_answer_4xx_for_client_mistakes() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    assert_eq!(
        problem_code(
            post_json(&app, &user, "/v1/billing/portal", json!({}), None).await,
            404
        )
        .await,
        "not_found"
    );
    let first = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        Some("k-1"),
    )
    .await;
    assert_eq!(first.status(), 201);
    let other = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "pack_large"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(problem_code(other, 422).await, "idempotency_key_reused");
    let long = "k".repeat(255);
    let ok_long = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        Some(&long),
    )
    .await;
    assert_eq!(
        ok_long.status(),
        201,
        "any key of up to 255 characters reaches Stripe"
    );
    let too_long = "k".repeat(256);
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        Some(&too_long),
    )
    .await;
    assert_eq!(problem_code(resp, 400).await, "invalid_idempotency_key");
    for body in [json!([1]), json!({"item": PACK, "extra": 1}), json!({})] {
        let resp = post_json(&app, &user, "/v1/billing/checkout", body, None).await;
        assert_eq!(problem_code(resp, 400).await, "invalid_body");
    }
}

/// R4: deleting an account deletes its Stripe customer (its subscriptions go with it), so no
/// renewal charges an account that no longer exists.
#[tokio::test]
async fn r4_account_deletion_deletes_the_stripe_customer() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    pay(
        &app,
        resp.json::<Value>().await.unwrap()["url"].as_str().unwrap(),
    )
    .await;
    let customer = app
        .app()
        .store
        .customer(&user.sub)
        .await
        .unwrap()
        .customer_id
        .unwrap();
    assert_eq!(app.delete_account(&user).await.status(), 202);
    // At once, with the deactivation: no renewal can charge the account meanwhile.
    assert_eq!(
        app.stack.stripe.as_ref().unwrap().deleted_customers(),
        vec![customer.clone()]
    );
    let report = app.sweep_at(Utc::now()).await;
    assert_eq!(report.errors, 0);
    let mut deleted = app.stack.stripe.as_ref().unwrap().deleted_customers();
    deleted.dedup();
    assert_eq!(deleted, vec![customer]);
    for item in app.scan_table().await {
        assert!(!format!("{item:?}").contains(&user.sub), "{item:?}");
    }
}

/// U2: the stand-in delivers a plan's four events reversed and each twice (the payment link,
/// arriving before its invoice, is answered 503 and sent again later, as Stripe does): one
/// grant, the plan active, the charge linked.
#[tokio::test]
async fn u2_a_plan_paid_with_reversed_duplicated_deliveries_grants_once() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    let url = resp.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let paid = app
        .http
        .post(format!("{url}?reverse=true&duplicate=true&delay_ms=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert_eq!(app.assert_ledger_consistent(&user).await, 210);
    let billing: Value = app.get_json("/v1/billing", &user).await;
    assert_eq!(billing["subscription_status"], "active");
    let grants = app.app().store.ledger_entries(&user.sub).await.unwrap();
    assert_eq!(
        grants
            .iter()
            .filter(|e| e.cause.starts_with("grant:invoice:"))
            .count(),
        1
    );
    // The payment link, refused while its invoice was unknown, arrived again later: the plan's
    // charge is recorded under its payment intent.
    let sent = app.stack.stripe.as_ref().unwrap().sent();
    let link = sent
        .iter()
        .find(|e| e["type"] == "invoice_payment.paid")
        .unwrap();
    let pi = link["data"]["object"]["payment"]["payment_intent"]
        .as_str()
        .unwrap();
    assert!(app.app().store.get_payment(pi).await.unwrap().is_some());
}

/// U2: open Checkout Sessions count against the spend cap and against a second plan, until
/// they are paid or expire.
#[tokio::test]
async fn u2_open_checkouts_count_against_the_spend_cap_until_paid_or_expired() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let cap = set_cap(&app, &user, json!({"monthly_cap": 1000})).await;
    assert_eq!(cap.status(), 200);
    let first = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(first.status(), 201);
    let second = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(second.status(), 201, "500 + 500 fit a cap of 1000");
    let third = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(problem_code(third, 409).await, "spend_cap_reached");
    // One session expires: its amount no longer counts.
    let url = second.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let session_id = url.rsplit('/').next().unwrap().to_string();
    let expired = stripe_object(
        "checkout.session",
        json!({"id": session_id, "mode": "payment",
        "status": "expired", "client_reference_id": user.sub, "metadata": {"user_id": user.sub, "item": PACK}}),
    );
    ok(
        &app,
        &stripe_event(&unique("evt_"), "checkout.session.expired", 5, expired),
    )
    .await;
    let again = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    assert_eq!(again.status(), 201);
    // An open plan checkout blocks a second one.
    let uncapped = set_cap(&app, &user, json!({"monthly_cap": null})).await;
    assert_eq!(uncapped.status(), 200);
    let plan = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    assert_eq!(plan.status(), 201);
    let plan2 = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    assert_eq!(problem_code(plan2, 409).await, "already_subscribed");
    // Paying the first pack turns its open amount into spent money.
    pay(
        &app,
        first.json::<Value>().await.unwrap()["url"]
            .as_str()
            .unwrap(),
    )
    .await;
    let billing: Value = app.get_json("/v1/billing", &user).await;
    assert_eq!(billing["spent_this_month"], 500);
}

/// U2: a refund that lifts the balance back over the threshold clears the mark, so the next
/// crossing is announced again.
#[tokio::test]
async fn u2_credits_low_is_announced_again_after_a_refund_lifts_the_balance() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let _ = app.events().await;
    let lows = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| {
                e["detail-type"] == "credits.low" && e["detail"]["user_id"] == user.sub.as_str()
            })
            .count()
    };
    let big = json!({"prompt": "big", "size": "1024x1024", "quality": "high", "n": 2});
    let id = app.create(&user, big.clone()).await; // 10 -> 2: low
    assert_eq!(lows(app.events().await), 1);
    assert_eq!(app.delete_generation(&user, &id).await.status(), 204); // refunded: 10
    app.create(&user, big).await; // 10 -> 2: low again
    assert_eq!(lows(app.events().await), 1);
}

/// U5, S2: refunds and disputes made on the stand-in (as Stripe and the card network would)
/// reach the webhook: half refunded, then a dispute opened and won.
#[tokio::test]
async fn u5_refunds_and_disputes_through_the_stand_in() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": PACK}),
        None,
    )
    .await;
    pay(
        &app,
        resp.json::<Value>().await.unwrap()["url"].as_str().unwrap(),
    )
    .await;
    let stripe = app.stack.stripe.as_ref().unwrap().base_url.clone();
    let pi = app
        .stack
        .stripe
        .as_ref()
        .unwrap()
        .sent()
        .iter()
        .find(|e| e["type"] == "checkout.session.completed")
        .unwrap()["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let post = |path: &str, body: String| {
        app.http
            .post(format!("{stripe}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let refund = post(
        "/v1/refunds",
        form(&[("payment_intent", &pi), ("amount", "250")]),
    )
    .await
    .unwrap();
    assert_eq!(refund.status(), 200);
    assert_eq!(app.assert_ledger_consistent(&user).await, 35);
    let too_much = post(
        "/v1/refunds",
        form(&[("payment_intent", &pi), ("amount", "999")]),
    )
    .await
    .unwrap();
    assert_eq!(too_much.status(), 400);
    post(
        "/test_helpers/disputes",
        form(&[("payment_intent", &pi), ("status", "needs_response")]),
    )
    .await
    .unwrap();
    assert_eq!(app.balance(&user).await, 10);
    post(
        "/test_helpers/disputes",
        form(&[("payment_intent", &pi), ("status", "won")]),
    )
    .await
    .unwrap();
    assert_eq!(app.assert_ledger_consistent(&user).await, 35);
    let price: Value = app
        .http
        .get(format!("{stripe}/v1/prices/price_local_pack_small"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(price["unit_amount"], 500);

    // A plan, renewed once: two invoices, two grants.
    let resp = post_json(
        &app,
        &user,
        "/v1/billing/checkout",
        json!({"item": "plan_monthly"}),
        None,
    )
    .await;
    pay(
        &app,
        resp.json::<Value>().await.unwrap()["url"].as_str().unwrap(),
    )
    .await;
    let sub = app
        .app()
        .store
        .subscription(&user.sub)
        .await
        .unwrap()
        .unwrap();
    let renewed = post(
        &format!("/test_helpers/subscriptions/{}/renew", sub.subscription_id),
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(renewed.status(), 200);
    assert_eq!(app.assert_ledger_consistent(&user).await, 35 + 200 + 200);
    let invoices: Value = app.get_json("/v1/billing/invoices", &user).await;
    assert_eq!(invoices["items"].as_array().unwrap().len(), 2);
}

/// U2: a checkout reserves its amount only if no other checkout reserved since it read the
/// cap, the month's spend and the open checkouts (one conditional transaction), so two at once
/// cannot both pass the spend cap; a refused or failed checkout leaves no reservation.
#[tokio::test]
async fn u2_concurrent_checkouts_cannot_both_pass_the_spend_cap() {
    let app = spawn_app().await;
    let user = app.onboarded_user().await;
    // Room for one small pack (500), not two.
    assert_eq!(
        set_cap(&app, &user, json!({"monthly_cap": 700}))
            .await
            .status(),
        200
    );
    let (a, b) = tokio::join!(
        post_json(
            &app,
            &user,
            "/v1/billing/checkout",
            json!({"item": PACK}),
            None
        ),
        post_json(
            &app,
            &user,
            "/v1/billing/checkout",
            json!({"item": PACK}),
            None
        ),
    );
    let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![201, 409]);
    let pending = app
        .app()
        .store
        .pending_checkouts(&user.sub, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        pending,
        vec![(500, false)],
        "one open checkout, no reservation left"
    );

    // The mechanism itself: two reservations decided on the same reads, one wins.
    let store = &app.app().store;
    let seen = store.customer(&user.sub).await.unwrap().checkout_seq;
    let now = Utc::now();
    assert_eq!(
        store
            .reserve_checkout(&user.sub, seen, "first", 1, false, now)
            .await
            .unwrap(),
        Some(true)
    );
    assert_eq!(
        store
            .reserve_checkout(&user.sub, seen, "second", 1, false, now)
            .await
            .unwrap(),
        Some(false)
    );
    store.release_reservation(&user.sub, "first").await.unwrap();
    assert_eq!(
        store.pending_checkouts(&user.sub, now).await.unwrap().len(),
        1
    );
}
