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
