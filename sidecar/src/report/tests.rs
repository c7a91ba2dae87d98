//! The report over a scripted dataset: figures against sums computed here from the script,
//! the checks (failing and flipping), the three formats, and the PDF read back with poppler
//! (`pdftotext`, `pdfinfo`, `pdftoppm`; `make report-tools` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::*;
use crate::store::{ApprovalDecision, ConsumeAsk, NewPolicy, SqliteStore, SyncWrite, UsageRecord};

/// 2025-11-24T16:00:00Z (as crate::testing::T0).
pub const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// November 2025, UTC.
pub const NOV_FROM: i64 = 1_761_955_200_000;
pub const NOV_TO: i64 = 1_764_547_200_000;

pub fn policy_v1() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000", "requireApprovalAbove": "500000",
                          "complianceMode": "EU_AI_ACT",
                          "auditLog": { "enabled": true, "retention": 90 } },
        "alerts": { "channels": ["email"], "recipients": ["cfo@acme.com"] },
        "endpoints": [
            { "host": "api.openai.com", "category": "llm",
              "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" } },
                           "defaultModel": "gpt-4" } },
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } }
        ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI",
              "policy": { "monthlyBudget": "15000000",
                          "approvalWorkflow": { "enabled": true, "approvers": ["sales-lead@acme.com"] } } },
            { "id": "marketing", "name": "Marketing",
              "policy": { "monthlyBudget": "5000000",
                          "approvalWorkflow": { "enabled": true, "approvers": ["mkt-lead@acme.com"] } } }
        ],
        "clients": [
            { "id": "sales-ai-agent", "projectId": "sales-ai",
              "apiKeySha256": pag0_policy::validate::api_key_sha256_hex("sk-sales-ai") },
            { "id": "marketing-agent", "projectId": "marketing",
              "apiKeySha256": pag0_policy::validate::api_key_sha256_hex("sk-marketing") }
        ]
    })
}

/// (project, host, amount, at) of every usage record the script writes; some outside November.
pub fn usage_script() -> Vec<(&'static str, &'static str, u64, i64)> {
    vec![
        ("sales-ai", "api.openai.com", 1_234_567, T0),
        ("sales-ai", "api.openai.com", 2_000_001, T0 + MIN),
        ("sales-ai", "api.deepl.com", 2_000, T0 + 2 * MIN),
        ("marketing", "api.openai.com", 5_500_000, T0 + 3 * MIN),
        ("marketing", "api.deepl.com", 4_000, T0 + 4 * MIN),
        // Outside the period: October and December.
        ("sales-ai", "api.openai.com", 9_000_000, NOV_FROM - 1),
        ("marketing", "api.openai.com", 7_000_000, NOV_TO),
    ]
}

fn approval(id: &str, project: &str, created: i64, expires: i64) -> Approval {
    Approval {
        id: id.into(),
        project_id: project.into(),
        client_id: format!("{project}-agent"),
        method: "POST".into(),
        authority: "api.openai.com".into(),
        path: "/v1/chat/completions".into(),
        body_sha256: "ab".repeat(32),
        binding: format!("binding-{id}"),
        estimated_cost: 600_000,
        policy_version: 2,
        status: ApprovalStatus::Pending,
        justification: None,
        requested_by: Some("agent@acme.com".into()),
        callback_url: None,
        created_at_ms: created,
        expires_at_ms: expires,
        decided_by: None,
        decision_comment: None,
        decided_at_ms: None,
        used_at_ms: None,
    }
}

async fn decide(store: &dyn Store, id: &str, approve: bool, by: &str, at: i64) {
    let d = ApprovalDecision {
        id: id.into(),
        approve,
        by: by.into(),
        comment: None,
        at_ms: at,
    };
    assert!(store.decide_approval(d).await.unwrap().is_some(), "{id}");
}

