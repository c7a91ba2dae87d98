//! The shipped acme policy (`envoy/policies/acme.json`) and helpers for small test policies.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::repo_root;
use crate::yaml::{render_envoy_yaml, YamlParams};

/// `envoy/policies/acme.json`.
pub fn acme_path() -> PathBuf {
    repo_root().join("envoy/policies/acme.json")
}

/// The acme document as text (verbatim, as it goes into `standalone.yaml`).
pub fn acme_text() -> Result<String> {
    let p = acme_path();
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

pub fn acme_policy() -> Result<Value> {
    Ok(serde_json::from_str(&acme_text()?)?)
}

/// Hex SHA-256 of an API key, as stored in `clients[].apiKeySha256`.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Max request body the filter buffers for pricing (README.md#configuration-reference default).
pub const MAX_BODY_BYTES: u64 = 1_048_576;

/// The standalone configuration text: the explicit defaults plus the acme document verbatim.
pub fn standalone_config_text(policy_text: &str) -> String {
    let policy = policy_text.trim_end().replace('\n', "\n  ");
    format!("{{\n  \"apiKeyHeader\": \"x-pag0-api-key\",\n  \"maxBodyBytes\": {MAX_BODY_BYTES},\n  \"policy\": {policy}\n}}\n")
}

/// The full text `envoy/standalone.yaml` must have (a test compares; the
/// `pag0-render-standalone` binary writes it).
pub fn render_standalone_yaml() -> Result<String> {
    let params = YamlParams::standalone(standalone_config_text(&acme_text()?));
    Ok(render_envoy_yaml(&params))
}
