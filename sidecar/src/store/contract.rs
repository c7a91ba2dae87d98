//! The store contract: every backend must pass every function here (see `tests.rs`, which runs
//! them against SQLite always and PostgreSQL when DATABASE_URL is set).

use super::*;

const K: &str = "org.monthly/2026-11";
const K2: &str = "project.monthly/sales-ai/2026-11";
const T0: i64 = 1_764_000_000_000;
const TTL: i64 = 30_000;

fn rec(amount: u64, counters: &[&str]) -> UsageRecord {
    UsageRecord {
        amount,
        counters: counters.iter().map(|s| s.to_string()).collect(),
        project_id: Some("sales-ai".into()),
        client_id: Some("sales-agent".into()),
        host: Some("api.openai.com".into()),
        at_ms: Some(T0),
        cache_hit: false,
        savings: 0,
    }
}

/// A response served from the filter's cache, as the filter reports it.
fn hit(savings: u64, project: &str, client: &str, at_ms: Option<i64>) -> UsageRecord {
    UsageRecord {
        amount: 0,
        counters: vec![],
        project_id: Some(project.into()),
        client_id: Some(client.into()),
        host: Some("api.deepl.com".into()),
        at_ms,
        cache_hit: true,
        savings,
    }
}

fn batch(instance: &str, seq: i64, usage: Vec<UsageRecord>) -> SyncWrite {
    let digest = format!("{usage:?}");
    SyncWrite {
        exceptions: Vec::new(),
        audit: Vec::new(),
        instance_id: instance.into(),
        seq,
        digest,
        legacy_digest: None,
        usage,
        release: vec![],
        leases: vec![],
        now_ms: T0,
        lease_ttl_ms: TTL,
    }
}

fn ask(instance: &str, seq: i64, counter: &str, limit: u64, want: u64) -> SyncWrite {
    SyncWrite {
        exceptions: Vec::new(),
        audit: Vec::new(),
        leases: vec![LeaseAsk {
            counter: counter.into(),
            limit,
            want,
        }],
        ..batch(instance, seq, vec![])
    }
}

async fn spent(store: &dyn Store, key: &str) -> u64 {
    store
        .counters(T0)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.counter == key)
        .map_or(0, |c| c.spent)
}

fn granted(out: &SyncOutcome, key: &str) -> u64 {
    out.leases
        .iter()
        .find(|l| l.counter == key)
        .map(|l| l.granted)
        .unwrap()
}

pub async fn policy_versions_record_who_and_when(store: &dyn Store) {
    assert_eq!(store.latest_policy_version().await.unwrap(), 0);
    assert!(store.latest_policy().await.unwrap().is_none());
    let put = |doc: &str, author: &str, at: i64, expected| NewPolicy {
        document: doc.into(),
        author: author.into(),
        at_ms: at,
        expected_version: expected,
        audit: vec![],
    };
    let m1 = store
        .put_policy(put("{\"v\":1}", "alice", T0, Some(0)))
        .await
        .unwrap();
    assert_eq!(
        (m1.version, m1.author.as_str(), m1.created_at_ms),
        (1, "alice", T0)
    );
    let m2 = store
        .put_policy(put("{\"v\":2}", "bob", T0 + 5, None))
        .await
        .unwrap();
    assert_eq!(m2.version, 2);
    let latest = store.latest_policy().await.unwrap().unwrap();
    assert_eq!(
        (
            latest.meta.version,
            latest.document.as_str(),
            latest.meta.author.as_str()
        ),
        (2, "{\"v\":2}", "bob")
    );
    assert_eq!(
        store.policy_version(1).await.unwrap().unwrap().document,
        "{\"v\":1}"
    );
    assert!(store.policy_version(9).await.unwrap().is_none());
    let history = store.policy_history(10).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(history[1].author, "alice");
    // An edit of version 1 must not overwrite version 2.
    let stale = store
        .put_policy(put("{\"v\":3}", "carol", T0 + 9, Some(1)))
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::VersionConflict {
                expected: 1,
                latest: 2
            })
        ),
        "{stale:?}"
    );
    assert_eq!(store.latest_policy_version().await.unwrap(), 2);
}

pub async fn a_batch_counts_once(store: &dyn Store) {
    let b = batch("envoy-a", 1, vec![rec(100, &[K, K2]), rec(20, &[K])]);
    let first = store.sync(b.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!((spent(store, K).await, spent(store, K2).await), (120, 100));
    let again = store.sync(b.clone()).await.unwrap();
    assert!(again.duplicate, "same (instance, seq) again is a duplicate");
    assert_eq!(
        (spent(store, K).await, spent(store, K2).await),
        (120, 100),
        "counted once"
    );
    // The same seq from ANOTHER instance is another batch.
    store
        .sync(batch("envoy-b", 1, vec![rec(5, &[K])]))
        .await
        .unwrap();
    assert_eq!(spent(store, K).await, 125);
    // Same seq, other content: refused, and nothing of it is applied.
    let reused = store.sync(batch("envoy-a", 1, vec![rec(999, &[K])])).await;
    assert!(
        matches!(reused, Err(StoreError::SeqReused { .. })),
        "{reused:?}"
    );
    assert_eq!(spent(store, K).await, 125);
    // Next seq applies.
    assert!(
        !store
            .sync(batch("envoy-a", 2, vec![rec(1, &[K])]))
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(spent(store, K).await, 126);
}

pub async fn a_failed_batch_leaves_no_trace(store: &dyn Store) {
    let max = u64::try_from(i64::MAX).unwrap();
    store
        .sync(batch("envoy-a", 1, vec![rec(max, &[K])]))
        .await
        .unwrap();
    // Record 0 would apply to K2, record 1 overflows K: the whole batch must roll back,
    // including its seen-batch row and ledger rows.
    let bad = store
        .sync(batch("envoy-a", 2, vec![rec(7, &[K2]), rec(1, &[K])]))
        .await;
    assert!(bad.is_err(), "{bad:?}");
    assert_eq!(spent(store, K2).await, 0);
    let fixed = store
        .sync(batch("envoy-a", 2, vec![rec(7, &[K2])]))
        .await
        .unwrap();
    assert!(
        !fixed.duplicate,
        "the failed attempt did not mark seq 2 as seen"
    );
    assert_eq!((spent(store, K).await, spent(store, K2).await), (max, 7));
}

fn totals_of<'a>(
    all: &'a [UsageTotals],
    project: &str,
    client: &str,
    host: &str,
) -> &'a UsageTotals {
    all.iter()
        .find(|t| {
            (
                t.project_id.as_deref(),
                t.client_id.as_deref(),
                t.host.as_deref(),
            ) == (Some(project), Some(client), Some(host))
        })
        .unwrap_or_else(|| panic!("no totals for {project}/{client}/{host} in {all:?}"))
}

pub async fn cache_hits_and_savings_are_stored_and_summed(store: &dyn Store) {
    let day = 86_400_000;
    let mut charged = rec(700, &[K, K2]);
    charged.at_ms = Some(T0 + 1);
    let b = batch(
        "envoy-a",
        1,
        vec![
            charged.clone(),
            hit(2000, "sales-ai", "sales-agent", Some(T0 + 2)),
            rec(300, &[K]),
        ],
    );
    store.sync(b.clone()).await.unwrap();
    // Another client of the project, another batch; one hit settled a day later; one record
    // without `at` counts at its commit time (T0).
    store
        .sync(batch(
            "envoy-b",
            1,
            vec![
                hit(50, "sales-ai", "bot", Some(T0 + 3)),
                hit(9, "sales-ai", "bot", None),
            ],
        ))
        .await
        .unwrap();
    store
        .sync(batch(
            "envoy-b",
            2,
            vec![hit(70_000, "sales-ai", "bot", Some(T0 + day))],
        ))
        .await
        .unwrap();
    // A retried batch adds nothing, its hits included.
    assert!(store.sync(b).await.unwrap().duplicate);
    assert_eq!(spent(store, K).await, 1000, "hits charge no counter");

    let all = store.usage_totals(T0, T0 + day).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    let agent_openai = totals_of(&all, "sales-ai", "sales-agent", "api.openai.com");
    assert_eq!(
        (
            agent_openai.requests,
            agent_openai.cost,
            agent_openai.cache_hits,
            agent_openai.savings
        ),
        (2, 1000, 0, 0)
    );
    let agent_deepl = totals_of(&all, "sales-ai", "sales-agent", "api.deepl.com");
    assert_eq!(
        (
            agent_deepl.requests,
            agent_deepl.cost,
            agent_deepl.cache_hits,
            agent_deepl.savings
        ),
        (1, 0, 1, 2000)
    );
    let bot = totals_of(&all, "sales-ai", "bot", "api.deepl.com");
    assert_eq!(
        (bot.requests, bot.cache_hits, bot.savings),
        (2, 2, 59),
        "the next day's hit is outside [T0, T0 + day)"
    );

    let next_day = store.usage_totals(T0 + day, T0 + 2 * day).await.unwrap();
    assert_eq!(next_day.len(), 1);
    assert_eq!((next_day[0].cache_hits, next_day[0].savings), (1, 70_000));
    assert!(
        store.usage_totals(T0 - day, T0).await.unwrap().is_empty(),
        "the range is half-open and nothing is earlier"
    );
    assert_eq!(
        store.usage_totals(T0 + 2, T0 + 3).await.unwrap().len(),
        1,
        "exactly the record at T0 + 2"
    );
}

pub async fn savings_above_the_column_are_refused_whole(store: &dyn Store) {
    let too_much = u64::try_from(i64::MAX).unwrap() + 1;
    let bad = store
        .sync(batch(
            "envoy-a",
            1,
            vec![rec(5, &[K]), hit(too_much, "sales-ai", "bot", Some(T0))],
        ))
        .await;
    assert!(matches!(bad, Err(StoreError::OutOfRange(_))), "{bad:?}");
    assert_eq!(spent(store, K).await, 0, "rolled back");
    assert!(store.usage_totals(0, i64::MAX).await.unwrap().is_empty());
    assert!(
        !store
            .sync(batch("envoy-a", 1, vec![rec(5, &[K])]))
            .await
            .unwrap()
            .duplicate,
        "seq 1 was not marked seen"
    );
}

pub async fn a_batch_committed_before_the_upgrade_stays_a_duplicate(store: &dyn Store) {
    // An older sidecar committed this batch under the digest of the fields it knew; the answer
    // was lost, and the filter resends it to the upgraded sidecar.
    let mut old = batch(
        "envoy-a",
        1,
        vec![rec(10, &[K]), hit(2000, "sales-ai", "bot", Some(T0))],
    );
    old.digest = "digest-without-cache-fields".into();
    store.sync(old.clone()).await.unwrap();
    let mut resent = old.clone();
    resent.digest = "digest-with-cache-fields".into();
    resent.legacy_digest = Some("digest-without-cache-fields".into());
    assert!(store.sync(resent.clone()).await.unwrap().duplicate);
    assert_eq!(spent(store, K).await, 10);
    // The legacy digest is a fallback, not a wildcard: other content is still refused.
    resent.legacy_digest = Some("something-else".into());
    let reused = store.sync(resent).await;
    assert!(
        matches!(reused, Err(StoreError::SeqReused { .. })),
        "{reused:?}"
    );
}

