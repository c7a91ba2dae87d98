//! The real binary finds an anomaly on its own: ten days of usage synced over HTTP, the last
//! hour ten times the usual spend; the periodic detection (`--anomaly-interval-ms`) stores it
//! and `pag0-sidecar anomalies` prints it. The child is killed on Drop; the port is ephemeral.

// A test harness: failing loudly is its job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pag0-sidecar");
const ADMIN: &str = "ops-admin-token-000001";
const SYNC: &str = "filter-sync-secret-0002";
const HOUR: i64 = 3_600_000;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "DATABASE_URL",
        "PAG0_ADMIN_TOKENS",
        "PAG0_SYNC_SECRET",
        "PAG0_TOKEN",
        "PAG0_URL",
        "PAG0_DATABASE_SCHEMA",
        "PAG0_ANOMALY_INTERVAL_MS",
        "PAG0_ANOMALY_LOOKBACK_DAYS",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn the_periodic_detection_stores_a_spike_and_the_cli_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            &format!("ops={ADMIN}"),
        ])
        .args(["--sync-secret", SYNC, "--anomaly-interval-ms", "200"])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child = Running(child);
    let base = format!(
        "http://{}",
        line.trim().strip_prefix("listening on ").expect("started")
    );

    // Ten days up to the last completed hour: $0.50 an hour, the last one $6.
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let last = now - now.rem_euclid(HOUR) - HOUR;
    let usage: Vec<Value> = (0..240)
        .map(|h| {
            let at = last - (239 - h) * HOUR;
            let amount = if h == 239 { "6000000" } else { "500000" };
            json!({ "amount": amount, "counters": [], "projectId": "sales-ai",
                    "clientId": "sales-agent", "host": "api.openai.com", "at": at + 60_000 })
        })
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/sync"))
        .bearer_auth(SYNC)
        .json(&json!({ "instanceId": "envoy-1", "seq": 1, "usage": usage }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );

    // The detection runs every 200 ms: poll the CLI until it reports the spike.
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let out = command()
            .args([
                "--url",
                &base,
                "--token",
                ADMIN,
                "anomalies",
                "--project",
                "sales-ai",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("spend_spike") {
            break text;
        }
        assert!(Instant::now() < deadline, "no anomaly within 30 s: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(table.contains("sales-ai spent $6.00"), "{table}");
    assert!(table.starts_with("WINDOW"), "{table}");

    let out = command()
        .args([
            "--url",
            &base,
            "--token",
            ADMIN,
            "anomalies",
            "--json",
            "--limit",
            "1000",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["anomalies"].as_array().unwrap();
    let spike = list
        .iter()
        .find(|a| a["kind"] == "spend_spike" && a["clientId"].is_null())
        .unwrap();
    assert_eq!(spike["observed"], "6000000");
    assert_eq!(spike["baseline"], "500000");
    // Re-running over the same hours stores nothing twice: store/contract.rs shows it.
    drop(child);
}
