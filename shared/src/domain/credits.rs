//! The credits ledger's vocabulary: amounts and the causes that key each entry.

use serde::Serialize;

/// A non-negative number of credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Credits(u64);

impl Credits {
    pub const fn new(amount: u64) -> Self {
        Self(amount)
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Grant,
    Debit,
    Refund,
    /// Credits taken back (a refunded or disputed payment), or given back (a dispute won).
    Reversal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Debit => "debit",
            Self::Refund => "refund",
            Self::Reversal => "reversal",
        }
    }
}

/// Why a ledger entry exists. Its key is unique per cause, so each cause changes the balance at
/// most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    SignupGrant,
    GenerationDebit {
        job_id: String,
    },
    GenerationRefund {
        job_id: String,
    },
    /// A paid Checkout Session of a credit pack.
    CheckoutGrant {
        session_id: String,
    },
    /// A paid subscription invoice (creation or a new period).
    InvoiceGrant {
        invoice_id: String,
    },
    /// The `version`th change of a payment's reversal (refunds and disputes, netted).
    PaymentReversal {
        payment_intent: String,
        version: u64,
    },
}

impl Cause {
    pub fn key(&self) -> String {
        match self {
            Self::SignupGrant => "grant:signup".to_string(),
            Self::GenerationDebit { job_id } => format!("debit:generation:{job_id}"),
            Self::GenerationRefund { job_id } => format!("refund:generation:{job_id}"),
            Self::CheckoutGrant { session_id } => format!("grant:checkout:{session_id}"),
            Self::InvoiceGrant { invoice_id } => format!("grant:invoice:{invoice_id}"),
            Self::PaymentReversal {
                payment_intent,
                version,
            } => format!("reversal:{payment_intent}:{version}"),
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Self::SignupGrant => EntryKind::Grant,
            Self::GenerationDebit { .. } => EntryKind::Debit,
            Self::GenerationRefund { .. } => EntryKind::Refund,
            Self::CheckoutGrant { .. } | Self::InvoiceGrant { .. } => EntryKind::Grant,
            Self::PaymentReversal { .. } => EntryKind::Reversal,
        }
    }
}

/// One ledger entry as read back.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub cause: String,
    pub kind: EntryKind,
    /// Signed change of the balance.
    pub amount: i64,
    pub created_at: String,
}
