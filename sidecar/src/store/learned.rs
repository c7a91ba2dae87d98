//! Fleet-wide learned estimates (docs/estimates.md): one row per catalogue entry that learns,
//! updated from the usage records every filter sends (`usage[].learn`), and returned to every
//! filter with each sync (`learned`).
//!
//! The row holds the same decaying high as a filter's shared data ([`pag0_policy::Learned`]),
//! updated in arrival order under the row's lock, plus the sums of estimates and of settled
//! costs for the analytics' actual/estimate ratio. Money columns are BIGINT micro-USD,
//! saturating at `i64::MAX` (a sum that large says "far off" all the same).

use pag0_policy::{Learned, Micros};

use super::from_db;

/// One believed cost report of a catalogue entry that learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The catalogue entry (its host).
    pub key: String,
    /// The catalogue's estimate of the request, micro-USD.
    pub estimate: u64,
    /// What it settled at, micro-USD.
    pub actual: u64,
}

/// What the fleet learned about one catalogue entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedRow {
    pub key: String,
    pub learned: Learned,
    /// Σ estimates and Σ settled costs of every report (saturating).
    pub estimate_sum: u64,
    pub actual_sum: u64,
    pub updated_at_ms: i64,
}

impl LearnedRow {
    /// `Σ actual × 1000 / Σ estimate` (rounded down); `None` when nothing was estimated.
    pub fn ratio_permille(&self) -> Option<u64> {
        (self.estimate_sum > 0).then(|| {
            let r = u128::from(self.actual_sum) * 1000 / u128::from(self.estimate_sum);
            u64::try_from(r).unwrap_or(u64::MAX)
        })
    }
}

pub(crate) const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS learned_estimates (
        learn_key TEXT PRIMARY KEY,
        high_permille BIGINT NOT NULL,
        samples BIGINT NOT NULL,
        estimate_sum BIGINT NOT NULL,
        actual_sum BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)"];

/// Most rows one list returns (a catalogue has far fewer entries).
pub const MAX_ROWS: i64 = 1024;

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The row after `obs` (a row that does not exist yet starts empty).
fn next(row: Option<LearnedRow>, obs: &Observation, now_ms: i64) -> LearnedRow {
    let mut row = row.unwrap_or(LearnedRow {
        key: obs.key.clone(),
        learned: Learned::default(),
        estimate_sum: 0,
        actual_sum: 0,
        updated_at_ms: now_ms,
    });
    row.learned = row
        .learned
        .observe(Micros::new(obs.estimate), Micros::new(obs.actual));
    row.estimate_sum = row
        .estimate_sum
        .saturating_add(obs.estimate)
        .min(i64::MAX as u64);
    row.actual_sum = row
        .actual_sum
        .saturating_add(obs.actual)
        .min(i64::MAX as u64);
    row.updated_at_ms = now_ms;
    row
}

const SELECT: &str =
    "SELECT learn_key, high_permille, samples, estimate_sum, actual_sum, updated_at_ms
     FROM learned_estimates";

