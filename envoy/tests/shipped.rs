//! The shipped files: `standalone.yaml` is generated from `policies/acme.json`, every Envoy
//! YAML in `envoy/` passes `envoy --mode validate` (which loads the filter and runs its
//! `on_configure`, so the inline policy is validated too), and the mock binary's contract.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pag0_envoy::harness::{check_prerequisites, envoy_binary, repo_root};
use pag0_envoy::policies::{acme_policy, acme_text, render_standalone_yaml};

#[test]
fn standalone_yaml_is_generated_from_acme_json() {
    let want = render_standalone_yaml().expect("render");
    let path = repo_root().join("envoy/standalone.yaml");
    let got = std::fs::read_to_string(&path).expect("read envoy/standalone.yaml");
    assert!(
        got == want,
        "envoy/standalone.yaml is out of date with envoy/policies/acme.json: run `make standalone`"
    );
}

#[test]
fn acme_policy_compiles_in_the_policy_core() {
    let text = acme_text().expect("acme.json");
    if let Err(errors) = pag0_policy::CompiledPolicy::compile(text.as_bytes()) {
        panic!("envoy/policies/acme.json does not validate:\n{errors:?}");
    }
    let doc = acme_policy().expect("json");
    assert_eq!(
        doc["projects"].as_array().map(Vec::len),
        Some(10),
        "the seed's 10 teams"
    );
}

#[test]
fn every_shipped_yaml_validates_in_envoy() {
    check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let dir = repo_root().join("envoy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("envoy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in envoy/");
    for f in files {
        let out = Command::new(envoy_binary())
            .current_dir(repo_root()) // the shipped YAML names the .wasm relative to the repo root
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "-l",
                "warning",
                "-c",
            ])
            .arg(&f)
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn mock_binary_prints_its_port_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pag0-mock-upstream"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn mock");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let stats: serde_json::Value = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/__stats"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["total"], 0);
    let _ = &mut guard;
}
