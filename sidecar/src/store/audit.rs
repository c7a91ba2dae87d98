//! The `audit_log` table and its one-row `audit_head` (docs/audit.md). An append reads the
//! head under a lock (PostgreSQL: `SELECT … FOR UPDATE`; SQLite: the `BEGIN IMMEDIATE` write
//! lock every write transaction here takes), so concurrent appends — from one sidecar or from
//! several on one database — get contiguous seqs and one chain, never a fork. Every function
//! here runs inside the caller's transaction: an entry commits with the action it records.

use super::approval::Approval;
use super::rollup::DECISION_KIND;
use crate::audit::{details_text, details_value, AuditEvent, AuditHead, AuditQuery, AuditRow};

pub(crate) const COLUMNS: &str = "seq, at_ms, kind, actor, project_id, client_id, host, model, \
    decision, code, estimate, cost, latency_ms, policy_version, approval_id, details, prev_hash, hash";

/// Seq and hash of the last row, and the retention checkpoint.
pub(crate) const HEAD_COLUMNS: &str =
    "seq, hash, pruned_through_seq, pruned_through_hash, pruned_count";

/// Kind of the entry a retention run appends.
pub const RETENTION_KIND: &str = "audit.retention";
/// Kind of the entry written once for an approval that expired undecided or unused.
pub const EXPIRED_KIND: &str = "approval.expired";

/// An expired approval: id, project, client, policy version, expiry.
pub(crate) type Expired = (String, String, String, i64, i64);

fn opt_i64(v: Option<u64>) -> Result<Option<i64>, super::StoreError> {
    v.map(super::to_db).transpose()
}

/// Rows per INSERT when appending: 250 × 18 columns = 4 500 parameters, below SQLite's 32 766
/// and PostgreSQL's 65 535. One statement per chunk instead of one per row: on PostgreSQL
/// that is one round trip per 250 rows (a sync batch of 500 decision events was ~1 000).
pub(crate) const INSERT_CHUNK: usize = 250;

/// The rows of `events` chained after `(seq, prev)`: hashes are computed here, before any
/// statement runs, so the INSERTs only carry known rows.
fn chain_all(
    mut seq: i64,
    mut prev: String,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditRow>, super::StoreError> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        seq += 1;
        let r = AuditRow::chain(seq, e, &prev)?;
        prev.clone_from(&r.hash);
        out.push(r);
    }
    Ok(out)
}

/// The columns that need converting before they bind: estimate, cost, details text.
fn converted(r: &AuditRow) -> Result<(Option<i64>, Option<i64>, String), super::StoreError> {
    Ok((
        opt_i64(r.event.estimate)?,
        opt_i64(r.event.cost)?,
        details_text(&r.event.details)?,
    ))
}

