//! Approvals as the store sees them (docs/approvals.md): one row per approval, whose `status`
//! only ever moves `pending → approved | denied` (an approver's decision) and
//! `approved → used` (the one replay that passes). Both moves are a single conditional
//! `UPDATE … WHERE status = … RETURNING`, so two approvers deciding at once, or twenty replays
//! of one approval at once, have exactly one winner on either backend. "Expired" is not
//! stored: it is `expires_at_ms <= now`, by the sidecar's clock.

/// The stored state of an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Used,
}

// === impl ApprovalStatus ===

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
        }
    }

    /// Only this module writes the column; anything else found there is treated as denied,
    /// so an unreadable row can never be replayed.
    pub(crate) fn from_db(s: &str) -> Self {
        match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "used" => ApprovalStatus::Used,
            _ => ApprovalStatus::Denied,
        }
    }
}

/// One approval: the request it is bound to, who asked, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// ≥ 128 random bits, unguessable.
    pub id: String,
    pub project_id: String,
    pub client_id: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// Lower-case hex SHA-256 of the request body (`pag0_policy::approval::body_sha256_hex`).
    pub body_sha256: String,
    /// `pag0_policy::approval::request_binding` of the request: what a replay must match.
    pub binding: String,
    pub estimated_cost: u64,
    /// The policy version the filter decided under.
    pub policy_version: i64,
    pub status: ApprovalStatus,
    pub justification: Option<String>,
    pub requested_by: Option<String>,
    /// Where the decision is POSTed (the agent's webhook), if given.
    pub callback_url: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_by: Option<String>,
    pub decision_comment: Option<String>,
    pub decided_at_ms: Option<i64>,
    pub used_at_ms: Option<i64>,
}

// === impl Approval ===

impl Approval {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// What a caller sees: a stored `pending`/`approved` past its expiry reads as `expired`.
    pub fn effective_status(&self, now_ms: i64) -> &'static str {
        match self.status {
            ApprovalStatus::Pending | ApprovalStatus::Approved if self.is_expired(now_ms) => {
                "expired"
            }
            s => s.as_str(),
        }
    }
}

/// An approver's decision on a pending approval.
#[derive(Clone, Debug)]
pub struct ApprovalDecision {
    pub id: String,
    pub approve: bool,
    pub by: String,
    pub comment: Option<String>,
    pub at_ms: i64,
}

/// A replay, as the filter describes it: it may use the approval iff it matches.
#[derive(Clone, Debug)]
pub struct ConsumeAsk {
    pub id: String,
    pub binding: String,
    pub estimated_cost: u64,
    pub policy_version: i64,
    pub now_ms: i64,
}

/// Why a replay may not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No approval with this id.
    Unknown,
    /// Another request (client, method, host, path or body), another policy version, or a
    /// higher estimate than was approved.
    Mismatch(&'static str),
    Used,
    Denied,
    Expired,
    /// No approver has decided yet.
    Pending,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// This replay won: the approval is now `used`.
    Consumed(Approval),
    Refused(Refusal, Option<Approval>),
}

/// Why the conditional update did not match (read after it, so a replay that lost a race
/// reads `used`).
pub(crate) fn classify(found: Option<&Approval>, ask: &ConsumeAsk) -> Refusal {
    let Some(a) = found else {
        return Refusal::Unknown;
    };
    if a.binding != ask.binding {
        return Refusal::Mismatch("the request (client, method, host, path or body) differs");
    }
    if a.policy_version != ask.policy_version {
        return Refusal::Mismatch("the policy version differs");
    }
    if ask.estimated_cost > a.estimated_cost {
        return Refusal::Mismatch("the estimated cost is above the approved one");
    }
    match a.status {
        ApprovalStatus::Used => Refusal::Used,
        ApprovalStatus::Denied => Refusal::Denied,
        _ if a.is_expired(ask.now_ms) => Refusal::Expired,
        ApprovalStatus::Pending => Refusal::Pending,
        // Matching, approved, unexpired, yet not updated: another replay won in between.
        ApprovalStatus::Approved => Refusal::Used,
    }
}

pub(crate) const COLUMNS: &str =
    "id, project_id, client_id, method, authority, path, body_sha256, \
    binding, estimated_cost, policy_version, status, justification, requested_by, callback_url, \
    created_at_ms, expires_at_ms, decided_by, decision_comment, decided_at_ms, used_at_ms";

