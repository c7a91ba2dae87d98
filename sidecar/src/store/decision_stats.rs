//! Decision rows (`audit_log` rows of kind `decision`, docs/audit.md "Decision events") read
//! back in aggregate for `/v1/analytics`: per (project, client, host, model, decision, code)
//! over `[from, to)` by the row's `at_ms`, the count, the latency sum and a latency histogram.
//!
//! Why a histogram and not the latencies: a month of decisions can be millions of rows, and the
//! answer has to stay bounded whatever the traffic. The histogram's bins are the latency cut to
//! two significant decimal digits (exact below 100 ms, then 100-109, 110-119, …, 1000-1099, …),
//! so there are at most 90 bins per decade — about 400 for anything under a day — per group,
//! whatever the row count. Each bin also keeps its largest latency, so a percentile read from
//! it ([`LatencyHistogram::quantile`]) is a latency that was really observed, never below the
//! exact nearest-rank value and less than 10 % above it. Bins of several groups merge by
//! adding counts and taking the larger maximum, which any grouping of the rows needs (a
//! project's p95 is over all its clients' rows). The binning is integer arithmetic in SQL, the
//! same text on SQLite and PostgreSQL, evaluated in the range scan of `audit_log_by_kind_time`.

use std::collections::BTreeMap;

use super::StoreError;

/// `(kind, at_ms)`: a period's decision rows are one range of this index, however many other
/// kinds (policy edits, approvals) share the table.
pub(crate) const SCHEMA: &[&str] =
    &["CREATE INDEX IF NOT EXISTS audit_log_by_kind_time ON audit_log (kind, at_ms)"];

/// One histogram bin: latencies `floor_ms ..` up to the next two-significant-digit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyBin {
    pub floor_ms: i64,
    pub count: u64,
    /// The largest latency in the bin (≥ `floor_ms`).
    pub max_ms: i64,
}

/// Latencies of some decision rows, binned (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Rows with a latency.
    pub count: u64,
    /// Sum of their latencies, ms.
    pub sum_ms: u64,
    /// By `floor_ms`.
    pub bins: BTreeMap<i64, LatencyBin>,
}

impl LatencyHistogram {
    /// Adds `other`'s rows (checked: a sum above u64 is an error, not a wrap).
    pub fn merge(&mut self, other: &LatencyHistogram) -> Result<(), StoreError> {
        let overflow = || StoreError::Backend("latency sum above u64".into());
        self.count = self.count.checked_add(other.count).ok_or_else(overflow)?;
        self.sum_ms = self.sum_ms.checked_add(other.sum_ms).ok_or_else(overflow)?;
        for b in other.bins.values() {
            let slot = self.bins.entry(b.floor_ms).or_insert(LatencyBin {
                floor_ms: b.floor_ms,
                count: 0,
                max_ms: b.max_ms,
            });
            slot.count = slot.count.checked_add(b.count).ok_or_else(overflow)?;
            slot.max_ms = slot.max_ms.max(b.max_ms);
        }
        Ok(())
    }

    /// The nearest-rank `num/den` quantile (`95/100` is p95): the largest latency of the bin
    /// holding the `⌈count·num/den⌉`-th smallest latency. `None` without rows.
    pub fn quantile(&self, num: u64, den: u64) -> Option<i64> {
        if self.count == 0 || den == 0 {
            return None;
        }
        // ⌈count·num/den⌉ in u128 (no overflow), at least the first row.
        let rank = (u128::from(self.count) * u128::from(num)).div_ceil(u128::from(den));
        let rank = rank.max(1);
        let mut seen = 0u128;
        for b in self.bins.values() {
            seen += u128::from(b.count);
            if seen >= rank {
                return Some(b.max_ms);
            }
        }
        self.bins.values().next_back().map(|b| b.max_ms)
    }
}

