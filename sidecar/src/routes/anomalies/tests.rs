//! `GET /v1/anomalies` over a store holding a few anomalies: auth, filters, limits, bad queries.

use std::sync::Arc;

use axum::http::{Method, StatusCode};

use crate::store::{Anomaly, AnomalyKind, SqliteStore, Store, Unit};
use crate::testing::{code, tokens, Harness, ALICE, SYNC, T0};

const H: i64 = 3_600_000;

fn anomaly(kind: AnomalyKind, project: &str, hour: i64) -> Anomaly {
    Anomaly {
        kind,
        project_id: project.into(),
        client_id: Some("sales-agent".into()),
        subject: None,
        score: 9.5,
        baseline: 340_000,
        observed: 4_100_000,
        unit: Unit::UsdMicros,
        window_from_ms: T0 + hour * H,
        window_to_ms: T0 + (hour + 1) * H,
        explanation: format!("{project} spent $4.10"),
        detected_at_ms: T0 + 10 * H,
    }
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_dir(dir.path()).unwrap());
    let stored = store
        .put_anomalies(vec![
            anomaly(AnomalyKind::SpendSpike, "sales-ai", 1),
            anomaly(AnomalyKind::CostlyRequest, "sales-ai", 2),
            anomaly(AnomalyKind::SpendSpike, "support", 3),
        ])
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    Harness::over(store, tokens(), dir)
}

#[tokio::test]
async fn lists_newest_first_with_the_numbers() {
    let h = harness().await;
    let r = h
        .call(Method::GET, "/v1/anomalies", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.body["anomalies"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["projectId"], "support");
    assert_eq!(list[1]["kind"], "costly_request");
    let a = &list[2];
    assert_eq!(a["kind"], "spend_spike");
    assert_eq!(a["clientId"], "sales-agent");
    assert_eq!(a["baseline"], "340000");
    assert_eq!(a["observed"], "4100000");
    assert_eq!(a["unit"], "usd_micros");
    assert_eq!(a["score"], 9.5);
    assert_eq!(a["explanation"], "sales-ai spent $4.10");
    assert_eq!(a["windowFrom"], crate::clock::rfc3339(T0 + H));
    assert_eq!(a["windowTo"], crate::clock::rfc3339(T0 + 2 * H));
}

#[tokio::test]
async fn filters_by_project_since_and_limit() {
    let h = harness().await;
    let get = |q: String| {
        let h = &h;
        async move {
            let r = h
                .call(
                    Method::GET,
                    &format!("/v1/anomalies?{q}"),
                    Some(ALICE),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
            r.body["anomalies"].as_array().unwrap().len()
        }
    };
    assert_eq!(get("project=sales-ai".into()).await, 2);
    assert_eq!(get("project=nobody".into()).await, 0);
    let since = crate::clock::rfc3339(T0 + 2 * H);
    assert_eq!(get(format!("since={since}")).await, 2);
    assert_eq!(get(format!("project=sales-ai&since={since}")).await, 1);
    let until = crate::clock::rfc3339(T0 + 3 * H);
    assert_eq!(get(format!("until={since}")).await, 1, "hour 1 only");
    assert_eq!(
        get(format!("since={since}&until={until}")).await,
        1,
        "the window overlapping [2h, 3h)"
    );
    assert_eq!(get("limit=1".into()).await, 1);
    assert_eq!(get("limit=1000".into()).await, 3);
}

#[tokio::test]
async fn bad_queries_and_tokens_are_refused() {
    let h = harness().await;
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "since=yesterday",
        "until=tomorrow",
        "colour=red",
    ] {
        let r = h
            .call(
                Method::GET,
                &format!("/v1/anomalies?{q}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
        assert_eq!(code(&r), "BAD_QUERY", "{q}");
    }
    let r = h.call(Method::GET, "/v1/anomalies", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h.call(Method::GET, "/v1/anomalies", Some(SYNC), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
