//! Policy propagation time: from `PUT /v1/policy` at the sidecar to the new policy enforced
//! by every worker of a running Envoy (managed mode).
//!
//! One Envoy per worker count runs the Pag0 filter in managed mode against the run's sidecar.
//! Each trial PUTs the bench policy with one endpoint added to `globalPolicy.blockedEndpoints`,
//! or taken out again (trials alternate), then probes that endpoint on a fresh connection
//! every [`PROBE_GAP`]: a fresh connection lands on a worker the kernel picks (`SO_REUSEPORT`),
//! so the new policy is taken to be in force on every worker from the first reply of the
//! final run of [`STREAK`] replies under the new policy. With 2 workers, a worker still on
//! the old policy is missed by a streak of 24 fresh connections with odds of 2⁻²⁴.
//! Trials start at spread phases of the filter's sync timer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::envoys;
use super::procs::{launch, start_envoy, SidecarProc};

/// Replies in a row under the new policy that count as "every worker".
pub const STREAK: usize = 24;
/// Pause between probes.
pub const PROBE_GAP: Duration = Duration::from_millis(2);

/// One PUT and what followed.
#[derive(Clone, Debug)]
pub struct Trial {
    pub workers: u32,
    pub trial: usize,
    /// The PUT blocked the endpoint (else it unblocked it).
    pub blocking: bool,
    /// The PUT's own round trip (validation, versioning, storage).
    pub put: Duration,
    /// From the PUT's send to the first reply under the new policy.
    pub first: Duration,
    /// From the PUT's send to the first reply of the final streak: every worker.
    pub every_worker: Duration,
    /// Probes sent.
    pub probes: usize,
}

/// What the trials need from the rest of the run.
pub struct Setup<'a> {
    pub sidecar: &'a SidecarProc,
    pub upstream_port: u16,
    pub wasm: &'a str,
    pub policy: &'a Value,
    pub sync_interval_ms: u64,
    pub trials: usize,
}

/// A probe's answer: under the endpoint-blocked policy, or under the other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Blocked,
    Allowed,
}

/// The bench policy with `host` blocked for everyone.
pub fn blocking(policy: &Value, host: &str) -> Value {
    let mut doc = policy.clone();
    if let Some(list) = doc
        .pointer_mut("/globalPolicy/blockedEndpoints")
        .and_then(Value::as_array_mut)
    {
        list.push(json!(host));
    } else if let Some(g) = doc.get_mut("globalPolicy").and_then(Value::as_object_mut) {
        g.insert("blockedEndpoints".into(), json!([host]));
    }
    doc
}

/// Runs the trials on a managed Envoy with `workers` workers.
pub fn measure(s: &Setup<'_>, workers: u32, probe: &[u8], host: &str) -> Result<Vec<Trial>> {
    let config = json!({
        "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                     "syncIntervalMs": s.sync_interval_ms, "timeoutMs": 1000,
                     "failureMode": "closed", "syncSecret": s.sidecar.sync_secret }
    });
    let params = envoys::ProxyParams {
        upstream_port: s.upstream_port,
        wasm: s.wasm,
        plugin_config: &config,
        hostcall_pattern: "",
        sidecar: Some((s.sidecar.port, &s.sidecar.sync_secret)),
    };
    let name = format!("pag0-managed-{workers}w");
    let envoy = start_envoy(
        &name,
        &envoys::managed_yaml(&params),
        &launch(&name, workers),
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], envoy.port).into();
    let interval = Duration::from_millis(s.sync_interval_ms);
    // Start from the unblocked policy, in force everywhere.
    s.sidecar.put_policy(s.policy)?;
    wait_for(
        addr,
        probe,
        Seen::Allowed,
        Duration::from_secs(60) + 5 * interval,
    )
    .map_err(|e| anyhow!("{e}\n--- Envoy log ---\n{}", envoy.log_tail(30)))?;

    let blocked = blocking(s.policy, host);
    let mut out = Vec::new();
    for trial in 0..s.trials {
        // Spread the PUTs over the phase of the filter's sync timer.
        let phase = s.sync_interval_ms * ((trial as u64 * 7) % 10) / 10;
        std::thread::sleep(Duration::from_millis(100 + phase));
        let blocking = trial % 2 == 0;
        let (doc, want) = if blocking {
            (&blocked, Seen::Blocked)
        } else {
            (s.policy, Seen::Allowed)
        };
        let t0 = Instant::now();
        s.sidecar.put_policy(doc)?;
        let put = t0.elapsed();
        let limit = 10 * interval + Duration::from_secs(5);
        let (mut first, mut streak_start, mut streak, mut probes) = (None, None, 0, 0);
        let mut recent = String::new();
        while streak < STREAK {
            if t0.elapsed() > limit {
                bail!(
                    "{workers}w trial {trial}: the new policy was not in force on every worker after {limit:?} ({streak} in a row; last probes, n = new, o = old: {recent})\n--- Envoy log ---\n{}",
                    envoy.log_tail(30)
                );
            }
            let seen = ask(addr, probe)?;
            probes += 1;
            let at = t0.elapsed();
            if recent.len() >= 80 {
                recent.remove(0);
            }
            recent.push(if seen == want { 'n' } else { 'o' });
            if seen == want {
                first.get_or_insert(at);
                streak_start.get_or_insert(at);
                streak += 1;
            } else {
                (streak_start, streak) = (None, 0);
            }
            std::thread::sleep(PROBE_GAP);
        }
        out.push(Trial {
            workers,
            trial,
            blocking,
            put,
            first: first.unwrap_or_default(),
            every_worker: streak_start.unwrap_or_default(),
            probes,
        });
    }
    // Leave the sidecar on the bench policy.
    s.sidecar.put_policy(s.policy)?;
    Ok(out)
}

