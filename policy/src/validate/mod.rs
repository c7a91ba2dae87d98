//! Validation and compilation of a policy document (docs/policy.md) into [`CompiledPolicy`]: an
//! immutable form with everything a request needs precomputed (client lookup by key hash,
//! the catalogue ordered by specificity, each client's effective org → project → client rules).
//!
//! Validation walks the JSON by hand so that *every* problem is reported at once, each as
//! `path: reason` (`projects[2].policy.dailyBudget: "12x" is not a money amount`).
//!
//! Layout: `collect` holds the walker and its primitive readers, `sections` and `catalogue`
//! read each part of the document, `cross` checks rules that span parts, and `inherit` turns
//! the walk's `raw` output into the `compiled` form.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::doc::PolicyDocument;

mod catalogue;
mod collect;
mod compiled;
mod cross;
mod inherit;
mod raw;
mod sections;

pub use compiled::CompiledPolicy;
pub(crate) use compiled::{
    ApprovalRule, CompiledClient, CompiledEndpoint, CompiledProject, Effective, Level,
};

use collect::Walker;

// The tests (`use super::*`) were written against the single-file module, which had it in scope.
#[cfg(test)]
use crate::money::Micros;

/// Default `approvalWorkflow.expiresAfter`: one day.
pub const DEFAULT_APPROVAL_EXPIRY_SECS: u64 = 86_400;

/// One problem in a policy document: `path: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

/// Every problem found in a document (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

/// Lower-case hex SHA-256 of an API key, as stored in `clients[].apiKeySha256`.
pub fn api_key_sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// SHA-256 of an API key, the form in which `apiKeySha256` matches it.
pub fn api_key_sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

// === impl CompiledPolicy ===

impl CompiledPolicy {
    /// Parses and validates a JSON document. A document that is not JSON at all gives one
    /// error at `$` with the line and column.
    pub fn compile(bytes: &[u8]) -> Result<CompiledPolicy, ValidationErrors> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: "$".into(),
                reason: format!("not valid JSON: {e}"),
            }])
        })?;
        CompiledPolicy::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<CompiledPolicy, ValidationErrors> {
        let mut w = Walker::default();
        let raw = w.document(v);
        let raw = match raw {
            Some(raw) if w.errors.is_empty() => raw,
            _ => return Err(ValidationErrors(w.errors)),
        };
        // The walk above is the schema; the typed model must agree with it. If it does not,
        // report where (a bug, but never a panic).
        let doc: PolicyDocument = serde_path_to_error::deserialize(v).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            }])
        })?;
        let fingerprint = fingerprint(v);
        Ok(raw.compile(doc, fingerprint))
    }

    /// Validates and compiles a typed document (e.g. one the sidecar built or edited).
    pub fn from_document(doc: &PolicyDocument) -> Result<CompiledPolicy, ValidationErrors> {
        let v = serde_json::to_value(doc).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: "$".into(),
                reason: e.to_string(),
            }])
        })?;
        CompiledPolicy::from_value(&v)
    }
}

fn fingerprint(v: &Value) -> u64 {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let d = Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    u64::from_le_bytes(first)
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

#[cfg(test)]
pub(crate) mod tests;
