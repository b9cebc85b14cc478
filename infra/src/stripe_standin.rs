//! A local stand-in for Stripe's API, speaking its wire format: form-encoded requests, whole
//! JSON objects built from Stripe's own examples (`infra/stripe/fixtures3.json`). It serves
//! customers, prices and subscriptions (read), Checkout Sessions, portal sessions, invoices and
//! refunds, honours `Idempotency-Key`, and has a hosted "pay" page: paying completes the
//! session and sends the webhooks Stripe would, signed as Stripe signs them, to the dev host
//! (duplicated, reversed or delayed on request; refused ones sent again). Test helpers open and
//! close disputes and renew subscriptions. `infra/dev` and the tests start it when no Stripe
//! key is configured, so a purchase works end to end with no account anywhere.
//!
//! Not covered: products, failed payments, plan changes in the portal, real card forms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shared::domain::billing::Catalog;

#[derive(Default)]
struct Data {
    sessions: HashMap<String, Value>,
    invoices: HashMap<String, Vec<Value>>,
    /// Idempotency key → (the request's parameters, the first answer).
    idempotent: HashMap<String, (String, Value)>,
    sent: Vec<Value>,
    deleted_customers: Vec<String>,
    /// Payment intent → (amount paid, amount refunded so far).
    charges: HashMap<String, (u64, u64)>,
    subscriptions: HashMap<String, Value>,
}

pub struct StandIn {
    base: String,
    webhook_url: String,
    webhook_secret: String,
    catalog: Catalog,
    fixtures: Value,
    data: Mutex<Data>,
    http: reqwest::Client,
}

/// A running stand-in.
#[derive(Clone)]
pub struct Handle {
    pub base_url: String,
    inner: Arc<StandIn>,
}

impl Handle {
    /// Every event sent so far.
    pub fn sent(&self) -> Vec<Value> {
        self.inner.data.lock().unwrap().sent.clone()
    }

    /// Customers deleted so far.
    pub fn deleted_customers(&self) -> Vec<String> {
        self.inner.data.lock().unwrap().deleted_customers.clone()
    }
}

fn fixtures() -> Value {
    let text = include_str!("../stripe/fixtures3.json");
    serde_json::from_str::<Value>(text).expect("Stripe's fixtures are JSON")["resources"].clone()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn merge(base: &mut Value, changes: Value) {
    match (base, changes) {
        (Value::Object(b), Value::Object(c)) => {
            for (k, v) in c {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, c) => *b = c,
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub async fn start(
    webhook_url: String,
    webhook_secret: String,
    catalog: Catalog,
) -> anyhow::Result<Handle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let inner = Arc::new(StandIn {
        base: base.clone(),
        webhook_url,
        webhook_secret,
        catalog,
        fixtures: fixtures(),
        data: Mutex::new(Data::default()),
        http: reqwest::Client::new(),
    });
    let router = Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", axum::routing::delete(delete_customer))
        .route(
            "/portal/{id}",
            get(|| async { Html("<p>Local customer portal: card, cancel, invoices.</p>") }),
        )
        .route(
            "/invoices/{id}",
            get(|Path(id): Path<String>| async move { Html(format!("<p>Invoice {id}</p>")) }),
        )
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/billing_portal/sessions", post(create_portal))
        .route("/v1/invoices", get(list_invoices))
        .route("/pay/{id}", get(pay_page).post(pay))
        .route("/v1/prices/{id}", get(get_price))
        .route("/v1/subscriptions/{id}", get(get_subscription))
        .route("/v1/refunds", post(create_refund))
        // Stripe has no API that opens a dispute; test mode uses special cards. This helper
        // plays the card network: `{payment_intent, status}` sends the dispute's event.
        .route("/test_helpers/disputes", post(dispute))
        // A new period of a subscription, as Stripe's test clocks advance it: its paid invoice.
        .route("/test_helpers/subscriptions/{id}/renew", post(renew))
        .with_state(inner.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "Stripe stand-in stopped");
        }
    });
    Ok(Handle {
        base_url: base,
        inner,
    })
}

