//! Decision events waiting for the sidecar (docs/audit.md "Decision events"), beside the usage
//! batches but under their own keys, so a usage flush never rewrites them:
//!
//! - [`QUEUE_KEY`]: the unsent events, `count LE u64 ++ lines`, one JSON object per line as
//!   the filter serialised it (appended without parsing; only the sync owner parses, ≤
//!   [`MAX_BATCH_DECISIONS`] per batch).
//! - [`SENT_KEY`]: [`Attached`]: the events and gaps riding the usage batch of one seq, resent
//!   unchanged with it until that seq is acknowledged.
//! - [`GAP_KEY`]: the [`DecisionGap`] of events dropped since the last batch took one.
//!
//! Usage records are never dropped. Decision events are, past the cap (`decisionQueueMax`),
//! oldest first, and counted: the gap says from when to when and how many, and travels in the
//! next batch, so the audit log shows exactly what is missing. Events attach only to a batch
//! being created (a resent batch must be the same batch, or the sidecar answers 409).

use pag0_wire::DecisionGap;
use serde::{Deserialize, Serialize};

use crate::counters::{cas_update, HostError, SharedStore, Update};

use super::set_blind;

pub const QUEUE_KEY: &str = "pag0/m/dq";
pub const SENT_KEY: &str = "pag0/m/dq-sent";
pub const GAP_KEY: &str = "pag0/m/dq-gap";

/// Most decision events in one batch: ~400 bytes each, so with [`super::MAX_BATCH_RECORDS`]
/// usage records a batch stays a few hundred KB (see docs/sync-protocol.md).
pub const MAX_BATCH_DECISIONS: usize = 500;
/// `decisionQueueMax` when the configuration names none: ~4 MB of shared data.
pub const DEFAULT_QUEUE_MAX: usize = 10_000;

/// What one batch carries besides its usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub seq: u64,
    /// Serialised [`pag0_wire::DecisionEvent`]s.
    pub decisions: Vec<String>,
    pub gaps: Vec<DecisionGap>,
}

impl Attached {
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.gaps.is_empty()
    }
}

const COUNT_LEN: usize = 8;

fn split(v: &[u8]) -> (u64, &[u8]) {
    match (v.get(..COUNT_LEN), v.get(COUNT_LEN..)) {
        (Some(n), Some(rest)) => (super::u64_of(n), rest),
        _ => (0, &[]),
    }
}

fn join(count: u64, lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(COUNT_LEN + lines.len());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(lines);
    out
}

/// Byte offset just past the `n`-th line of `lines` (the whole slice if it has fewer).
fn after_lines(lines: &[u8], n: u64) -> usize {
    if n == 0 {
        return 0;
    }
    let mut seen = 0u64;
    for (i, b) in lines.iter().enumerate() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    lines.len()
}

#[derive(Deserialize)]
struct At {
    at: u64,
}

/// The gap that dropping `lines` leaves.
fn gap_of(lines: &[u8]) -> Option<DecisionGap> {
    let mut gap: Option<DecisionGap> = None;
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        // An event the filter wrote always has `at`; if not, it still counts as dropped.
        let at = serde_json::from_slice::<At>(line).map_or(0, |a| a.at);
        match &mut gap {
            Some(g) => g.widen(at),
            None => gap = Some(DecisionGap::one(at)),
        }
    }
    gap
}

/// What [`GAP_KEY`] and [`SENT_KEY`] hold when empty (never an empty value: the host may
/// read one back as absent).
const NONE: &[u8] = b"null";

/// CAS read-modify-write of a key (created holding `initial` when absent); `f` gets the current value (`None`: absent) and returns
/// the new value (`None`: leave it) and what to hand back.
fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    initial: &[u8],
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, HostError> {
    cas_update(store, key, |v, cas| {
        let (next, out) = f(v);
        let Some(next) = next else {
            return Update::Keep(out);
        };
        if cas.is_none() {
            // Absent: created once by whoever gets there first, then changed by CAS.
            return Update::Create(initial.to_vec());
        }
        Update::Set(next, out)
    })
}

/// Adds `dropped` to the gap waiting for the next batch.
fn widen_gap(store: &dyn SharedStore, dropped: DecisionGap) -> Result<(), HostError> {
    update(store, GAP_KEY, NONE, |v| {
        let merged = match v.and_then(|v| serde_json::from_slice::<DecisionGap>(v).ok()) {
            None => dropped,
            Some(g) => DecisionGap {
                from: g.from.min(dropped.from),
                to: g.to.max(dropped.to),
                count: g.count.saturating_add(dropped.count),
            },
        };
        (serde_json::to_vec(&merged).ok(), ())
    })
}

