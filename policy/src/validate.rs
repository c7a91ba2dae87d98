//! Validation and compilation of a policy document into an immutable, per-request-cheap form.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::budget::BudgetView;
use crate::decide::{Decision, Deny, DenyCode, FinishOptions, HeadOutcome, Pending, RequestHead};
use crate::doc::PolicyDocument;

/// One problem in a policy document: `path: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

/// Every problem found in a document (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

/// A validated policy, compiled for cheap per-request lookups. Immutable; `Send + Sync`.
#[derive(Debug)]
pub struct CompiledPolicy {
    doc: PolicyDocument,
}

/// Lower-case hex SHA-256 of an API key, as stored in `clients[].apiKeySha256`.
pub fn api_key_sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

// === impl CompiledPolicy ===

impl CompiledPolicy {
    pub fn compile(bytes: &[u8]) -> Result<CompiledPolicy, ValidationErrors> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            ValidationErrors(vec![FieldError { path: "$".into(), reason: e.to_string() }])
        })?;
        CompiledPolicy::from_value(&v)
    }

    pub fn from_value(v: &serde_json::Value) -> Result<CompiledPolicy, ValidationErrors> {
        let doc: PolicyDocument = serde_json::from_value(v.clone()).map_err(|e| {
            ValidationErrors(vec![FieldError { path: "$".into(), reason: e.to_string() }])
        })?;
        Ok(CompiledPolicy { doc })
    }

    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    pub fn org_id(&self) -> &str {
        &self.doc.org_id
    }

    pub fn check_head(&self, head: &RequestHead<'_>, _now: DateTime<Utc>) -> HeadOutcome {
        let _ = head;
        HeadOutcome::Deny(Deny::new(DenyCode::UnknownApiKey, "not implemented yet"))
    }

    pub fn finish(
        &self,
        pending: &Pending,
        body: Option<&[u8]>,
        budgets: &dyn BudgetView,
        opts: &FinishOptions,
    ) -> Decision {
        let _ = (pending, body, budgets, opts);
        Decision::Deny(Deny::new(DenyCode::UnknownApiKey, "not implemented yet"))
    }
}

// === impl FieldError ===

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for FieldError {}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
