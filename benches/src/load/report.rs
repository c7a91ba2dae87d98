//! Turning runs into the table (`load.md`), raw numbers (`load.json`) and a plot (`load.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::driver::quantile;
use super::{median, Report, Run, Variant};

/// One line of the table: a proxy (variant × workers) over all rounds.
#[derive(Clone, Debug)]
pub struct Row {
    pub variant: Variant,
    pub workers: u32,
    /// Median over rounds.
    pub saturation_rps: f64,
    /// CPU µs per request at saturation (proxy + sidecar), median over rounds.
    pub saturation_cpu_us: f64,
    /// The proxy's CPU µs per request at saturation in user space and in the kernel, medians
    /// over rounds (so they need not add up to the total's median).
    pub saturation_user_us: f64,
    pub saturation_system_us: f64,
    /// Per fixed rate (fraction of the no-filter capacity), in option order.
    pub rates: Vec<RateRow>,
    /// Share of answers that were 2xx, over every run.
    pub ok_share: f64,
}

#[derive(Clone, Debug)]
pub struct RateRow {
    pub fraction: f64,
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// Proxy + sidecar, median over rounds.
    pub cpu_us: f64,
    /// Proxy only.
    pub proxy_cpu_us: f64,
}

impl Row {
    /// The headline CPU figure: at the first (lowest) fixed rate, where nothing saturates.
    pub fn cpu_us(&self) -> f64 {
        self.rates
            .first()
            .map_or(self.saturation_cpu_us, |r| r.cpu_us)
    }
}

pub fn rows(report: &Report) -> Vec<Row> {
    let mut out = Vec::new();
    for &workers in &report.options.workers {
        for &variant in &report.options.variants {
            let mine: Vec<&Run> = report
                .runs
                .iter()
                .filter(|r| r.variant == variant && r.workers == workers)
                .collect();
            let sat: Vec<&&Run> = mine.iter().filter(|r| r.rate.is_none()).collect();
            let mut rates = Vec::new();
            for &fraction in &report.options.rate_fractions {
                let at: Vec<&&Run> = mine
                    .iter()
                    .filter(|r| r.fraction == Some(fraction))
                    .collect();
                let mut lat: Vec<u32> = at
                    .iter()
                    .flat_map(|r| r.result.latencies_us.iter().copied())
                    .collect();
                lat.sort_unstable();
                rates.push(RateRow {
                    fraction,
                    target_rps: median(&mut at.iter().filter_map(|r| r.rate).collect::<Vec<_>>()),
                    achieved_rps: median_of(&at, |r| r.result.rps()),
                    p50_us: quantile(&lat, 0.5),
                    p99_us: quantile(&lat, 0.99),
                    cpu_us: median_of(&at, Run::cpu_us_per_request),
                    proxy_cpu_us: median_of(&at, Run::proxy_cpu_us_per_request),
                });
            }
            let completed: u64 = mine.iter().map(|r| r.result.completed).sum();
            let ok: u64 = mine.iter().map(|r| r.result.ok).sum();
            out.push(Row {
                variant,
                workers,
                saturation_rps: median_of(&sat, |r| r.result.rps()),
                saturation_cpu_us: median_of(&sat, Run::cpu_us_per_request),
                saturation_user_us: median_of(&sat, Run::proxy_user_us_per_request),
                saturation_system_us: median_of(&sat, |r| {
                    r.proxy_cpu_us_per_request() - r.proxy_user_us_per_request()
                }),
                rates,
                ok_share: ok as f64 / completed.max(1) as f64,
            });
        }
    }
    out
}

/// The median over `runs` of one figure per run.
fn median_of(runs: &[&&Run], figure: impl Fn(&Run) -> f64) -> f64 {
    median(&mut runs.iter().map(|r| figure(r)).collect::<Vec<_>>())
}

fn find(rows: &[Row], v: Variant, w: u32) -> Option<&Row> {
    rows.iter().find(|r| r.variant == v && r.workers == w)
}