/// Probes until `want` is seen [`STREAK`] times in a row.
fn wait_for(addr: SocketAddr, probe: &[u8], want: Seen, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    let mut streak = 0;
    let mut last = None;
    while streak < STREAK {
        if t0.elapsed() > limit {
            bail!("never {want:?} {STREAK} times in a row within {limit:?} (last: {last:?})");
        }
        match ask(addr, probe) {
            Ok(seen) if seen == want => streak += 1,
            other => {
                streak = 0;
                last = Some(format!("{other:?}"));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(PROBE_GAP);
    }
    Ok(())
}

/// One request on a fresh connection, closed by us once the reply's head is in (waiting
/// for the server's close would wait out Envoy's `delayed_close_timeout`).
fn ask(addr: SocketAddr, probe: &[u8]) -> Result<Seen> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.set_nodelay(true)?;
    c.write_all(probe)?;
    let mut reply = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    classify(&reply)
}

/// 200 → allowed; 403 with `x-pag0-code: ENDPOINT_BLOCKED` → blocked; anything else is an error.
fn classify(reply: &[u8]) -> Result<Seen> {
    let text = String::from_utf8_lossy(reply);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let status = head.split(' ').nth(1).unwrap_or_default();
    let code = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-pag0-code")
            .then(|| value.trim().to_owned())
    });
    match (status, code.as_deref()) {
        ("200", None) => Ok(Seen::Allowed),
        ("403", Some("ENDPOINT_BLOCKED")) => Ok(Seen::Blocked),
        _ => Err(anyhow!("unexpected reply to the probe: {head:?}")),
    }
}

/// The probe: the mix's first request, asking the server to close the connection.
pub fn probe_request(raw: &[u8]) -> Result<(Vec<u8>, String)> {
    let text = std::str::from_utf8(raw)?;
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .ok_or_else(|| anyhow!("no host in the request"))?
        .trim()
        .to_owned();
    let head = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| anyhow!("the request must end its head"))?;
    Ok((
        format!("{head}\r\nconnection: close\r\n\r\n").into_bytes(),
        host,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_told_apart() {
        let ok = b"HTTP/1.1 200 OK\r\nx-pag0-decision: allow\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(classify(ok).expect("allowed"), Seen::Allowed);
        let blocked = b"HTTP/1.1 403 Forbidden\r\nX-Pag0-Code: ENDPOINT_BLOCKED\r\n\r\n{}";
        assert_eq!(classify(blocked).expect("blocked"), Seen::Blocked);
        // A refusal for another reason is not the policy under test: an error, not "allowed".
        let budget = b"HTTP/1.1 402 Payment Required\r\nx-pag0-code: BUDGET_EXCEEDED\r\n\r\n{}";
        assert!(classify(budget).is_err());
        let other = b"HTTP/1.1 403 Forbidden\r\nx-pag0-code: ENDPOINT_NOT_ALLOWED\r\n\r\n{}";
        assert!(classify(other).is_err());
    }

    #[test]
    fn the_blocking_policy_differs_only_in_the_block_list_and_validates() {
        let base = super::super::workload::bench_policy();
        let (_, host) =
            probe_request(&super::super::workload::requests()[0]).expect("a probe request");
        let doc = blocking(&base, &host);
        let list = doc
            .pointer("/globalPolicy/blockedEndpoints")
            .and_then(Value::as_array)
            .expect("a block list");
        assert!(list.contains(&json!(host)));
        let mut back = doc.clone();
        if let Some(l) = back
            .pointer_mut("/globalPolicy/blockedEndpoints")
            .and_then(Value::as_array_mut)
        {
            l.retain(|h| h != &json!(host));
        }
        assert_eq!(back, base);
        // Under it the probe is refused as blocked; under the bench policy it is allowed.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T03:00:00Z")
            .expect("a timestamp")
            .with_timezone(&chrono::Utc);
        let (probe, _) = probe_request(&super::super::workload::requests()[0]).expect("a probe");
        let text = String::from_utf8(probe).expect("ASCII");
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("x-pag0-api-key: "))
            .expect("a key");
        let path = text.split(' ').nth(1).expect("a path");
        let head = pag0_policy::RequestHead {
            api_key: Some(key),
            method: "GET",
            authority: &host,
            path,
            requires_approval: false,
        };
        let decide = |doc: &Value| {
            let p = pag0_policy::CompiledPolicy::from_value(doc).expect("the policy validates");
            pag0_policy::decide(&p, &head, None, &pag0_policy::budget::NothingSpent, now)
        };
        match decide(&doc) {
            pag0_policy::Decision::Deny(d) => {
                assert_eq!(d.code, pag0_policy::DenyCode::EndpointBlocked)
            }
            other => panic!("blocking policy: {other:?}"),
        }
        assert!(matches!(decide(&base), pag0_policy::Decision::Allow(_)));
    }

    #[test]
    fn the_probe_closes_its_connection() {
        let (probe, host) =
            probe_request(&super::super::workload::requests()[0]).expect("a probe request");
        let text = String::from_utf8(probe).expect("ASCII");
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text}");
        assert!(text.contains(&format!("host: {host}\r\n")));
    }
}
