//! The stored policy document, seen as JSON: validation through `pag0-policy`, the budget limit
//! behind each counter key, and one-piece edits (projects, clients) that re-validate the whole.

use pag0_policy::{CompiledPolicy, Micros};
use serde_json::Value;

use crate::error::AppError;

/// A validated document.
#[derive(Clone, Debug)]
pub struct Validated {
    pub value: Value,
    /// Compact JSON, as stored.
    pub text: String,
}

/// Validates a whole document: every problem as `path: reason`.
pub fn validate(bytes: &[u8]) -> Result<Validated, AppError> {
    CompiledPolicy::compile(bytes).map_err(|errs| {
        AppError::InvalidPolicy(errs.0.iter().map(ToString::to_string).collect())
    })?;
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::InvalidPolicy(vec![format!("$: {e}")]))?;
    let text = serde_json::to_string(&value).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Validated { value, text })
}

pub fn validate_value(value: &Value) -> Result<Validated, AppError> {
    let bytes = serde_json::to_vec(value).map_err(|e| AppError::Internal(e.to_string()))?;
    validate(&bytes)
}

/// A counter key (`BudgetKey::storage_key`) taken apart: scope label, project id, period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterName<'a> {
    pub scope: &'a str,
    pub project_id: Option<&'a str>,
    pub period: &'a str,
}

pub fn parse_counter(key: &str) -> Option<CounterName<'_>> {
    let (scope, rest) = key.split_once('/')?;
    match scope {
        "org.monthly" | "org.daily" if !rest.contains('/') && !rest.is_empty() => {
            Some(CounterName {
                scope,
                project_id: None,
                period: rest,
            })
        }
        "project.monthly" | "project.daily" => {
            let (project, period) = rest.rsplit_once('/')?;
            (!project.is_empty() && !period.is_empty()).then_some(CounterName {
                scope,
                project_id: Some(project),
                period,
            })
        }
        _ => None,
    }
}

/// The budget limit behind a counter under `doc`, `None` when that budget is not set (or the
/// project does not exist): such a counter needs no lease.
pub fn limit_for(doc: &Value, key: &str) -> Option<u64> {
    let name = parse_counter(key)?;
    let field = if name.scope.ends_with("monthly") {
        "monthlyBudget"
    } else {
        "dailyBudget"
    };
    let policy = match name.project_id {
        None => doc.get("globalPolicy")?,
        Some(id) => doc
            .get("projects")?
            .as_array()?
            .iter()
            .find(|p| p.get("id").and_then(Value::as_str) == Some(id))?
            .get("policy")?,
    };
    Micros::from_json(policy.get(field)?).ok().map(Micros::get)
}

/// `projects` or `clients`: the lists the API edits one item at a time.
#[derive(Clone, Copy, Debug)]
pub enum Collection {
    Projects,
    Clients,
}

impl Collection {
    pub fn field(self) -> &'static str {
        match self {
            Collection::Projects => "projects",
            Collection::Clients => "clients",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Collection::Projects => "project",
            Collection::Clients => "client",
        }
    }

    /// The top-level fields a merge patch may name (docs/policy.md's fields of a project or a client;
    /// a client's `apiKeySha256` only through rotate-key). Anything else is refused, also with
    /// a `null` value, which would otherwise remove nothing and pass unnoticed.
    pub fn patch_fields(self) -> &'static [&'static str] {
        match self {
            Collection::Projects => &["id", "name", "policy", "cache", "tags"],
            Collection::Clients => &["id", "projectId", "name", "additionalRestrictions", "tags"],
        }
    }
}

pub fn items(doc: &Value, c: Collection) -> Vec<Value> {
    doc.get(c.field())
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn find(doc: &Value, c: Collection, id: &str) -> Option<Value> {
    items(doc, c)
        .into_iter()
        .find(|v| v.get("id").and_then(Value::as_str) == Some(id))
}

/// The list to edit, created if the document has none.
pub fn items_mut(doc: &mut Value, c: Collection) -> Result<&mut Vec<Value>, AppError> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| AppError::Internal("stored policy is not an object".into()))?;
    obj.entry(c.field())
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| AppError::InvalidPolicy(vec![format!("{}: not a list", c.field())]))
}

/// RFC 7396 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counter_keys_parse_like_budget_key_writes_them() {
        use pag0_policy::{BudgetKey, Scope};
        let k = BudgetKey {
            scope: Scope::ProjectDaily("sales-ai".into()),
            period: "2026-11-24".into(),
        };
        let key = k.storage_key();
        assert_eq!(
            parse_counter(&key),
            Some(CounterName {
                scope: "project.daily",
                project_id: Some("sales-ai"),
                period: "2026-11-24"
            })
        );
        let k = BudgetKey {
            scope: Scope::OrgMonthly,
            period: "2026-11".into(),
        };
        assert_eq!(
            parse_counter(&k.storage_key()).map(|c| c.project_id),
            Some(None)
        );
        assert_eq!(parse_counter("org.monthly/a/b"), None);
        assert_eq!(parse_counter("project.daily/x"), None);
        assert_eq!(parse_counter("weird/x"), None);
    }

    #[test]
    fn limits_come_from_the_right_level() {
        let doc = json!({
            "globalPolicy": { "monthlyBudget": "100", "dailyBudget": 7 },
            "projects": [ { "id": "p", "policy": { "monthlyBudget": "50" } } ]
        });
        assert_eq!(limit_for(&doc, "org.monthly/2026-11"), Some(100));
        assert_eq!(limit_for(&doc, "org.daily/2026-11-24"), Some(7));
        assert_eq!(limit_for(&doc, "project.monthly/p/2026-11"), Some(50));
        assert_eq!(limit_for(&doc, "project.daily/p/2026-11-24"), None);
        assert_eq!(limit_for(&doc, "project.monthly/q/2026-11"), None);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({ "a": 1, "b": { "c": 2, "d": 3 } });
        merge_patch(&mut t, &json!({ "a": null, "b": { "c": 5 }, "e": [1] }));
        assert_eq!(t, json!({ "b": { "c": 5, "d": 3 }, "e": [1] }));
    }
}