// --- SQLite ---

pub(crate) mod sqlite {
    use rusqlite::{params, Connection, OptionalExtension};

    use super::*;
    use crate::store::{from_db, to_db, StoreError};

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
        Ok(Approval {
            id: r.get(0)?,
            project_id: r.get(1)?,
            client_id: r.get(2)?,
            method: r.get(3)?,
            authority: r.get(4)?,
            path: r.get(5)?,
            body_sha256: r.get(6)?,
            binding: r.get(7)?,
            estimated_cost: from_db(r.get(8)?),
            policy_version: r.get(9)?,
            status: ApprovalStatus::from_db(&r.get::<_, String>(10)?),
            justification: r.get(11)?,
            requested_by: r.get(12)?,
            callback_url: r.get(13)?,
            created_at_ms: r.get(14)?,
            expires_at_ms: r.get(15)?,
            decided_by: r.get(16)?,
            decision_comment: r.get(17)?,
            decided_at_ms: r.get(18)?,
            used_at_ms: r.get(19)?,
        })
    }

    pub(crate) fn create(c: &Connection, a: &Approval) -> Result<(), StoreError> {
        c.execute(
            &format!(
                "INSERT INTO approvals ({COLUMNS}) VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
            ),
            params![
                a.id,
                a.project_id,
                a.client_id,
                a.method,
                a.authority,
                a.path,
                a.body_sha256,
                a.binding,
                to_db(a.estimated_cost)?,
                a.policy_version,
                a.status.as_str(),
                a.justification,
                a.requested_by,
                a.callback_url,
                a.created_at_ms,
                a.expires_at_ms,
                a.decided_by,
                a.decision_comment,
                a.decided_at_ms,
                a.used_at_ms
            ],
        )
        .map_err(backend)?;
        Ok(())
    }

    pub(crate) fn get(c: &Connection, id: &str) -> Result<Option<Approval>, StoreError> {
        c.query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            row,
        )
        .optional()
        .map_err(backend)
    }

    pub(crate) fn list(
        c: &Connection,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut st = c
            .prepare(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1)
                 ORDER BY created_at_ms DESC, id LIMIT ?2"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(params![status.map(ApprovalStatus::as_str), limit], row)
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    pub(crate) fn decide(
        c: &Connection,
        d: &ApprovalDecision,
    ) -> Result<Option<Approval>, StoreError> {
        let status = if d.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        c.query_row(
            &format!(
                "UPDATE approvals SET status = ?2, decided_by = ?3, decision_comment = ?4, decided_at_ms = ?5
                 WHERE id = ?1 AND status = 'pending' AND expires_at_ms > ?5 RETURNING {COLUMNS}"
            ),
            params![d.id, status.as_str(), d.by, d.comment, d.at_ms],
            row,
        )
        .optional()
        .map_err(backend)
    }

    pub(crate) fn consume(c: &Connection, ask: &ConsumeAsk) -> Result<ConsumeOutcome, StoreError> {
        let won = c
            .query_row(
                &format!(
                    "UPDATE approvals SET status = 'used', used_at_ms = ?2
                     WHERE id = ?1 AND status = 'approved' AND expires_at_ms > ?2 AND binding = ?3
                       AND policy_version = ?4 AND estimated_cost >= ?5
                     RETURNING {COLUMNS}"
                ),
                params![
                    ask.id,
                    ask.now_ms,
                    ask.binding,
                    ask.policy_version,
                    to_db(ask.estimated_cost)?
                ],
                row,
            )
            .optional()
            .map_err(backend)?;
        if let Some(a) = won {
            return Ok(ConsumeOutcome::Consumed(a));
        }
        let found = get(c, &ask.id)?;
        Ok(ConsumeOutcome::Refused(
            classify(found.as_ref(), ask),
            found,
        ))
    }

    pub(crate) fn pending(c: &Connection, now_ms: i64) -> Result<u64, StoreError> {
        let n: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at_ms > ?1",
                [now_ms],
                |r| r.get(0),
            )
            .map_err(backend)?;
        Ok(from_db(n))
    }
}

// --- PostgreSQL ---

pub(crate) mod postgres {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::GenericClient as Client;