/// The goals of the issue, evaluated per worker count: (text, met).
pub fn goals(rows: &[Row], workers: &[u32]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for &w in workers {
        let (Some(pass), Some(pag0)) = (
            find(rows, Variant::Passthrough, w),
            find(rows, Variant::Pag0, w),
        ) else {
            continue;
        };
        let added = pag0.cpu_us() - pass.cpu_us();
        out.push((format!("{w}w: Pag0 adds {added:.1} µs of proxy CPU per request over the pass-through floor (goal ≤ 10 µs)"), added <= 10.0));
        let share = pag0.saturation_rps / pass.saturation_rps.max(1e-9);
        out.push((
            format!("{w}w: Pag0 keeps {:.1}% of the floor's saturation throughput ({:.0} vs {:.0} req/s; goal ≥ 95%)", share * 100.0, pag0.saturation_rps, pass.saturation_rps),
            share >= 0.95,
        ));
        if let Some(ext) = find(rows, Variant::ExtAuthz, w) {
            let ratio = ext.cpu_us() / pag0.cpu_us().max(1e-9);
            let base = find(rows, Variant::Baseline, w).map(Row::cpu_us);
            let added = base.map(|b| {
                format!(
                    "; over the no-filter proxy: {:.1} µs vs {:.1} µs added, {:.1}×",
                    ext.cpu_us() - b,
                    pag0.cpu_us() - b,
                    (ext.cpu_us() - b) / (pag0.cpu_us() - b).max(1e-9)
                )
            });
            out.push((
                format!(
                    "{w}w: ext_authz costs {ratio:.1}× Pag0's CPU per request ({:.1} µs proxy+sidecar vs {:.1} µs{}; goal ≥ 5×)",
                    ext.cpu_us(),
                    pag0.cpu_us(),
                    added.unwrap_or_default()
                ),
                ratio >= 5.0,
            ));
        }
    }
    out
}

/// What the host calls the wire contract (docs/policy.md#check-order-and-replies) needs cost on their own (the `spec-minimum-probe` variant),
/// per worker count: the part of the goals no filter honouring the wire contract can go under.
pub fn contract_floor(rows: &[Row], workers: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    for &w in workers {
        let (Some(pass), Some(min)) = (
            find(rows, Variant::Passthrough, w),
            find(rows, Variant::SpecMinimum, w),
        ) else {
            continue;
        };
        let added = min.cpu_us() - pass.cpu_us();
        let share = min.saturation_rps / pass.saturation_rps.max(1e-9);
        let user = min.saturation_user_us - pass.saturation_user_us;
        let mut line = format!(
            "{w}w: the host calls the wire contract needs, alone (`spec-minimum-probe`), add {added:.1} µs of proxy CPU per request over the pass-through floor ({user:.1} µs of user time at saturation) and keep {:.1}% of its saturation throughput",
            share * 100.0
        );
        if let Some(pag0) = find(rows, Variant::Pag0, w) {
            let _ = write!(
                line,
                "; Pag0 adds {:.1} µs over them",
                pag0.cpu_us() - min.cpu_us()
            );
        }
        out.push(line);
    }
    out
}

pub struct Meta {
    pub commit: String,
    pub date: String,
    pub machine: String,
    pub command: String,
}