/// Two policy versions (alice, then bob raising marketing's budget), the usage script, one
/// cache hit and five approvals (approved+used, denied, approved, expired, one in October).
pub async fn scripted(store: &dyn Store) {
    let v1 = policy_v1();
    let mut v2 = v1.clone();
    v2["projects"][1]["policy"]["monthlyBudget"] = json!("8000000");
    for (doc, author, at) in [(&v1, "alice", T0 - 40 * DAY), (&v2, "bob", T0 - 2 * DAY)] {
        store
            .put_policy(NewPolicy {
                document: doc.to_string(),
                author: author.into(),
                at_ms: at,
                expected_version: None,
                audit: Vec::new(),
            })
            .await
            .unwrap();
    }
    let mut usage: Vec<UsageRecord> = usage_script()
        .into_iter()
        .map(|(p, h, amount, at)| UsageRecord {
            amount,
            counters: vec![format!("project.monthly/{p}/x")],
            project_id: Some(p.into()),
            client_id: Some(format!("{p}-agent")),
            host: Some(h.into()),
            at_ms: Some(at),
            cache_hit: false,
            savings: 0,
        })
        .collect();
    usage.push(UsageRecord {
        amount: 0,
        counters: vec![],
        project_id: Some("sales-ai".into()),
        client_id: Some("sales-ai-agent".into()),
        host: Some("api.openai.com".into()),
        at_ms: Some(T0 + 5 * MIN),
        cache_hit: true,
        savings: 2_000,
    });
    store
        .sync(SyncWrite {
            exceptions: Vec::new(),
            audit: Vec::new(),
            instance_id: "envoy-1".into(),
            seq: 1,
            digest: "d1".into(),
            legacy_digest: None,
            usage,
            release: vec![],
            leases: vec![],
            now_ms: T0 + 10 * MIN,
            lease_ttl_ms: 30_000,
        })
        .await
        .unwrap();
    let h = 3_600_000;
    for a in [
        approval("a1", "sales-ai", T0, T0 + DAY),
        approval("a2", "sales-ai", T0 + h, T0 + DAY),
        approval("a3", "marketing", T0 + 2 * h, T0 + DAY),
        approval("a4", "marketing", T0 + 3 * h, T0 + 3 * h + 1_000),
        approval("a5", "sales-ai", NOV_FROM - DAY, NOV_FROM),
    ] {
        store.create_approval(a).await.unwrap();
    }
    decide(store, "a1", true, "sales-lead@acme.com", T0 + 60_000).await;
    decide(store, "a2", false, "sales-lead@acme.com", T0 + h + 300_000).await;
    decide(store, "a3", true, "mkt-lead@acme.com", T0 + 2 * h + 30_000).await;
    store
        .consume_approval(ConsumeAsk {
            id: "a1".into(),
            binding: "binding-a1".into(),
            estimated_cost: 600_000,
            policy_version: 2,
            now_ms: T0 + 120_000,
        })
        .await
        .unwrap();
}

async fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open_dir(dir.path()).unwrap();
    scripted(&s).await;
    (s, dir)
}

async fn inputs(s: &dyn Store) -> ReportInputs {
    gather(s, NOV_FROM, NOV_TO, "2025-11".into(), T0 + DAY)
        .await
        .unwrap()
}

/// A verified chain with nothing missing: what a build with the audit log would pass.
fn good_audit() -> AuditEvidence {
    AuditEvidence {
        rows_checked: 42,
        head_hash: "c0ffee".repeat(10),
        verified: true,
        broken: None,
    }
}

fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

fn team<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["aiSystems"]["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no team {id}"))
}

/// Independent of the report: the script's November records summed per key.
fn expected(key: impl Fn(&str, &str) -> bool) -> (u64, u64) {
    usage_script()
        .into_iter()
        .filter(|(p, h, _, at)| (NOV_FROM..NOV_TO).contains(at) && key(p, h))
        .fold((0, 0), |(n, s), (_, _, a, _)| (n + 1, s + a))
}

