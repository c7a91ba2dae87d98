//! README.md#configuration-reference: a configuration that does not validate makes on_configure fail, with the errors in
//! the log, so Envoy refuses the listener.

use pag0_host_tests::{fixture, Host, LogLine, StartError};

fn refused(config: &str) -> Vec<LogLine> {
    match Host::builder(config).build() {
        Err(StartError::ConfigureRefused { log, .. }) => log,
        Err(e) => panic!("expected on_configure to return false, got: {e}"),
        Ok(h) => panic!("a bad configuration was accepted; log:\n{}", h.log_text()),
    }
}

fn with_policy(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut p = fixture::policy();
    edit(&mut p);
    serde_json::json!({ "policy": p, "maxBodyBytes": 4096 }).to_string()
}

#[track_caller]
fn logged(log: &[LogLine], needle: &str) {
    assert!(
        log.iter().any(|l| l.message.contains(needle)),
        "no log line mentions {needle:?}: {log:#?}"
    );
}

#[test]
fn the_fixture_configuration_is_accepted() {
    let h = Host::new(&fixture::config(4096));
    assert!(
        h.metrics().contains_key("pag0.requests.allowed"),
        "metrics are defined at configure time"
    );
}

#[test]
fn configuration_that_is_not_json_is_refused() {
    refused("{ this is not json");
}

#[test]
fn an_empty_configuration_is_refused() {
    refused("");
}

#[test]
fn an_unknown_top_level_field_is_refused() {
    let log =
        refused(&serde_json::json!({ "policy": fixture::policy(), "maxBodyByte": 10 }).to_string());
    logged(&log, "maxBodyByte");
}

#[test]
fn a_bad_money_amount_is_refused_with_its_path() {
    let log = refused(&with_policy(|p| {
        p["projects"][0]["policy"]["dailyBudget"] = "12x".into()
    }));
    logged(&log, "projects[0].policy.dailyBudget");
}

#[test]
fn a_client_of_a_missing_project_is_refused() {
    let log = refused(&with_policy(|p| {
        p["clients"][0]["projectId"] = "nope".into()
    }));
    logged(&log, "clients[0]");
}

#[test]
fn an_unknown_timezone_is_refused() {
    let log = refused(&with_policy(|p| p["timezone"] = "Mars/Olympus".into()));
    logged(&log, "timezone");
}

#[test]
fn a_project_budget_above_the_orgs_is_refused() {
    refused(&with_policy(|p| {
        p["projects"][1]["policy"]["monthlyBudget"] = "999999999999".into()
    }));
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let log = refused(&with_policy(|p| {
        p["projects"][0]["policy"]["dailyBudget"] = "12x".into();
        p["clients"][1]["projectId"] = "nope".into();
    }));
    logged(&log, "projects[0].policy.dailyBudget");
    logged(&log, "clients[1]");
}