pub async fn grants_never_exceed_the_room(store: &dyn Store) {
    let a = store.sync(ask("a", 1, K, 1000, 800)).await.unwrap();
    assert_eq!(granted(&a, K), 800);
    let b = store.sync(ask("b", 1, K, 1000, 800)).await.unwrap();
    assert_eq!(granted(&b, K), 200, "only what A does not hold");
    let a = store.sync(ask("a", 2, K, 1000, 800)).await.unwrap();
    assert_eq!(granted(&a, K), 800, "asking again is idempotent");
    // A spends 300 of its slice: it moves from the lease to `spent`.
    let a = store
        .sync(SyncWrite {
            exceptions: Vec::new(),
            audit: Vec::new(),
            leases: vec![LeaseAsk {
                counter: K.into(),
                limit: 1000,
                want: 0,
            }],
            ..batch("a", 3, vec![rec(300, &[K])])
        })
        .await
        .unwrap();
    assert_eq!((granted(&a, K), a.leases[0].spent), (500, 300));
    let b = store.sync(ask("b", 2, K, 1000, 800)).await.unwrap();
    assert_eq!(granted(&b, K), 200, "spent + held = limit: nothing free");
    // A hands its slice back; B can have it.
    store
        .sync(SyncWrite {
            exceptions: Vec::new(),
            audit: Vec::new(),
            release: vec![K.into()],
            ..batch("a", 4, vec![])
        })
        .await
        .unwrap();
    let b = store.sync(ask("b", 3, K, 1000, 800)).await.unwrap();
    assert_eq!(granted(&b, K), 700);
    let state = store.counters(T0).await.unwrap();
    let k = state.iter().find(|c| c.counter == K).unwrap();
    assert_eq!(k.spent, 300);
    assert_eq!(
        k.leases
            .iter()
            .map(|l| (l.instance_id.as_str(), l.granted))
            .collect::<Vec<_>>(),
        vec![("b", 700)]
    );
    assert_eq!(
        k.spent + k.leases.iter().map(|l| l.granted).sum::<u64>(),
        1000
    );
}

pub async fn usage_above_the_slice_is_charged_in_full(store: &dyn Store) {
    let a = store.sync(ask("a", 1, K, 1000, 100)).await.unwrap();
    assert_eq!(granted(&a, K), 100);
    // The actual cost (150) exceeded what A held: charged in full, the lease runs dry.
    let a = store
        .sync(SyncWrite {
            exceptions: Vec::new(),
            audit: Vec::new(),
            leases: vec![LeaseAsk {
                counter: K.into(),
                limit: 1000,
                want: 100,
            }],
            ..batch("a", 2, vec![rec(150, &[K])])
        })
        .await
        .unwrap();
    assert_eq!(a.leases[0].spent, 150);
    assert_eq!(
        granted(&a, K),
        100,
        "topped up again from the free room (1000 - 150)"
    );
}

pub async fn expired_leases_return_their_room(store: &dyn Store) {
    store.sync(ask("a", 1, K, 1000, 900)).await.unwrap();
    let b = store.sync(ask("b", 1, K, 1000, 900)).await.unwrap();
    assert_eq!(granted(&b, K), 100);
    // A stops syncing; once its lease expired B may have the room.
    let mut later = ask("b", 2, K, 1000, 900);
    later.now_ms = T0 + TTL;
    let b = store.sync(later).await.unwrap();
    assert_eq!(granted(&b, K), 900);
    assert_eq!(b.leases[0].expires_at_ms, T0 + 2 * TTL);
    let listed = store.counters(T0 + TTL).await.unwrap();
    assert_eq!(listed[0].leases.len(), 1, "the expired lease is not listed");
}

pub async fn concurrent_grants_share_the_room(store: &dyn Store) {
    let (r1, r2, r3, r4, r5, r6) = tokio::join!(
        store.sync(ask("i1", 1, K, 1000, 300)),
        store.sync(ask("i2", 1, K, 1000, 300)),
        store.sync(ask("i3", 1, K, 1000, 300)),
        store.sync(ask("i4", 1, K, 1000, 300)),
        store.sync(ask("i5", 1, K, 1000, 300)),
        store.sync(ask("i6", 1, K, 1000, 300)),
    );
    let total: u64 = [r1, r2, r3, r4, r5, r6]
        .iter()
        .map(|r| granted(r.as_ref().unwrap(), K))
        .sum();
    assert_eq!(total, 1000, "all the room, and not a micro-USD more");
}

pub async fn concurrent_duplicates_count_once(store: &dyn Store) {
    let b = batch("a", 1, vec![rec(10, &[K])]);
    let (r1, r2, r3) = tokio::join!(
        store.sync(b.clone()),
        store.sync(b.clone()),
        store.sync(b.clone())
    );
    let dups = [r1, r2, r3]
        .iter()
        .filter(|r| r.as_ref().unwrap().duplicate)
        .count();
    assert_eq!(dups, 2);
    assert_eq!(spent(store, K).await, 10);
}

pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
    assert!(["sqlite", "postgres"].contains(&store.backend()));
}

// --- approvals ---

fn approval(id: &str, binding: &str, expires_at_ms: i64) -> Approval {
    Approval {
        id: id.into(),
        project_id: "sales-ai".into(),
        client_id: "sales-agent".into(),
        method: "POST".into(),
        authority: "api.openai.com".into(),
        path: "/v1/chat/completions".into(),
        body_sha256: "ab".repeat(32),
        binding: binding.into(),
        estimated_cost: 600_000,
        policy_version: 3,
        status: ApprovalStatus::Pending,
        justification: Some("quarterly report".into()),
        requested_by: Some("agent@acme.com".into()),
        callback_url: None,
        created_at_ms: T0,
        expires_at_ms,
        decided_by: None,
        decision_comment: None,
        decided_at_ms: None,
        used_at_ms: None,
    }
}

fn ask_use(id: &str, binding: &str, now_ms: i64) -> ConsumeAsk {
    ConsumeAsk {
        id: id.into(),
        binding: binding.into(),
        estimated_cost: 600_000,
        policy_version: 3,
        now_ms,
    }
}

fn decision(id: &str, approve: bool, at_ms: i64) -> ApprovalDecision {
    ApprovalDecision {
        id: id.into(),
        approve,
        by: "lead@acme.com".into(),
        comment: Some("ok".into()),
        at_ms,
    }
}

/// Polls every future until all are done: concurrent on one task, and on PostgreSQL each
/// holds its own pooled connection, so the database sees them at once.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

