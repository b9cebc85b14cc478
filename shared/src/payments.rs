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

/// How a call to Stripe failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// The same idempotency key was used with other parameters.
    #[error("idempotency key reused with other parameters")]
    IdempotencyConflict,
    /// Stripe refused the request (a 4xx): our request or our configuration is wrong.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// Stripe did not answer usefully (network, timeout, 5xx): worth a retry.
    #[error("Stripe unavailable: {0}")]
    Unavailable(String),
}

impl From<stripe::StripeError> for PaymentsError {
    fn from(e: stripe::StripeError) -> Self {
        match e {
            // 409 (a concurrent request with the same key) and 429 (rate limited) pass.
            stripe::StripeError::Stripe(api, status)
                if (400..500).contains(&status) && status != 409 && status != 429 =>
            {
                if matches!(
                    api.type_,
                    stripe_shared::api_errors::ApiErrorsType::IdempotencyError
                ) {
                    Self::IdempotencyConflict
                } else {
                    Self::Rejected {
                        status,
                        message: api.message.clone().unwrap_or_default(),
                    }
                }
            }
            other => Self::Unavailable(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, PaymentsError>;

/// What a checkout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase {
    Pack,
    Plan,
}

/// A created Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
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
    /// Creates a Stripe customer for the user (the caller keeps one and deletes any other).
    async fn create_customer(&self, user_id: &str, email: Option<&str>) -> Result<String>;
    /// Deletes a customer (cancelling its subscriptions); one already gone is deleted.
    async fn delete_customer(&self, customer: &str) -> Result<()>;
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
    ) -> Result<CheckoutSession>;
    async fn portal_url(&self, customer: &str, return_url: &str) -> Result<String>;
    async fn invoices(&self, customer: &str) -> Result<Vec<InvoiceView>>;
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
        // A slow Stripe must not hold a request to the function's timeout.
        let mut builder = ClientBuilder::new(secret_key).timeout(std::time::Duration::from_secs(8));
        if let Some(base) = api_base {
            builder = builder.url(base);
        }
        Ok(Self {
            client: builder.build().context("building the Stripe client")?,
        })
    }
}

/// A Stripe idempotency key of fixed length: a hash of what makes the request unique, so any
/// client key (already checked to be 1 to 255 visible characters) fits.
fn idempotent(parts: &[&str]) -> Result<RequestStrategy> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    stripe::IdempotencyKey::new(hex::encode(h.finalize()))
        .map(RequestStrategy::Idempotent)
        .map_err(|e| PaymentsError::Unavailable(format!("idempotency key: {e:?}")))
}

#[async_trait::async_trait]
impl Payments for Stripe {
    async fn create_customer(&self, user_id: &str, email: Option<&str>) -> Result<String> {
        let mut req = CreateCustomer::new().metadata(HashMap::from([(
            "user_id".to_string(),
            user_id.to_string(),
        )]));
        if let Some(e) = email {
            req = req.email(e);
        }
        // No idempotency key: Stripe would replay a failure for 24 hours. Two racing creations
        // are settled by the conditional write that keeps one; the other is deleted.
        let customer = req.send(&self.client).await?;
        Ok(customer.id.to_string())
    }

    async fn delete_customer(&self, customer: &str) -> Result<()> {
        match stripe_core::customer::DeleteCustomer::new(customer)
            .send(&self.client)
            .await
            .map_err(PaymentsError::from)
        {
            Ok(_) | Err(PaymentsError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
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
    ) -> Result<CheckoutSession> {
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
                // Packs get an invoice too, so they are listed with the plans' invoices.
                req.mode(CheckoutSessionMode::Payment)
                    .payment_intent_data(data)
                    .invoice_creation(
                        stripe_checkout::checkout_session::CreateCheckoutSessionInvoiceCreation::new(
                            true,
                        ),
                    )
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
            request = request.request_strategy(idempotent(&["checkout", user_id, key])?);
        }
        let session = request.send(&self.client).await?;
        let url = session
            .url
            .ok_or_else(|| PaymentsError::Unavailable("the Checkout Session has no URL".into()))?;
        Ok(CheckoutSession {
            id: session.id.to_string(),
            url,
        })
    }

    async fn portal_url(&self, customer: &str, return_url: &str) -> Result<String> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(&self.client)
            .await?;
        Ok(session.url)
    }

    async fn invoices(&self, customer: &str) -> Result<Vec<InvoiceView>> {
        let list = ListInvoice::new()
            .customer(customer)
            .limit(100)
            .send(&self.client)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|i| InvoiceView {
                number: i.number,
                // The invoice's total (an open one has paid nothing yet).
                amount: i.total,
                currency: i.currency.to_string(),
                status: i.status.map(|s| s.to_string()),
                hosted_url: i.hosted_invoice_url,
                created: i.created,
            })
            .collect())
    }
}

/// Stripe with its secret key read from SSM on first use, not at init: a function's first
/// event that does not pay pays nothing for it, and a failed read is tried again on the next
/// call (it answers `Unavailable` meanwhile) instead of leaving the sandbox without billing.
pub struct LazyStripe {
    sdk: crate::lazy::SdkSource,
    param: String,
    api_base: Option<String>,
    stripe: tokio::sync::OnceCell<Stripe>,
}

impl LazyStripe {
    pub fn new(sdk: &crate::lazy::SdkSource, param: &str, api_base: Option<&str>) -> Self {
        Self {
            sdk: sdk.clone(),
            param: param.to_string(),
            api_base: api_base.map(str::to_string),
            stripe: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&Stripe> {
        self.stripe
            .get_or_try_init(|| async {
                let key = crate::secrets::read_list(self.sdk.get().await, &self.param).await?;
                Stripe::new(key[0].expose(), self.api_base.as_deref())
            })
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "the Stripe key could not be read");
                PaymentsError::Unavailable("the Stripe key could not be read".into())
            })
    }
}

#[async_trait::async_trait]
impl Payments for LazyStripe {
    async fn create_customer(&self, user_id: &str, email: Option<&str>) -> Result<String> {
        self.get().await?.create_customer(user_id, email).await
    }

    async fn delete_customer(&self, customer: &str) -> Result<()> {
        self.get().await?.delete_customer(customer).await
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
    ) -> Result<CheckoutSession> {
        self.get()
            .await?
            .checkout_url(
                customer,
                user_id,
                item,
                purchase,
                success_url,
                cancel_url,
                idempotency_key,
            )
            .await
    }

    async fn portal_url(&self, customer: &str, return_url: &str) -> Result<String> {
        self.get().await?.portal_url(customer, return_url).await
    }

    async fn invoices(&self, customer: &str) -> Result<Vec<InvoiceView>> {
        self.get().await?.invoices(customer).await
    }
}
