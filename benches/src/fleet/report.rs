//! `pag0-fleet`'s report: a Markdown table and the same figures as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::Row;

/// The report header: the load benchmark's (commit, date, machine, command line).
pub use crate::load::report::{meta, Meta};

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn load(l: [f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
}

/// The figures table (one line per run) and the hot counter's table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| store | sidecars | N | records/sync | syncs/s (target) | records/s | p50 ms | p99 ms | max ms | > 200 ms | errors | sidecar CPU | PG CPU | client CPU | load before → after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let errors = if r.errors.is_empty() {
            "0".to_owned()
        } else {
            r.errors
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} ({:.0}) | {:.0} | {:.1} | {:.1} | {:.1} | {} ({:.1} %) | {} | {:.0} % | {} | {:.0} % | {} → {} |",
            r.store.label(),
            r.sidecars,
            r.instances,
            r.records,
            r.syncs_per_s(),
            r.target_syncs_per_s(),
            r.records_per_s(),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.over_200ms,
            pct(r.over_200ms, r.syncs_ok),
            errors,
            r.cpu_pct(r.sidecar_cpu),
            r.postgres_cpu
                .map_or("–".to_owned(), |c| format!("{:.0} %", r.cpu_pct(c))),
            r.cpu_pct(r.client_cpu),
            load(r.load_before),
            load(r.load_after),
        );
    }
    s.push('\n');
    s.push_str(
        "| store | N | hot counter | limit L | spent | instances holding a slice | Σ granted (% of L, % of room) | largest slice (% of L) | Σ want (× room) | answers: 0 lease / top-up |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let h = &r.hot;
        let room = h.limit.saturating_sub(h.spent);
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} / {} | {} ({:.1} %, {:.1} %) | {} ({:.2} %) | {:.1} | {} / {} |",
            r.store.label(),
            r.instances,
            h.counter,
            h.limit,
            h.spent,
            h.holders,
            r.instances,
            h.sum_granted,
            pct(h.sum_granted, h.limit),
            pct(h.sum_granted, room),
            h.max_slice,
            pct(h.max_slice, h.limit),
            if room == 0 {
                0.0
            } else {
                h.sum_want as f64 / room as f64
            },
            h.starved,
            h.topups,
        );
    }
    s
}

/// The whole report in Markdown.
pub fn markdown(rows: &[Row], meta: &Meta) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# pag0-fleet: a fleet on one control plane\n");
    let _ = writeln!(
        s,
        "{} — commit {} — {}\n\n`{}`\n",
        meta.date, meta.commit, meta.machine, meta.command
    );
    s.push_str(
        "Simulated instances (the filter's sync loop and wire format, no proxies) against the \
         release sidecar. Latency: from sending a sync to its parsed answer; `> 200 ms`: answered \
         syncs slower than the filter's default `timeoutMs` (a real filter would have timed out \
         and resent). CPU: share of one core over the run's wall time. Load: /proc/loadavg.\n\n",
    );
    s.push_str(&table(rows));
    s.push_str(
        "\nHot counter, from each instance's last answer: Σ granted is what the fleet holds \
         (≤ L − spent by the sidecar's invariant) — the overspend if every holder's lease lapsed \
         with its slice admitted but unreported (docs/sync-protocol.md \"The overspend bound\"); \
         the largest slice is the bound for one lost instance.\n",
    );
    s
}

pub fn json(rows: &[Row], meta: &Meta) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let h = &r.hot;
            json!({
                "store": r.store.label(),
                "sidecars": r.sidecars,
                "instances": r.instances,
                "recordsPerSync": r.records,
                "intervalMs": r.interval_ms,
                "windowS": r.window.as_secs_f64(),
                "wallS": r.wall.as_secs_f64(),
                "syncsOk": r.syncs_ok,
                "syncsPerS": r.syncs_per_s(),
                "targetSyncsPerS": r.target_syncs_per_s(),
                "recordsAcked": r.records_acked,
                "recordsPerS": r.records_per_s(),
                "latencyMs": {"p50": r.p50_ms, "p99": r.p99_ms, "max": r.max_ms},
                "over200ms": r.over_200ms,
                "errors": r.errors,
                "cpuS": {
                    "sidecars": r.sidecar_cpu.as_secs_f64(),
                    "postgres": r.postgres_cpu.map(|c| c.as_secs_f64()),
                    "client": r.client_cpu.as_secs_f64(),
                },
                "loadavgBefore": r.load_before,
                "loadavgAfter": r.load_after,
                "hot": {
                    "counter": h.counter,
                    "limit": h.limit,
                    "spent": h.spent,
                    "sumGranted": h.sum_granted,
                    "holders": h.holders,
                    "maxSlice": h.max_slice,
                    "sumWant": h.sum_want,
                    "answersStarved": h.starved,
                    "answersTopUp": h.topups,
                },
            })
        })
        .collect();
    json!({
        "date": meta.date,
        "commit": meta.commit,
        "machine": meta.machine,
        "command": meta.command,
        "runs": rows,
    })
}

/// Writes `<dir>/<name>.md` and `<dir>/<name>.json`.
pub fn write(rows: &[Row], meta: &Meta, dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.md")), markdown(rows, meta))?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json(rows, meta))?,
    )?;
    Ok(())
}