pub fn markdown(report: &Report, meta: &Meta) -> String {
    let rows = rows(report);
    let o = &report.options;
    let mut s = String::new();
    let _ = writeln!(s, "# Load benchmark: Pag0 against baseline Envoy\n");
    let _ = writeln!(s, "- command: `{}`", meta.command);
    let _ = writeln!(s, "- commit: `{}`, {}", meta.commit, meta.date);
    let _ = writeln!(s, "- machine: {}", meta.machine);
    let _ = writeln!(
        s,
        "- {} round(s) × {:.0} s per run, variants alternating; saturation: closed loop, {} connections; fixed rates: open loop, {} connections, latency from the scheduled send time",
        o.rounds,
        o.duration.as_secs_f64(),
        o.saturation_connections,
        o.rate_connections
    );
    let _ = writeln!(s, "- the client, the upstream Envoy and the proxy share the machine: compare rows of one run, not runs; CPU per request is the robust figure\n");
    let mut head =
        String::from("| proxy | workers | req/s at saturation | CPU µs/req at saturation |");
    let mut rule = String::from("|---|---:|---:|---:|");
    for f in &o.rate_fractions {
        let pct = f * 100.0;
        let _ = write!(
            head,
            " p50 / p99 µs at {pct:.0}% | CPU µs/req at {pct:.0}% |"
        );
        rule.push_str("---:|---:|");
    }
    head.push_str(" 2xx |");
    rule.push_str("---:|");
    let _ = writeln!(s, "{head}\n{rule}");
    for r in &rows {
        let mut line = format!(
            "| {} | {} | {:.0} | {:.1} |",
            r.variant.name(),
            r.workers,
            r.saturation_rps,
            r.saturation_cpu_us
        );
        for x in &r.rates {
            let cpu = if r.variant == Variant::ExtAuthz {
                format!("{:.1} ({:.1} proxy)", x.cpu_us, x.proxy_cpu_us)
            } else {
                format!("{:.1}", x.cpu_us)
            };
            let late = if x.achieved_rps < x.target_rps * 0.97 {
                format!(" (only {:.0} req/s)", x.achieved_rps)
            } else {
                String::new()
            };
            let _ = write!(line, " {} / {}{late} | {cpu} |", x.p50_us, x.p99_us);
        }
        let _ = write!(line, " {:.1}% |", r.ok_share * 100.0);
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "\nFixed rates are fractions of the no-filter proxy's saturation rate with the same worker count:");
    for f in &o.rate_fractions {
        let rates: Vec<String> = o
            .workers
            .iter()
            .filter_map(|&w| {
                rows.iter()
                    .find(|r| r.workers == w)
                    .and_then(|r| r.rates.iter().find(|x| x.fraction == *f))
                    .map(|x| format!("{w}w {:.0} req/s", x.target_rps))
            })
            .collect();
        let _ = writeln!(s, "{:.0}% = {}.", f * 100.0, rates.join(", "));
    }
    let _ = writeln!(s, "\n## User space and kernel\n");
    let _ = writeln!(s, "The proxy's CPU per request at saturation, split as the kernel accounts it (`/proc/<pid>/stat` utime, stime). A filter's own work is user time; `pag0-instructions` counts user space only.\n");
    let _ = writeln!(
        s,
        "| proxy | workers | user µs/req | kernel µs/req | user share |\n|---|---:|---:|---:|---:|"
    );
    for r in &rows {
        let all = r.saturation_user_us + r.saturation_system_us;
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.0}% |",
            r.variant.name(),
            r.workers,
            r.saturation_user_us,
            r.saturation_system_us,
            100.0 * r.saturation_user_us / all.max(1e-9)
        );
    }
    let _ = writeln!(s, "\n## Goals\n");
    for (text, met) in goals(&rows, &o.workers) {
        let _ = writeln!(s, "- {} {text}", if met { "MET" } else { "MISSED" });
    }
    for text in contract_floor(&rows, &o.workers) {
        let _ = writeln!(s, "- floor of the wire contract, {text}");
    }
    let _ = writeln!(s, "\n## Size and memory\n");
    for (name, size) in &report.wasm_sizes {
        let _ = writeln!(
            s,
            "- `{name}`: {} bytes ({:.0} KiB)",
            size,
            *size as f64 / 1024.0
        );
    }
    let _ = writeln!(s, "\n| proxy | workers | RSS MiB | Envoy allocated MiB | wasm VMs (v8 active) |\n|---|---:|---:|---:|---:|");
    for ((v, w), m) in &report.memory {
        let active = m
            .wasm_stats
            .get("wasm.envoy.wasm.runtime.v8.active")
            .map_or_else(|| "-".to_owned(), u64::to_string);
        let _ = writeln!(
            s,
            "| {} | {w} | {:.1} | {:.1} | {active} |",
            v.name(),
            mib(m.rss),
            mib(m.allocated)
        );
    }
    if let Some(rss) = report.sidecar_rss {
        let _ = writeln!(s, "\nSidecar RSS after the run: {:.1} MiB.", mib(rss));
    }
    for v in [Variant::Passthrough, Variant::Pag0] {
        let get = |w: u32| report.memory.get(&(v, w)).map(|m| m.allocated as f64);
        let base = |w: u32| {
            report
                .memory
                .get(&(Variant::Baseline, w))
                .map(|m| m.allocated as f64)
        };
        if let (Some(a1), Some(a2), Some(b1), Some(b2)) = (get(1), get(2), base(1), base(2)) {
            let _ = writeln!(
                s,
                "\n{}: allocator bytes over the no-filter proxy: {:.1} MiB with 1 worker, {:.1} MiB with 2 workers → {:.1} MiB per additional worker VM.",
                v.name(),
                (a1 - b1) / 1048576.0,
                (a2 - b2) / 1048576.0,
                ((a2 - b2) - (a1 - b1)) / 1048576.0
            );
        }
    }
    propagation_section(&mut s, report);
    s
}

