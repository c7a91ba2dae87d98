//! Rules that span parts of the document: unique hosts, ids and keys; project budgets within
//! the org's; clients naming an existing project. They run once every part has been read, so
//! their errors follow the per-field ones.

use super::collect::Walker;
use super::raw::{RawClient, RawEndpoint, RawProject, RawRules};

/// A client as read, with the project id it names (resolved here).
type ClientRef = Option<(RawClient, Option<String>)>;

// === impl Walker ===

impl Walker {
    pub(super) fn unique_ids(
        &mut self,
        endpoints: &[Option<RawEndpoint>],
        projects: &[Option<RawProject>],
        clients: &[ClientRef],
    ) {
        self.check_duplicates(endpoints, "endpoints", "host", |e| {
            e.as_ref().map(|e| e.pattern.to_string())
        });
        self.check_duplicates(projects, "projects", "id", |p| {
            p.as_ref().map(|p| p.id.clone())
        });
        self.check_duplicates(clients, "clients", "id", |c| {
            c.as_ref().map(|c| c.0.id.clone())
        });
        self.check_duplicates(clients, "clients", "apiKeySha256", |c| {
            c.as_ref().map(|c| hex::encode(c.0.key))
        });
    }

    pub(super) fn project_budgets_within_org(
        &mut self,
        projects: &[Option<RawProject>],
        global: &RawRules,
    ) {
        for (i, p) in projects.iter().enumerate() {
            let Some(p) = p else { continue };
            for (key, mine, org) in [
                ("monthlyBudget", p.rules.monthly, global.monthly),
                ("dailyBudget", p.rules.daily, global.daily),
            ] {
                if let (Some(mine), Some(org)) = (mine, org) {
                    if mine > org {
                        self.err(
                            format!("projects[{i}].policy.{key}"),
                            format!("{mine} is above the org's {key} ({org})"),
                        );
                    }
                }
            }
        }
    }

    /// Sets each client's project index; a client naming no existing project is an error.
    pub(super) fn resolve_client_projects(
        &mut self,
        clients: &mut [ClientRef],
        projects: &[Option<RawProject>],
    ) {
        for (i, c) in clients.iter_mut().enumerate() {
            let Some((c, project_id)) = c else { continue };
            let Some(pid) = project_id else { continue };
            let found = projects
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| &p.id == pid));
            match found {
                Some(idx) => c.project = Some(idx),
                None => self.err(
                    format!("clients[{i}].projectId"),
                    format!("no project with id {pid:?}"),
                ),
            }
        }
    }

    fn check_duplicates<T>(
        &mut self,
        items: &[Option<T>],
        list: &str,
        field: &str,
        key: impl Fn(&Option<T>) -> Option<String>,
    ) {
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        for (i, item) in items.iter().enumerate() {
            let Some(k) = key(item) else { continue };
            match seen.get(&k) {
                Some(first) => {
                    self.err(
                        format!("{list}[{i}].{field}"),
                        format!("duplicate of {list}[{first}].{field} ({k:?})"),
                    );
                }
                None => {
                    seen.insert(k, i);
                }
            }
        }
    }
}
