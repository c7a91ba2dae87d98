//! The report's JSON → CSV or PDF. Both read only the JSON [`super::build`] made, so the three
//! formats cannot disagree.
//!
//! The PDF is laid out by typst (as a library, `typst-as-lib`) from `report.typ`, with typst's
//! own embedded fonts (`typst-assets`): no system font is read, so every machine renders the
//! same. The report reaches typst as ONE string input (`sys.inputs.data`, the JSON) that the
//! template decodes with `json(…)`: store strings are typst strings shown as text, never
//! markup, so a team named `#panic("x")` or `]*[` prints as just that.

use serde_json::Value;
use typst::foundations::{Dict, IntoValue};
use typst::layout::PagedDocument;
use typst_as_lib::{TypstEngine, TypstTemplateMainFile};

use std::sync::LazyLock;

const TEMPLATE_SRC: &str = include_str!("report.typ");

/// The template with its fonts parsed once per process (a compilation reads it, never writes it).
static ENGINE: LazyLock<TypstEngine<TypstTemplateMainFile>> = LazyLock::new(|| {
    TypstEngine::builder()
        .main_file(TEMPLATE_SRC)
        .fonts(typst_assets::fonts())
        .build()
});

// serde_json's `Value[&str]` yields `Null` for a missing key or a non-object: it cannot panic.
#[allow(clippy::indexing_slicing)]
/// `section,item,metric,value` rows: one long table a spreadsheet can pivot. Money is
/// micro-USD (integers), as in the JSON.
pub fn csv(report: &Value) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut rows: Vec<[String; 4]> = vec![[
        "section".into(),
        "item".into(),
        "metric".into(),
        "value".into(),
    ]];
    let mut row =
        |a: &str, b: &str, c: &str, d: String| rows.push([a.into(), b.into(), c.into(), d]);
    row("report", "org", "orgId", s(&report["orgId"]));
    row("report", "period", "label", s(&report["period"]["label"]));
    row("report", "period", "from", s(&report["period"]["from"]));
    row("report", "period", "to", s(&report["period"]["to"]));
    row("report", "generated", "at", s(&report["generatedAt"]));
    row(
        "report",
        "status",
        "complianceStatus",
        s(&report["complianceStatus"]),
    );
    for v in report["policyVersions"].as_array().into_iter().flatten() {
        let id = s(&v["version"]);
        row("policyVersion", &id, "author", s(&v["author"]));
        row("policyVersion", &id, "createdAt", s(&v["createdAt"]));
        let changes: Vec<String> = v["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        row("policyVersion", &id, "changes", changes.join("; "));
    }
    for t in report["aiSystems"]["teams"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let id = s(&t["id"]);
        row("team", &id, "requests", s(&t["requests"]));
        row("team", &id, "spend", s(&t["spend"]));
        row("team", &id, "monthlyBudget", s(&t["monthlyBudget"]));
        for e in t["endpoints"].as_array().into_iter().flatten() {
            let item = format!("{id}/{}", s(&e["host"]));
            row("endpoint", &item, "category", s(&e["category"]));
            row("endpoint", &item, "requests", s(&e["requests"]));
            row("endpoint", &item, "spend", s(&e["spend"]));
        }
    }
    let total = &report["aiSystems"]["total"];
    row("total", "all", "requests", s(&total["requests"]));
    row("total", "all", "spend", s(&total["spend"]));
    for m in report["aiSystems"]["models"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let model = s(&m["model"]);
        row("model", &model, "requests", s(&m["requests"]));
        row("model", &model, "spend", s(&m["spend"]));
    }
    let o = &report["humanOversight"];
    for m in [
        "requested",
        "approved",
        "denied",
        "expired",
        "pending",
        "used",
    ] {
        row("humanOversight", "all", m, s(&o[m]));
    }
    row(
        "humanOversight",
        "all",
        "medianSecondsToDecision",
        s(&o["timeToDecision"]["medianSeconds"]),
    );
    row(
        "humanOversight",
        "all",
        "p95SecondsToDecision",
        s(&o["timeToDecision"]["p95Seconds"]),
    );
    for a in o["byApprover"].as_array().into_iter().flatten() {
        let who = s(&a["approver"]);
        for m in ["approved", "denied", "medianSeconds", "p95Seconds"] {
            row("approver", &who, m, s(&a[m]));
        }
    }
    let above = &o["aboveThresholdWithoutApproval"];
    row(
        "humanOversight",
        "all",
        "aboveThresholdWithoutApproval",
        s(&above["count"]),
    );
    for e in above["examples"].as_array().into_iter().flatten() {
        let seq = s(&e["auditSeq"]);
        for m in [
            "at",
            "projectId",
            "clientId",
            "host",
            "estimate",
            "threshold",
        ] {
            row("aboveThresholdWithoutApproval", &seq, m, s(&e[m]));
        }
    }
    let rk = &report["recordKeeping"];
    row(
        "recordKeeping",
        "chain",
        "result",
        s(&rk["chain"]["result"]),
    );
    row(
        "recordKeeping",
        "retention",
        "days",
        s(&rk["retentionDays"]),
    );
    row(
        "recordKeeping",
        "decisions",
        "logged",
        s(&rk["decisionsLogged"]),
    );
    if let Some(kinds) = rk["decisionsByKind"].as_object() {
        for (kind, n) in kinds {
            row("recordKeeping", "decisions", kind, s(n));
        }
    }
    row("recordKeeping", "gaps", "records", s(&rk["gapsRecorded"]));
    row(
        "recordKeeping",
        "gaps",
        "eventsDropped",
        s(&rk["eventsDropped"]),
    );
    row(
        "recordKeeping",
        "rejected",
        "records",
        s(&rk["rejectedRecords"]),
    );
    let risk = &report["riskEvents"];
    if let Some(v) = risk["violations"].as_object() {
        for (code, n) in v {
            row("violation", code, "count", s(n));
        }
    }
    row(
        "riskEvents",
        "violations",
        "total",
        s(&risk["violationsTotal"]),
    );
    for c in report["checks"].as_array().into_iter().flatten() {
        let name = s(&c["name"]);
        row("check", &name, "article", s(&c["article"]));
        row("check", &name, "result", s(&c["result"]));
        row("check", &name, "evidence", s(&c["evidence"]));
    }
    for r in rows {
        w.write_record(&r).map_err(|e| format!("csv: {e}"))?;
    }
    w.into_inner().map_err(|e| format!("csv: {e}"))
}

/// The PDF (A4, title page, tables, spend-against-budget chart, page numbers). CPU-bound:
/// call it from a blocking task.
pub fn pdf(report: &Value) -> Result<Vec<u8>, String> {
    let engine = &*ENGINE;
    let data = serde_json::to_string(report).map_err(|e| format!("report JSON: {e}"))?;
    let mut inputs = Dict::new();
    inputs.insert("data".into(), data.into_value());
    let doc: PagedDocument = engine
        .compile_with_input(inputs)
        .output
        .map_err(|e| format!("report layout: {e}"))?;
    typst_pdf::pdf(&doc, &typst_pdf::PdfOptions::default())
        .map_err(|e| format!("report PDF: {e:?}"))
}
