//! Cache savings credited to the requesting project and cost centre (issue 6): per-series
//! counters `pag0.cache.project.<projectId>.{hits,savings_micros}` and
//! `pag0.cache.cost_center.<costCenter>.{hits,savings_micros}`.
//!
//! - **Which series exist.** One per project with the cache enabled and one per cost centre of
//!   such a project's clients, in the policy in force: a bounded number, known when the policy
//!   is loaded. They are defined then (`on_configure`, or when a sidecar policy is adopted),
//!   never per request (`define_metric` takes a lock in Envoy).
//! - **Cost centre.** The client's `tags.costCenter`, else its project's `tags.costCenter`
//!   (an empty or blank value counts as absent). None: the hit counts for the project only;
//!   there is no `unassigned` series.
//! - **Names.** Each id is one stats segment: every character other than `[A-Za-z0-9_-]`
//!   (dots included, they separate Envoy stat segments) becomes `_`, cut to
//!   [`MAX_SEGMENT_CHARS`]. Two ids that come out the same share one series.
//! - **Lookup.** Sorted `(id, ids)` tables searched by the request's project and client ids:
//!   the hit path allocates nothing and defines nothing.

use std::collections::BTreeMap;

use pag0_policy::doc::{Client, PolicyDocument, Project};

use crate::host::Host;
use crate::metrics::Increments;

/// The tag naming a client's (or project's) cost centre.
pub const COST_CENTER_TAG: &str = "costCenter";

/// Longest id kept in a metric name (characters; longer ids are cut).
pub const MAX_SEGMENT_CHARS: usize = 64;

/// `pag0.cache.project.<segment>` and `pag0.cache.cost_center.<segment>`.
pub const PROJECT_PREFIX: &str = "pag0.cache.project.";
pub const COST_CENTER_PREFIX: &str = "pag0.cache.cost_center.";

/// The counter ids of one series (`None` where the host refused a define: that count is
/// skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub hits: Option<u32>,
    pub savings: Option<u32>,
}

/// The series of the policy in force.
#[derive(Debug, Default)]
pub struct Attribution {
    /// Project id → its series, sorted by id.
    projects: Vec<(Box<str>, Series)>,
    /// Client id → its cost centre's series, sorted by id (clients without one are absent).
    clients: Vec<(Box<str>, Series)>,
    /// Every metric name this table uses → its id, so the next policy reuses it undefined.
    defined: BTreeMap<String, Option<u32>>,
}

/// `raw` as one stats name segment; `None` when it is empty or blank.
pub fn segment(raw: &str) -> Option<String> {
    if raw.trim().is_empty() {
        return None;
    }
    Some(
        raw.chars()
            .take(MAX_SEGMENT_CHARS)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

/// The client's cost centre tag, else its project's.
pub fn cost_center<'a>(client: &'a Client, project: Option<&'a Project>) -> Option<&'a str> {
    let tag = |tags: &'a BTreeMap<String, String>| {
        tags.get(COST_CENTER_TAG)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    tag(&client.tags).or_else(|| project.and_then(|p| tag(&p.tags)))
}

fn cache_enabled(p: &Project) -> bool {
    p.cache.as_ref().is_some_and(|c| c.enabled)
}

impl Attribution {
    /// The series of `doc`. Names `previous` already defined keep their ids; only new ones are
    /// passed to `define`.
    pub fn build(
        doc: &PolicyDocument,
        previous: &Attribution,
        define: &mut impl FnMut(&str) -> Option<u32>,
    ) -> Attribution {
        let mut defined: BTreeMap<String, Option<u32>> = BTreeMap::new();
        let mut series = |prefix: &str, segment: &str| {
            let mut id = |suffix: &str| {
                let name = format!("{prefix}{segment}.{suffix}");
                if let Some(id) = defined.get(&name) {
                    return *id;
                }
                let id = previous
                    .defined
                    .get(&name)
                    .copied()
                    .flatten()
                    .or_else(|| define(&name));
                defined.insert(name, id);
                id
            };
            Series {
                hits: id("hits"),
                savings: id("savings_micros"),
            }
        };
        let projects: BTreeMap<&str, &Project> = doc
            .projects
            .iter()
            .filter(|p| cache_enabled(p))
            .map(|p| (p.id.as_str(), p))
            .collect();
        let mut by_project: Vec<(Box<str>, Series)> = projects
            .keys()
            .filter_map(|id| Some((Box::from(*id), series(PROJECT_PREFIX, &segment(id)?))))
            .collect();
        let mut by_client: Vec<(Box<str>, Series)> = doc
            .clients
            .iter()
            .filter_map(|c| {
                let project = projects.get(c.project_id.as_str()).copied()?;
                let cc = segment(cost_center(c, Some(project))?)?;
                Some((Box::from(c.id.as_str()), series(COST_CENTER_PREFIX, &cc)))
            })
            .collect();
        by_project.sort_by(|a, b| a.0.cmp(&b.0));
        by_client.sort_by(|a, b| a.0.cmp(&b.0));
        by_client.dedup_by(|a, b| a.0 == b.0);
        Attribution {
            projects: by_project,
            clients: by_client,
            defined,
        }
    }

    /// A hit by `client_id` of `project_id` that avoided `savings` micro-USD, counted in
    /// `increments` (flushed to `host` on the tick).
    pub fn hit(
        &self,
        increments: &Increments,
        host: &dyn Host,
        project_id: &str,
        client_id: &str,
        savings: i64,
    ) {
        for s in [
            find(&self.projects, project_id),
            find(&self.clients, client_id),
        ]
        .into_iter()
        .flatten()
        {
            increments.add(host, s.hits, 1);
            increments.add(host, s.savings, savings);
        }
    }

    /// The series of a project (`None`: it has none in this policy).
    pub fn project(&self, project_id: &str) -> Option<Series> {
        find(&self.projects, project_id)
    }

    /// The cost-centre series a client's hits count in.
    pub fn client(&self, client_id: &str) -> Option<Series> {
        find(&self.clients, client_id)
    }

    /// Metric names this table uses, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defined.keys().map(String::as_str)
    }
}

fn find(table: &[(Box<str>, Series)], id: &str) -> Option<Series> {
    table
        .binary_search_by(|(k, _)| (**k).cmp(id))
        .ok()
        .and_then(|i| table.get(i))
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests;
