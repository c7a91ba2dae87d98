//! A recorded decision as the what-if reads it: the facts docs/audit.md keeps of every decision
//! (client, project, method, authority, path, time, estimate, outcome, actual cost). Fields a
//! log carries beyond these (latency, body digest, chain hashes, …) are ignored.

use chrono::{DateTime, Utc};
use pag0_policy::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the filter did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    /// Held for approval (`202`, `x-pag0-decision: pending`).
    Pending,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// The record's id in the log, shown next to a change.
    #[serde(default)]
    pub id: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// Absent for a request refused before a client was known (no key, unknown key).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    pub method: String,
    pub authority: String,
    pub path: String,
    #[serde(default)]
    pub estimate: Micros,
    pub outcome: Outcome,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Settled cost of an allowed request; its estimate stands when absent.
    #[serde(default)]
    pub actual_cost: Option<Micros>,
    #[serde(default)]
    pub requires_approval: bool,
    /// The replay of an approved request.
    #[serde(default)]
    pub approval_replay: bool,
}

/// A record that could be read, with its time parsed.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// Position in the input (changes point back to it).
    pub index: usize,
    pub at: DateTime<Utc>,
    pub record: Recorded,
}

// === impl Recorded ===

impl Recorded {
    /// What the request cost as recorded: the settled cost of an allowed request (its
    /// estimate if none was reported), nothing for one refused or held.
    pub fn recorded_spend(&self) -> Micros {
        match self.outcome {
            Outcome::Allow => self.actual_cost.unwrap_or(self.estimate),
            Outcome::Deny | Outcome::Pending => Micros::ZERO,
        }
    }
}

/// Reads a JSON array of records one by one: a record that does not parse is reported as
/// `decisions[i]: reason` and left out; the others are kept, in input order.
pub fn parse_decisions(v: &Value) -> Result<(Vec<Parsed>, Vec<String>), String> {
    let items = v
        .as_array()
        .ok_or_else(|| "decisions: expected an array of recorded decisions".to_string())?;
    let mut ok = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let record = match Recorded::deserialize(item) {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("decisions[{index}]: {e}"));
                continue;
            }
        };
        match DateTime::parse_from_rfc3339(&record.at) {
            Ok(t) => ok.push(Parsed {
                index,
                at: t.with_timezone(&Utc),
                record,
            }),
            Err(e) => bad.push(format!(
                "decisions[{index}].at: {:?} is not an RFC 3339 time ({e})",
                record.at
            )),
        }
    }
    Ok((ok, bad))
}