    use super::*;
    use crate::store::{from_db, to_db, StoreError};

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    fn row(r: &tokio_postgres::Row) -> Approval {
        Approval {
            id: r.get(0),
            project_id: r.get(1),
            client_id: r.get(2),
            method: r.get(3),
            authority: r.get(4),
            path: r.get(5),
            body_sha256: r.get(6),
            binding: r.get(7),
            estimated_cost: from_db(r.get(8)),
            policy_version: r.get(9),
            status: ApprovalStatus::from_db(r.get::<_, &str>(10)),
            justification: r.get(11),
            requested_by: r.get(12),
            callback_url: r.get(13),
            created_at_ms: r.get(14),
            expires_at_ms: r.get(15),
            decided_by: r.get(16),
            decision_comment: r.get(17),
            decided_at_ms: r.get(18),
            used_at_ms: r.get(19),
        }
    }

    pub(crate) async fn create(c: &impl Client, a: &Approval) -> Result<(), StoreError> {
        let cost = to_db(a.estimated_cost)?;
        let status = a.status.as_str();
        let params: [&(dyn ToSql + Sync); 20] = [
            &a.id,
            &a.project_id,
            &a.client_id,
            &a.method,
            &a.authority,
            &a.path,
            &a.body_sha256,
            &a.binding,
            &cost,
            &a.policy_version,
            &status,
            &a.justification,
            &a.requested_by,
            &a.callback_url,
            &a.created_at_ms,
            &a.expires_at_ms,
            &a.decided_by,
            &a.decision_comment,
            &a.decided_at_ms,
            &a.used_at_ms,
        ];
        c.execute(
            &format!(
                "INSERT INTO approvals ({COLUMNS}) VALUES
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ),
            &params,
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    pub(crate) async fn get(c: &impl Client, id: &str) -> Result<Option<Approval>, StoreError> {
        let r = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        Ok(r.as_ref().map(row))
    }

    pub(crate) async fn list(
        c: &impl Client,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let status = status.map(ApprovalStatus::as_str);
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM approvals WHERE ($1::TEXT IS NULL OR status = $1)
                     ORDER BY created_at_ms DESC, id COLLATE \"C\" LIMIT $2"
                ),
                &[&status, &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(row).collect())
    }

    pub(crate) async fn decide(
        c: &impl Client,
        d: &ApprovalDecision,
    ) -> Result<Option<Approval>, StoreError> {
        let status = if d.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        }
        .as_str();
        let r = c
            .query_opt(
                &format!(
                    "UPDATE approvals SET status = $2, decided_by = $3, decision_comment = $4, decided_at_ms = $5
                     WHERE id = $1 AND status = 'pending' AND expires_at_ms > $5 RETURNING {COLUMNS}"
                ),
                &[&d.id, &status, &d.by, &d.comment, &d.at_ms],
            )
            .await
            .map_err(pg)?;
        Ok(r.as_ref().map(row))
    }

    pub(crate) async fn consume(
        c: &impl Client,
        ask: &ConsumeAsk,
    ) -> Result<ConsumeOutcome, StoreError> {
        // READ COMMITTED: concurrent UPDATEs of the row queue on its lock and re-check the
        // WHERE clause on the committed row, so only the first sees status = 'approved'.
        let cost = to_db(ask.estimated_cost)?;
        let won = c
            .query_opt(
                &format!(
                    "UPDATE approvals SET status = 'used', used_at_ms = $2
                     WHERE id = $1 AND status = 'approved' AND expires_at_ms > $2 AND binding = $3
                       AND policy_version = $4 AND estimated_cost >= $5
                     RETURNING {COLUMNS}"
                ),
                &[
                    &ask.id,
                    &ask.now_ms,
                    &ask.binding,
                    &ask.policy_version,
                    &cost,
                ],
            )
            .await
            .map_err(pg)?;
        if let Some(a) = won {
            return Ok(ConsumeOutcome::Consumed(row(&a)));
        }
        let found = get(c, &ask.id).await?;
        Ok(ConsumeOutcome::Refused(
            classify(found.as_ref(), ask),
            found,
        ))
    }

    pub(crate) async fn pending(c: &impl Client, now_ms: i64) -> Result<u64, StoreError> {
        let r = c
            .query_one(
                "SELECT COUNT(*)::BIGINT FROM approvals WHERE status = 'pending' AND expires_at_ms > $1",
                &[&now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(from_db(r.get(0)))
    }
}