/// Per worker count: (trials, PUT median, first median, every-worker median, every-worker max), in ms.
pub fn propagation_summary(report: &Report) -> Vec<(u32, usize, f64, f64, f64, f64)> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    report
        .options
        .workers
        .iter()
        .filter_map(|&w| {
            let mine: Vec<_> = report
                .propagation
                .iter()
                .filter(|t| t.workers == w)
                .collect();
            if mine.is_empty() {
                return None;
            }
            let mut put: Vec<f64> = mine.iter().map(|t| ms(t.put)).collect();
            let mut first: Vec<f64> = mine.iter().map(|t| ms(t.first)).collect();
            let mut all: Vec<f64> = mine.iter().map(|t| ms(t.every_worker)).collect();
            let max = all.iter().copied().fold(0.0, f64::max);
            Some((
                w,
                mine.len(),
                median(&mut put),
                median(&mut first),
                median(&mut all),
                max,
            ))
        })
        .collect()
}

fn propagation_section(s: &mut String, report: &Report) {
    let rows = propagation_summary(report);
    if rows.is_empty() {
        return;
    }
    let interval = report.options.sync_interval_ms;
    let _ = writeln!(s, "\n## Policy propagation (managed mode)\n");
    let _ = writeln!(
        s,
        "`PUT /v1/policy` at the sidecar → the new policy enforced by every worker of a running Envoy (Pag0 managed, `syncIntervalMs` {interval}). Each trial blocks or unblocks one endpoint and probes it on fresh connections every {} ms; \"every worker\" is the first reply of the final run of {} in a row under the new policy. PUTs land at spread phases of the sync timer.\n",
        super::propagation::PROBE_GAP.as_millis(),
        super::propagation::STREAK
    );
    let _ = writeln!(s, "| workers | trials | PUT ms (median) | first enforced ms (median) | every worker ms (median) | every worker ms (max) |\n|---:|---:|---:|---:|---:|---:|");
    for (w, n, put, first, all, max) in &rows {
        let _ = writeln!(
            s,
            "| {w} | {n} | {put:.1} | {first:.0} | {all:.0} | {max:.0} |"
        );
    }
    let worst = rows.iter().map(|r| r.5).fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "\n- {} policy propagation: a PUT reaches every filter within one sync interval (worst trial {worst:.0} ms, interval {interval} ms)",
        if worst <= interval as f64 { "MET" } else { "MISSED" }
    );
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