impl StandIn {
    fn object(&self, resource: &str, changes: Value) -> Value {
        let mut o = self.fixtures[resource].clone();
        merge(&mut o, changes);
        o
    }

    /// Answers a create request once per `Idempotency-Key`, as Stripe does: the same key with
    /// the same parameters gets the first answer, with other parameters an `idempotency_error`.
    /// `make` builds the object and records it in `Data` (under the same lock, so concurrent
    /// retries get one answer).
    fn once(
        &self,
        headers: &HeaderMap,
        params: &[u8],
        make: impl FnOnce(&mut Data) -> Value,
    ) -> Response {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Stripe compares the parameters, not their order on the wire.
        let params = {
            let mut pairs: Vec<(String, String)> =
                form_urlencoded::parse(params).into_owned().collect();
            pairs.sort();
            format!("{pairs:?}")
        };
        let mut data = self.data.lock().unwrap();
        if let Some(k) = &key {
            if let Some((first, v)) = data.idempotent.get(k) {
                if *first != params {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": {"type": "idempotency_error",
                            "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request.")}})),
                    )
                        .into_response();
                }
                return Json(v.clone()).into_response();
            }
        }
        let value = make(&mut data);
        if let Some(k) = key {
            data.idempotent.insert(k, (params, value.clone()));
        }
        Json(value).into_response()
    }

    fn event(&self, kind: &str, object: Value) -> Value {
        self.object(
            "event",
            json!({"id": new_id("evt"), "type": kind, "created": chrono::Utc::now().timestamp(),
                   "data": {"object": object}, "livemode": false}),
        )
    }

    /// A paid invoice of a plan's period (`subscription_create` or `subscription_cycle`),
    /// listed under its customer, and its two events (`invoice.paid`, `invoice_payment.paid`).
    #[allow(clippy::too_many_arguments)]
    fn paid_plan_invoice(
        &self,
        plan: &shared::domain::billing::CatalogItem,
        customer: &str,
        subscription_id: &str,
        metadata: Value,
        reason: &str,
        invoice_id: &str,
        payment_intent: &str,
    ) -> (Value, Vec<Value>) {
        let mut invoice = self.object(
            "invoice",
            json!({"id": invoice_id, "customer": customer, "billing_reason": reason,
                   "status": "paid", "amount_paid": plan.amount, "amount_due": plan.amount,
                   "total": plan.amount, "subtotal": plan.amount, "currency": plan.currency,
                   "number": format!("LOCAL-{}", &invoice_id[3..11]),
                   "hosted_invoice_url": format!("{}/invoices/{invoice_id}", self.base),
                   "created": chrono::Utc::now().timestamp(),
                   "parent": {"type": "subscription_details",
                              "subscription_details": {"metadata": metadata, "subscription": subscription_id}}}),
        );
        invoice["lines"]["data"][0]["pricing"] = json!({"type": "price_details",
            "price_details": {"price": plan.price_id, "product": "prod_local"}, "unit_amount_decimal": null});
        {
            let mut data = self.data.lock().unwrap();
            data.invoices
                .entry(customer.to_string())
                .or_default()
                .push(invoice.clone());
            data.charges
                .insert(payment_intent.to_string(), (plan.amount, 0));
        }
        let events = vec![
            self.event("invoice.paid", invoice.clone()),
            self.event(
                "invoice_payment.paid",
                self.object(
                    "invoice_payment",
                    json!({"invoice": invoice_id, "amount_paid": plan.amount,
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent}}),
                ),
            ),
        ];
        (invoice, events)
    }

    /// Delivers an event once, signed at delivery time; `true` on a 2xx answer.
    async fn deliver(&self, event: &Value) -> bool {
        let body = event.to_string();
        let t = chrono::Utc::now().timestamp();
        let sig = shared::domain::billing::sign(&self.webhook_secret, t, body.as_bytes());
        match self
            .http
            .post(&self.webhook_url)
            .header("stripe-signature", format!("t={t},v1={sig}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::info!(status = %r.status(), "webhook answered non-2xx; it will be retried");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook not delivered; it will be retried");
                false
            }
        }
    }

    /// Sends a payment's events, as asked: in order, or reversed, duplicated, delayed.
    async fn send_all(&self, events: Vec<Value>, how: &Delivery) {
        let mut events = events;
        if how.reverse {
            events.reverse();
        }
        if how.duplicate {
            events = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
        }
        self.data
            .lock()
            .unwrap()
            .sent
            .extend(events.iter().cloned());
        // As Stripe does, an event answered non-2xx is sent again later, after the others
        // (here within a few quick passes; Stripe retries for three days).
        let mut pending = events;
        for pass in 0..6u64 {
            let mut failed = Vec::new();
            for e in pending {
                if how.delay_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(how.delay_ms)).await;
                }
                if !self.deliver(&e).await {
                    failed.push(e);
                }
            }
            if failed.is_empty() {
                return;
            }
            pending = failed;
            tokio::time::sleep(std::time::Duration::from_millis(50 * (pass + 1))).await;
        }
    }
}