const UPSERT: &str = "INSERT INTO learned_estimates
       (learn_key, high_permille, samples, estimate_sum, actual_sum, updated_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (learn_key) DO UPDATE SET high_permille = excluded.high_permille,
       samples = excluded.samples, estimate_sum = excluded.estimate_sum,
       actual_sum = excluded.actual_sum, updated_at_ms = excluded.updated_at_ms";

fn row_of(key: String, high: i64, samples: i64, est: i64, act: i64, at: i64) -> LearnedRow {
    LearnedRow {
        key,
        learned: Learned {
            high_permille: from_db(high),
            samples: u32::try_from(from_db(samples)).unwrap_or(u32::MAX),
        },
        estimate_sum: from_db(est),
        actual_sum: from_db(act),
        updated_at_ms: at,
    }
}

pub(crate) mod sqlite {
    use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

    use super::{next, row_of, LearnedRow, Observation, MAX_ROWS, SELECT, UPSERT};
    use crate::store::StoreError;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    pub(crate) fn learn(
        c: &mut Connection,
        obs: &[Observation],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for o in obs {
            let row = tx
                .query_row(&format!("{SELECT} WHERE learn_key = ?1"), [&o.key], |r| {
                    Ok(row_of(
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .optional()
                .map_err(backend)?;
            let n = next(row, o, now_ms);
            tx.execute(
                &UPSERT.replace('$', "?"),
                params![
                    n.key,
                    super::clamp(n.learned.high_permille),
                    i64::from(n.learned.samples),
                    super::clamp(n.estimate_sum),
                    super::clamp(n.actual_sum),
                    n.updated_at_ms
                ],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    pub(crate) fn list(c: &Connection) -> Result<Vec<LearnedRow>, StoreError> {
        let mut st = c
            .prepare(&format!("{SELECT} ORDER BY learn_key LIMIT ?1"))
            .map_err(backend)?;
        let rows = st
            .query_map([MAX_ROWS], |r| {
                Ok(row_of(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }
}

pub(crate) mod postgres {
    use super::{next, row_of, LearnedRow, Observation, MAX_ROWS, SELECT, UPSERT};
    use crate::store::StoreError;

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    fn of(r: &tokio_postgres::Row) -> LearnedRow {
        row_of(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    }

    pub(crate) async fn learn(
        c: &mut deadpool_postgres::Object,
        obs: &[Observation],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // Rows locked in key order, so concurrent syncs never deadlock.
        let mut sorted: Vec<&Observation> = obs.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let tx = c.transaction().await.map_err(pg)?;
        let mut keys: Vec<&str> = sorted.iter().map(|o| o.key.as_str()).collect();
        keys.dedup();
        for k in &keys {
            tx.execute(
                "INSERT INTO learned_estimates
                   (learn_key, high_permille, samples, estimate_sum, actual_sum, updated_at_ms)
                 VALUES ($1, 0, 0, 0, 0, $2) ON CONFLICT (learn_key) DO NOTHING",
                &[k, &now_ms],
            )
            .await
            .map_err(pg)?;
            tx.query(
                "SELECT 1 FROM learned_estimates WHERE learn_key = $1 FOR UPDATE",
                &[k],
            )
            .await
            .map_err(pg)?;
        }
        // Applied in arrival order (the decay depends on it).
        for o in obs {
            let r = tx
                .query_opt(&format!("{SELECT} WHERE learn_key = $1"), &[&o.key])
                .await
                .map_err(pg)?;
            let n = next(r.as_ref().map(of), o, now_ms);
            tx.execute(
                UPSERT,
                &[
                    &n.key,
                    &super::clamp(n.learned.high_permille),
                    &i64::from(n.learned.samples),
                    &super::clamp(n.estimate_sum),
                    &super::clamp(n.actual_sum),
                    &n.updated_at_ms,
                ],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    pub(crate) async fn list(c: &tokio_postgres::Client) -> Result<Vec<LearnedRow>, StoreError> {
        let rows = c
            .query(
                &format!("{SELECT} ORDER BY learn_key LIMIT $1"),
                &[&MAX_ROWS],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(of).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_learn_like_the_filter_and_sum_for_the_ratio() {
        let o = |actual| Observation {
            key: "api.salesforce.com".into(),
            estimate: 1000,
            actual,
        };
        let r = next(None, &o(120_000), 5);
        assert_eq!(r.learned.high_permille, 120_000);
        let r = next(Some(r), &o(60_000), 6);
        assert_eq!(
            r.learned,
            Learned::default()
                .observe(Micros::new(1000), Micros::new(120_000))
                .observe(Micros::new(1000), Micros::new(60_000))
        );
        assert_eq!((r.estimate_sum, r.actual_sum), (2000, 180_000));
        assert_eq!(r.ratio_permille(), Some(90_000));
        assert_eq!(r.updated_at_ms, 6);
    }
}