/// Appends serialised events (each one line, no newline inside) to the queue; past `cap`
/// the oldest are dropped into the gap. Returns how many were dropped.
pub fn append(store: &dyn SharedStore, events: &[String], cap: usize) -> Result<u64, HostError> {
    if events.is_empty() {
        return Ok(0);
    }
    let cap = u64::try_from(cap.max(1)).unwrap_or(u64::MAX);
    let mut added = Vec::new();
    for e in events {
        added.extend_from_slice(e.as_bytes());
        added.push(b'\n');
    }
    let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
    let dropped = update(store, QUEUE_KEY, &join(0, &[]), |v| {
        let (count, lines) = split(v.unwrap_or_default());
        let total = count.saturating_add(n);
        let drop = total.saturating_sub(cap);
        let mut all = Vec::with_capacity(lines.len() + added.len());
        all.extend_from_slice(lines);
        all.extend_from_slice(&added);
        let cut = after_lines(&all, drop);
        let gap = (drop > 0).then(|| gap_of(all.get(..cut).unwrap_or_default()));
        let kept = all.get(cut..).unwrap_or_default();
        (Some(join(total - drop, kept)), gap.flatten())
    })?;
    match dropped {
        Some(g) => {
            widen_gap(store, g)?;
            Ok(g.count)
        }
        None => Ok(0),
    }
}

/// Whether events or a gap wait for a batch.
pub fn waiting(store: &dyn SharedStore) -> Result<bool, HostError> {
    let queued = split(store.get(QUEUE_KEY)?.0.as_deref().unwrap_or_default()).0 > 0;
    Ok(queued || pending_gap(store)?.is_some())
}

/// The gap waiting for the next batch.
pub fn pending_gap(store: &dyn SharedStore) -> Result<Option<DecisionGap>, HostError> {
    Ok(store
        .get(GAP_KEY)?
        .0
        .and_then(|g| serde_json::from_slice(&g).ok()))
}

/// How many events wait (not counting the batch in flight).
pub fn queued(store: &dyn SharedStore) -> Result<u64, HostError> {
    Ok(split(store.get(QUEUE_KEY)?.0.as_deref().unwrap_or_default()).0)
}

/// What the batch `seq` carries. `created`: the batch is new, so it takes up to
/// [`MAX_BATCH_DECISIONS`] waiting events and the waiting gap; otherwise it is a resend and
/// carries what it carried before (or nothing).
pub fn attach(store: &dyn SharedStore, seq: u64, created: bool) -> Result<Attached, HostError> {
    let before = sent(store)?;
    if !created {
        return Ok(before.filter(|a| a.seq == seq).unwrap_or_default());
    }
    let mut gaps = Vec::new();
    // Events of an earlier batch still here: its acknowledgement was not applied to them, so
    // whether the sidecar has them is unknown: counted as missing rather than sent twice.
    if let Some(stale) = before.filter(|a| a.seq != seq) {
        gaps.extend(stale.gaps);
        let lines: Vec<u8> = stale.decisions.join("\n").into_bytes();
        gaps.extend(gap_of(&lines));
    }
    let taken = update(store, QUEUE_KEY, &join(0, &[]), |v| {
        let (count, lines) = split(v.unwrap_or_default());
        if count == 0 {
            return (None, Vec::new());
        }
        let n = count.min(MAX_BATCH_DECISIONS as u64);
        let cut = after_lines(lines, n);
        let head = lines.get(..cut).unwrap_or_default();
        let rest = lines.get(cut..).unwrap_or_default();
        (Some(join(count - n, rest)), head.to_vec())
    })?;
    let decisions: Vec<String> = taken
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let gap = update(store, GAP_KEY, NONE, |v| match v {
        Some(g) => match serde_json::from_slice::<DecisionGap>(g) {
            Ok(g) => (Some(NONE.to_vec()), Some(g)),
            Err(_) => (None, None),
        },
        None => (None, None),
    })?;
    gaps.extend::<Option<DecisionGap>>(gap);
    let attached = Attached {
        seq,
        decisions,
        gaps,
    };
    let bytes = serde_json::to_vec(&attached).unwrap_or_default();
    set_blind(store, SENT_KEY, &bytes)?;
    Ok(attached)
}

fn sent(store: &dyn SharedStore) -> Result<Option<Attached>, HostError> {
    Ok(store
        .get(SENT_KEY)?
        .0
        .and_then(|v| serde_json::from_slice::<Attached>(&v).ok()))
}

/// The batch `seq` was acknowledged: what it carried is in the audit log.
pub fn acknowledged(store: &dyn SharedStore, seq: u64) -> Result<(), HostError> {
    update(store, SENT_KEY, NONE, |v| {
        let mine = v
            .and_then(|v| serde_json::from_slice::<Attached>(v).ok())
            .is_some_and(|a| a.seq == seq);
        (mine.then(|| NONE.to_vec()), ())
    })
}

/// The batch `seq` was refused as invalid and dropped: what it carried becomes a gap (the
/// sidecar never recorded it). Returns how many events that was.
pub fn refused(store: &dyn SharedStore, seq: u64) -> Result<u64, HostError> {
    let lost = update(store, SENT_KEY, NONE, |v| {
        match v.and_then(|v| serde_json::from_slice::<Attached>(v).ok()) {
            Some(a) if a.seq == seq => (Some(NONE.to_vec()), Some(a)),
            _ => (None, None),
        }
    })?;
    let Some(a) = lost else { return Ok(0) };
    let lines = a.decisions.join("\n").into_bytes();
    let mut gap = gap_of(&lines);
    for g in a.gaps {
        gap = Some(match gap {
            None => g,
            Some(x) => DecisionGap {
                from: x.from.min(g.from),
                to: x.to.max(g.to),
                count: x.count.saturating_add(g.count),
            },
        });
    }
    if let Some(g) = gap {
        widen_gap(store, g)?;
    }
    Ok(u64::try_from(a.decisions.len()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