/// Decision rows of one (project, client, host, model, decision, code) in a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionStats {
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    pub model: Option<String>,
    /// `allow`, `deny`, `pending`, `replay`, `cache_hit`.
    pub decision: Option<String>,
    pub code: Option<String>,
    /// Rows.
    pub count: u64,
    /// The rows' latencies (those that carry one).
    pub latency: LatencyHistogram,
}

/// The bin of a latency, as the SQL computes it: cut to two significant decimal digits.
pub fn latency_floor(ms: i64) -> i64 {
    let mut unit = 1i64;
    while ms / unit >= 100 {
        unit = unit.saturating_mul(10);
    }
    (ms / unit) * unit
}

/// [`latency_floor`] in SQL (integer division on both backends; latencies are ≥ 0).
fn bin_sql() -> String {
    let mut s = String::from(
        "CASE WHEN latency_ms IS NULL THEN NULL WHEN latency_ms < 100 THEN latency_ms",
    );
    let mut unit = 10i64;
    // Up to 10^17 ms; the last arm takes the rest of i64.
    for _ in 0..16 {
        s.push_str(&format!(
            " WHEN latency_ms < {} THEN (latency_ms / {unit}) * {unit}",
            unit * 100
        ));
        unit *= 10;
    }
    s.push_str(&format!(" ELSE (latency_ms / {unit}) * {unit} END"));
    s
}

/// Decision rows of one group in one time bucket `[start_ms, start_ms + bucket)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionBucket {
    pub start_ms: i64,
    pub stats: DecisionStats,
}

/// `$1` = from, `$2` = to: one row per bucket (`bucket`, an SQL expression, in the first
/// column), group and bin (the bin NULL for rows without latency).
pub(crate) fn bucketed_sql(sum_cast: &str, bucket: &str) -> String {
    let bin = bin_sql();
    format!(
        "SELECT {bucket} AS b, project_id, client_id, host, model, decision, code, {bin} AS bin,
           COUNT(*), COALESCE(SUM(latency_ms), 0){sum_cast}, MAX(latency_ms)
         FROM audit_log WHERE kind = 'decision' AND at_ms >= $1 AND at_ms < $2
         GROUP BY b, project_id, client_id, host, model, decision, code, bin"
    )
}

type Key = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One SQL row: the bucket, the group, its bin (or none), rows, latency sum, max latency.
struct Row {
    bucket: i64,
    key: Key,
    bin: Option<i64>,
    count: i64,
    sum: i64,
    max: Option<i64>,
}

fn fold_buckets(rows: Vec<Row>) -> Result<Vec<DecisionBucket>, StoreError> {
    let overflow = || StoreError::Backend("decision count above u64".into());
    // Rows of one group may arrive apart (GROUP BY order is not promised, so a map); a bin
    // seen twice is merged.
    let mut out = BTreeMap::<(i64, Key), DecisionStats>::new();
    for r in rows {
        let count = super::from_db(r.count);
        let s = match out.entry((r.bucket, r.key)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let k = e.key().1.clone();
                e.insert(DecisionStats {
                    project_id: k.0,
                    client_id: k.1,
                    host: k.2,
                    model: k.3,
                    decision: k.4,
                    code: k.5,
                    ..DecisionStats::default()
                })
            }
        };
        s.count = s.count.checked_add(count).ok_or_else(overflow)?;
        if let Some(floor_ms) = r.bin {
            let h = &mut s.latency;
            h.count = h.count.checked_add(count).ok_or_else(overflow)?;
            h.sum_ms = h
                .sum_ms
                .checked_add(super::from_db(r.sum))
                .ok_or_else(overflow)?;
            let max_ms = r.max.unwrap_or(floor_ms);
            let bin = h.bins.entry(floor_ms).or_insert(LatencyBin {
                floor_ms,
                count: 0,
                max_ms,
            });
            bin.count = bin.count.checked_add(count).ok_or_else(overflow)?;
            bin.max_ms = bin.max_ms.max(max_ms);
        }
    }
    Ok(out
        .into_iter()
        .map(|((start_ms, _), stats)| DecisionBucket { start_ms, stats })
        .collect())
}

