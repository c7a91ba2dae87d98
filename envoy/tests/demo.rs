//! `make demo` keeps working: the demo binary runs the acme story against a real Envoy and
//! exits non-zero when any step's result differs from the script.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

#[test]
fn the_acme_demo_runs_as_scripted() {
    pag0_envoy::harness::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_pag0-demo"))
        .output()
        .expect("run pag0-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pag0-demo failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Every step went as scripted."), "{stdout}");
    assert!(
        stdout.contains("BUDGET_EXCEEDED (project.daily)"),
        "{stdout}"
    );
    // The compliance report of the managed part: its path printed, a PDF there.
    let path = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("target/demo/acme-eu-ai-act.pdf"))
        .unwrap_or_else(|| panic!("no report path printed:\n{stdout}"));
    let pdf = std::fs::read(path).unwrap();
    assert!(pdf.starts_with(b"%PDF-"), "{path} is not a PDF");
    assert!(stdout.contains("status NOT_COMPLIANT"), "{stdout}");
    // The decision log of the managed part, and its chain verified.
    assert!(stdout.contains("== The decision log"), "{stdout}");
    assert!(stdout.contains("APPROVAL_USED"), "{stdout}");
    assert!(stdout.contains("audit chain verified: ok"), "{stdout}");
}
