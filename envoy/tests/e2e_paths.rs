//! Issue 20 item 1 through a real Envoy: every equivalent or ambiguous spelling of a path
//! under a rule, and every authority that is not one host, is refused by the filter and never
//! reaches the mock upstream. Run with the HTTP connection manager's own path protections OFF
//! (the filter alone holds) and, for the same requests, ON as shipped.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use pag0_envoy::policies::key_sha256;
use pag0_envoy::EnvoyConfig;
use serde_json::{json, Value};

/// `c1` may call api.openai.com except `/v1/admin` (blocked org-wide); `c-chat` may call only
/// `api.openai.com/v1/chat`.
fn policy() -> Value {
    json!({
        "orgId": "paths-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "1000000000",
            "blockedEndpoints": ["api.openai.com/v1/admin", "suspicious-api.com"]
        },
        "endpoints": endpoints(),
        "projects": [project("p1", 100_000_000, json!({}))],
        "clients": [
            client("c1", "p1", "sk-test-1"),
            {
                "id": "c-chat", "projectId": "p1", "apiKeySha256": key_sha256("sk-chat"),
                "additionalRestrictions": { "allowedEndpoints": ["api.openai.com/v1/chat"] }
            }
        ]
    })
}

fn stack(path_protections: bool) -> Stack {
    Stack::start_config(|port| {
        let mut c = EnvoyConfig::standalone(policy(), port);
        c.path_protections = path_protections;
        c
    })
}

/// A reply read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    code: Option<String>,
    text: String,
}