#[tokio::test]
async fn json_figures_equal_sums_of_the_scripted_dataset() {
    let (s, _d) = store().await;
    let r = build(&inputs(&s).await).unwrap();
    assert_eq!(r["orgId"], "acme-corp");
    assert_eq!(r["period"]["from"], "2025-11-01T00:00:00.000Z");
    assert_eq!(r["period"]["to"], "2025-12-01T00:00:00.000Z");
    for id in ["sales-ai", "marketing"] {
        let (n, spend) = expected(|p, _| p == id);
        let t = team(&r, id);
        assert_eq!(t["spend"], spend.to_string(), "{id}");
        assert_eq!(t["spendUsd"], usd(spend), "{id}");
        // Requests count the ledger rows, the cache hit included.
        let hits = u64::from(id == "sales-ai");
        assert_eq!(t["requests"], n + hits, "{id}");
        for host in ["api.openai.com", "api.deepl.com"] {
            let (_, s) = expected(|p, h| p == id && h == host);
            let e = t["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["host"] == host)
                .unwrap();
            assert_eq!(e["spend"], s.to_string(), "{id} {host}");
        }
    }
    let (_, all) = expected(|_, _| true);
    assert_eq!(r["aiSystems"]["total"]["spend"], all.to_string());
    assert_eq!(all, 1_234_567 + 2_000_001 + 2_000 + 5_500_000 + 4_000);
    // Budgets of the policy in force at the end (bob's v2), the chart's ratio.
    assert_eq!(team(&r, "marketing")["monthlyBudget"], "8000000");
    assert_eq!(
        team(&r, "marketing")["budgetUsePermille"],
        5_504_000u64 * 1000 / 8_000_000
    );
    let ep = &team(&r, "sales-ai")["endpoints"][1];
    assert_eq!(
        (ep["host"].as_str(), ep["category"].as_str()),
        (Some("api.openai.com"), Some("llm"))
    );
    assert_eq!(ep["models"], json!(["gpt-4"]));

    // Both versions were in force in November (v1 from October until bob's v2).
    let v = r["policyVersions"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[0]["version"].as_i64(), v[0]["author"].as_str()),
        (Some(1), Some("alice"))
    );
    assert_eq!(v[1]["author"], "bob");
    assert_eq!(v[1]["changes"], json!(["projects: changed marketing"]));

    // Oversight: a5 (October) is not counted; decision times 30 s, 60 s, 300 s.
    let o = &r["humanOversight"];
    assert_eq!(
        [
            &o["requested"],
            &o["approved"],
            &o["denied"],
            &o["expired"],
            &o["used"]
        ],
        [&json!(4), &json!(2), &json!(1), &json!(1), &json!(1)]
    );
    assert_eq!(o["timeToDecision"]["medianSeconds"], 60);
    assert_eq!(o["timeToDecision"]["p95Seconds"], 300);
    let by = o["byApprover"].as_array().unwrap();
    assert_eq!(by.len(), 2);
    assert_eq!(by[1]["approver"], "sales-lead@acme.com");
    assert_eq!(
        (by[1]["approved"].as_u64(), by[1]["denied"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn ninety_day_retention_fails_with_its_reason_and_fixing_it_flips_the_check() {
    let (s, _d) = store().await;
    sync_decisions(&s, 2, decision_script(false, false), vec![]).await;
    let mut i = inputs(&s).await;
    i.audit = Ok(good_audit());
    let r = build(&i).unwrap();
    let c = check(&r, "retention-at-least-six-months");
    assert_eq!(c["result"], "fail");
    assert_eq!(c["article"], "Art. 19(1), Art. 26(6)");
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("90 days, below the 183-day"),
        "{c}"
    );
    assert_eq!(r["complianceStatus"], "NOT_COMPLIANT");
    assert_eq!(r["failingChecks"], json!(["retention-at-least-six-months"]));

    // A new version with six months of retention: the same store, the same period.
    let mut fixed = s.latest_policy().await.unwrap().unwrap();
    let mut doc: Value = serde_json::from_str(&fixed.document).unwrap();
    doc["globalPolicy"]["auditLog"]["retention"] = json!(183);
    fixed.document = doc.to_string();
    s.put_policy(NewPolicy {
        document: fixed.document,
        author: "alice".into(),
        at_ms: T0 + 3 * MIN,
        expected_version: Some(2),
        audit: Vec::new(),
    })
    .await
    .unwrap();
    let mut i = inputs(&s).await;
    i.audit = Ok(good_audit());
    let r = build(&i).unwrap();
    assert_eq!(check(&r, "retention-at-least-six-months")["result"], "pass");
    assert_eq!(r["complianceStatus"], "COMPLIANT", "{}", r["checks"]);
    assert_eq!(
        r["policyVersions"][2]["changes"],
        json!(["globalPolicy changed"])
    );
}

#[tokio::test]
async fn without_the_audit_log_its_checks_fail_with_the_reason() {
    let (s, _d) = store().await;
    let mut i = inputs(&s).await;
    i.audit = Err(NO_AUDIT.into());
    let r = build(&i).unwrap();
    for name in [
        "audit-chain-verifies",
        "no-unlogged-gap",
        "no-request-above-threshold-without-approval",
    ] {
        let c = check(&r, name);
        assert_eq!(c["result"], "fail", "{name}");
        assert_eq!(c["evidence"], NO_AUDIT, "{name}");
    }
    assert_eq!(r["recordKeeping"]["chain"]["result"], "unavailable");
}

/// The store's own audit chain is re-verified for the report: it passes as stored, fails
/// naming the row once a row is edited in the database; the checks over decision events fail
/// while the ledger has requests and the decision log has none (a missing log is not a clean one).
#[tokio::test]
async fn the_chain_check_is_the_stores_own_and_decision_checks_fail_without_decisions() {
    let (s, _d) = store().await;
    let head = s.audit_head().await.unwrap();
    assert!(head.seq > 0, "the script's approvals are in the audit log");
    let r = build(&inputs(&s).await).unwrap();
    let c = check(&r, "audit-chain-verifies");
    assert_eq!(c["result"], "pass", "{c}");
    assert_eq!(
        c["evidence"],
        format!("{} rows re-hashed, head {}", head.seq, head.hash)
    );
    assert_eq!(r["recordKeeping"]["chain"]["result"], "verified");
    for name in [
        "no-unlogged-gap",
        "no-request-above-threshold-without-approval",
    ] {
        let c = check(&r, name);
        assert_eq!(c["result"], "fail", "{name}");
        // November's ledger: five charged records and one cache hit.
        assert_eq!(
            c["evidence"], "no decision was logged in the period, but the ledger has 6 requests",
            "{name}"
        );
    }
    assert_eq!(r["complianceStatus"], "NOT_COMPLIANT");

    s.exec_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
        .await
        .unwrap();
    let r = build(&inputs(&s).await).unwrap();
    let c = check(&r, "audit-chain-verifies");
    assert_eq!(c["result"], "fail", "{c}");
    assert!(c["evidence"].as_str().unwrap().contains("row 1: "), "{c}");
    assert_eq!(r["recordKeeping"]["chain"]["result"], "broken");
}

#[tokio::test]
async fn the_store_based_checks_pass_on_the_script() {
    let (s, _d) = store().await;
    let r = build(&inputs(&s).await).unwrap();
    assert_eq!(r["riskEvents"]["available"], true);
    assert_eq!(r["riskEvents"]["violations"], json!({}));
    assert_eq!(r["riskEvents"]["violationsTotal"], 0);
    assert_eq!(r["riskEvents"]["anomalies"], json!([]));
    assert_eq!(r["riskEvents"]["alertsSent"], 0);
    // The store-based oversight check passes on the script: each decision by a listed approver.
    let c = check(&r, "approvals-decided-by-listed-approvers");
    assert_eq!(c["result"], "pass", "{c}");
    assert_eq!(
        c["evidence"],
        "3 decisions, each by an approver listed on its project"
    );
}

#[tokio::test]
async fn a_decision_by_an_unlisted_approver_fails_oversight() {
    let (s, _d) = store().await;
    s.create_approval(approval("a6", "marketing", T0 + MIN, T0 + DAY))
        .await
        .unwrap();
    // The store takes any decider; only the route checks the list. The report catches it.
    decide(&s, "a6", true, "sales-lead@acme.com", T0 + 2 * MIN).await;
    let mut i = inputs(&s).await;
    i.audit = Ok(good_audit());
    let r = build(&i).unwrap();
    let c = check(&r, "approvals-decided-by-listed-approvers");
    assert_eq!(c["result"], "fail");
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("a6 decided by sales-lead@acme.com"),
        "{c}"
    );
    assert_eq!(r["complianceStatus"], "NOT_COMPLIANT");
}

// --- the formats ---

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/report-test")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A poppler tool's stdout; a clear failure (not a skip) when poppler-utils is missing.
pub fn poppler(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} — install poppler-utils: make report-tools"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PDF's text (`pdftotext -layout`), its `pdfinfo`, and PNG pages written next to it.
pub fn read_pdf(pdf: &[u8], dir: &Path) -> (String, String) {
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let file = dir.join("report.pdf");
    std::fs::write(&file, pdf).unwrap();
    let f = file.to_str().unwrap();
    // Whitespace collapsed: a table cell wrapped over lines reads as one phrase.
    let text = poppler("pdftotext", &["-layout", f, "-"])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let info = poppler("pdfinfo", &[f]);
    let png = dir.join("page");
    poppler("pdftoppm", &["-png", "-r", "60", f, png.to_str().unwrap()]);
    (text, info)
}

fn pages(info: &str) -> usize {
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_pdf_shows_org_period_each_teams_spend_and_the_status_on_a4_pages() {
    let (s, _d) = store().await;
    let r = build(&inputs(&s).await).unwrap();
    let dir = out_dir("pdf");
    let (text, info) = read_pdf(&render::pdf(&r).unwrap(), &dir);
    for needle in [
        "acme-corp",
        "2025-11-01T00:00:00.000Z",
        "2025-12-01T00:00:00.000Z",
        "NOT_COMPLIANT",
        "retention-at-least-six-months",
        "90 days",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    // The totals in the PDF are the JSON's.
    for t in r["aiSystems"]["teams"].as_array().unwrap() {
        let spend = t["spendUsd"].as_str().unwrap();
        assert!(
            text.contains(spend),
            "{} spend {spend} not in the PDF",
            t["id"]
        );
    }
    let total = r["aiSystems"]["total"]["spendUsd"].as_str().unwrap();
    assert_eq!(total, "8.740568");
    assert!(text.contains(total));
    let n = pages(&info);
    for p in 1..=n {
        assert!(text.contains(&format!("{p}/{n}")), "page number {p}/{n}");
    }
    assert!(n >= 3, "title page + content: {n} pages\n{info}");
    assert!(info.contains("(A4)"), "{info}");
    let pngs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, n, "one PNG per page");
}

#[tokio::test]
async fn the_csv_parses_and_sums_to_the_json() {
    let (s, _d) = store().await;
    let r = build(&inputs(&s).await).unwrap();
    let bytes = render::csv(&r).unwrap();
    let mut rd = csv::Reader::from_reader(bytes.as_slice());
    assert_eq!(
        rd.headers().unwrap(),
        vec!["section", "item", "metric", "value"]
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let get = |sec: &str, item: &str, metric: &str| -> String {
        rows.iter()
            .find(|r| &r[0] == sec && &r[1] == item && &r[2] == metric)
            .map(|r| r[3].to_string())
            .unwrap_or_else(|| panic!("no row {sec},{item},{metric}"))
    };
    let sum = |sec: &str| -> u64 {
        rows.iter()
            .filter(|r| &r[0] == sec && &r[2] == "spend")
            .map(|r| r[3].parse::<u64>().unwrap())
            .sum()
    };
    let total: u64 = get("total", "all", "spend").parse().unwrap();
    assert_eq!(
        total.to_string(),
        r["aiSystems"]["total"]["spend"].as_str().unwrap()
    );
    assert_eq!(sum("team"), total);
    assert_eq!(sum("endpoint"), total);
    assert_eq!(
        get("team", "marketing", "spend"),
        team(&r, "marketing")["spend"].as_str().unwrap()
    );
    assert_eq!(get("report", "status", "complianceStatus"), "NOT_COMPLIANT");
    assert_eq!(
        get("check", "retention-at-least-six-months", "result"),
        "fail"
    );
    assert_eq!(get("humanOversight", "all", "requested"), "4");
}

#[tokio::test]
async fn a_tampered_chain_fails_in_all_three_formats() {
    let (s, _d) = store().await;
    // As stored, the chain verifies: the failure below is the tampering.
    assert_eq!(
        check(&build(&inputs(&s).await).unwrap(), "audit-chain-verifies")["result"],
        "pass"
    );
    // An edit made in the database, behind the sidecar's back.
    s.exec_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
        .await
        .unwrap();
    let r = build(&inputs(&s).await).unwrap();
    let c = check(&r, "audit-chain-verifies");
    assert_eq!(c["result"], "fail");
    assert!(c["evidence"].as_str().unwrap().contains("row 1: "), "{c}");
    assert_eq!(r["recordKeeping"]["chain"]["result"], "broken");
    assert_eq!(r["complianceStatus"], "NOT_COMPLIANT");

    let csv = String::from_utf8(render::csv(&r).unwrap()).unwrap();
    assert!(
        csv.contains("check,audit-chain-verifies,result,fail"),
        "{csv}"
    );
    assert!(csv.contains("recordKeeping,chain,result,broken"), "{csv}");

    let (text, _) = read_pdf(&render::pdf(&r).unwrap(), &out_dir("tampered"));
    assert!(text.contains("Audit chain check broken"), "{text}");
    assert!(text.contains("row 1: "), "{text}");
}

#[tokio::test]
async fn store_strings_are_text_in_the_pdf_never_markup() {
    let (s, _d) = store().await;
    let mut doc = policy_v1();
    let evil = r#"#panic("injected") ]*[ $x$ <l> @ref"#;
    doc["projects"][0]["name"] = json!(evil);
    s.put_policy(NewPolicy {
        document: doc.to_string(),
        author: "#set page(width: 1cm)".into(),
        at_ms: T0,
        expected_version: None,
        audit: Vec::new(),
    })
    .await
    .unwrap();
    let r = build(&inputs(&s).await).unwrap();
    let (text, info) = read_pdf(&render::pdf(&r).unwrap(), &out_dir("markup"));
    assert!(text.contains(r#"#panic("injected")"#), "{text}");
    assert!(text.contains("#set page(width: 1cm)"), "{text}");
    assert!(info.contains("(A4)"), "{info}");
}

/// The risk section reads the anomaly table: findings whose window overlaps the period, with
/// their explanations, in the JSON and in the PDF; one outside the period is left out.
#[tokio::test]
async fn anomalies_of_the_period_are_risk_events_in_the_json_and_the_pdf() {
    let (s, _d) = store().await;
    let finding = |from: i64, explanation: &str| crate::store::Anomaly {
        kind: crate::store::AnomalyKind::SpendSpike,
        project_id: "sales-ai".into(),
        client_id: None,
        subject: None,
        score: 12.5,
        baseline: 340_000,
        observed: 4_100_000,
        unit: crate::store::Unit::UsdMicros,
        window_from_ms: from,
        window_to_ms: from + 3_600_000,
        explanation: explanation.into(),
        detected_at_ms: from + 3_700_000,
    };
    s.put_anomalies(vec![
        finding(
            NOV_FROM + DAY,
            "sales-ai spent $4.10 in one hour, 12x its usual $0.34",
        ),
        finding(NOV_TO + DAY, "a December finding"),
    ])
    .await
    .unwrap();
    let r = build(&inputs(&s).await).unwrap();
    assert_eq!(
        r["riskEvents"]["anomalies"],
        json!(["sales-ai spent $4.10 in one hour, 12x its usual $0.34"])
    );
    let (text, _) = read_pdf(&render::pdf(&r).unwrap(), &out_dir("risk"));
    assert!(text.contains("12x its usual $0.34"), "{text}");
    assert!(!text.contains("December finding"), "{text}");
    assert!(
        text.contains("Violations (denied requests) by code: 0 in all"),
        "{text}"
    );
}

// --- the decision log (issue 15's decision events, read by the report) ---

/// One decision event as the filter sends it in `/v1/sync` (`pag0-wire`).
#[allow(clippy::too_many_arguments)]
fn event(
    at: i64,
    decision: &str,
    client: &str,
    model: Option<&str>,
    estimate: Option<u64>,
    cost: Option<u64>,
    code: Option<&str>,
    approval: Option<&str>,
) -> Value {
    let project = client.trim_end_matches("-agent");
    let mut d = json!({ "at": at, "decision": decision, "method": "POST",
                        "authority": "api.openai.com", "path": "/v1/chat/completions",
                        "policyVersion": 2, "projectId": project, "clientId": client });
    for (k, v) in [
        ("model", model.map(Value::from)),
        ("estimate", estimate.map(|e| json!(e.to_string()))),
        ("cost", cost.map(|c| json!(c.to_string()))),
        ("code", code.map(Value::from)),
        ("approvalId", approval.map(Value::from)),
    ] {
        if let Some(v) = v {
            d[k] = v;
        }
    }
    d
}

const SALES: &str = "sales-ai-agent";
const MKT: &str = "marketing-agent";
/// The script's approval threshold (globalPolicy.requireApprovalAbove), micro-USD.
const THRESHOLD: u64 = 500_000;

/// November's decisions (and one in December): allowed, replayed with approval a1, denied
/// with two codes, a cache hit; `unapproved` adds marketing's allow at 600000 without an
/// approval (above the 500000 threshold).
fn decision_script(_gap: bool, unapproved: bool) -> Vec<Value> {
    let g = Some("gpt-4");
    let mut v = vec![
        event(
            T0,
            "allow",
            SALES,
            g,
            Some(300_000),
            Some(250_000),
            None,
            None,
        ),
        event(
            T0 + MIN,
            "replay",
            SALES,
            g,
            Some(600_000),
            Some(580_000),
            None,
            Some("a1"),
        ),
        event(
            T0 + 2 * MIN,
            "allow",
            SALES,
            None,
            Some(2_000),
            Some(2_000),
            None,
            None,
        ),
        event(
            T0 + 3 * MIN,
            "deny",
            SALES,
            g,
            Some(40_000_000),
            None,
            Some("BUDGET_EXCEEDED"),
            None,
        ),
        event(
            T0 + 4 * MIN,
            "deny",
            MKT,
            None,
            None,
            None,
            Some("BUDGET_EXCEEDED"),
            None,
        ),
        event(
            T0 + 5 * MIN,
            "deny",
            MKT,
            None,
            None,
            None,
            Some("ENDPOINT_BLOCKED"),
            None,
        ),
        event(
            T0 + 6 * MIN,
            "cache_hit",
            SALES,
            g,
            None,
            Some(0),
            None,
            None,
        ),
        // December: not in the period.
        event(
            NOV_TO,
            "deny",
            MKT,
            g,
            None,
            None,
            Some("BUDGET_EXCEEDED"),
            None,
        ),
        event(
            NOV_TO + 1,
            "allow",
            MKT,
            g,
            Some(900_000),
            Some(1),
            None,
            None,
        ),
    ];
    if unapproved {
        v.push(event(
            T0 + 7 * MIN,
            "allow",
            MKT,
            g,
            Some(600_000),
            Some(550_000),
            None,
            None,
        ));
    }
    v
}

/// The one gap record of the script: 7 events dropped in November.
fn gap7() -> Vec<Value> {
    vec![json!({ "from": T0 + 8 * MIN, "to": T0 + 9 * MIN, "count": 7 })]
}

/// Posts decisions and gaps as a sync batch does: through the sync route's conversion
/// (`decisions::audit_rows`) into one store batch.
async fn sync_decisions(s: &dyn Store, seq: i64, decisions: Vec<Value>, gaps: Vec<Value>) {
    let now = T0 + 10 * MIN;
    let audit = crate::routes::sync::decisions::audit_rows(
        "envoy-1",
        u64::try_from(seq).unwrap(),
        &decisions,
        &gaps,
        now,
    );
    let out = s
        .sync(SyncWrite {
            exceptions: Vec::new(),
            audit,
            instance_id: "envoy-1".into(),
            seq,
            digest: format!("decisions-{seq}"),
            legacy_digest: None,
            usage: vec![],
            release: vec![],
            leases: vec![],
            now_ms: now,
            lease_ttl_ms: 30_000,
        })
        .await
        .unwrap();
    assert!(!out.duplicate);
}

/// Independent of the report: November's events of the script, by a key.
fn in_nov(script: &[Value]) -> Vec<&Value> {
    script
        .iter()
        .filter(|d| (NOV_FROM..NOV_TO).contains(&d["at"].as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn decision_events_are_violations_gaps_and_unapproved_requests_in_all_three_formats() {
    let (s, _d) = store().await;
    let script = decision_script(true, true);
    let mut decisions = script.clone();
    decisions.push(json!({ "decision": "allow" })); // malformed: kept as decision.rejected
    sync_decisions(&s, 2, decisions, gap7()).await;
    let r = build(&inputs(&s).await).unwrap();
    let nov = in_nov(&script);

    // Risk events: denials by code, counted from the script.
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for d in nov.iter().filter(|d| d["decision"] == "deny") {
        *codes.entry(d["code"].as_str().unwrap().into()).or_default() += 1;
    }
    assert_eq!(
        codes,
        BTreeMap::from([
            ("BUDGET_EXCEEDED".into(), 2),
            ("ENDPOINT_BLOCKED".into(), 1)
        ])
    );
    assert_eq!(r["riskEvents"]["violations"], json!(codes));
    assert_eq!(r["riskEvents"]["violationsTotal"], 3);

    // Record-keeping: decisions by kind, the gap and its count, the rejected record.
    let rk = &r["recordKeeping"];
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for d in &nov {
        *kinds
            .entry(d["decision"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(rk["decisionsByKind"], json!(kinds));
    assert_eq!(rk["decisionsLogged"], nov.len());
    assert_eq!(nov.len(), 8);
    assert_eq!(
        (
            &rk["gapsRecorded"],
            &rk["eventsDropped"],
            &rk["rejectedRecords"]
        ),
        (&json!(1), &json!(7), &json!(1))
    );

    // Human oversight: marketing's 600000 allow, the only one above 500000 without approval.
    let above = &r["humanOversight"]["aboveThresholdWithoutApproval"];
    let expected: Vec<&&Value> = nov
        .iter()
        .filter(|d| {
            d["decision"] == "allow"
                && d.get("approvalId").is_none()
                && d["estimate"]
                    .as_str()
                    .is_some_and(|e| e.parse::<u64>().unwrap() > THRESHOLD)
        })
        .collect();
    assert_eq!(expected.len(), 1);
    assert_eq!(above["count"], 1);
    let ex = &above["examples"][0];
    assert_eq!(
        (
            ex["clientId"].as_str(),
            ex["estimate"].as_str(),
            ex["threshold"].as_str()
        ),
        (Some(MKT), Some("600000"), Some("500000"))
    );
    assert_eq!(ex["at"], rfc3339(expected[0]["at"].as_i64().unwrap()));

    // AI systems: requests and spend per model from the decision rows.
    let mut models: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for d in &nov {
        let m = models
            .entry(d["model"].as_str().unwrap_or("unassigned"))
            .or_default();
        m.0 += 1;
        m.1 += d["cost"].as_str().map_or(0, |c| c.parse::<u64>().unwrap());
    }
    let got: BTreeMap<&str, (u64, u64)> = r["aiSystems"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap(),
                (
                    m["requests"].as_u64().unwrap(),
                    m["spend"].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, models);
    assert_eq!(got["gpt-4"], (5, 250_000 + 580_000 + 550_000));

    // The checks over them fail, with their evidence.
    let gap = check(&r, "no-unlogged-gap");
    assert_eq!(
        (&gap["result"], &gap["article"]),
        (&json!("fail"), &json!("Art. 12"))
    );
    assert_eq!(
        gap["evidence"],
        "1 gap record(s) in the period: 7 decision events dropped, not logged"
    );
    let a14 = check(&r, "no-request-above-threshold-without-approval");
    assert_eq!(
        (&a14["result"], &a14["article"]),
        (&json!("fail"), &json!("Art. 14"))
    );
    let ev = a14["evidence"].as_str().unwrap();
    assert!(ev.starts_with("1 of 8 decisions logged were allowed above their approval threshold without an approval"), "{ev}");
    assert!(
        ev.contains("marketing-agent api.openai.com estimate 0.600000 above 0.500000"),
        "{ev}"
    );
    assert!(r["failingChecks"]
        .as_array()
        .unwrap()
        .contains(&json!("no-unlogged-gap")));

    // The CSV carries the same figures.
    let bytes = render::csv(&r).unwrap();
    let mut rd = csv::Reader::from_reader(bytes.as_slice());
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let get = |sec: &str, item: &str, metric: &str| -> String {
        rows.iter()
            .find(|r| &r[0] == sec && &r[1] == item && &r[2] == metric)
            .map(|r| r[3].to_string())
            .unwrap_or_else(|| panic!("no row {sec},{item},{metric}"))
    };
    for (code, n) in &codes {
        assert_eq!(get("violation", code, "count"), n.to_string());
    }
    assert_eq!(get("riskEvents", "violations", "total"), "3");
    assert_eq!(get("recordKeeping", "gaps", "records"), "1");
    assert_eq!(get("recordKeeping", "gaps", "eventsDropped"), "7");
    assert_eq!(get("recordKeeping", "rejected", "records"), "1");
    assert_eq!(get("recordKeeping", "decisions", "logged"), "8");
    assert_eq!(get("recordKeeping", "decisions", "deny"), "3");
    assert_eq!(
        get("humanOversight", "all", "aboveThresholdWithoutApproval"),
        "1"
    );
    assert_eq!(get("check", "no-unlogged-gap", "result"), "fail");
    let model_spend: u64 = rows
        .iter()
        .filter(|r| &r[0] == "model" && &r[2] == "spend")
        .map(|r| r[3].parse::<u64>().unwrap())
        .sum();
    assert_eq!(model_spend, models.values().map(|m| m.1).sum::<u64>());

    // The PDF shows the violation counts, the gap, and the unapproved request.
    let (text, _) = read_pdf(&render::pdf(&r).unwrap(), &out_dir("decisions"));
    for needle in [
        "Violations (denied requests) by code: 3 in all",
        "BUDGET_EXCEEDED 2",
        "ENDPOINT_BLOCKED 1",
        "Requests above the approval threshold that passed without one: 1",
        "0.600000 0.500000",
        "Gap records (events dropped, not logged) 1 (7)",
        "Rejected records 1",
        "7 decision events dropped, not logged",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
}

/// The same store without the gap and without the unapproved request: both decision checks
/// pass, with their evidence — they are the figures, not constants.
#[tokio::test]
async fn without_the_gap_and_the_unapproved_request_the_decision_checks_pass() {
    let (s, _d) = store().await;
    sync_decisions(&s, 2, decision_script(false, false), vec![]).await;
    let r = build(&inputs(&s).await).unwrap();
    let gap = check(&r, "no-unlogged-gap");
    assert_eq!(gap["result"], "pass", "{gap}");
    assert_eq!(
        gap["evidence"],
        "no gap record in the period; 7 decisions logged"
    );
    let a14 = check(&r, "no-request-above-threshold-without-approval");
    assert_eq!(a14["result"], "pass", "{a14}");
    assert_eq!(
        a14["evidence"],
        "0 of 7 decisions logged were allowed above their approval threshold without an approval"
    );
    assert_eq!(
        r["humanOversight"]["aboveThresholdWithoutApproval"]["count"],
        0
    );
    assert_eq!(r["recordKeeping"]["gapsRecorded"], 0);
    // Only the retention check fails now.
    assert_eq!(r["failingChecks"], json!(["retention-at-least-six-months"]));

    // A later batch with the gap flips the gap check, and only it.
    sync_decisions(&s, 3, vec![], gap7()).await;
    let r = build(&inputs(&s).await).unwrap();
    assert_eq!(check(&r, "no-unlogged-gap")["result"], "fail");
    assert_eq!(
        check(&r, "no-request-above-threshold-without-approval")["result"],
        "pass"
    );
}

/// A decision citing a policy version the store does not hold cannot be checked against a
/// threshold: the Art. 14 check fails naming it instead of passing.
#[tokio::test]
async fn a_decision_under_an_unknown_policy_version_fails_the_threshold_check() {
    let (s, _d) = store().await;
    let mut script = decision_script(false, false);
    script[0]["policyVersion"] = json!(9);
    sync_decisions(&s, 2, script, vec![]).await;
    let r = build(&inputs(&s).await).unwrap();
    let a14 = check(&r, "no-request-above-threshold-without-approval");
    assert_eq!(a14["result"], "fail", "{a14}");
    assert!(
        a14["evidence"]
            .as_str()
            .unwrap()
            .contains("could not be checked: policy version 9: not in the store"),
        "{a14}"
    );
}

/// A decision citing a version no longer in force during the period (a filter behind by a
/// version) is checked against THAT version's threshold: the report reads its bounds too.
#[tokio::test]
async fn a_decision_under_an_older_version_is_checked_against_its_threshold() {
    let (s, _d) = store().await;
    // v3 (from T0 - 36 h) raises the threshold to 2000000; v1 and v2 had 500000.
    let mut v3 = policy_v1();
    v3["projects"][1]["policy"]["monthlyBudget"] = json!("8000000");
    v3["globalPolicy"]["requireApprovalAbove"] = json!("2000000");
    s.put_policy(NewPolicy {
        document: v3.to_string(),
        author: "carol".into(),
        at_ms: T0 - 36 * 3_600_000,
        expected_version: Some(2),
        audit: Vec::new(),
    })
    .await
    .unwrap();
    let at = |at: i64, version: i64, estimate: u64| {
        let mut d = event(
            at,
            "allow",
            SALES,
            Some("gpt-4"),
            Some(estimate),
            Some(1),
            None,
            None,
        );
        d["policyVersion"] = json!(version);
        d
    };
    // Under v1 600000 is above 500000, 400000 is not; under v3 600000 is below 2000000.
    let script = vec![
        at(T0, 1, 600_000),
        at(T0 + 1, 1, 400_000),
        at(T0 + 2, 3, 600_000),
    ];
    sync_decisions(&s, 2, script, vec![]).await;
    // From T0 - 1 day only v3 is in force.
    let i = gather(&s, T0 - DAY, NOV_TO, "custom".into(), T0 + DAY)
        .await
        .unwrap();
    assert_eq!(i.decisions.log.cited_versions, [1, 3]);
    assert_eq!(i.decisions.log.unapproved_above_bound, 1);
    assert!(i.decisions.unchecked_versions.is_empty());
    let r = build(&i).unwrap();
    assert_eq!(
        check(&r, "no-request-above-threshold-without-approval")["result"],
        "fail"
    );
    let ex = &r["humanOversight"]["aboveThresholdWithoutApproval"]["examples"];
    assert_eq!(ex.as_array().unwrap().len(), 1);
    assert_eq!(
        (ex[0]["policyVersion"].as_i64(), ex[0]["threshold"].as_str()),
        (Some(1), Some("500000"))
    );
}