/// How the pay page's webhooks are delivered (`POST /pay/{id}?duplicate=true&reverse=true&delay_ms=50`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Delivery {
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    pub reverse: bool,
    #[serde(default)]
    pub delay_ms: u64,
}

async fn create_customer(
    State(s): State<Arc<StandIn>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    s.once(&headers, &body, |_| {
        s.object(
            "customer",
            json!({"id": new_id("cus"), "email": f.get("email"),
                   "metadata": {"user_id": f.get("metadata[user_id]")}}),
        )
    })
}

async fn delete_customer(State(s): State<Arc<StandIn>>, Path(id): Path<String>) -> Json<Value> {
    s.data.lock().unwrap().deleted_customers.push(id.clone());
    Json(s.object("deleted_customer", json!({"id": id, "deleted": true})))
}

async fn create_session(
    State(s): State<Arc<StandIn>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let price = f.get("line_items[0][price]").cloned().unwrap_or_default();
    let Some(item) = s.catalog.by_price(&price) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"type": "invalid_request_error", "message": format!("No such price: '{price}'"), "param": "line_items[0][price]", "code": "resource_missing"}})),
        )
            .into_response();
    };
    s.once(&headers, &body, |data| {
        let id = new_id("cs_test");
        let session = s.object(
            "checkout.session",
            json!({"id": id, "mode": f.get("mode"), "customer": f.get("customer"),
                   "client_reference_id": f.get("client_reference_id"),
                   "metadata": {"user_id": f.get("metadata[user_id]"), "item": f.get("metadata[item]")},
                   "success_url": f.get("success_url"), "cancel_url": f.get("cancel_url"),
                   "amount_total": item.amount, "amount_subtotal": item.amount, "currency": item.currency,
                   "payment_status": "unpaid", "status": "open", "payment_intent": null,
                   "subscription": null, "invoice": null,
                   "url": format!("{}/pay/{id}", s.base)}),
        );
        data.sessions.insert(id, session.clone());
        session
    })
}

async fn create_portal(State(s): State<Arc<StandIn>>, body: Bytes) -> Json<Value> {
    let f = form(&body);
    let customer = f.get("customer").cloned().unwrap_or_default();
    Json(s.object(
        "billing_portal.session",
        json!({"id": new_id("bps"), "customer": customer, "return_url": f.get("return_url"),
               "url": format!("{}/portal/{customer}", s.base)}),
    ))
}

async fn list_invoices(
    State(s): State<Arc<StandIn>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let customer = q.get("customer").cloned().unwrap_or_default();
    let data = s
        .data
        .lock()
        .unwrap()
        .invoices
        .get(&customer)
        .cloned()
        .unwrap_or_default();
    Json(json!({"object": "list", "data": data, "has_more": false, "url": "/v1/invoices"}))
}

