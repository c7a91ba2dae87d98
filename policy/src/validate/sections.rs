//! The document's parts: the top level, `globalPolicy`, `alerts`, projects and clients.

use chrono_tz::Tz;
use serde_json::Value;

use super::collect::{join, Walker, RULE_FIELDS};
use super::raw::{RawClient, RawDocument, RawProject, RawRules};
use super::{ApprovalRule, DEFAULT_APPROVAL_EXPIRY_SECS};
use crate::money::Micros;

// === impl Walker ===

impl Walker {
    pub(super) fn document(&mut self, v: &Value) -> Option<RawDocument> {
        let m = self.object(
            "",
            v,
            &[
                "orgId",
                "timezone",
                "globalPolicy",
                "alerts",
                "endpoints",
                "projects",
                "clients",
            ],
        )?;
        let org_id = self
            .string(m, "", "orgId", true)
            .unwrap_or_default()
            .to_string();
        let tz = self.timezone(m, "", "timezone").unwrap_or(Tz::UTC);

        let global = match m.get("globalPolicy") {
            Some(g) => self.global_policy(g, tz),
            None => RawRules::default(),
        };
        if let Some(a) = m.get("alerts") {
            self.alerts(a);
        }
        let endpoints = self.array(m, "endpoints", |w, p, v| w.endpoint(p, v));
        let projects = self.array(m, "projects", |w, p, v| w.project(p, v, tz));
        let mut clients = self.array(m, "clients", |w, p, v| w.client(p, v, tz));

        self.unique_ids(&endpoints, &projects, &clients);
        self.project_budgets_within_org(&projects, &global);
        self.resolve_client_projects(&mut clients, &projects);

        if !self.errors.is_empty() {
            return None;
        }
        Some(RawDocument {
            org_id,
            tz,
            global,
            endpoints: endpoints.into_iter().flatten().collect(),
            projects: projects.into_iter().flatten().collect(),
            clients: clients.into_iter().flatten().map(|(c, _)| c).collect(),
        })
    }