/// Sends one HTTP/1.1 request exactly as written (request target and `Host` lines verbatim:
/// no client library re-spells them) and reads the reply to the end.
fn raw(port: u16, method: &str, target: &str, hosts: &[&str], key: &str, body: &str) -> Raw {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for h in hosts {
        head.push_str(&format!("host: {h}\r\n"));
    }
    head.push_str(&format!(
        "x-pag0-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    ));
    conn.write_all(head.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = conn.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-pag0-code")
            .then(|| value.trim().to_owned())
    });
    Raw { status, code, text }
}

/// Blocked spellings of `/v1/admin` (client c1).
const BLOCKED: &[&str] = &[
    "/v1/admin",
    "/v1/%61dmin",
    "/%761/admin",
    "/V1/ADMIN",
    "/v1/Admin/users",
    "/v1//admin",
    "//v1/admin",
    "/v1/./admin",
    "/v1/x/../admin",
    "/v1/%2e/admin",
    "/v1/x/%2E%2E/admin",
    "/v1/%41DMIN?x=1",
];

/// Paths no rule can be sure of (either client).
const AMBIGUOUS: &[&str] = &[
    "/v1/admin;x=1",
    "/v1/chat/..;/admin",
    "/v1/chat;/../admin",
    "/v1/admin%3Bx=1",
    "/v1%2Fadmin",
    "/v1%2fadmin",
    "/v1/chat/..%2Fadmin",
    "/v1%5Cadmin",
    "/v1\\admin",
    "/v1/chat/..\\admin",
    "/v1/admin%00",
    "/v1/%ff",
    "/v1/%c3%28",
    "/v1/%zz",
    "/v1/%2561dmin",
];

/// Not under `/v1/chat` once normalised (client c-chat). (`/v1/chat/../admin` is under the
/// block rule and gets ENDPOINT_BLOCKED: blocks are checked first.)
const NOT_ALLOWED: &[&str] = &[
    "/v1/chat/../embeddings",
    "/v1/chat/%2e%2e/embeddings",
    "/v1/chat/.%2E/embeddings",
    "/V1/CHAT/completions",
    "/v1/chatter",
];

/// Under `/v1/chat` once normalised but not as written: an upstream that does not resolve dot
/// segments would route it elsewhere, so without Envoy's normalisation it is not allowed.
const NOT_ALLOWED_AS_WRITTEN: &str = "/v1/embeddings/../chat/completions";

/// Authorities that are not one host name (client c1, path `/v1/chat/completions`). The
/// first is two `Host` headers, which Envoy joins with a comma.
const BAD_AUTHORITIES: &[&[&str]] = &[
    &["api.openai.com", "suspicious-api.com"],
    &["api.openai.com,suspicious-api.com"],
    &["user@api.openai.com"],
    &["suspicious-api.com@api.openai.com"],
    &["api.openai.com;"],
    &["api.openai.com:80:80"],
    &["api.openai.com%2e"],
    &["api.openai.com:99999"],
    &["api.openai.com:x"],
];

fn small_chat() -> String {
    chat("gpt-4", 10, false).to_string()
}

/// Every listed request gets `want` (status, code) from pag0 and the upstream sees none of them.
fn expect_all(
    c: &mut Checks,
    s: &Stack,
    label: &str,
    requests: Vec<(String, Vec<&str>, &str)>,
    want: (u16, &str),
) {
    for (path, hosts, key) in requests {
        let before = s.mock.arrived_total();
        let r = raw(s.envoy.port, "POST", &path, &hosts, key, &small_chat());
        c.that(
            &format!("{label}: {hosts:?} {path} -> {} {}", want.0, want.1),
            r.status == want.0 && r.code.as_deref() == Some(want.1),
            format!("got {} {:?}\n{}", r.status, r.code, r.text),
        );
        c.eq(
            &format!("{label}: {hosts:?} {path} never reaches the upstream"),
            s.mock.arrived_total(),
            before,
        );
    }
}

#[test]
fn the_filter_alone_refuses_every_spelling_with_envoy_protections_off() {
    let s = stack(false);
    let mut c = Checks::default();
    let yaml = std::fs::read_to_string(s.envoy.work_dir().join("envoy.yaml")).unwrap();
    c.that(
        "this Envoy runs without normalize_path",
        !yaml.contains("normalize_path") && !yaml.contains("merge_slashes"),
        &yaml,
    );

    // Controls: the upstream is reachable and sees what the agent sent.
    for (path, key) in [
        ("/v1/chat/completions", "sk-test-1"),
        ("/v1/chat/completions", "sk-chat"),
        ("//v1/%63hat/./completions", "sk-chat"),
    ] {
        let before = s.mock.arrived_total();
        let r = raw(
            s.envoy.port,
            "POST",
            path,
            &["api.openai.com"],
            key,
            &small_chat(),
        );
        c.that(
            &format!("control {key} {path} is allowed"),
            r.status == 200,
            &r.text,
        );
        c.eq(
            &format!("control {key} {path} reaches the upstream"),
            s.mock.arrived_total(),
            before + 1,
        );
    }

    let host = || vec!["api.openai.com"];
    expect_all(
        &mut c,
        &s,
        "blocked",
        BLOCKED
            .iter()
            .map(|p| (p.to_string(), host(), "sk-test-1"))
            .collect(),
        (403, "ENDPOINT_BLOCKED"),
    );
    expect_all(
        &mut c,
        &s,
        "ambiguous",
        AMBIGUOUS
            .iter()
            .flat_map(|p| {
                [
                    (p.to_string(), host(), "sk-test-1"),
                    (p.to_string(), host(), "sk-chat"),
                ]
            })
            .collect(),
        (400, "AMBIGUOUS_PATH"),
    );
    expect_all(
        &mut c,
        &s,
        "not allowed",
        NOT_ALLOWED
            .iter()
            .chain([&NOT_ALLOWED_AS_WRITTEN])
            .map(|p| (p.to_string(), host(), "sk-chat"))
            .collect(),
        (403, "ENDPOINT_NOT_ALLOWED"),
    );
    expect_all(
        &mut c,
        &s,
        "blocked via the allowed prefix",
        ["/v1/chat/../admin", "/v1/chat/%2E%2E/Admin"]
            .map(|p| (p.to_string(), host(), "sk-chat"))
            .to_vec(),
        (403, "ENDPOINT_BLOCKED"),
    );
    expect_all(
        &mut c,
        &s,
        "bad authority",
        BAD_AUTHORITIES
            .iter()
            .map(|h| ("/v1/chat/completions".to_string(), h.to_vec(), "sk-test-1"))
            .collect(),
        (400, "INVALID_AUTHORITY"),
    );
    // The codes are counted like every other deny.
    let want = 2 * AMBIGUOUS.len() as u64;
    c.that(
        "AMBIGUOUS_PATH is counted",
        s.counter_at_least("pag0.requests.denied.AMBIGUOUS_PATH", want) >= want,
        format!("{:?}", s.envoy.pag0_counters()),
    );
    c.finish(&s.envoy);
}

/// As shipped (protections on), Envoy normalises or rejects first; either way none of the
/// requests reaches the upstream and each gets a 4xx.
#[test]
fn with_envoy_protections_on_nothing_reaches_the_upstream_either() {
    let s = stack(true);
    let mut c = Checks::default();
    let yaml = std::fs::read_to_string(s.envoy.work_dir().join("envoy.yaml")).unwrap();
    c.that(
        "this Envoy runs with the shipped path protections",
        yaml.contains("normalize_path: true")
            && yaml.contains("merge_slashes: true")
            && yaml.contains("path_with_escaped_slashes_action: REJECT_REQUEST"),
        &yaml,
    );
    let before = s.mock.arrived_total();
    let r = raw(
        s.envoy.port,
        "POST",
        "/v1/chat/completions",
        &["api.openai.com"],
        "sk-chat",
        &small_chat(),
    );
    c.that("control is allowed", r.status == 200, &r.text);
    c.eq(
        "control reaches the upstream",
        s.mock.arrived_total(),
        before + 1,
    );

    let requests: Vec<(&str, Vec<&str>, &str)> = BLOCKED
        .iter()
        .map(|p| (*p, vec!["api.openai.com"], "sk-test-1"))
        .chain(
            AMBIGUOUS
                .iter()
                .map(|p| (*p, vec!["api.openai.com"], "sk-chat")),
        )
        .chain(
            NOT_ALLOWED
                .iter()
                .map(|p| (*p, vec!["api.openai.com"], "sk-chat")),
        )
        .chain(
            BAD_AUTHORITIES
                .iter()
                .map(|h| ("/v1/chat/completions", h.to_vec(), "sk-test-1")),
        )
        .collect();
    for (path, hosts, key) in requests {
        let before = s.mock.arrived_total();
        let r = raw(s.envoy.port, "POST", path, &hosts, key, &small_chat());
        c.that(
            &format!("{hosts:?} {path} is refused"),
            (400..500).contains(&r.status),
            format!("got {} {:?}\n{}", r.status, r.code, r.text),
        );
        c.eq(
            &format!("{hosts:?} {path} never reaches the upstream"),
            s.mock.arrived_total(),
            before,
        );
    }
    // Envoy resolves the dots and forwards the resolved path, which is allowed: the upstream
    // gets `/v1/chat/completions`, never the spelling with dots.
    let before = s.mock.served_on("/v1/chat/completions");
    let r = raw(
        s.envoy.port,
        "POST",
        NOT_ALLOWED_AS_WRITTEN,
        &["api.openai.com"],
        "sk-chat",
        &small_chat(),
    );
    c.that(
        "Envoy-normalised dots are allowed",
        r.status == 200,
        &r.text,
    );
    c.eq(
        "the upstream got the normalised path",
        s.mock.served_on("/v1/chat/completions"),
        before + 1,
    );
    c.finish(&s.envoy);
}

/// Every shipped Envoy YAML turns the connection manager's path protections on.
#[test]
fn every_shipped_yaml_sets_the_path_protections() {
    let dir = pag0_envoy::harness::repo_root().join("envoy");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let managers = text.matches("HttpConnectionManager").count();
        for line in [
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
        ] {
            assert_eq!(
                text.matches(line).count(),
                managers,
                "{}: every HTTP connection manager needs {line}",
                path.display()
            );
        }
        seen += 1;
    }
    assert!(seen >= 2, "found {seen} YAML files in {}", dir.display());
}