pub fn json(report: &Report, meta: &Meta) -> Value {
    let rows: Vec<Value> = rows(report)
        .iter()
        .map(|r| {
            json!({
                "proxy": r.variant.name(), "workers": r.workers,
                "saturation_rps": r.saturation_rps, "saturation_cpu_us_per_request": r.saturation_cpu_us,
                "saturation_proxy_user_us_per_request": r.saturation_user_us,
                "saturation_proxy_system_us_per_request": r.saturation_system_us,
                "ok_share": r.ok_share,
                "fixed_rates": r.rates.iter().map(|x| json!({
                    "fraction": x.fraction, "target_rps": x.target_rps, "achieved_rps": x.achieved_rps,
                    "p50_us": x.p50_us, "p99_us": x.p99_us, "cpu_us_per_request": x.cpu_us,
                    "proxy_cpu_us_per_request": x.proxy_cpu_us })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let runs: Vec<Value> = report
        .runs
        .iter()
        .map(|r| {
            json!({ "proxy": r.variant.name(), "workers": r.workers, "round": r.round, "target_rps": r.rate,
                    "completed": r.result.completed, "ok": r.result.ok, "errors": r.result.errors,
                    "elapsed_s": r.result.elapsed.as_secs_f64(), "rps": r.result.rps(),
                    "proxy_cpu_s": r.proxy_cpu.as_secs_f64(), "proxy_user_cpu_s": r.proxy_user_cpu.as_secs_f64(), "sidecar_cpu_s": r.sidecar_cpu.as_secs_f64() })
        })
        .collect();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let propagation: Vec<Value> = report
        .propagation
        .iter()
        .map(|t| {
            json!({ "workers": t.workers, "trial": t.trial, "blocking": t.blocking,
                    "put_ms": ms(t.put), "first_ms": ms(t.first),
                    "every_worker_ms": ms(t.every_worker), "probes": t.probes })
        })
        .collect();
    json!({ "commit": meta.commit, "date": meta.date, "machine": meta.machine, "command": meta.command,
            "rows": rows, "runs": runs, "wasm_sizes": report.wasm_sizes,
            "sync_interval_ms": report.options.sync_interval_ms, "propagation": propagation })
}

/// Two bar charts side by side: CPU µs per request (at the first fixed rate) and req/s at
/// saturation, one group per proxy, one bar per worker count. Plain SVG, no fonts needed.
pub fn svg(report: &Report, meta: &Meta) -> String {
    let rows = rows(report);
    let variants = &report.options.variants;
    let workers = &report.options.workers;
    let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
    let (w, h) = (1000.0_f64, 420.0_f64);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Pag0 load benchmark — commit {} — {}</text>"#,
        w / 2.0,
        esc(&meta.commit),
        esc(&meta.date)
    );
    let pct = report
        .options
        .rate_fractions
        .first()
        .map_or(0.0, |f| f * 100.0);
    type Value = Box<dyn Fn(&Row) -> f64>;
    let panels: [(&str, Value); 2] = [
        (
            if pct > 0.0 {
                "CPU µs per request (proxy + sidecar), fixed rate"
            } else {
                "CPU µs per request"
            },
            Box::new(Row::cpu_us),
        ),
        (
            "requests/s at saturation",
            Box::new(|r: &Row| r.saturation_rps),
        ),
    ];
    for (pi, (title, value)) in panels.iter().enumerate() {
        let x0 = 60.0 + pi as f64 * (w / 2.0);
        let (pw, ph, y0) = (w / 2.0 - 90.0, 280.0, 60.0);
        let max = rows.iter().map(value).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
        let _ = write!(
            s,
            r#"<text x="{}" y="45" text-anchor="middle" font-size="13">{}</text>"#,
            x0 + pw / 2.0,
            esc(title)
        );
        let _ = write!(
            s,
            r#"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            y0 + ph,
            x0 + pw,
            y0 + ph
        );
        let _ = write!(
            s,
            r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{}" stroke="black"/>"#,
            y0 + ph
        );
        for t in 0..=4 {
            let v = max * f64::from(t) / 4.0;
            let y = y0 + ph - ph * f64::from(t) / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 + pw,
                x0 - 4.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        let gw = pw / variants.len().max(1) as f64;
        let bw = gw * 0.7 / workers.len().max(1) as f64;
        for (vi, v) in variants.iter().enumerate() {
            let gx = x0 + gw * vi as f64 + gw * 0.15;
            for (wi, wk) in workers.iter().enumerate() {
                let Some(r) = find(&rows, *v, *wk) else {
                    continue;
                };
                let val = value(r);
                let bh = ph * val / max;
                let bx = gx + bw * wi as f64;
                let color = colors.get(wi % colors.len()).copied().unwrap_or("#888");
                let _ = write!(
                    s,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"/>"#,
                    y0 + ph - bh,
                    bw * 0.95
                );
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                    bx + bw / 2.0,
                    y0 + ph - bh - 3.0,
                    fmt_num(val)
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                gx + gw * 0.35,
                y0 + ph + 16.0,
                esc(v.name())
            );
        }
    }
    for (wi, wk) in workers.iter().enumerate() {
        let color = colors.get(wi % colors.len()).copied().unwrap_or("#888");
        let x = 60.0 + wi as f64 * 110.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{wk} worker(s)</text>"#,
            h - 30.0,
            x + 16.0,
            h - 20.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `load.md`, `load.json`, `load.svg` into `dir`.
pub fn write(report: &Report, meta: &Meta, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("load.md"), markdown(report, meta))?;
    std::fs::write(
        dir.join("load.json"),
        serde_json::to_string_pretty(&json(report, meta))?,
    )?;
    std::fs::write(dir.join("load.svg"), svg(report, meta))?;
    Ok(())
}

/// Commit, date and machine facts for the report header.
pub fn meta(command: String) -> Meta {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let mut commit = run("git", &["rev-parse", "--short", "HEAD"]);
    if !run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str(" (+ uncommitted changes)");
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let envoy = run(
        &pag0_envoy::harness::envoy_binary().display().to_string(),
        &["--version"],
    );
    let envoy = envoy.split_whitespace().last().unwrap_or("").to_owned();
    let mut by: BTreeMap<&str, String> = BTreeMap::new();
    by.insert("cpu", format!("{cores} × {cpu}"));
    by.insert("envoy", envoy);
    Meta {
        commit,
        date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: by
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: Variant, rps: f64, cpu: f64, user: f64) -> Row {
        Row {
            variant,
            workers: 1,
            saturation_rps: rps,
            saturation_cpu_us: cpu,
            saturation_user_us: user,
            saturation_system_us: cpu - user,
            rates: vec![RateRow {
                fraction: 0.5,
                target_rps: rps / 2.0,
                achieved_rps: rps / 2.0,
                p50_us: 1000,
                p99_us: 2000,
                cpu_us: cpu,
                proxy_cpu_us: cpu,
            }],
            ok_share: 1.0,
        }
    }

    #[test]
    fn the_contract_floor_is_priced_against_the_empty_filter_and_pag0_against_it() {
        let rows = [
            row(Variant::Passthrough, 20_000.0, 40.0, 20.0),
            row(Variant::SpecMinimum, 18_000.0, 45.5, 25.0),
            row(Variant::Pag0, 16_000.0, 49.0, 28.5),
        ];
        let lines = contract_floor(&rows, &[1, 2]);
        assert_eq!(lines.len(), 1, "no 2-worker rows: {lines:?}");
        let l = &lines[0];
        assert!(l.contains("add 5.5 µs"), "{l}");
        assert!(l.contains("(5.0 µs of user time"), "{l}");
        assert!(l.contains("keep 90.0%"), "{l}");
        assert!(l.contains("Pag0 adds 3.5 µs over them"), "{l}");
        assert!(contract_floor(&rows[..1], &[1]).is_empty());
    }

    #[test]
    fn variants_parse_by_name() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.name()), Some(v));
        }
        assert_eq!(
            Variant::parse("spec-minimum-probe"),
            Some(Variant::SpecMinimum)
        );
    }
}
