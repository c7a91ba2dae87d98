//! One simulated Envoy instance: the managed filter's sync loop (engine/src/managed/sync.rs)
//! with batches of the real wire format, without the proxy. Stop and wait: at most one sync
//! in flight; a batch is resent unchanged (same seq, same records) until it is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pag0_policy::Micros;
use pag0_wire::{LeaseAsk, SyncRequest, SyncResponse, UsageRecord};
use tokio::time::MissedTickBehavior;

/// What every instance shares: the client pool, the sidecars, the policy's counters.
pub struct Ctx {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>/v1/sync` of each sidecar; instance i uses `i % len`.
    pub sync_urls: Vec<String>,
    pub sync_secret: String,
    /// Every counter the policy charges now, with its limit: what the filter asks leases for.
    pub counters: Vec<(String, u64)>,
    /// The shared org counter every record is charged to.
    pub hot: String,
    /// (client id, project id, the record's counters) per client of the policy.
    pub clients: Vec<(String, String, Vec<String>)>,
    pub records: usize,
    pub amount: u64,
    pub interval: Duration,
}

/// What one instance saw.
#[derive(Debug, Default)]
pub struct InstanceResult {
    /// Latency of every answered sync (2xx), in microseconds.
    pub latencies_us: Vec<u32>,
    pub syncs_ok: u64,
    /// Usage records acknowledged (not duplicates).
    pub records_acked: u64,
    pub errors: BTreeMap<String, u64>,
    /// Answers whose hot-counter lease was 0 (all room held by others or spent).
    pub hot_starved: u64,
    /// Answers that raised the hot-counter lease above what the instance held before them.
    pub hot_topups: u64,
    /// The last answer's hot lease (`granted`) and the `want` the instance asked with.
    pub hot_granted: u64,
    pub hot_want: u64,
    /// The last answer's `spent` and `limit` of the hot counter and its server time.
    pub hot_spent: u64,
    pub hot_limit: u64,
    pub last_server_ms: i64,
}

/// A lease as the filter keeps it: what it holds and the `want` it last asked with.
#[derive(Clone, Copy, Debug, Default)]
struct Lease {
    granted: u64,
    want: u64,
}

/// The filter's `want` for one counter (engine/src/managed/sync.rs): 1/16 of the limit at
/// first, doubled when less than a quarter of the slice is left, at least `pending`, at most
/// the limit.
pub fn want(limit: u64, current: Option<(u64, u64)>, pending: u64) -> u64 {
    const LOW_WATER_DIVISOR: u64 = 4;
    let default_want = (limit / 16).max(1);
    let want = match current {
        None => default_want,
        Some((granted, last_want)) => {
            let left = granted.saturating_sub(pending);
            let base = last_want.max(default_want);
            if left < base / LOW_WATER_DIVISOR {
                base.saturating_mul(2)
            } else {
                base
            }
        }
    };
    want.max(pending).min(limit)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs instance `i` from `start` (plus its stagger within the first interval) until
/// `deadline`: no sync is started at or after it; one in flight is waited for.
pub async fn run(
    ctx: Arc<Ctx>,
    i: usize,
    n: usize,
    start: Instant,
    deadline: Instant,
) -> InstanceResult {
    let mut out = InstanceResult::default();
    let Some(url) = ctx.sync_urls.get(i % ctx.sync_urls.len().max(1)).cloned() else {
        return out;
    };
    let Some((client, project, record_counters)) =
        ctx.clients.get(i % ctx.clients.len().max(1)).cloned()
    else {
        return out;
    };
    let instance_id = format!("fleet-{i:05}");
    // Real Envoys are not in step: spread the first syncs over one interval.
    let stagger = ctx.interval.mul_f64(i as f64 / n.max(1) as f64);
    let mut tick = tokio::time::interval_at((start + stagger).into(), ctx.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut next_seq: u64 = 1;
    let mut inflight: Option<(u64, Vec<UsageRecord>)> = None;
    let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
    let mut policy_version = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        if inflight.is_none() && ctx.records > 0 {
            let at = Some(now_ms());
            let usage: Vec<UsageRecord> = (0..ctx.records)
                .map(|_| UsageRecord {
                    amount: Micros::new(ctx.amount),
                    counters: record_counters.clone(),
                    project_id: Some(project.clone()),
                    client_id: Some(client.clone()),
                    host: Some("api.openai.com".to_owned()),
                    at,
                    cache_hit: false,
                    savings: None,
                    suspect: None,
                    learn: None,
                })
                .collect();
            inflight = Some((next_seq, usage));
            next_seq += 1;
        }
        let (seq, usage) = match &inflight {
            Some((seq, usage)) => (*seq, usage.clone()),
            None => (1, Vec::new()),
        };
        let mut asks = Vec::with_capacity(ctx.counters.len());
        let mut wants = BTreeMap::new();
        for (name, limit) in &ctx.counters {
            let pending = if record_counters.contains(name) {
                ctx.amount.saturating_mul(usage.len() as u64)
            } else {
                0
            };
            let w = want(
                *limit,
                leases.get(name).map(|l| (l.granted, l.want)),
                pending,
            );
            wants.insert(name.clone(), w);
            asks.push(LeaseAsk {
                counter: name.clone(),
                want: Some(Micros::new(w)),
            });
        }
        let body = SyncRequest {
            instance_id: instance_id.clone(),
            seq,
            policy_version,
            usage,
            decisions: Vec::new(),
            gaps: Vec::new(),
            leases: asks,
            release: Vec::new(),
        };
        let sent = Instant::now();
        let answer = sync(&ctx, &url, &body).await;
        let took = sent.elapsed();
        match answer {
            Ok(resp) => {
                out.syncs_ok += 1;
                out.latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                if inflight.as_ref().is_some_and(|(s, _)| *s == resp.ack) {
                    if !resp.duplicate {
                        out.records_acked += body.usage.len() as u64;
                    }
                    inflight = None;
                }
                policy_version = resp.policy_version;
                for (name, grant) in &resp.leases {
                    let w = wants.get(name).copied().unwrap_or(0);
                    let before = leases.get(name).map_or(0, |l| l.granted);
                    let granted = grant.granted.get();
                    leases.insert(name.clone(), Lease { granted, want: w });
                    if *name == ctx.hot {
                        // Usage moved money out of the lease; more than what was held net of
                        // that is a top-up.
                        let net = before.saturating_sub(ctx.amount * body.usage.len() as u64);
                        if granted == 0 {
                            out.hot_starved += 1;
                        } else if granted > net {
                            out.hot_topups += 1;
                        }
                        out.hot_granted = granted;
                        out.hot_want = w;
                        out.hot_spent = grant.spent.get();
                        out.hot_limit = grant.limit.get();
                        out.last_server_ms = resp.server_time_ms;
                    }
                }
            }
            Err(kind) => *out.errors.entry(kind).or_default() += 1,
        }
    }
    out
}

async fn sync(ctx: &Ctx, url: &str, body: &SyncRequest) -> Result<SyncResponse, String> {
    let resp = ctx
        .http
        .post(url)
        .bearer_auth(&ctx.sync_secret)
        .json(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_owned()
            } else if e.is_connect() {
                "connect".to_owned()
            } else {
                "transport".to_owned()
            }
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("http {}", status.as_u16()));
    }
    resp.json::<SyncResponse>().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_owned()
        } else {
            "bad answer".to_owned()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn want_follows_the_filter() {
        // First ask: 1/16 of the limit.
        assert_eq!(want(1600, None, 0), 100);
        // Enough left: the same want again.
        assert_eq!(want(1600, Some((100, 100)), 10), 100);
        // Under a quarter left (or nothing granted): doubled, capped at the limit.
        assert_eq!(want(1600, Some((20, 100)), 0), 200);
        assert_eq!(want(1600, Some((0, 1600)), 0), 1600);
        // Pending usage stays covered.
        assert_eq!(want(1600, None, 500), 500);
    }
}