/// `INSERT INTO audit_log (…) VALUES (…), (…), …` for `rows` rows, placeholders numbered
/// from 1 with `mark` (`?` for SQLite, `$` for PostgreSQL).
fn insert_sql(rows: usize, mark: char) -> String {
    const N: usize = 18;
    let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..N {
            if c > 0 {
                sql.push(',');
            }
            sql.push(mark);
            sql.push_str(&(r * N + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `ASC` or `DESC`: the only text of a list query that is not a bound parameter.
fn order(q: &AuditQuery) -> &'static str {
    if q.descending {
        "DESC"
    } else {
        "ASC"
    }
}

// --- SQLite ---

pub(crate) mod sqlite {
    use rusqlite::{params, Connection};

    use super::*;
    use crate::store::{from_db, StoreError};

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
        Ok(AuditRow {
            seq: r.get(0)?,
            event: AuditEvent {
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                actor: r.get(3)?,
                project_id: r.get(4)?,
                client_id: r.get(5)?,
                host: r.get(6)?,
                model: r.get(7)?,
                decision: r.get(8)?,
                code: r.get(9)?,
                estimate: r.get::<_, Option<i64>>(10)?.map(from_db),
                cost: r.get::<_, Option<i64>>(11)?.map(from_db),
                latency_ms: r.get(12)?,
                policy_version: r.get(13)?,
                approval_id: r.get(14)?,
                details: details_value(&r.get::<_, String>(15)?),
            },
            prev_hash: r.get(16)?,
            hash: r.get(17)?,
        })
    }

    pub(crate) fn head(c: &Connection) -> Result<AuditHead, StoreError> {
        c.query_row(
            &format!("SELECT {HEAD_COLUMNS} FROM audit_head WHERE id = 1"),
            [],
            |r| {
                Ok(AuditHead {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                    pruned_through_seq: r.get(2)?,
                    pruned_through_hash: r.get(3)?,
                    pruned_count: r.get(4)?,
                })
            },
        )
        .map_err(backend)
    }

    /// Appends in the caller's (IMMEDIATE) transaction, [`INSERT_CHUNK`] rows per statement.
    pub(crate) fn append(
        c: &Connection,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let h = head(c)?;
        let out = chain_all(h.seq, h.hash, events)?;
        for chunk in out.chunks(INSERT_CHUNK) {
            let conv = chunk.iter().map(converted).collect::<Result<Vec<_>, _>>()?;
            let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 18);
            for (r, (estimate, cost, details)) in chunk.iter().zip(&conv) {
                let e = &r.event;
                args.extend([
                    &r.seq as &dyn rusqlite::ToSql,
                    &e.at_ms,
                    &e.kind,
                    &e.actor,
                    &e.project_id,
                    &e.client_id,
                    &e.host,
                    &e.model,
                    &e.decision,
                    &e.code,
                    estimate,
                    cost,
                    &e.latency_ms,
                    &e.policy_version,
                    &e.approval_id,
                    details,
                    &r.prev_hash,
                    &r.hash,
                ]);
            }
            c.prepare_cached(&insert_sql(chunk.len(), '?'))
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(args)))
                .map_err(backend)?;
        }
        if let Some(last) = out.last() {
            c.execute(
                "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
                params![last.seq, last.hash],
            )
            .map_err(backend)?;
        }
        let rolled = crate::store::rollup::decision_deltas(out.iter().map(|r| &r.event))?;
        if !rolled.is_empty() {
            crate::store::rollup::sqlite::add_decisions(c, rolled)?;
        }
        Ok(out)
    }

    pub(crate) fn list(c: &Connection, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let mut st = c
            .prepare(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > ?1
                   AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR project_id = ?3)
                   AND (?4 IS NULL OR client_id = ?4) AND (?5 IS NULL OR decision = ?5)
                   AND (?6 IS NULL OR code = ?6) AND (?7 IS NULL OR at_ms >= ?7)
                   AND (?8 IS NULL OR at_ms < ?8) AND (?10 IS NULL OR seq < ?10)
                 ORDER BY seq {} LIMIT ?9",
                order(q)
            ))
            .map_err(backend)?;
        let rows = st
            .query_map(
                params![
                    q.after_seq,
                    q.kind,
                    q.project_id,
                    q.client_id,
                    q.decision,
                    q.code,
                    q.from_ms,
                    q.to_ms,
                    q.limit,
                    q.before_seq
                ],
                row,
            )
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    /// Deletes the oldest rows before `before_ms` (a prefix of the chain), records the
    /// checkpoint in the head, and appends the retention entry. `None` when nothing is old.
    pub(crate) fn prune(
        c: &Connection,
        before_ms: i64,
        entry: AuditEvent,
    ) -> Result<Option<AuditRow>, StoreError> {
        let h = head(c)?;
        let first_kept: Option<i64> = c
            .query_row(
                "SELECT MIN(seq) FROM audit_log WHERE at_ms >= ?1 AND seq > ?2",
                params![before_ms, h.pruned_through_seq],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let through = first_kept.map_or(h.seq, |s| s - 1);
        if through <= h.pruned_through_seq {
            return Ok(None);
        }
        let hash: String = c
            .query_row(
                "SELECT hash FROM audit_log WHERE seq = ?1",
                [through],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let span: (Option<i64>, Option<i64>) = c
            .query_row(
                &format!(
                    "SELECT MIN(at_ms), MAX(at_ms) FROM audit_log
                     WHERE seq <= ?1 AND seq > ?2 AND kind = '{DECISION_KIND}'"
                ),
                params![through, h.pruned_through_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(backend)?;
        let deleted = c
            .execute(
                "DELETE FROM audit_log WHERE seq <= ?1 AND seq > ?2",
                params![through, h.pruned_through_seq],
            )
            .map_err(backend)?;
        // The decision rollups of the buckets the deleted rows were in, again from what is left.
        if let (Some(lo), Some(hi)) = span {
            crate::store::rollup::sqlite::rebuild_decisions(c, lo, hi.saturating_add(1))?;
        }
        let deleted = i64::try_from(deleted).map_err(backend)?;
        c.execute(
            "UPDATE audit_head SET pruned_through_seq = ?1, pruned_through_hash = ?2,
               pruned_count = pruned_count + ?3 WHERE id = 1",
            params![through, hash, deleted],
        )
        .map_err(backend)?;
        let entry = with_prune_details(entry, through, &hash, deleted, before_ms);
        Ok(append(c, vec![entry])?.pop())
    }

    /// Appends one `approval.expired` entry per approval that expired (pending or approved
    /// at its expiry) and has none yet; in the caller's IMMEDIATE transaction.
    pub(crate) fn sweep_expired(c: &Connection, now_ms: i64) -> Result<Vec<AuditRow>, StoreError> {
        let events = expired(c, now_ms)?
            .into_iter()
            .map(|a| expired_event(a, now_ms))
            .collect();
        append(c, events)
    }

    fn expired(c: &Connection, now_ms: i64) -> Result<Vec<Expired>, StoreError> {
        let mut st = c
            .prepare(&format!(
                "SELECT a.id, a.project_id, a.client_id, a.policy_version, a.expires_at_ms
                 FROM approvals a WHERE a.status IN ('pending', 'approved') AND a.expires_at_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.approval_id = a.id
                                   AND l.kind = '{EXPIRED_KIND}')
                 ORDER BY a.expires_at_ms, a.id LIMIT 1000"
            ))
            .map_err(backend)?;
        let rows = st
            .query_map([now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }
}

pub(crate) fn with_prune_details(
    mut entry: AuditEvent,
    through: i64,
    hash: &str,
    deleted: i64,
    before_ms: i64,
) -> AuditEvent {
    let mut details = entry.details.as_object().cloned().unwrap_or_default();
    for (k, v) in [
        ("prunedThroughSeq", serde_json::json!(through)),
        ("prunedThroughHash", serde_json::json!(hash)),
        ("deleted", serde_json::json!(deleted)),
        ("beforeMs", serde_json::json!(before_ms)),
    ] {
        details.insert(k.into(), v);
    }
    entry.details = serde_json::Value::Object(details);
    entry
}

/// The entry for one expired approval.
pub(crate) fn expired_event(
    (id, project, client, version, expires_at_ms): Expired,
    now_ms: i64,
) -> AuditEvent {
    AuditEvent {
        actor: Some("system".into()),
        project_id: Some(project),
        client_id: Some(client),
        policy_version: Some(version),
        approval_id: Some(id),
        decision: Some("expired".into()),
        ..AuditEvent::new(EXPIRED_KIND, now_ms)
    }
    .details(serde_json::json!({ "expiresAtMs": expires_at_ms }))
}

/// `approval.created`: who asked, for what, at what estimate.
pub(crate) fn approval_created(a: &Approval) -> AuditEvent {
    AuditEvent {
        actor: a.requested_by.clone().or_else(|| Some(a.client_id.clone())),
        decision: Some("pending".into()),
        ..approval_event("approval.created", a, a.created_at_ms)
    }
    .details(serde_json::json!({
        "method": a.method,
        "path": a.path,
        "justification": a.justification,
        "expiresAtMs": a.expires_at_ms,
    }))
}

/// `approval.decided`: the approver and the decision.
pub(crate) fn approval_decided(a: &Approval) -> AuditEvent {
    AuditEvent {
        actor: a.decided_by.clone(),
        decision: Some(a.status.as_str().into()),
        ..approval_event(
            "approval.decided",
            a,
            a.decided_at_ms.unwrap_or(a.created_at_ms),
        )
    }
    .details(serde_json::json!({ "comment": a.decision_comment }))
}

/// `approval.consumed`: the one replay that used it.
pub(crate) fn approval_consumed(a: &Approval) -> AuditEvent {
    AuditEvent {
        actor: Some(a.client_id.clone()),
        decision: Some("used".into()),
        ..approval_event(
            "approval.consumed",
            a,
            a.used_at_ms.unwrap_or(a.created_at_ms),
        )
    }
}

fn approval_event(kind: &str, a: &Approval, at_ms: i64) -> AuditEvent {
    AuditEvent {
        project_id: Some(a.project_id.clone()),
        client_id: Some(a.client_id.clone()),
        host: Some(a.authority.clone()),
        estimate: Some(a.estimated_cost),
        policy_version: Some(a.policy_version),
        approval_id: Some(a.id.clone()),
        ..AuditEvent::new(kind, at_ms)
    }
}

// --- PostgreSQL ---

pub(crate) mod postgres {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::GenericClient;

    use super::*;
    use crate::store::{from_db, StoreError};

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    fn row(r: &tokio_postgres::Row) -> AuditRow {
        AuditRow {
            seq: r.get(0),
            event: AuditEvent {
                at_ms: r.get(1),
                kind: r.get(2),
                actor: r.get(3),
                project_id: r.get(4),
                client_id: r.get(5),
                host: r.get(6),
                model: r.get(7),
                decision: r.get(8),
                code: r.get(9),
                estimate: r.get::<_, Option<i64>>(10).map(from_db),
                cost: r.get::<_, Option<i64>>(11).map(from_db),
                latency_ms: r.get(12),
                policy_version: r.get(13),
                approval_id: r.get(14),
                details: details_value(r.get::<_, &str>(15)),
            },
            prev_hash: r.get(16),
            hash: r.get(17),
        }
    }

    fn head_row(r: &tokio_postgres::Row) -> AuditHead {
        AuditHead {
            seq: r.get(0),
            hash: r.get(1),
            pruned_through_seq: r.get(2),
            pruned_through_hash: r.get(3),
            pruned_count: r.get(4),
        }
    }

    pub(crate) async fn head(c: &impl GenericClient) -> Result<AuditHead, StoreError> {
        let r = c
            .query_one(
                &format!("SELECT {HEAD_COLUMNS} FROM audit_head WHERE id = 1"),
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(head_row(&r))
    }

    /// Locks the head row until the caller's transaction ends.
    async fn lock_head(c: &impl GenericClient) -> Result<AuditHead, StoreError> {
        let r = c
            .query_one(
                &format!("SELECT {HEAD_COLUMNS} FROM audit_head WHERE id = 1 FOR UPDATE"),
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(head_row(&r))
    }

    /// Appends in the caller's transaction (which must be one: the head lock lasts until it
    /// commits).
    pub(crate) async fn append(
        c: &impl GenericClient,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let h = lock_head(c).await?;
        append_after(c, h, events).await
    }

    /// [`INSERT_CHUNK`] rows per statement: one round trip per chunk, not per row.
    async fn append_after(
        c: &impl GenericClient,
        h: AuditHead,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let out = chain_all(h.seq, h.hash, events)?;
        for chunk in out.chunks(INSERT_CHUNK) {
            let conv = chunk.iter().map(converted).collect::<Result<Vec<_>, _>>()?;
            let mut args: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 18);
            for (r, (estimate, cost, details)) in chunk.iter().zip(&conv) {
                let e = &r.event;
                args.extend([
                    &r.seq as &(dyn ToSql + Sync),
                    &e.at_ms,
                    &e.kind,
                    &e.actor,
                    &e.project_id,
                    &e.client_id,
                    &e.host,
                    &e.model,
                    &e.decision,
                    &e.code,
                    estimate,
                    cost,
                    &e.latency_ms,
                    &e.policy_version,
                    &e.approval_id,
                    details,
                    &r.prev_hash,
                    &r.hash,
                ]);
            }
            c.execute(&insert_sql(chunk.len(), '$'), &args)
                .await
                .map_err(pg)?;
        }
        if let Some(last) = out.last() {
            c.execute(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                &[&last.seq, &last.hash],
            )
            .await
            .map_err(pg)?;
        }
        // Under the head's lock: one writer at a time merges a bucket's bins.
        let rolled = crate::store::rollup::decision_deltas(out.iter().map(|r| &r.event))?;
        crate::store::rollup::postgres::add_decisions(c, rolled).await?;
        Ok(out)
    }

    pub(crate) async fn list(
        c: &impl GenericClient,
        q: &AuditQuery,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let limit = i64::from(q.limit);
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE seq > $1
                       AND ($2::TEXT IS NULL OR kind = $2) AND ($3::TEXT IS NULL OR project_id = $3)
                       AND ($4::TEXT IS NULL OR client_id = $4) AND ($5::TEXT IS NULL OR decision = $5)
                       AND ($6::TEXT IS NULL OR code = $6) AND ($7::BIGINT IS NULL OR at_ms >= $7)
                       AND ($8::BIGINT IS NULL OR at_ms < $8) AND ($10::BIGINT IS NULL OR seq < $10)
                     ORDER BY seq {} LIMIT $9",
                    order(q)
                ),
                &[
                    &q.after_seq,
                    &q.kind,
                    &q.project_id,
                    &q.client_id,
                    &q.decision,
                    &q.code,
                    &q.from_ms,
                    &q.to_ms,
                    &limit,
                    &q.before_seq,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(row).collect())
    }

    pub(crate) async fn prune(
        c: &impl GenericClient,
        before_ms: i64,
        entry: AuditEvent,
    ) -> Result<Option<AuditRow>, StoreError> {
        let h = lock_head(c).await?;
        let first_kept: Option<i64> = c
            .query_one(
                "SELECT MIN(seq) FROM audit_log WHERE at_ms >= $1 AND seq > $2",
                &[&before_ms, &h.pruned_through_seq],
            )
            .await
            .map_err(pg)?
            .get(0);
        let through = first_kept.map_or(h.seq, |s| s - 1);
        if through <= h.pruned_through_seq {
            return Ok(None);
        }
        let hash: String = c
            .query_one("SELECT hash FROM audit_log WHERE seq = $1", &[&through])
            .await
            .map_err(pg)?
            .get(0);
        let span = c
            .query_one(
                &format!(
                    "SELECT MIN(at_ms), MAX(at_ms) FROM audit_log
                     WHERE seq <= $1 AND seq > $2 AND kind = '{DECISION_KIND}'"
                ),
                &[&through, &h.pruned_through_seq],
            )
            .await
            .map_err(pg)?;
        let span: (Option<i64>, Option<i64>) = (span.get(0), span.get(1));
        let deleted = c
            .execute(
                "DELETE FROM audit_log WHERE seq <= $1 AND seq > $2",
                &[&through, &h.pruned_through_seq],
            )
            .await
            .map_err(pg)?;
        if let (Some(lo), Some(hi)) = span {
            crate::store::rollup::postgres::rebuild_decisions(c, lo, hi.saturating_add(1)).await?;
        }
        let deleted = i64::try_from(deleted).map_err(|e| StoreError::Backend(e.to_string()))?;
        c.execute(
            "UPDATE audit_head SET pruned_through_seq = $1, pruned_through_hash = $2,
               pruned_count = pruned_count + $3 WHERE id = 1",
            &[&through, &hash, &deleted],
        )
        .await
        .map_err(pg)?;
        let entry = with_prune_details(entry, through, &hash, deleted, before_ms);
        let h = AuditHead {
            pruned_through_seq: through,
            ..h
        };
        Ok(append_after(c, h, vec![entry]).await?.pop())
    }

    /// As SQLite's: the head is locked first, so two sidecars sweeping at once write each
    /// expiry once.
    pub(crate) async fn sweep_expired(
        c: &impl GenericClient,
        now_ms: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let h = lock_head(c).await?;
        let events = expired(c, now_ms)
            .await?
            .into_iter()
            .map(|a| expired_event(a, now_ms))
            .collect();
        append_after(c, h, events).await
    }

    async fn expired(c: &impl GenericClient, now_ms: i64) -> Result<Vec<Expired>, StoreError> {
        let rows = c
            .query(
                &format!(
                    "SELECT a.id, a.project_id, a.client_id, a.policy_version, a.expires_at_ms
                     FROM approvals a WHERE a.status IN ('pending', 'approved') AND a.expires_at_ms <= $1
                       AND NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.approval_id = a.id
                                       AND l.kind = '{EXPIRED_KIND}')
                     ORDER BY a.expires_at_ms, a.id COLLATE \"C\" LIMIT 1000"
                ),
                &[&now_ms],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect())
    }
}
