//! pag0-whatif: the policy core for the console, compiled to wasm with wasm-bindgen
//! (`make console`; target `wasm32-unknown-unknown`).
//!
//! - [`validate`]: the `path: reason` errors of a draft policy, from the same validator the
//!   sidecar's `PUT /v1/policy` runs ([`pag0_policy::CompiledPolicy::compile`]).
//! - [`replay`]: recorded decisions re-decided under a draft by the filter's own decision
//!   code ([`pag0_policy::CompiledPolicy::redecide`]), with simulated budget counters; the
//!   requests whose outcome would change and the spend that would move ([`simulate`]).
//! - [`opening_spend`]: the counters as they stood before the replayed window, from the
//!   sidecar's current counters ([`window`]).
//!
//! Strings in, JSON strings out: the page passes `JSON.stringify`ed values and parses the
//! answer, so the boundary needs no generated types. Every function also runs natively (the
//! tests here, and the console's browser test compares the wasm answers with these).

pub mod record;
pub mod simulate;
pub mod window;

#[cfg(test)]
mod testkit;

use serde_json::json;
use wasm_bindgen::prelude::wasm_bindgen;

pub use record::{parse_decisions, Outcome, Recorded};
pub use simulate::{run, Change, Report, Summary};

/// The draft's errors as `path: reason` lines (empty: it validates). JSON array of strings.
#[wasm_bindgen]
pub fn validate(draft: &str) -> String {
    json!(validation_errors(draft)).to_string()
}

/// What `PUT /v1/policy` would answer in `details` for this document.
pub fn validation_errors(draft: &str) -> Vec<String> {
    match pag0_policy::CompiledPolicy::compile(draft.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.0.iter().map(ToString::to_string).collect(),
    }
}

/// `input` is `{"decisions": [...], "openingSpend": {"<counter>": "<micros>"}}`. Answers
/// `{"ok": true, "report": {...}}`, or `{"ok": false, "errors": [...]}` when the draft or the
/// input does not parse (one bad decision record is reported and skipped, never fatal).
#[wasm_bindgen]
pub fn replay(draft: &str, input: &str) -> String {
    match simulate::run_json(draft, input) {
        Ok(report) => json!({ "ok": true, "report": report }).to_string(),
        Err(errors) => json!({ "ok": false, "errors": errors }).to_string(),
    }
}

/// The spend before the window: `current` is the live policy, `budgets` the body of
/// `GET /v1/budgets`, `decisions` the recorded window. Answers `{"ok": true,
/// "openingSpend": {...}}` or `{"ok": false, "errors": [...]}`.
#[wasm_bindgen]
pub fn opening_spend(current: &str, budgets: &str, decisions: &str) -> String {
    match window::opening_spend_json(current, budgets, decisions) {
        Ok(opening) => json!({ "ok": true, "openingSpend": opening }).to_string(),
        Err(errors) => json!({ "ok": false, "errors": errors }).to_string(),
    }
}

/// The version of this engine, to show in the page (and to check a stale build).
#[wasm_bindgen]
pub fn engine_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn validate_answers_what_the_validator_answers() {
        let mut draft = crate::testkit::policy();
        assert_eq!(validate(&draft.to_string()), "[]");
        draft["projects"][0]["policy"]["dailyBudget"] = json!("12x");
        draft["projects"][1]["policy"]["monthlyBudget"] = json!("200000000");
        let got: Vec<String> = serde_json::from_str(&validate(&draft.to_string())).unwrap();
        let want: Vec<String> = match pag0_policy::CompiledPolicy::from_value(&draft) {
            Err(errs) => errs.0.iter().map(ToString::to_string).collect(),
            Ok(_) => panic!("the draft must not validate"),
        };
        assert_eq!(got, want);
        assert!(
            got.iter()
                .any(|e| e.starts_with("projects[0].policy.dailyBudget: ")),
            "{got:?}"
        );
        let not_json: Vec<String> = serde_json::from_str(&validate("{")).unwrap();
        assert_eq!(not_json.len(), 1, "{not_json:?}");
    }

    #[test]
    fn replay_and_opening_spend_answer_ok_or_errors() {
        let live = crate::testkit::policy().to_string();
        let ok: Value = serde_json::from_str(&replay(&live, r#"{"decisions": []}"#)).unwrap();
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["report"]["replayed"], 0);
        let bad: Value = serde_json::from_str(&replay("{}", r#"{"decisions": []}"#)).unwrap();
        assert_eq!(bad["ok"], false);
        assert!(!bad["errors"].as_array().unwrap().is_empty());
        let o: Value =
            serde_json::from_str(&opening_spend(&live, r#"{"counters": []}"#, "[]")).unwrap();
        assert_eq!(o, json!({ "ok": true, "openingSpend": {} }));
    }
}