pub(crate) mod sqlite {
    use rusqlite::Connection;

    use super::{fold_buckets, DecisionBucket, Row};
    use crate::store::StoreError;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    /// Runs a [`super::bucketed_sql`] query (`$n` placeholders) and folds its rows.
    pub(crate) fn rows(
        c: &Connection,
        sql: &str,
        args: &[i64],
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        let mut st = c.prepare_cached(&sql.replace('$', "?")).map_err(backend)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Row {
                    bucket: r.get(0)?,
                    key: (
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                    bin: r.get(7)?,
                    count: r.get(8)?,
                    sum: r.get(9)?,
                    max: r.get(10)?,
                })
            })
            .map_err(backend)?
            // SQLite's SUM fails with "integer overflow" rather than wrapping.
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        fold_buckets(rows)
    }
}

pub(crate) mod postgres {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::GenericClient;

    use super::{fold_buckets, DecisionBucket, Row};
    use crate::store::StoreError;

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    /// Runs a [`super::bucketed_sql`] query and folds its rows (`SUM(BIGINT)` is NUMERIC: the
    /// query casts it back, which fails rather than wraps).
    pub(crate) async fn rows(
        c: &impl GenericClient,
        sql: &str,
        args: &[i64],
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = c.query(sql, &refs).await.map_err(pg)?;
        fold_buckets(
            rows.iter()
                .map(|r| Row {
                    bucket: r.get(0),
                    key: (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
                    bin: r.get(7),
                    count: r.get(8),
                    sum: r.get(9),
                    max: r.get(10),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_keep_two_significant_digits() {
        for (ms, floor) in [
            (0, 0),
            (7, 7),
            (99, 99),
            (100, 100),
            (109, 100),
            (110, 110),
            (999, 990),
            (1000, 1000),
            (1099, 1000),
            (123_456, 120_000),
            (i64::MAX, 9_200_000_000_000_000_000),
        ] {
            assert_eq!(latency_floor(ms), floor, "{ms}");
        }
    }

    fn hist(latencies: &[i64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for &l in latencies {
            let f = latency_floor(l);
            let mut one = LatencyHistogram {
                count: 1,
                sum_ms: u64::try_from(l).unwrap(),
                bins: BTreeMap::new(),
            };
            one.bins.insert(
                f,
                LatencyBin {
                    floor_ms: f,
                    count: 1,
                    max_ms: l,
                },
            );
            h.merge(&one).unwrap();
        }
        h
    }

    /// The reported p95 is an observed latency, at or above the exact nearest-rank value and
    /// within its bin (< 10 % above it).
    #[test]
    fn p95_is_an_observed_latency_within_a_bin_of_the_exact_one() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for n in [1usize, 2, 19, 20, 21, 100, 997] {
            let mut lat = Vec::new();
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                lat.push(i64::try_from(seed % 5000).unwrap());
            }
            let h = hist(&lat);
            lat.sort_unstable();
            let rank = (n * 95).div_ceil(100).max(1);
            let exact = lat[rank - 1];
            let got = h.quantile(95, 100).unwrap();
            assert!(lat.contains(&got), "n={n}: {got} was never observed");
            assert!(got >= exact, "n={n}: {got} below the exact {exact}");
            assert_eq!(
                latency_floor(got),
                latency_floor(exact),
                "n={n}: not the same bin"
            );
            assert_eq!(h.count, n as u64);
            assert_eq!(h.sum_ms, lat.iter().map(|&l| l as u64).sum::<u64>());
        }
        assert_eq!(LatencyHistogram::default().quantile(95, 100), None);
    }

    #[test]
    fn the_sql_bins_cover_i64() {
        let s = bin_sql();
        assert!(s.contains("WHEN latency_ms < 100 THEN latency_ms"));
        assert!(
            s.contains("ELSE (latency_ms / 100000000000000000) * 100000000000000000 END"),
            "{s}"
        );
    }
}