    pub(super) fn global_policy(&mut self, v: &Value, tz: Tz) -> RawRules {
        let path = "globalPolicy";
        let mut known = vec!["monthlyBudget", "dailyBudget", "complianceMode", "auditLog"];
        known.extend_from_slice(RULE_FIELDS);
        let Some(m) = self.object(path, v, &known) else {
            return RawRules::default();
        };
        let rules = self.rules(m, path, true, tz);
        if let Some(mode) = self.string(m, path, "complianceMode", false) {
            if !mode
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                self.err(
                    join(path, "complianceMode"),
                    format!("{mode:?} is not a compliance mode name (upper-case letters, digits and _, e.g. \"EU_AI_ACT\")"),
                );
            }
        }
        if let Some(a) = m.get("auditLog") {
            let p = join(path, "auditLog");
            if let Some(am) = self.object(&p, a, &["enabled", "retention"]) {
                self.boolean(am, &p, "enabled");
                self.count(am, &p, "retention", true);
            }
        }
        rules
    }

    pub(super) fn alerts(&mut self, v: &Value) {
        let path = "alerts";
        let Some(m) = self.object(
            path,
            v,
            &[
                "channels",
                "recipients",
                "slackWebhookUrl",
                "webhookUrl",
                "triggers",
            ],
        ) else {
            return;
        };
        if let Some(channels) = self.strings(m, path, "channels") {
            for (i, c) in channels.iter().enumerate() {
                if !matches!(*c, "email" | "slack" | "webhook") {
                    self.err(
                        format!("alerts.channels[{i}]"),
                        format!("{c:?} is not a channel; use email, slack or webhook"),
                    );
                }
            }
        }
        self.strings(m, path, "recipients");
        for key in ["slackWebhookUrl", "webhookUrl"] {
            if let Some(url) = self.string(m, path, key, false) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(
                        join(path, key),
                        format!("{url:?} is not an http:// or https:// URL"),
                    );
                }
            }
        }
        if let Some(t) = m.get("triggers") {
            let p = "alerts.triggers";
            if let Some(tm) = self.object(
                p,
                t,
                &[
                    "budgetThreshold",
                    "anomalyDetection",
                    "policyViolation",
                    "highCostRequest",
                ],
            ) {
                if let Some(b) = tm.get("budgetThreshold") {
                    match b.as_f64() {
                        Some(x) if (0.0..=1.0).contains(&x) => {}
                        _ => self.err(
                            join(p, "budgetThreshold"),
                            format!("{b} is not a fraction between 0 and 1 (0.8 = alert at 80% of a budget)"),
                        ),
                    }
                }
                self.boolean(tm, p, "anomalyDetection");
                self.boolean(tm, p, "policyViolation");
                self.money(tm, p, "highCostRequest");
            }
        }
    }

    pub(super) fn project(&mut self, path: &str, v: &Value, tz: Tz) -> Option<RawProject> {
        let m = self.object(path, v, &["id", "name", "policy", "cache", "tags"])?;
        let id = self.string(m, path, "id", true);
        self.string(m, path, "name", false);
        self.tags(m, path);
        if let Some(c) = m.get("cache") {
            let p = join(path, "cache");
            if let Some(cm) = self.object(&p, c, &["enabled", "sharedCache", "defaultTTL"]) {
                self.boolean(cm, &p, "enabled");
                self.boolean(cm, &p, "sharedCache");
                self.count(cm, &p, "defaultTTL", true);
            }
        }
        let (rules, approval) = match m.get("policy") {
            Some(pv) => {
                let p = join(path, "policy");
                let mut known = vec!["monthlyBudget", "dailyBudget", "approvalWorkflow"];
                known.extend_from_slice(RULE_FIELDS);
                match self.object(&p, pv, &known) {
                    Some(pm) => {
                        let rules = self.rules(pm, &p, true, tz);
                        let approval = pm
                            .get("approvalWorkflow")
                            .and_then(|a| self.approval(&join(&p, "approvalWorkflow"), a));
                        (rules, approval)
                    }
                    None => (RawRules::default(), None),
                }
            }
            None => (RawRules::default(), None),
        };
        Some(RawProject {
            id: id?.to_string(),
            rules,
            approval,
        })
    }

    /// `Some` only for an enabled workflow: (rule, its requireApprovalAbove).
    pub(super) fn approval(
        &mut self,
        path: &str,
        v: &Value,
    ) -> Option<(ApprovalRule, Option<Micros>)> {
        let m = self.object(
            path,
            v,
            &[
                "enabled",
                "approvers",
                "autoApproveBelow",
                "requireApprovalAbove",
                "expiresAfter",
            ],
        )?;
        let enabled = self.boolean(m, path, "enabled").unwrap_or(false);
        let approvers = self.strings(m, path, "approvers").unwrap_or_default();
        let auto = self.money(m, path, "autoApproveBelow");
        let above = self.money(m, path, "requireApprovalAbove");
        let expires = self.count(m, path, "expiresAfter", true);
        if enabled && approvers.is_empty() {
            self.err(
                join(path, "approvers"),
                "an enabled approval workflow needs at least one approver",
            );
        }
        enabled.then(|| {
            (
                ApprovalRule {
                    approvers: approvers.into_iter().map(str::to_string).collect(),
                    auto_approve_below: auto,
                    expires_after_secs: expires.unwrap_or(DEFAULT_APPROVAL_EXPIRY_SECS),
                },
                above,
            )
        })
    }

    /// The client and the project id it names (resolved after all projects are read).
    pub(super) fn client(
        &mut self,
        path: &str,
        v: &Value,
        tz: Tz,
    ) -> Option<(RawClient, Option<String>)> {
        let m = self.object(
            path,
            v,
            &[
                "id",
                "projectId",
                "apiKeySha256",
                "name",
                "additionalRestrictions",
                "tags",
            ],
        )?;
        let id = self.string(m, path, "id", true);
        let project_id = self.string(m, path, "projectId", true).map(str::to_string);
        let key = self.string(m, path, "apiKeySha256", true).and_then(|h| {
            let mut out = [0u8; 32];
            match hex::decode_to_slice(h, &mut out) {
                Ok(()) if h.len() == 64 => Some(out),
                _ => {
                    self.err(
                        join(path, "apiKeySha256"),
                        "is not a SHA-256 in hex (64 characters 0-9a-f): hash the API key, never store it",
                    );
                    None
                }
            }
        });
        self.string(m, path, "name", false);
        self.tags(m, path);
        let rules = match m.get("additionalRestrictions") {
            Some(rv) => {
                let p = join(path, "additionalRestrictions");
                match self.object(&p, rv, RULE_FIELDS) {
                    Some(rm) => self.rules(rm, &p, false, tz),
                    None => RawRules::default(),
                }
            }
            None => RawRules::default(),
        };
        Some((
            RawClient {
                id: id?.to_string(),
                project: None,
                key: key?,
                rules,
            },
            project_id,
        ))
    }
}