async fn pay_page(State(s): State<Arc<StandIn>>, Path(id): Path<String>) -> Response {
    let Some(session) = s.data.lock().unwrap().sessions.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    Html(format!(
        "<!doctype html><title>Pay</title><h1>Local Stripe stand-in</h1>\
         <p>{} {} ({})</p><form method=post><button>Pay</button></form>",
        session["amount_total"],
        session["currency"],
        session["metadata"]["item"].as_str().unwrap_or("")
    ))
    .into_response()
}

/// Pays the session and sends the webhooks Stripe would.
async fn pay(
    State(s): State<Arc<StandIn>>,
    Path(id): Path<String>,
    Query(how): Query<Delivery>,
) -> Response {
    // Checked and marked under one lock: a double-submitted form pays once.
    let mut session = {
        let mut data = s.data.lock().unwrap();
        let Some(session) = data.sessions.get_mut(&id) else {
            return (StatusCode::NOT_FOUND, "no such session").into_response();
        };
        if session["status"] == "complete" {
            return Html("<p>Already paid.</p>").into_response();
        }
        session["status"] = json!("complete");
        session.clone()
    };
    let user = session["metadata"]["user_id"].clone();
    let item_id = session["metadata"]["item"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let customer = session["customer"].as_str().unwrap_or_default().to_string();
    let pi = new_id("pi");
    let amount = session["amount_total"].as_u64().unwrap_or(0);
    s.data
        .lock()
        .unwrap()
        .charges
        .insert(pi.clone(), (amount, 0));
    merge(
        &mut session,
        json!({"status": "complete", "payment_status": "paid"}),
    );
    if session["mode"] == "subscription" {
        let plan = s.catalog.plan(&item_id).cloned();
        let Some(plan) = plan else {
            return (StatusCode::BAD_REQUEST, "no such plan").into_response();
        };
        let sub_id = new_id("sub");
        let invoice_id = new_id("in");
        merge(
            &mut session,
            json!({"subscription": sub_id, "invoice": invoice_id}),
        );
        let now = chrono::Utc::now().timestamp();
        let mut subscription = s.object(
            "subscription",
            json!({"id": sub_id, "status": "active", "customer": customer,
                   "metadata": {"user_id": user, "item": item_id}}),
        );
        subscription["items"]["data"][0]["price"]["id"] = json!(plan.price_id);
        subscription["items"]["data"][0]["current_period_end"] = json!(now + 30 * 86_400);
        s.data
            .lock()
            .unwrap()
            .subscriptions
            .insert(sub_id.clone(), subscription.clone());
        let (_, invoice_events) = s.paid_plan_invoice(
            &plan,
            &customer,
            &sub_id,
            json!({"user_id": user}),
            "subscription_create",
            &invoice_id,
            &pi,
        );
        s.data
            .lock()
            .unwrap()
            .sessions
            .insert(id.clone(), session.clone());
        let mut events = vec![
            s.event("checkout.session.completed", session),
            s.event("customer.subscription.created", subscription),
        ];
        events.extend(invoice_events);
        s.send_all(events, &how).await;
    } else {
        merge(&mut session, json!({"payment_intent": pi}));
        s.data
            .lock()
            .unwrap()
            .sessions
            .insert(id.clone(), session.clone());
        let completed = s.event("checkout.session.completed", session);
        s.send_all(vec![completed], &how).await;
    }
    Html("<p>Paid. You can close this page.</p>").into_response()
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
            "message": format!("No such {what}: '{id}'")}}),
        ),
    )
        .into_response()
}

async fn get_price(State(s): State<Arc<StandIn>>, Path(id): Path<String>) -> Response {
    let Some(item) = s.catalog.by_price(&id) else {
        return not_found("price", &id);
    };
    let recurring = s.catalog.plan_by_price(&id).is_some();
    Json(s.object(
        "price",
        json!({"id": id, "unit_amount": item.amount, "currency": item.currency,
               "type": if recurring { "recurring" } else { "one_time" },
               "metadata": {"item": item.id, "credits": item.credits.to_string()}}),
    ))
    .into_response()
}

