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
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Debit => "debit",
            Self::Refund => "refund",
        }
    }
}

/// Why a ledger entry exists. Its key is unique per cause, so each cause changes the balance at
/// most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    SignupGrant,
    GenerationDebit { job_id: String },
    GenerationRefund { job_id: String },
}

impl Cause {
    pub fn key(&self) -> String {
        match self {
            Self::SignupGrant => "grant:signup".to_string(),
            Self::GenerationDebit { job_id } => format!("debit:generation:{job_id}"),
            Self::GenerationRefund { job_id } => format!("refund:generation:{job_id}"),
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Self::SignupGrant => EntryKind::Grant,
            Self::GenerationDebit { .. } => EntryKind::Debit,
            Self::GenerationRefund { .. } => EntryKind::Refund,
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