pub async fn approvals_move_pending_approved_used(store: &dyn Store) {
    let b = "b1".repeat(32);
    let exp = T0 + 86_400_000;
    store
        .create_approval(approval("apr_a", &b, exp))
        .await
        .unwrap();
    store
        .create_approval(approval("apr_b", &b, exp))
        .await
        .unwrap();
    assert_eq!(
        store.approval("apr_a".into()).await.unwrap().unwrap(),
        approval("apr_a", &b, exp)
    );
    assert!(store.approval("apr_nope".into()).await.unwrap().is_none());
    assert_eq!(store.pending_approvals(T0).await.unwrap(), 2);
    assert_eq!(
        store
            .approvals(Some(ApprovalStatus::Pending), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    // Pending: not usable yet.
    let early = store
        .consume_approval(ask_use("apr_a", &b, T0 + 1))
        .await
        .unwrap();
    assert!(
        matches!(early, ConsumeOutcome::Refused(Refusal::Pending, Some(_))),
        "{early:?}"
    );

    let decided = store
        .decide_approval(decision("apr_a", true, T0 + 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(
        (
            decided.decided_by.as_deref(),
            decided.decision_comment.as_deref(),
            decided.decided_at_ms
        ),
        (Some("lead@acme.com"), Some("ok"), Some(T0 + 60_000))
    );
    assert!(
        store
            .decide_approval(decision("apr_a", false, T0 + 61_000))
            .await
            .unwrap()
            .is_none(),
        "decided once"
    );
    assert_eq!(store.pending_approvals(T0 + 61_000).await.unwrap(), 1);

    // Another request, another policy version, a higher estimate: mismatch, and still usable.
    let other = store
        .consume_approval(ask_use("apr_a", &"cc".repeat(32), T0 + 2))
        .await
        .unwrap();
    assert!(
        matches!(other, ConsumeOutcome::Refused(Refusal::Mismatch(_), _)),
        "{other:?}"
    );
    let newer = store
        .consume_approval(ConsumeAsk {
            policy_version: 4,
            ..ask_use("apr_a", &b, T0 + 2)
        })
        .await
        .unwrap();
    assert!(
        matches!(newer, ConsumeOutcome::Refused(Refusal::Mismatch(_), _)),
        "{newer:?}"
    );
    let dearer = store
        .consume_approval(ConsumeAsk {
            estimated_cost: 600_001,
            ..ask_use("apr_a", &b, T0 + 2)
        })
        .await
        .unwrap();
    assert!(
        matches!(dearer, ConsumeOutcome::Refused(Refusal::Mismatch(_), _)),
        "{dearer:?}"
    );
    let unknown = store
        .consume_approval(ask_use("apr_nope", &b, T0 + 2))
        .await
        .unwrap();
    assert_eq!(unknown, ConsumeOutcome::Refused(Refusal::Unknown, None));

    // A cheaper replay of the same request is fine (the approver approved up to the estimate).
    let used = store
        .consume_approval(ConsumeAsk {
            estimated_cost: 500_000,
            ..ask_use("apr_a", &b, T0 + 70_000)
        })
        .await
        .unwrap();
    let ConsumeOutcome::Consumed(a) = used else {
        panic!("{used:?}")
    };
    assert_eq!(
        (a.status, a.used_at_ms),
        (ApprovalStatus::Used, Some(T0 + 70_000))
    );
    let again = store
        .consume_approval(ask_use("apr_a", &b, T0 + 70_001))
        .await
        .unwrap();
    assert!(
        matches!(again, ConsumeOutcome::Refused(Refusal::Used, _)),
        "{again:?}"
    );

    // Denied stays denied.
    store
        .decide_approval(decision("apr_b", false, T0 + 5))
        .await
        .unwrap()
        .unwrap();
    let denied = store
        .consume_approval(ask_use("apr_b", &b, T0 + 6))
        .await
        .unwrap();
    assert!(
        matches!(denied, ConsumeOutcome::Refused(Refusal::Denied, _)),
        "{denied:?}"
    );
    let listed = store.approvals(None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        store
            .approvals(Some(ApprovalStatus::Used), 10)
            .await
            .unwrap()[0]
            .id,
        "apr_a"
    );
}

pub async fn approvals_expire(store: &dyn Store) {
    let b = "b2".repeat(32);
    store
        .create_approval(approval("apr_p", &b, T0 + 1_000))
        .await
        .unwrap();
    store
        .create_approval(approval("apr_q", &b, T0 + 1_000))
        .await
        .unwrap();
    store
        .decide_approval(decision("apr_q", true, T0 + 10))
        .await
        .unwrap()
        .unwrap();
    // At the expiry instant it is over: neither decided nor used.
    assert!(store
        .decide_approval(decision("apr_p", true, T0 + 1_000))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.pending_approvals(T0 + 1_000).await.unwrap(), 0);
    let late = store
        .consume_approval(ask_use("apr_q", &b, T0 + 1_000))
        .await
        .unwrap();
    assert!(
        matches!(late, ConsumeOutcome::Refused(Refusal::Expired, _)),
        "{late:?}"
    );
    let late = store
        .consume_approval(ask_use("apr_p", &b, T0 + 1_000))
        .await
        .unwrap();
    assert!(
        matches!(late, ConsumeOutcome::Refused(Refusal::Expired, _)),
        "{late:?}"
    );
}

pub async fn concurrent_replays_let_exactly_one_through(store: &dyn Store) {
    let b = "b3".repeat(32);
    store
        .create_approval(approval("apr_c", &b, T0 + 86_400_000))
        .await
        .unwrap();
    store
        .decide_approval(decision("apr_c", true, T0 + 1))
        .await
        .unwrap()
        .unwrap();
    let outs = join_all(
        (0..20)
            .map(|_| store.consume_approval(ask_use("apr_c", &b, T0 + 2)))
            .collect(),
    )
    .await;
    let won = outs
        .iter()
        .filter(|o| matches!(o, Ok(ConsumeOutcome::Consumed(_))))
        .count();
    let used = outs
        .iter()
        .filter(|o| matches!(o, Ok(ConsumeOutcome::Refused(Refusal::Used, _))))
        .count();
    assert_eq!((won, used), (1, 19), "{outs:?}");
}

pub async fn concurrent_decisions_have_one_winner(store: &dyn Store) {
    let b = "b4".repeat(32);
    store
        .create_approval(approval("apr_d", &b, T0 + 86_400_000))
        .await
        .unwrap();
    let outs = join_all(
        (0..10)
            .map(|i| store.decide_approval(decision("apr_d", i % 2 == 0, T0 + 1)))
            .collect(),
    )
    .await;
    let winners: Vec<_> = outs.into_iter().filter_map(|o| o.unwrap()).collect();
    assert_eq!(winners.len(), 1);
    let stored = store.approval("apr_d".into()).await.unwrap().unwrap();
    assert_eq!(
        stored.status, winners[0].status,
        "the stored decision is the winner's"
    );
}

// --- anomalies (anomaly.rs; issue 16) ---

/// Ten days of usage synced through the store, a steady $0.50/h per hour of the day, then one
/// $6 hour: detection over what the store returns finds the spike, and a second run stores
/// nothing twice.
pub async fn detection_over_the_ledger_finds_an_injected_spike(store: &dyn Store) {
    use crate::anomaly::{run_once, Schedule, HOUR_MS};
    let start = T0 - T0.rem_euclid(HOUR_MS);
    let hours = 10 * 24;
    let mut seq = 0;
    for h in 0..hours {
        let at = start + h * HOUR_MS;
        // Five requests of $0.10 (the last hour: five of $1.20).
        let each = if h == hours - 1 { 1_200_000 } else { 100_000 };
        let usage = (0..5)
            .map(|i| UsageRecord {
                at_ms: Some(at + i * 60_000),
                ..rec(each, &[K])
            })
            .collect();
        seq += 1;
        store.sync(batch("anomaly-test", seq, usage)).await.unwrap();
    }
    let hourly = store
        .usage_hourly(start, start + hours * HOUR_MS)
        .await
        .unwrap();
    assert_eq!(hourly.len(), usize::try_from(hours).unwrap());
    let last = hourly
        .iter()
        .find(|r| r.hour_ms == start + (hours - 1) * HOUR_MS)
        .unwrap();
    assert_eq!(
        (last.requests, last.cost, last.max_amount),
        (5, 6_000_000, 1_200_000)
    );

    let now = start + hours * HOUR_MS + 60_000;
    let schedule = Schedule::default();
    let stored = run_once(store, now, &schedule).await.unwrap();
    assert!(!stored.is_empty(), "the spike is stored");
    let found = store
        .anomalies(AnomalyQuery {
            project_id: Some("sales-ai".into()),
            since_ms: None,
            until_ms: None,
            limit: 100,
        })
        .await
        .unwrap();
    let spike = found
        .iter()
        .find(|a| a.kind == AnomalyKind::SpendSpike && a.client_id.is_none())
        .expect("a project spend spike");
    assert_eq!(spike.window_from_ms, start + (hours - 1) * HOUR_MS);
    assert_eq!((spike.observed, spike.baseline), (6_000_000, 500_000));
    assert_eq!(spike.unit, Unit::UsdMicros);
    assert!(
        spike.explanation.contains("spent $6.00"),
        "{}",
        spike.explanation
    );
    assert!(spike.score > 0.0);
    // Nothing else in the steady hours.
    assert!(
        found
            .iter()
            .all(|a| a.window_from_ms == spike.window_from_ms),
        "{found:?}"
    );

    // Again: nothing new, nothing duplicated.
    assert_eq!(
        run_once(store, now + 1_000, &schedule).await.unwrap(),
        vec![]
    );
    let again = store
        .anomalies(AnomalyQuery {
            project_id: None,
            since_ms: None,
            until_ms: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(again.len(), found.len());
    assert_eq!(stored.len(), found.len());
    // Filters: another project, and a `since` after the window.
    let none = store
        .anomalies(AnomalyQuery {
            project_id: Some("other".into()),
            since_ms: None,
            until_ms: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let later = store
        .anomalies(AnomalyQuery {
            project_id: None,
            since_ms: Some(spike.window_to_ms),
            until_ms: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(later.is_empty());
    let one = store
        .anomalies(AnomalyQuery {
            project_id: None,
            since_ms: Some(spike.window_from_ms),
            until_ms: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);

    // `until`: windows starting before it.
    let before = store
        .anomalies(AnomalyQuery {
            project_id: None,
            since_ms: None,
            until_ms: Some(spike.window_from_ms),
            limit: 10,
        })
        .await
        .unwrap();
    assert!(before.is_empty());
}

/// `anomalies_in`: the windows overlapping a range, counted per (project, client, subject,
/// kind), with the newest few of each (project, client, subject) newest first.
pub async fn anomalies_in_a_range_are_counted_and_the_newest_kept(store: &dyn Store) {
    use crate::store::{Anomaly, AnomalyCount, AnomalyKind, Unit};
    const H: i64 = 3_600_000;
    let a = |kind, project: &str, client: Option<&str>, subject: Option<&str>, hour: i64| Anomaly {
        kind,
        project_id: project.into(),
        client_id: client.map(str::to_string),
        subject: subject.map(str::to_string),
        score: 7.5,
        baseline: 100,
        observed: 1000 + u64::try_from(hour).unwrap(),
        unit: Unit::UsdMicros,
        window_from_ms: T0 + hour * H,
        window_to_ms: T0 + (hour + 1) * H,
        explanation: format!("hour {hour}"),
        detected_at_ms: T0 + 100 * H,
    };
    let stored = vec![
        a(AnomalyKind::SpendSpike, "p", None, None, 1),
        a(AnomalyKind::SpendSpike, "p", None, None, 2),
        a(AnomalyKind::SpendSpike, "p", None, None, 3),
        a(AnomalyKind::RequestSpike, "p", None, None, 3),
        a(
            AnomalyKind::NewEndpoint,
            "p",
            Some("c"),
            Some("h.example"),
            2,
        ),
        a(AnomalyKind::SpendSpike, "q", Some("d"), None, 5),
    ];
    assert_eq!(store.put_anomalies(stored).await.unwrap().len(), 6);

    let mut r = store.anomalies_in(T0, T0 + 10 * H, 2).await.unwrap();
    r.counts.sort_by(|x, y| {
        (&x.project_id, &x.client_id, &x.subject, x.kind).cmp(&(
            &y.project_id,
            &y.client_id,
            &y.subject,
            y.kind,
        ))
    });
    let count = |p: &str, c: Option<&str>, s: Option<&str>, kind, count| AnomalyCount {
        project_id: p.into(),
        client_id: c.map(str::to_string),
        subject: s.map(str::to_string),
        kind,
        count,
    };
    assert_eq!(
        r.counts,
        vec![
            count("p", None, None, AnomalyKind::SpendSpike, 3),
            count("p", None, None, AnomalyKind::RequestSpike, 1),
            count(
                "p",
                Some("c"),
                Some("h.example"),
                AnomalyKind::NewEndpoint,
                1
            ),
            count("q", Some("d"), None, AnomalyKind::SpendSpike, 1),
        ]
    );
    // Two of (p, -, -): hour 3's two kinds (by kind name); then the others, newest window
    // first.
    let got: Vec<(&str, i64, AnomalyKind)> = r
        .latest
        .iter()
        .map(|x| (x.project_id.as_str(), (x.window_from_ms - T0) / H, x.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q", 5, AnomalyKind::SpendSpike),
            ("p", 3, AnomalyKind::RequestSpike),
            ("p", 3, AnomalyKind::SpendSpike),
            ("p", 2, AnomalyKind::NewEndpoint),
        ]
    );
    assert_eq!(r.latest[3].subject.as_deref(), Some("h.example"));
    assert_eq!(r.latest[3].observed, 1002);

    // Overlap: [2h30, 3h) meets the windows of hour 2 only (hour 3 starts at its end).
    let r = store
        .anomalies_in(T0 + 2 * H + H / 2, T0 + 3 * H, 10)
        .await
        .unwrap();
    let n: u64 = r.counts.iter().map(|c| c.count).sum();
    assert_eq!((n, r.latest.len()), (2, 2), "{r:?}");
    assert!(r.latest.iter().all(|x| x.window_from_ms == T0 + 2 * H));
    // A range after them all: nothing.
    let r = store
        .anomalies_in(T0 + 6 * H, T0 + 7 * H, 10)
        .await
        .unwrap();
    assert_eq!(r, crate::store::AnomalyRange::default());
}

// --- alerts (alert.rs, crate::alerts) ---

fn slack() -> crate::alerts::AlertTarget {
    crate::alerts::AlertTarget {
        channel: "slack".into(),
        target: "http://127.0.0.1:9/slack".into(),
    }
}

fn email() -> crate::alerts::AlertTarget {
    crate::alerts::AlertTarget {
        channel: "email".into(),
        target: "cfo@acme.com".into(),
    }
}

/// 80 % of `limit` on `counter`, alerts to Slack.
fn budget_rules(counter: &str, limit: u64) -> crate::alerts::AlertRules {
    crate::alerts::AlertRules {
        threshold_ppm: Some(800_000),
        high_cost: None,
        limits: [(counter.to_string(), limit)].into_iter().collect(),
        policy_violation: false,
        targets: vec![slack()],
    }
}

async fn alert_keys(store: &dyn Store) -> Vec<String> {
    let mut keys: Vec<String> = store
        .alerts(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    keys.sort();
    keys
}

pub async fn budget_alerts_fire_once_per_crossing(store: &dyn Store) {
    let rules = budget_rules(K, 1000);
    let go = |w: SyncWrite| store.sync_alerting(w, rules.clone());
    // Below the mark: nothing, however many requests.
    assert!(go(batch("a", 1, vec![rec(500, &[K, K2])]))
        .await
        .unwrap()
        .alerts_raised
        .is_empty());
    assert!(go(batch("a", 2, vec![rec(200, &[K]), rec(99, &[K])]))
        .await
        .unwrap()
        .alerts_raised
        .is_empty());
    // 799 → 800: the batch that reaches 80 % raises one.
    let out = go(batch("a", 3, vec![rec(1, &[K, K2])])).await.unwrap();
    assert_eq!(out.alerts_raised, vec!["budgetThreshold".to_string()]);
    // Its retry is a duplicate: nothing new.
    let again = go(batch("a", 3, vec![rec(1, &[K, K2])])).await.unwrap();
    assert!(again.duplicate && again.alerts_raised.is_empty());
    // Between the marks, another instance: nothing.
    assert!(go(batch("b", 1, vec![rec(199, &[K])]))
        .await
        .unwrap()
        .alerts_raised
        .is_empty());
    // 999 → 1000: the 100 % alert, separate from the 80 % one.
    let out = go(batch("b", 2, vec![rec(1, &[K])])).await.unwrap();
    assert_eq!(out.alerts_raised.len(), 1);
    // Past the limit: nothing more.
    assert!(go(batch("b", 3, vec![rec(5000, &[K])]))
        .await
        .unwrap()
        .alerts_raised
        .is_empty());

    let list = store.alerts(100).await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let mut by_ppm: Vec<_> = list
        .iter()
        .map(|a| (a.threshold_ppm, a.spent, a.limit))
        .collect();
    by_ppm.sort();
    assert_eq!(
        by_ppm,
        vec![
            (Some(800_000), Some(800), Some(1000)),
            (Some(1_000_000), Some(1000), Some(1000))
        ]
    );
    for a in &list {
        assert_eq!(a.counter.as_deref(), Some(K));
        assert_eq!(a.state, "pending");
        assert_eq!(a.deliveries.len(), 1);
        assert_eq!(
            (
                a.deliveries[0].channel.as_str(),
                a.deliveries[0].status.as_str()
            ),
            ("slack", "pending")
        );
    }
    // K2 has no budget in the rules: never an alert for it.
    assert!(list.iter().all(|a| a.counter.as_deref() != Some(K2)));

    // A new period is a new counter: it re-arms, and one batch jumping past both marks
    // raises both (two alerts, not one).
    let next = "org.monthly/2026-12";
    let out = store
        .sync_alerting(
            batch("a", 4, vec![rec(1200, &[next])]),
            budget_rules(next, 1000),
        )
        .await
        .unwrap();
    assert_eq!(out.alerts_raised.len(), 2);
    assert_eq!(alert_keys(store).await.len(), 4);
}

pub async fn a_high_cost_record_raises_one_alert(store: &dyn Store) {
    let rules = crate::alerts::AlertRules {
        high_cost: Some(1000),
        targets: vec![slack(), email()],
        ..Default::default()
    };
    let w = batch(
        "a",
        1,
        vec![rec(999, &[K]), rec(1000, &[K]), rec(5000, &[])],
    );
    let out = store.sync_alerting(w.clone(), rules.clone()).await.unwrap();
    assert_eq!(out.alerts_raised, vec!["highCostRequest".to_string(); 2]);
    assert!(store
        .sync_alerting(w, rules)
        .await
        .unwrap()
        .alerts_raised
        .is_empty());
    let list = store.alerts(100).await.unwrap();
    let mut amounts: Vec<_> = list.iter().map(|a| a.amount).collect();
    amounts.sort();
    assert_eq!(amounts, vec![Some(1000), Some(5000)]);
    assert!(list.iter().all(|a| a.deliveries.len() == 2));

    // Raised outside a sync (an approval's estimate): once per key.
    let mut alert = crate::alerts::detect(
        &crate::alerts::AlertRules {
            high_cost: Some(1),
            ..Default::default()
        },
        &[],
        &[rec(7, &[])],
        "x",
        1,
        T0,
    )
    .remove(0);
    alert.key = "highCostRequest/approval/apr_1".into();
    assert!(store.raise_alert(alert.clone()).await.unwrap());
    assert!(!store.raise_alert(alert).await.unwrap());
    let list = store.alerts(100).await.unwrap();
    assert_eq!(list.len(), 3);
    let no_targets = list.iter().find(|a| a.key.ends_with("apr_1")).unwrap();
    assert_eq!(no_targets.state, "done", "no channel: nothing to deliver");
    assert_eq!(
        store
            .claim_alerts("s".into(), T0, 1000, 10)
            .await
            .unwrap()
            .len(),
        2,
        "only the alerts with channels are claimed"
    );
}

pub async fn alert_claims_are_exclusive_and_retried(store: &dyn Store) {
    let mut rules = budget_rules(K, 1000);
    rules.targets = vec![slack(), email()];
    store
        .sync_alerting(batch("a", 1, vec![rec(800, &[K])]), rules)
        .await
        .unwrap();

    let c1 = store
        .claim_alerts("s1".into(), T0, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(c1.len(), 1);
    let key = c1[0].key.clone();
    let channels: Vec<_> = c1[0]
        .pending
        .iter()
        .map(|p| p.target.channel.as_str())
        .collect();
    assert_eq!(channels, vec!["email", "slack"]);
    assert!(c1[0].text.contains("Spent: $0.000800"), "{}", c1[0].text);
    // Held by s1: s2 gets nothing, now or before the lease ends.
    assert!(store
        .claim_alerts("s2".into(), T0, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_alerts("s2".into(), T0 + 9_999, 10_000, 10)
        .await
        .unwrap()
        .is_empty());

    // Slack sent, e-mail failed: due again in 1 s, only e-mail.
    store
        .record_delivery(DeliveryUpdate {
            key: key.clone(),
            claimer: "s1".into(),
            now_ms: T0 + 10,
            next_attempt_ms: Some(T0 + 1_010),
            outcomes: vec![
                DeliveryOutcome {
                    channel: "slack".into(),
                    status: "sent".into(),
                    attempts: 1,
                    error: None,
                },
                DeliveryOutcome {
                    channel: "email".into(),
                    status: "retrying".into(),
                    attempts: 1,
                    error: Some("e-mail: connection refused".into()),
                },
            ],
        })
        .await
        .unwrap();
    assert!(store
        .claim_alerts("s2".into(), T0 + 1_009, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    let c2 = store
        .claim_alerts("s2".into(), T0 + 1_010, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0].pending.len(), 1);
    assert_eq!(
        (
            c2[0].pending[0].target.channel.as_str(),
            c2[0].pending[0].attempts
        ),
        ("email", 1)
    );
    let listed = store.alerts(10).await.unwrap();
    let email_state = listed[0]
        .deliveries
        .iter()
        .find(|d| d.channel == "email")
        .unwrap();
    assert_eq!(email_state.status, "retrying");
    assert_eq!(
        email_state.last_error.as_deref(),
        Some("e-mail: connection refused")
    );
    store
        .record_delivery(DeliveryUpdate {
            key: key.clone(),
            claimer: "s2".into(),
            now_ms: T0 + 1_020,
            next_attempt_ms: None,
            outcomes: vec![DeliveryOutcome {
                channel: "email".into(),
                status: "sent".into(),
                attempts: 2,
                error: None,
            }],
        })
        .await
        .unwrap();
    assert!(store
        .claim_alerts("s3".into(), T0 + 100_000, 10_000, 10)
        .await
        .unwrap()
        .is_empty());
    let a = &store.alerts(10).await.unwrap()[0];
    assert_eq!(a.state, "done");
    let got: Vec<_> = a
        .deliveries
        .iter()
        .map(|d| {
            (
                d.channel.as_str(),
                d.status.as_str(),
                d.attempts,
                d.sent_by.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("email", "sent", 2, Some("s2")),
            ("slack", "sent", 1, Some("s1"))
        ]
    );

    // A claimer that dies holding a claim: after its lease another sidecar delivers.
    store
        .sync_alerting(batch("a", 2, vec![rec(200, &[K])]), budget_rules(K, 1000))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_alerts("s1".into(), T0, 100, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .claim_alerts("s2".into(), T0 + 99, 100, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_alerts("s2".into(), T0 + 100, 100, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn concurrent_claims_hand_each_alert_to_one(store: &dyn Store) {
    let rules = crate::alerts::AlertRules {
        high_cost: Some(1),
        targets: vec![slack()],
        ..Default::default()
    };
    let usage: Vec<UsageRecord> = (0..20).map(|_| rec(5, &[])).collect();
    let out = store
        .sync_alerting(batch("a", 1, usage), rules)
        .await
        .unwrap();
    assert_eq!(out.alerts_raised.len(), 20);
    let futs: Vec<_> = (0..8)
        .map(|i| store.claim_alerts(format!("s{i}"), T0, 60_000, 4))
        .collect();
    let mut keys: Vec<String> = join_all(futs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap().into_iter().map(|c| c.key))
        .collect();
    let claimed = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(claimed, keys.len(), "an alert was claimed twice");
    assert_eq!(claimed, 20, "8 claimers × 4 cover all 20");
}

// --- the audit log ---

fn ev(kind: &str, at_ms: i64, cost: Option<u64>) -> AuditEvent {
    AuditEvent {
        project_id: Some("sales-ai".into()),
        client_id: Some("sales-agent".into()),
        cost,
        ..AuditEvent::new(kind, at_ms)
    }
    .actor("alice")
    .details(serde_json::json!({ "note": "ünïcode \"quoted\"", "n": 1 }))
}

async fn append_n(store: &dyn Store, n: i64) {
    for i in 1..=n {
        let u = u64::try_from(i).unwrap();
        store
            .audit_append(vec![ev("test.entry", T0 + i * 1000, Some(u * 100))])
            .await
            .unwrap();
    }
}

async fn verify(store: &dyn Store) -> serde_json::Value {
    crate::audit::verify(store).await.unwrap()
}

fn first_bad(v: &serde_json::Value) -> Option<i64> {
    v["firstBadRow"].as_i64()
}

pub async fn audit_appends_a_chain_and_pages(store: &dyn Store) {
    let empty = store.audit_head().await.unwrap();
    assert_eq!((empty.seq, empty.hash.as_str()), (0, crate::audit::GENESIS));
    assert_eq!(verify(store).await["ok"], true);
    append_n(store, 4).await;
    let two = store
        .audit_append(vec![
            ev("other", T0 + 5000, None),
            ev("other", T0 + 6000, None),
        ])
        .await
        .unwrap();
    assert_eq!(two.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6]);
    let all = store
        .audit_list(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(all[0].prev_hash, crate::audit::GENESIS);
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // What was stored reads back exactly (details round-trip through their canonical text).
    assert_eq!(all[2].event, ev("test.entry", T0 + 3000, Some(300)));
    let head = store.audit_head().await.unwrap();
    assert_eq!((head.seq, &head.hash), (6, &all[5].hash));
    // Pages: cursor = the last seq seen.
    let page = |after, limit| AuditQuery {
        after_seq: after,
        limit,
        ..AuditQuery::default()
    };
    let p1 = store.audit_list(page(0, 4)).await.unwrap();
    let p2 = store.audit_list(page(p1[3].seq, 4)).await.unwrap();
    assert_eq!(
        (p1.len(), p2.iter().map(|r| r.seq).collect::<Vec<_>>()),
        (4, vec![5, 6])
    );
    // Newest first: pages walk down with `before_seq` = the last seq seen.
    let down = |before, limit| AuditQuery {
        descending: true,
        before_seq: before,
        limit,
        ..AuditQuery::default()
    };
    let seqs = |rows: &[crate::audit::AuditRow]| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let d1 = store.audit_list(down(None, 4)).await.unwrap();
    let d2 = store.audit_list(down(Some(d1[3].seq), 4)).await.unwrap();
    assert_eq!((seqs(&d1), seqs(&d2)), (vec![6, 5, 4, 3], vec![2, 1]));
    let newest_other = store
        .audit_list(AuditQuery {
            kind: Some("other".into()),
            descending: true,
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(seqs(&newest_other), vec![6]);
    // Filters.
    let kind = store
        .audit_list(AuditQuery {
            kind: Some("other".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(kind.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 6]);
    let range = store
        .audit_list(AuditQuery {
            from_ms: Some(T0 + 2000),
            to_ms: Some(T0 + 4000),
            project_id: Some("sales-ai".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(range.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    let none = store
        .audit_list(AuditQuery {
            client_id: Some("nobody".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), v["rowsChecked"].as_u64()),
        (Some(true), Some(6)),
        "{v}"
    );
}

pub async fn audit_refuses_an_inexact_amount_whole(store: &dyn Store) {
    append_n(store, 1).await;
    let big = store
        .audit_append(vec![
            ev("ok", T0, Some(1)),
            ev("too.big", T0, Some(crate::audit::MAX_EXACT + 1)),
        ])
        .await;
    assert!(matches!(big, Err(StoreError::OutOfRange(_))), "{big:?}");
    assert_eq!(store.audit_head().await.unwrap().seq, 1);
    assert_eq!(verify(store).await["ok"], true);
}

pub async fn audit_logs_policy_versions_and_approvals(store: &dyn Store) {
    let meta = store
        .put_policy(NewPolicy {
            document: "{\"v\":1}".into(),
            author: "alice".into(),
            at_ms: T0,
            expected_version: None,
            audit: vec![AuditEvent::new("policy.updated", T0).actor("alice")],
        })
        .await
        .unwrap();
    // A refused write leaves no entry.
    let stale = store
        .put_policy(NewPolicy {
            document: "{\"v\":2}".into(),
            author: "bob".into(),
            at_ms: T0,
            expected_version: Some(0),
            audit: vec![AuditEvent::new("policy.updated", T0).actor("bob")],
        })
        .await;
    assert!(stale.is_err());
    store
        .create_approval(approval("ap1", "b1", T0 + 60_000))
        .await
        .unwrap();
    store
        .decide_approval(decision("ap1", true, T0 + 1))
        .await
        .unwrap()
        .unwrap();
    // A second decision loses and logs nothing.
    assert!(store
        .decide_approval(decision("ap1", false, T0 + 2))
        .await
        .unwrap()
        .is_none());
    let used = store
        .consume_approval(ask_use("ap1", "b1", T0 + 3))
        .await
        .unwrap();
    assert!(matches!(used, ConsumeOutcome::Consumed(_)));
    let again = store
        .consume_approval(ask_use("ap1", "b1", T0 + 4))
        .await
        .unwrap();
    assert!(matches!(again, ConsumeOutcome::Refused(..)));
    // Two that expire: one pending, one approved but never used.
    store
        .create_approval(approval("ap2", "b2", T0 + 10))
        .await
        .unwrap();
    store
        .create_approval(approval("ap3", "b3", T0 + 10))
        .await
        .unwrap();
    store
        .decide_approval(decision("ap3", true, T0 + 5))
        .await
        .unwrap()
        .unwrap();
    assert!(store.audit_sweep_expired(T0 + 9).await.unwrap().is_empty());
    let swept = store.audit_sweep_expired(T0 + 10).await.unwrap();
    assert_eq!(swept.len(), 2);
    assert!(
        store.audit_sweep_expired(T0 + 99).await.unwrap().is_empty(),
        "logged once"
    );

    let rows = store
        .audit_list(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.event.kind.as_str(),
                r.event.actor.as_deref(),
                r.event.approval_id.as_deref(),
                r.event.decision.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("policy.updated", Some("alice"), None, None),
            (
                "approval.created",
                Some("agent@acme.com"),
                Some("ap1"),
                Some("pending")
            ),
            (
                "approval.decided",
                Some("lead@acme.com"),
                Some("ap1"),
                Some("approved")
            ),
            (
                "approval.consumed",
                Some("sales-agent"),
                Some("ap1"),
                Some("used")
            ),
            (
                "approval.created",
                Some("agent@acme.com"),
                Some("ap2"),
                Some("pending")
            ),
            (
                "approval.created",
                Some("agent@acme.com"),
                Some("ap3"),
                Some("pending")
            ),
            (
                "approval.decided",
                Some("lead@acme.com"),
                Some("ap3"),
                Some("approved")
            ),
            (
                "approval.expired",
                Some("system"),
                Some("ap2"),
                Some("expired")
            ),
            (
                "approval.expired",
                Some("system"),
                Some("ap3"),
                Some("expired")
            ),
        ]
    );
    assert_eq!(rows[0].event.policy_version, Some(meta.version));
    assert_eq!(rows[1].event.estimate, Some(600_000));
    assert_eq!(verify(store).await["ok"], true);
}

pub async fn audit_verify_names_an_edited_row(store: &dyn Store) {
    append_n(store, 5).await;
    store
        .exec_raw("UPDATE audit_log SET cost = 999999 WHERE seq = 3")
        .await
        .unwrap();
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), first_bad(&v)),
        (Some(false), Some(3)),
        "{v}"
    );
    assert_eq!(v["rowsChecked"], 2);
    assert!(v["reason"].as_str().unwrap().contains("edited"), "{v}");
}

pub async fn audit_verify_names_a_deleted_row(store: &dyn Store) {
    append_n(store, 5).await;
    store
        .exec_raw("DELETE FROM audit_log WHERE seq = 3")
        .await
        .unwrap();
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), first_bad(&v)),
        (Some(false), Some(3)),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("missing"), "{v}");
}

pub async fn audit_verify_names_swapped_rows(store: &dyn Store) {
    append_n(store, 5).await;
    store
        .exec_raw(
            "UPDATE audit_log SET seq = -2 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 4;
             UPDATE audit_log SET seq = 4 WHERE seq = -2;",
        )
        .await
        .unwrap();
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), first_bad(&v)),
        (Some(false), Some(2)),
        "{v}"
    );
}

pub async fn audit_verify_names_a_cut_tail(store: &dyn Store) {
    append_n(store, 5).await;
    store
        .exec_raw("DELETE FROM audit_log WHERE seq = 5")
        .await
        .unwrap();
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), first_bad(&v)),
        (Some(false), Some(5)),
        "{v}"
    );
}

pub async fn audit_concurrent_appends_make_one_chain(store: &dyn Store) {
    let futs = (0..24_i64)
        .map(|i| {
            store.audit_append(vec![
                ev("parallel", T0 + i, Some(1)),
                ev("parallel", T0 + i, Some(2)),
            ])
        })
        .collect();
    for r in join_all(futs).await {
        r.unwrap();
    }
    let rows = store
        .audit_list(AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=48).collect::<Vec<_>>()
    );
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), v["rowsChecked"].as_u64()),
        (Some(true), Some(48)),
        "{v}"
    );
}

pub async fn audit_retention_keeps_the_chain_verifiable(store: &dyn Store) {
    append_n(store, 6).await; // at T0+1000 … T0+6000
    let run = |at| AuditEvent::new(crate::store::audit::RETENTION_KIND, at).actor("system");
    let pruned = store
        .audit_prune(T0 + 3500, run(T0 + 9000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pruned.seq, 7);
    assert_eq!(pruned.event.details["prunedThroughSeq"], 3);
    assert_eq!(pruned.event.details["deleted"], 3);
    let head = store.audit_head().await.unwrap();
    assert_eq!(
        (head.seq, head.pruned_through_seq, head.pruned_count),
        (7, 3, 3)
    );
    let rows = store
        .audit_list(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert_eq!(rows[0].prev_hash, head.pruned_through_hash);
    let v = verify(store).await;
    assert_eq!(
        (v["ok"].as_bool(), v["rowsChecked"].as_u64()),
        (Some(true), Some(4)),
        "{v}"
    );
    // Nothing older left: no run, no entry.
    assert!(store
        .audit_prune(T0 + 3500, run(T0 + 9500))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.audit_head().await.unwrap().seq, 7);
    // A second run prunes on from the checkpoint; tampering after it is still caught.
    store
        .audit_prune(T0 + 5500, run(T0 + 9900))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(verify(store).await["ok"], true);
    store
        .exec_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 6")
        .await
        .unwrap();
    assert_eq!(first_bad(&verify(store).await), Some(6));
}

/// Quarantined and suspect records (issue 20): written with their batch, exactly once; a
/// batch of nothing but a quarantined record still counts as a batch (seen once); listed
/// newest first.
pub async fn exceptions_are_kept_once_with_their_batch(store: &dyn Store) {
    let ex = |seq: i64, idx: i64, kind: &str| crate::store::UsageException {
        instance_id: "envoy-x".into(),
        seq,
        idx,
        kind: kind.into(),
        record: format!(r#"{{"amount":"{idx}"}}"#),
        reason: format!("usage[{idx}]: bad"),
        committed_at_ms: T0 + seq,
    };
    let mut b = batch("envoy-x", 1, vec![rec(100, &[K])]);
    b.exceptions = vec![ex(1, 1, "quarantined"), ex(1, 2, "suspect")];
    assert!(!store.sync(b.clone()).await.unwrap().duplicate);
    assert!(store.sync(b).await.unwrap().duplicate);
    assert_eq!(spent(store, K).await, 100);
    // Only a quarantined record: no usage, still exactly once.
    let mut only = batch("envoy-x", 2, vec![]);
    only.exceptions = vec![ex(2, 0, "quarantined")];
    assert!(!store.sync(only.clone()).await.unwrap().duplicate);
    assert!(store.sync(only).await.unwrap().duplicate);
    let all = store.usage_exceptions(10).await.unwrap();
    let got: Vec<(i64, i64, &str)> = all
        .iter()
        .map(|e| (e.seq, e.idx, e.kind.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (2, 0, "quarantined"),
            (1, 1, "quarantined"),
            (1, 2, "suspect")
        ]
    );
    assert_eq!(all[0].record, r#"{"amount":"0"}"#);
    assert_eq!(store.usage_exceptions(1).await.unwrap().len(), 1);
    assert_eq!(spent(store, K).await, 100);
}

/// Decision events ride their batch (issue 15): appended to the chain in its transaction,
/// once — a resend adds none, a decisions-only batch is exactly-once too, a reused seq
/// writes nothing — and the chain verifies.
pub async fn decision_rows_ride_their_batch_once(store: &dyn Store) {
    let ev = |at: i64, decision: &str| {
        let mut e = crate::audit::AuditEvent::new("decision", at);
        e.decision = Some(decision.into());
        e.project_id = Some("p".into());
        e.cost = Some(7);
        e
    };
    let mut b = batch("envoy-d", 1, vec![rec(100, &[K])]);
    b.audit = vec![ev(T0, "allow"), ev(T0 + 1, "deny")];
    assert!(!store.sync(b.clone()).await.unwrap().duplicate);
    assert!(store.sync(b.clone()).await.unwrap().duplicate);
    let mut reused = b;
    reused.digest = "other".into();
    reused.audit = vec![ev(T0 + 9, "allow")];
    assert!(matches!(
        store.sync(reused).await,
        Err(StoreError::SeqReused { .. })
    ));
    let mut only = batch("envoy-d", 2, vec![]);
    only.audit = vec![ev(T0 + 2, "cache_hit")];
    assert!(!store.sync(only.clone()).await.unwrap().duplicate);
    assert!(store.sync(only).await.unwrap().duplicate);
    assert_eq!(
        decision_rows(store).await,
        [
            (T0, "allow".to_string()),
            (T0 + 1, "deny".to_string()),
            (T0 + 2, "cache_hit".to_string())
        ]
    );
    assert_eq!(spent(store, K).await, 100);
    let v = crate::audit::verify(store).await.unwrap();
    assert_eq!(v["ok"], serde_json::json!(true), "{v}");
    assert_eq!(v["rowsChecked"], serde_json::json!(3), "{v}");
}

async fn decision_rows(store: &dyn Store) -> Vec<(i64, String)> {
    store
        .audit_list(crate::audit::AuditQuery {
            kind: Some("decision".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event.at_ms, r.event.decision.unwrap_or_default()))
        .collect()
}

/// The report's read of the decision log (issue 17): decisions by kind, denials by code,
/// gap rows and the events they stand for, rejected rows, requests and spend per model, and
/// the allowed decisions above their (version, client) bound without an approval id — only
/// inside `[from, to)`, strictly above the bound, never with an approval or without a bound.
pub async fn report_reads_sum_the_decision_log(store: &dyn Store) {
    use crate::store::{ApprovalBound, ModelTotals, ReportDecisionQuery};
    struct D {
        at: i64,
        decision: &'static str,
        code: Option<&'static str>,
        client: &'static str,
        model: Option<&'static str>,
        estimate: Option<u64>,
        cost: Option<u64>,
        approval: Option<&'static str>,
        version: i64,
    }
    let d = |at, decision, client, estimate: Option<u64>, version| D {
        at: T0 + at,
        decision,
        code: None,
        client,
        model: Some("gpt-4"),
        estimate,
        cost: None,
        approval: None,
        version,
    };
    let script = [
        D {
            cost: Some(500),
            ..d(0, "allow", "c1", Some(600), 1)
        }, // above 500: counted
        D {
            cost: Some(400),
            ..d(1, "allow", "c1", Some(500), 1)
        }, // at the bound: not
        D {
            approval: Some("ap1"),
            ..d(2, "allow", "c1", Some(900), 1)
        }, // approved
        D {
            approval: Some("ap1"),
            cost: Some(800),
            ..d(3, "replay", "c1", Some(900), 1)
        },
        D {
            model: None,
            cost: Some(9),
            ..d(4, "allow", "c2", Some(10_000), 1)
        }, // no bound
        d(5, "allow", "c1", Some(700), 2), // v2 bound 1000: not
        D {
            cost: Some(1_000),
            ..d(6, "allow", "c1", Some(1_001), 2)
        }, // counted
        D {
            code: Some("BUDGET_EXCEEDED"),
            ..d(7, "deny", "c1", Some(50), 1)
        },
        D {
            code: Some("BUDGET_EXCEEDED"),
            model: None,
            ..d(8, "deny", "c2", None, 1)
        },
        D {
            code: Some("ENDPOINT_BLOCKED"),
            model: None,
            ..d(9, "deny", "c2", None, 1)
        },
        D {
            cost: Some(0),
            ..d(10, "cache_hit", "c1", None, 1)
        },
        // Outside [T0, T0 + 100): before and at the end.
        D {
            code: Some("BUDGET_EXCEEDED"),
            ..d(-1, "deny", "c1", None, 1)
        },
        D {
            cost: Some(7),
            ..d(100, "allow", "c1", Some(5_000), 1)
        },
    ];
    let mut rows: Vec<crate::audit::AuditEvent> = script
        .iter()
        .map(|s| {
            let mut e = crate::audit::AuditEvent::new("decision", s.at);
            e.decision = Some(s.decision.into());
            e.code = s.code.map(Into::into);
            e.project_id = Some("p".into());
            e.client_id = Some(s.client.into());
            e.host = Some("api.openai.com".into());
            e.model = s.model.map(Into::into);
            e.estimate = s.estimate;
            e.cost = s.cost;
            e.approval_id = s.approval.map(Into::into);
            e.policy_version = Some(s.version);
            e
        })
        .collect();
    for (at, count) in [(0, 7u64), (1, 3), (-5, 100), (100, 100)] {
        let mut e = crate::audit::AuditEvent::new("decision.gap", T0 + at);
        e.details = serde_json::json!({ "from": T0 + at, "to": T0 + at + 1, "count": count });
        rows.push(e);
    }
    for at in [2, 200] {
        let mut e = crate::audit::AuditEvent::new("decision.rejected", T0 + at);
        e.details = serde_json::json!({ "reason": "decisions[0]: bad" });
        rows.push(e);
    }
    let mut b = batch("envoy-r", 1, vec![]);
    b.audit = rows;
    store.sync(b).await.unwrap();

    let bound = |v: i64, c: &str, above: u64| ApprovalBound {
        policy_version: v,
        client_id: c.into(),
        above,
    };
    let q = |bounds: Vec<ApprovalBound>, examples: u32| ReportDecisionQuery {
        from_ms: T0,
        to_ms: T0 + 100,
        bounds,
        examples,
    };
    let bounds = vec![
        bound(1, "c1", 500),
        bound(2, "c1", 1_000),
        bound(3, "c2", 1),
    ];
    let r = store.report_decisions(q(bounds.clone(), 5)).await.unwrap();
    let map = |v: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    assert_eq!(
        r.by_decision,
        map(&[("allow", 6), ("replay", 1), ("deny", 3), ("cache_hit", 1)])
    );
    assert_eq!(
        r.denials_by_code,
        map(&[("BUDGET_EXCEEDED", 2), ("ENDPOINT_BLOCKED", 1)])
    );
    assert_eq!((r.gap_rows, r.gap_events, r.rejected), (2, 10, 1));
    assert_eq!(
        r.by_model.get(&Some("gpt-4".to_string())),
        Some(&ModelTotals {
            requests: 8,
            cost: 500 + 400 + 800 + 1_000
        })
    );
    assert_eq!(
        r.by_model.get(&None),
        Some(&ModelTotals {
            requests: 3,
            cost: 9
        })
    );
    assert_eq!(r.by_model.len(), 2);
    assert_eq!(r.cited_versions, [1, 2]);
    assert_eq!(r.unapproved_above_bound, 2);
    let ex: Vec<(i64, u64, u64, i64)> = r
        .unapproved_examples
        .iter()
        .map(|e| (e.at_ms, e.estimate, e.above, e.policy_version))
        .collect();
    assert_eq!(ex, [(T0, 600, 500, 1), (T0 + 6, 1_001, 1_000, 2)]);
    assert_eq!(r.unapproved_examples[0].client_id.as_deref(), Some("c1"));
    assert_eq!(
        r.unapproved_examples[0].host.as_deref(),
        Some("api.openai.com")
    );
    // The example limit cuts the list, never the count.
    let one = store.report_decisions(q(bounds, 1)).await.unwrap();
    assert_eq!(one.unapproved_above_bound, 2);
    assert_eq!(one.unapproved_examples.len(), 1);
    // A lower bound for c2 catches its 10000 estimate; no bounds, nothing above one.
    let c2 = store
        .report_decisions(q(vec![bound(1, "c2", 9_999)], 5))
        .await
        .unwrap();
    assert_eq!(c2.unapproved_above_bound, 1);
    assert_eq!(c2.unapproved_examples[0].estimate, 10_000);
    let none = store.report_decisions(q(vec![], 5)).await.unwrap();
    assert_eq!(none.unapproved_above_bound, 0);
    assert!(none.unapproved_examples.is_empty());
    // An empty period has nothing.
    let empty = store
        .report_decisions(ReportDecisionQuery {
            from_ms: T0 + 1_000,
            to_ms: T0 + 2_000,
            bounds: vec![],
            examples: 5,
        })
        .await
        .unwrap();
    assert_eq!(empty, crate::store::ReportDecisions::default());
}

/// Decision rows read back in aggregate (issue 16): only kind `decision`, only `[from, to)`,
/// one group per (project, client, host, model, decision, code) with null fields kept apart,
/// the count including rows without a latency, and the SQL's histogram bins exactly what
/// `latency_floor` says, with each bin's largest latency.
pub async fn decision_stats_group_and_bin_decision_rows(store: &dyn Store) {
    use crate::store::decision_stats::latency_floor;
    let ev =
        |at: i64, model: Option<&str>, decision: &str, code: Option<&str>, lat: Option<i64>| {
            let mut e = crate::audit::AuditEvent::new("decision", at);
            e.project_id = Some("p".into());
            e.client_id = Some("c".into());
            e.host = Some("api.openai.com".into());
            e.model = model.map(Into::into);
            e.decision = Some(decision.into());
            e.code = code.map(Into::into);
            e.latency_ms = lat;
            e
        };
    let allow: Vec<i64> = vec![3, 99, 100, 109, 110, 250, 999, 1000, 1099, 123_456, 5, 5];
    let mut rows = Vec::new();
    for (i, l) in allow.iter().enumerate() {
        rows.push(ev(
            T0 + i64::try_from(i).unwrap(),
            Some("gpt-4o"),
            "allow",
            None,
            Some(*l),
        ));
    }
    // Same group, no latency: counted, not binned.
    rows.push(ev(T0 + 50, Some("gpt-4o"), "allow", None, None));
    rows.push(ev(T0 + 51, None, "deny", Some("BUDGET_EXCEEDED"), None));
    rows.push(ev(T0 + 52, None, "deny", Some("BUDGET_EXCEEDED"), None));
    rows.push(ev(T0 + 53, None, "deny", Some("ENDPOINT_BLOCKED"), None));
    rows.push(ev(T0 + 54, Some("gpt-4o"), "cache_hit", None, Some(2)));
    // Outside the range: at `to` (excluded) and before `from`.
    rows.push(ev(T0 + 1000, Some("gpt-4o"), "allow", None, Some(7)));
    rows.push(ev(T0 - 1, Some("gpt-4o"), "allow", None, Some(7)));
    let mut b = batch("envoy-s", 1, vec![]);
    b.audit = rows;
    b.audit
        .push(crate::audit::AuditEvent::new("decision.gap", T0 + 5));
    store.sync(b).await.unwrap();
    // Another kind in range, with every column a decision row has: not read.
    let mut other = ev(T0 + 6, Some("gpt-4o"), "allow", None, Some(4));
    other.kind = "approval.created".into();
    store.audit_append(vec![other]).await.unwrap();

    let mut got = store.decision_stats(T0, T0 + 1000).await.unwrap();
    got.sort_by(|a, b| (&a.decision, &a.code).cmp(&(&b.decision, &b.code)));
    let brief: Vec<_> = got
        .iter()
        .map(|s| {
            (
                s.decision.as_deref(),
                s.code.as_deref(),
                s.model.as_deref(),
                s.count,
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            (Some("allow"), None, Some("gpt-4o"), 13),
            (Some("cache_hit"), None, Some("gpt-4o"), 1),
            (Some("deny"), Some("BUDGET_EXCEEDED"), None, 2),
            (Some("deny"), Some("ENDPOINT_BLOCKED"), None, 1),
        ]
    );
    let a = &got[0];
    assert_eq!(
        (
            a.project_id.as_deref(),
            a.client_id.as_deref(),
            a.host.as_deref()
        ),
        (Some("p"), Some("c"), Some("api.openai.com"))
    );
    assert_eq!(a.latency.count, 12);
    assert_eq!(
        a.latency.sum_ms,
        allow
            .iter()
            .map(|&l| u64::try_from(l).unwrap())
            .sum::<u64>()
    );
    let mut want = std::collections::BTreeMap::<i64, (u64, i64)>::new();
    for &l in &allow {
        let e = want.entry(latency_floor(l)).or_insert((0, l));
        e.0 += 1;
        e.1 = e.1.max(l);
    }
    let bins: std::collections::BTreeMap<i64, (u64, i64)> = a
        .latency
        .bins
        .values()
        .map(|b| (b.floor_ms, (b.count, b.max_ms)))
        .collect();
    assert_eq!(bins, want);
    assert_eq!(bins.get(&120_000), Some(&(1, 123_456)));
    assert_eq!(bins.get(&100), Some(&(2, 109)));
    // p95 of 12: the 12th smallest (123456), exactly.
    assert_eq!(a.latency.quantile(95, 100), Some(123_456));
    // p50: the 6th smallest is 109, reported as its bin's largest, 109.
    assert_eq!(a.latency.quantile(50, 100), Some(109));
    assert_eq!(got[2].latency, crate::store::LatencyHistogram::default());
    assert!(
        store
            .decision_stats(T0 + 1000, T0 + 2000)
            .await
            .unwrap()
            .len()
            == 1
    );
    assert!(store
        .decision_stats(T0 + 2000, T0 + 3000)
        .await
        .unwrap()
        .is_empty());
}

/// `policyViolation` (issue 16): a sync carrying denials raises one alert per project, code and
/// window, in its transaction; the resent batch, and a later batch with more denials of the
/// same window, raise nothing (the key exists); a new window does; the trigger off raises none.
pub async fn violation_alerts_fire_once_per_project_code_and_window(store: &dyn Store) {
    const H: i64 = crate::alerts::VIOLATION_WINDOW_MS;
    let t = T0 / H * H;
    let deny = |at: i64, code: &str| {
        let mut e = crate::audit::AuditEvent::new("decision", at);
        e.project_id = Some("team".into());
        e.client_id = Some("bot".into());
        e.decision = Some("deny".into());
        e.code = Some(code.into());
        e
    };
    let rules = crate::alerts::AlertRules {
        policy_violation: true,
        targets: vec![slack()],
        ..Default::default()
    };
    let mut b = batch("v", 1, vec![]);
    b.audit = vec![
        deny(t + 1, "ENDPOINT_BLOCKED"),
        deny(t + 2, "ENDPOINT_BLOCKED"),
        deny(t + 3, "BUDGET_EXCEEDED"),
    ];
    let out = store.sync_alerting(b.clone(), rules.clone()).await.unwrap();
    assert_eq!(out.alerts_raised, vec!["policyViolation".to_string(); 2]);
    let again = store.sync_alerting(b, rules.clone()).await.unwrap();
    assert!(again.duplicate && again.alerts_raised.is_empty());
    let mut later = batch("v", 2, vec![]);
    later.audit = vec![
        deny(t + 10, "ENDPOINT_BLOCKED"),
        deny(t + H, "ENDPOINT_BLOCKED"),
    ];
    let out = store.sync_alerting(later, rules.clone()).await.unwrap();
    assert_eq!(
        out.alerts_raised,
        vec!["policyViolation".to_string()],
        "only the new hour"
    );
    let mut off = batch("v", 3, vec![]);
    off.audit = vec![deny(t + 2 * H, "ENDPOINT_BLOCKED")];
    let out = store
        .sync_alerting(off, crate::alerts::AlertRules::default())
        .await
        .unwrap();
    assert!(out.alerts_raised.is_empty(), "trigger off");
    assert_eq!(
        alert_keys(store).await,
        [
            format!("policyViolation/team/BUDGET_EXCEEDED/{t}"),
            format!("policyViolation/team/ENDPOINT_BLOCKED/{t}"),
            format!("policyViolation/team/ENDPOINT_BLOCKED/{}", t + H),
        ]
    );
    let list = store.alerts(10).await.unwrap();
    let first = list
        .iter()
        .find(|a| a.key == format!("policyViolation/team/ENDPOINT_BLOCKED/{t}"))
        .unwrap();
    assert!(
        first.subject.ends_with("ENDPOINT_BLOCKED ×2"),
        "{}",
        first.subject
    );
    assert_eq!(first.deliveries.len(), 1, "to the rules' channel");
    assert_eq!(first.project_id.as_deref(), Some("team"));
}

/// A sync batch of more decision rows than one INSERT carries (`audit::INSERT_CHUNK`): every
/// row lands once, in batch order, with its own fields, one contiguous chain that verifies
/// and that the next append continues. A batch with a bad row past the first chunk leaves
/// nothing at all: no row, no usage, not even its seq (the resend applies).
pub async fn audit_appends_many_rows_in_chunks(store: &dyn Store) {
    let chunk = super::audit::INSERT_CHUNK;
    let n = 2 * chunk + 7;
    let ev = |i: usize| {
        let mut e = crate::audit::AuditEvent::new("decision", T0 + i as i64);
        e.decision = Some(if i.is_multiple_of(3) { "deny" } else { "allow" }.into());
        e.cost = Some(i as u64 * 10);
        e.latency_ms = i.is_multiple_of(2).then_some(i as i64);
        e.details = serde_json::json!({ "index": i });
        e
    };
    let mut b = batch("envoy-chunks", 1, vec![rec(100, &[K])]);
    b.audit = (0..n).map(ev).collect();
    assert!(!store.sync(b).await.unwrap().duplicate);

    // A bad amount in the second chunk refuses the whole batch.
    let mut bad = batch("envoy-chunks", 2, vec![rec(5, &[K])]);
    bad.audit = (0..chunk + 3).map(ev).collect();
    if let Some(e) = bad.audit.get_mut(chunk + 1) {
        e.estimate = Some(crate::audit::MAX_EXACT + 1);
    }
    assert!(store.sync(bad.clone()).await.is_err());
    assert_eq!(store.audit_head().await.unwrap().seq, n as i64);
    assert_eq!(spent(store, K).await, 100);
    bad.audit.truncate(1);
    bad.digest.push_str("-fixed");
    assert!(!store.sync(bad).await.unwrap().duplicate);
    store
        .audit_append(vec![AuditEvent::new("policy.updated", T0).actor("alice")])
        .await
        .unwrap();

    let mut rows = Vec::new();
    loop {
        let page = store
            .audit_list(crate::audit::AuditQuery {
                after_seq: rows.last().map_or(0, |r: &crate::audit::AuditRow| r.seq),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        rows.extend(page);
    }
    assert_eq!(rows.len(), n + 2);
    let mut prev = "0".repeat(64);
    for (i, r) in rows.iter().take(n).enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.event, ev(i), "row {i}");
        assert_eq!(r.prev_hash, prev, "row {i}");
        prev.clone_from(&r.hash);
    }
    let tail: Vec<(i64, &str)> = rows
        .iter()
        .skip(n)
        .map(|r| (r.seq, r.event.kind.as_str()))
        .collect();
    assert_eq!(
        tail,
        [(n as i64 + 1, "decision"), (n as i64 + 2, "policy.updated")]
    );
    assert_eq!(spent(store, K).await, 105);
    let head = store.audit_head().await.unwrap();
    assert_eq!(
        (head.seq, Some(head.hash.as_str())),
        (n as i64 + 2, rows.last().map(|r| r.hash.as_str()))
    );
    let v = verify(store).await;
    assert_eq!(v["ok"], serde_json::json!(true), "{v}");
    assert_eq!(v["rowsChecked"], serde_json::json!(n + 2), "{v}");
}

/// Issue 23: learned estimates follow the reports in order, per key, and concurrent syncs
/// lose none of them.
pub async fn learned_estimates_follow_reports_in_order(s: &dyn Store) {
    let o = |key: &str, estimate: u64, actual: u64| Observation {
        key: key.into(),
        estimate,
        actual,
    };
    assert!(s.learned().await.unwrap().is_empty());
    s.learn(
        vec![
            o("api.salesforce.com", 1000, 120_000),
            o("api.salesforce.com", 1000, 60_000),
            o("api.openai.com", 20_000, 10_000),
        ],
        T0,
    )
    .await
    .unwrap();
    let rows = s.learned().await.unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["api.openai.com", "api.salesforce.com"]);
    let sf = &rows[1];
    let want = pag0_policy::Learned::default()
        .observe(
            pag0_policy::Micros::new(1000),
            pag0_policy::Micros::new(120_000),
        )
        .observe(
            pag0_policy::Micros::new(1000),
            pag0_policy::Micros::new(60_000),
        );
    assert_eq!(sf.learned, want, "the order of the reports is kept");
    assert_eq!((sf.estimate_sum, sf.actual_sum), (2000, 180_000));
    assert_eq!(sf.ratio_permille(), Some(90_000));
    assert_eq!(rows[0].ratio_permille(), Some(500));
    assert_eq!(sf.updated_at_ms, T0);

    // Sums saturate at the column, never wrap or fail.
    s.learn(vec![o("huge", u64::MAX, u64::MAX)], T0)
        .await
        .unwrap();
    let huge = s
        .learned()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.key == "huge")
        .unwrap();
    assert_eq!(huge.actual_sum, i64::MAX as u64);

    // Concurrent syncs: every report counted once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(s.learn(vec![o("k", 100, 100), o("k", 100, 100)], T0 + 1));
    }
    for r in join_all(tasks).await {
        r.unwrap();
    }
    let k = s
        .learned()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.key == "k")
        .unwrap();
    assert_eq!(k.learned.samples, 16);
    assert_eq!(k.estimate_sum, 1600);
}

/// Rollups (rollup.rs): over ranges aligned and not, sums and series equal the raw rows'
/// (computed here from what was sent), a resent batch adds nothing, and after a retention run
/// deletes a prefix that ends inside a day the decision figures equal what is left.
pub async fn rollups_answer_as_the_raw_rows_do(store: &dyn Store) {
    use crate::audit::AuditEvent;
    use crate::store::decision_stats::latency_floor;
    use crate::store::rollup::{DAY_MS, HOUR_MS};
    use std::collections::BTreeMap;

    const D0: i64 = 1_764_547_200_000; // 2025-12-01T00:00Z
    const NOW: i64 = D0 + 2 * DAY_MS + 5 * 60_000;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pick = |i: u64, of: &[&str]| -> Option<String> {
        let i = usize::try_from(i).unwrap();
        (i < of.len()).then(|| of[i].to_string())
    };
    // (time, record, decision event), sorted by time; the last 20 records carry no time.
    let mut rows: Vec<(i64, UsageRecord, AuditEvent)> = Vec::new();
    for i in 0..600u64 {
        let t = match i % 10 {
            // On hour and day boundaries, and a millisecond before them.
            0 => D0 + i64::try_from(next(3)).unwrap() * DAY_MS,
            1 => D0 + i64::try_from(next(72)).unwrap() * HOUR_MS - 1,
            _ => D0 - DAY_MS + i64::try_from(next(4 * DAY_MS as u64)).unwrap(),
        };
        let hit = next(4) == 0;
        let r = UsageRecord {
            amount: if hit { 0 } else { next(5000) },
            counters: vec![],
            project_id: pick(next(4), &["p0", "p1", "p2"]),
            client_id: pick(next(5), &["c0", "c1", "c2", "c3"]),
            host: pick(next(3), &["api.openai.com", "api.deepl.com"]),
            at_ms: Some(t),
            cache_hit: hit,
            savings: if hit { next(900) } else { 0 },
        };
        let mut e = AuditEvent::new("decision", t);
        e.project_id = r.project_id.clone();
        e.client_id = r.client_id.clone();
        e.host = r.host.clone();
        e.model = pick(next(3), &["gpt-4o", "gpt-4o-mini"]);
        let (d, code) = match next(5) {
            0 => ("deny", Some("BUDGET_EXCEEDED")),
            1 => ("deny", Some("ENDPOINT_BLOCKED")),
            2 => ("cache_hit", None),
            _ => ("allow", None),
        };
        e.decision = Some(d.into());
        e.code = code.map(Into::into);
        e.latency_ms = (next(4) != 0).then(|| i64::try_from(next(3000)).unwrap());
        rows.push((t, r, e));
    }
    rows.sort_by_key(|r| r.0);
    for r in rows.iter_mut().rev().take(20) {
        r.1.at_ms = None;
        r.0 = NOW;
    }
    for (n, chunk) in rows.chunks(50).enumerate() {
        let mut b = batch(
            "envoy-r",
            i64::try_from(n).unwrap() + 1,
            chunk.iter().map(|r| r.1.clone()).collect(),
        );
        b.now_ms = NOW;
        b.audit = chunk.iter().map(|r| r.2.clone()).collect();
        b.audit.push(AuditEvent::new("decision.gap", chunk[0].0));
        let again = b.clone();
        assert!(!store.sync(b).await.unwrap().duplicate);
        if n == 3 {
            assert!(store.sync(again).await.unwrap().duplicate);
        }
    }

    type UKey = (i64, Option<String>, Option<String>, Option<String>);
    let expect_usage = |f: i64, t: i64, bucket: Option<i64>| {
        let mut m = BTreeMap::<UKey, UsageTotals>::new();
        for (at, r, _) in &rows {
            if *at < f || *at >= t {
                continue;
            }
            let b = bucket.map_or(0, |b| at - at.rem_euclid(b));
            let s = m
                .entry((b, r.project_id.clone(), r.client_id.clone(), r.host.clone()))
                .or_insert_with(|| UsageTotals {
                    project_id: r.project_id.clone(),
                    client_id: r.client_id.clone(),
                    host: r.host.clone(),
                    ..UsageTotals::default()
                });
            s.requests += 1;
            s.cost += r.amount;
            s.cache_hits += u64::from(r.cache_hit);
            s.savings += r.savings;
        }
        m.into_iter()
            .map(|(k, totals)| UsageBucket {
                start_ms: k.0,
                totals,
            })
            .collect::<Vec<_>>()
    };
    let sorted_usage = |mut v: Vec<UsageBucket>| {
        v.sort_by(|a, b| {
            (
                a.start_ms,
                &a.totals.project_id,
                &a.totals.client_id,
                &a.totals.host,
            )
                .cmp(&(
                    b.start_ms,
                    &b.totals.project_id,
                    &b.totals.client_id,
                    &b.totals.host,
                ))
        });
        v
    };
    let expect_decisions = |events: &[&AuditEvent], f: i64, t: i64, bucket: Option<i64>| {
        let mut m = BTreeMap::<(i64, String), DecisionBucket>::new();
        for e in events {
            if e.at_ms < f || e.at_ms >= t {
                continue;
            }
            let b = bucket.map_or(0, |b| e.at_ms - e.at_ms.rem_euclid(b));
            let key = format!(
                "{:?}",
                (
                    &e.project_id,
                    &e.client_id,
                    &e.host,
                    &e.model,
                    &e.decision,
                    &e.code
                )
            );
            let s = &mut m
                .entry((b, key))
                .or_insert_with(|| DecisionBucket {
                    start_ms: b,
                    stats: DecisionStats {
                        project_id: e.project_id.clone(),
                        client_id: e.client_id.clone(),
                        host: e.host.clone(),
                        model: e.model.clone(),
                        decision: e.decision.clone(),
                        code: e.code.clone(),
                        ..DecisionStats::default()
                    },
                })
                .stats;
            s.count += 1;
            if let Some(l) = e.latency_ms {
                s.latency.count += 1;
                s.latency.sum_ms += u64::try_from(l).unwrap();
                let bin = s
                    .latency
                    .bins
                    .entry(latency_floor(l))
                    .or_insert(LatencyBin {
                        floor_ms: latency_floor(l),
                        count: 0,
                        max_ms: l,
                    });
                bin.count += 1;
                bin.max_ms = bin.max_ms.max(l);
            }
        }
        m.into_values().collect::<Vec<_>>()
    };
    let sorted_decisions = |mut v: Vec<DecisionBucket>| {
        let k = |b: &DecisionBucket| {
            let s = &b.stats;
            (
                b.start_ms,
                format!(
                    "{:?}",
                    (
                        &s.project_id,
                        &s.client_id,
                        &s.host,
                        &s.model,
                        &s.decision,
                        &s.code
                    )
                ),
            )
        };
        v.sort_by_key(k);
        v
    };

    let mut ranges = vec![
        (D0 - 2 * DAY_MS, D0 + 4 * DAY_MS),
        (D0, D0 + DAY_MS),
        (D0 - DAY_MS + 17 * 60_000, D0 + 2 * DAY_MS + 3 * HOUR_MS + 1),
        (D0 + 5 * 60_000, D0 + 40 * 60_000),
        (D0 + 20 * HOUR_MS, D0 + 30 * HOUR_MS),
        (D0 - 1, D0 + 1),
        (NOW, NOW + 1),
    ];
    for _ in 0..12 {
        let f = D0 - DAY_MS + i64::try_from(next(4 * DAY_MS as u64)).unwrap();
        ranges.push((f, f + 1 + i64::try_from(next(3 * DAY_MS as u64)).unwrap()));
    }
    let all_events: Vec<&AuditEvent> = rows.iter().map(|r| &r.2).collect();
    for &(f, t) in &ranges {
        let got: Vec<UsageBucket> = store
            .usage_totals(f, t)
            .await
            .unwrap()
            .into_iter()
            .map(|totals| UsageBucket {
                start_ms: 0,
                totals,
            })
            .collect();
        assert_eq!(
            sorted_usage(got),
            expect_usage(f, t, None),
            "usage {f}..{t}"
        );
        let got: Vec<DecisionBucket> = store
            .decision_stats(f, t)
            .await
            .unwrap()
            .into_iter()
            .map(|stats| DecisionBucket { start_ms: 0, stats })
            .collect();
        assert_eq!(
            sorted_decisions(got),
            sorted_decisions(expect_decisions(&all_events, f, t, None)),
            "decisions {f}..{t}"
        );
        for b in [15 * 60_000, HOUR_MS, DAY_MS] {
            assert_eq!(
                sorted_usage(store.usage_buckets(f, t, b).await.unwrap()),
                expect_usage(f, t, Some(b)),
                "usage buckets of {b} in {f}..{t}"
            );
            assert_eq!(
                sorted_decisions(store.decision_buckets(f, t, b).await.unwrap()),
                sorted_decisions(expect_decisions(&all_events, f, t, Some(b))),
                "decision buckets of {b} in {f}..{t}"
            );
        }
    }

    // Retention up to noon of D0: the day's rollup bucket loses its morning.
    let cut = D0 + 12 * HOUR_MS;
    let pruned = store
        .audit_prune(
            cut,
            AuditEvent::new(crate::store::audit::RETENTION_KIND, NOW),
        )
        .await
        .unwrap();
    assert!(pruned.is_some());
    let left = store
        .audit_list(AuditQuery {
            kind: Some("decision".into()),
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(
        left.len() < rows.len() && left.len() > rows.len() / 2,
        "{} left",
        left.len()
    );
    assert!(
        left.iter().all(|r| r.event.at_ms >= D0),
        "a row before D0 survived"
    );
    let left: Vec<&AuditEvent> = left.iter().map(|r| &r.event).collect();
    for &(f, t) in &ranges {
        let got: Vec<DecisionBucket> = store
            .decision_stats(f, t)
            .await
            .unwrap()
            .into_iter()
            .map(|stats| DecisionBucket { start_ms: 0, stats })
            .collect();
        assert_eq!(
            sorted_decisions(got),
            sorted_decisions(expect_decisions(&left, f, t, None)),
            "decisions after retention {f}..{t}"
        );
        assert_eq!(
            sorted_decisions(store.decision_buckets(f, t, DAY_MS).await.unwrap()),
            sorted_decisions(expect_decisions(&left, f, t, Some(DAY_MS))),
            "daily decisions after retention {f}..{t}"
        );
        // The ledger keeps everything.
        let got: Vec<UsageBucket> = store
            .usage_totals(f, t)
            .await
            .unwrap()
            .into_iter()
            .map(|totals| UsageBucket {
                start_ms: 0,
                totals,
            })
            .collect();
        assert_eq!(
            sorted_usage(got),
            expect_usage(f, t, None),
            "usage after retention {f}..{t}"
        );
    }
}