async fn get_subscription(State(s): State<Arc<StandIn>>, Path(id): Path<String>) -> Response {
    match s.data.lock().unwrap().subscriptions.get(&id) {
        Some(sub) => Json(sub.clone()).into_response(),
        None => not_found("subscription", &id),
    }
}

/// `POST /v1/refunds` `payment_intent`, `amount` (all that is left when absent): the refund,
/// and the `charge.refunded` event with the charge's cumulative `amount_refunded`.
async fn create_refund(State(s): State<Arc<StandIn>>, body: Bytes) -> Response {
    let f = form(&body);
    let pi = f.get("payment_intent").cloned().unwrap_or_default();
    let (amount, refunded) = {
        let mut data = s.data.lock().unwrap();
        let Some(charge) = data.charges.get_mut(&pi) else {
            return not_found("payment_intent", &pi);
        };
        let left = charge.0 - charge.1;
        let asked = f
            .get("amount")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(left);
        if asked == 0 || asked > left {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"type": "invalid_request_error",
                    "message": format!("Refund amount ({asked}) is greater than unrefunded amount on charge ({left})")}})),
            )
                .into_response();
        }
        charge.1 += asked;
        (asked, charge.1)
    };
    let total = s.data.lock().unwrap().charges[&pi].0;
    let charge = s.object(
        "charge",
        json!({"id": new_id("ch"), "payment_intent": pi, "amount": total,
               "amount_refunded": refunded, "refunded": refunded == total}),
    );
    let event = s.event("charge.refunded", charge);
    s.send_all(vec![event], &Delivery::default()).await;
    Json(s.object(
        "refund",
        json!({"id": new_id("re"), "amount": amount, "payment_intent": pi, "status": "succeeded"}),
    ))
    .into_response()
}

/// The test helper: `payment_intent`, `status` (`needs_response` opens a dispute; `won`,
/// `lost`, `warning_closed` close it).
async fn dispute(State(s): State<Arc<StandIn>>, body: Bytes) -> Response {
    let f = form(&body);
    let pi = f.get("payment_intent").cloned().unwrap_or_default();
    let Some((amount, _)) = s.data.lock().unwrap().charges.get(&pi).copied() else {
        return not_found("payment_intent", &pi);
    };
    let status = f
        .get("status")
        .cloned()
        .unwrap_or_else(|| "needs_response".into());
    let kind = if matches!(
        status.as_str(),
        "won" | "lost" | "warning_closed" | "prevented"
    ) {
        "charge.dispute.closed"
    } else {
        "charge.dispute.created"
    };
    let object = s.object(
        "dispute",
        json!({"id": new_id("dp"), "payment_intent": pi, "amount": amount, "status": status}),
    );
    let event = s.event(kind, object.clone());
    s.send_all(vec![event], &Delivery::default()).await;
    Json(object).into_response()
}

/// Renews a subscription: a `subscription_cycle` invoice, paid, and its events.
async fn renew(State(s): State<Arc<StandIn>>, Path(id): Path<String>) -> Response {
    let Some(sub) = s.data.lock().unwrap().subscriptions.get(&id).cloned() else {
        return not_found("subscription", &id);
    };
    let price = sub["items"]["data"][0]["price"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(plan) = s.catalog.plan_by_price(&price).cloned() else {
        return not_found("price", &price);
    };
    let customer = sub["customer"].as_str().unwrap_or_default();
    let (invoice, events) = s.paid_plan_invoice(
        &plan,
        customer,
        &id,
        sub["metadata"].clone(),
        "subscription_cycle",
        &new_id("in"),
        &new_id("pi"),
    );
    s.send_all(events, &Delivery::default()).await;
    Json(invoice).into_response()
}
