//! The Stripe API adapter (C2, U2): customers, Checkout Sessions, customer-portal sessions and
//! invoices, through `async-stripe`. Callers use the [`Payments`] port.

use std::collections::HashMap;

use anyhow::Context;
use serde::Serialize;
use stripe::{Client, ClientBuilder};
use stripe::{RequestStrategy, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::ListInvoice;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use stripe_shared::CheckoutSessionMode;

use crate::domain::billing::CatalogItem;

/// What a checkout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    Pack,
    Plan,
}

/// An invoice as the user sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvoiceView {
    pub number: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: Option<String>,
    pub hosted_url: Option<String>,
    /// Epoch seconds.
    pub created: i64,
}

#[async_trait::async_trait]
pub trait Payments: Send + Sync {
    /// Creates the user's Stripe customer (idempotently: the same user, the same customer).
    async fn create_customer(&self, user_id: &str, email: Option<&str>) -> anyhow::Result<String>;
    /// A Checkout Session's URL for `item`; the user id travels in `client_reference_id` and
    /// the metadata of the session, its payment intent and its subscription.
    #[allow(clippy::too_many_arguments)]
    async fn checkout_url(
        &self,
        customer: &str,
        user_id: &str,
        item: &CatalogItem,
        purchase: Purchase,
        success_url: &str,
        cancel_url: &str,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<String>;
    async fn portal_url(&self, customer: &str, return_url: &str) -> anyhow::Result<String>;
    async fn invoices(&self, customer: &str) -> anyhow::Result<Vec<InvoiceView>>;
}

pub struct Stripe {
    client: Client,
}

impl Stripe {
    /// A client with `secret_key`, against `api_base` when given (a local stand-in).
    pub fn new(secret_key: &str, api_base: Option<&str>) -> anyhow::Result<Self> {
        // Two TLS crypto providers are linked (the AWS SDK's and ring): the Stripe client uses
        // the process default, so one is chosen here (an earlier choice stands).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = ClientBuilder::new(secret_key);
        if let Some(base) = api_base {
            builder = builder.url(base);
        }
        Ok(Self {
            client: builder.build().context("building the Stripe client")?,
        })
    }
}

fn idempotent(key: &str) -> anyhow::Result<RequestStrategy> {
    Ok(RequestStrategy::Idempotent(
        stripe::IdempotencyKey::new(key).map_err(|e| anyhow::anyhow!("idempotency key: {e:?}"))?,
    ))
}

#[async_trait::async_trait]
impl Payments for Stripe {
    async fn create_customer(&self, user_id: &str, email: Option<&str>) -> anyhow::Result<String> {
        let mut req = CreateCustomer::new().metadata(HashMap::from([(
            "user_id".to_string(),
            user_id.to_string(),
        )]));
        if let Some(e) = email {
            req = req.email(e);
        }
        let customer = req
            .customize()
            .request_strategy(idempotent(&format!("customer-{user_id}"))?)
            .send(&self.client)
            .await
            .context("creating the Stripe customer")?;
        Ok(customer.id.to_string())
    }

    async fn checkout_url(
        &self,
        customer: &str,
        user_id: &str,
        item: &CatalogItem,
        purchase: Purchase,
        success_url: &str,
        cancel_url: &str,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<String> {
        let metadata = HashMap::from([
            ("user_id".to_string(), user_id.to_string()),
            ("item".to_string(), item.id.clone()),
        ]);
        let mut line = CreateCheckoutSessionLineItems::new();
        line.price = Some(item.price_id.clone());
        line.quantity = Some(1);
        let mut req = CreateCheckoutSession::new()
            .customer(customer)
            .client_reference_id(user_id)
            .line_items(vec![line])
            .metadata(metadata.clone())
            .success_url(success_url)
            .cancel_url(cancel_url);
        req = match purchase {
            Purchase::Pack => {
                let mut data = CreateCheckoutSessionPaymentIntentData::new();
                data.metadata = Some(metadata);
                req.mode(CheckoutSessionMode::Payment)
                    .payment_intent_data(data)
            }
            Purchase::Plan => {
                let mut data = CreateCheckoutSessionSubscriptionData::new();
                data.metadata = Some(metadata);
                req.mode(CheckoutSessionMode::Subscription)
                    .subscription_data(data)
            }
        };
        let mut request = req.customize();
        if let Some(key) = idempotency_key {
            request = request.request_strategy(idempotent(&format!("checkout-{user_id}-{key}"))?);
        }
        let session = request
            .send(&self.client)
            .await
            .context("creating the Checkout Session")?;
        session.url.context("the Checkout Session has no URL")
    }

    async fn portal_url(&self, customer: &str, return_url: &str) -> anyhow::Result<String> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(&self.client)
            .await
            .context("creating the portal session")?;
        Ok(session.url)
    }

    async fn invoices(&self, customer: &str) -> anyhow::Result<Vec<InvoiceView>> {
        let list = ListInvoice::new()
            .customer(customer)
            .limit(100)
            .send(&self.client)
            .await
            .context("listing invoices")?;
        Ok(list
            .data
            .into_iter()
            .map(|i| InvoiceView {
                number: i.number,
                amount: i.amount_paid,
                currency: i.currency.to_string(),
                status: i.status.map(|s| s.to_string()),
                hosted_url: i.hosted_invoice_url,
                created: i.created,
            })
            .collect())
    }
}
