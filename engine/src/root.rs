//! The root context: parses the configuration once per `on_configure` and hands every HTTP
//! context a shared, immutable view of it. In managed mode it also runs the sync loop
//! (`on_tick`, `dispatch_http_call`, `on_http_call_response`) and swaps in the sidecar's
//! policy when its version changes in shared data.
//!
//! Host-independent: every host effect goes through [`RootHost`], so configure, tick and sync
//! are tested natively (`root/tests.rs`); the cdylib's `RootContext` delegates here.

use std::rc::Rc;
use std::time::Duration;

use crate::config::{self, ConfigError, PolicySlot, SidecarConfig};
use crate::counters::{self, Slices};
use crate::host::{BufferType, LogLevel, MapType, RootHost, StatusName};
use crate::keys::KeyDigests;
use crate::managed::{self, Outgoing};
use crate::metrics::{Increments, Metrics};

/// What every request of one plugin configuration reads. Rebuilt, never mutated, on reconfigure
/// or when a new policy arrives from the sidecar.
pub struct Shared {
    /// `None` only in managed mode before the first policy (requests get 503).
    pub policy: PolicySlot,
    /// The sidecar's version of `policy` (0: the inline document, or none).
    pub policy_version: u64,
    /// Standalone or managed, with what each needs.
    pub mode: Mode,
    pub api_key_header: String,
    pub max_body_bytes: usize,
    pub metrics: Rc<Metrics>,
    /// The response cache's bounds (`cache` in the plugin configuration).
    pub cache: crate::cache::CacheConfig,
    /// This worker VM's cache of API-key digests (`keys.rs`), kept across reconfigurations.
    pub keys: Rc<KeyDigests>,
}

/// The two ways the filter runs; what belongs to one cannot be set in the other.
pub enum Mode {
    /// The inline policy; budgets in this Envoy's shared data.
    Standalone {
        /// This worker VM's budget slices (`counters/slices.rs`); `None`: every reservation
        /// goes to the shared counter itself.
        slices: Option<Rc<Slices>>,
    },
    /// Policy and leases from the sidecar (docs/sync-protocol.md).
    Managed {
        sidecar: SidecarConfig,
        /// This worker VM's usage records waiting for the tick (`managed/batches.rs`); `None`:
        /// each goes to shared data at once.
        usage: Option<Rc<managed::UsageBuffer>>,
        /// This worker VM's decision events waiting for the tick; `None`: none are kept.
        decisions: Option<Rc<managed::DecisionBuffer>>,
    },
}

impl Shared {
    /// Managed mode's sidecar settings; `None` in standalone mode.
    pub fn sidecar(&self) -> Option<&SidecarConfig> {
        match &self.mode {
            Mode::Managed { sidecar, .. } => Some(sidecar),
            Mode::Standalone { .. } => None,
        }
    }

    /// Standalone mode's budget slices.
    pub fn slices(&self) -> Option<&Rc<Slices>> {
        match &self.mode {
            Mode::Standalone { slices } => slices.as_ref(),
            Mode::Managed { .. } => None,
        }
    }

    /// Managed mode's usage buffer.
    pub fn usage(&self) -> Option<&Rc<managed::UsageBuffer>> {
        match &self.mode {
            Mode::Managed { usage, .. } => usage.as_ref(),
            Mode::Standalone { .. } => None,
        }
    }

    /// Managed mode's sidecar settings and decision buffer, when it keeps one.
    pub fn decision_log(&self) -> Option<(&SidecarConfig, &Rc<managed::DecisionBuffer>)> {
        match &self.mode {
            Mode::Managed {
                sidecar,
                decisions: Some(d),
                ..
            } => Some((sidecar, d)),
            _ => None,
        }
    }
}

pub struct Root<H> {
    host: H,
    shared: Option<Rc<Shared>>,
    sync: Option<SyncLoop>,
    /// This VM's budget slices, kept across reconfigurations so a request reserved under the
    /// old configuration settles into the same slices (given back by the tick or `on_done`).
    slices: Rc<Slices>,
    /// This VM's usage records not yet in shared data, kept across reconfigurations; appended
    /// by the tick and in `on_done`.
    usage: Rc<managed::UsageBuffer>,
    /// This VM's decision events not yet in shared data, like `usage`.
    decisions: Rc<managed::DecisionBuffer>,
    /// This VM's API-key digests, kept across reconfigurations and policies.
    keys: Rc<KeyDigests>,
    /// This VM's counter increments not yet added to Envoy's counters, kept across
    /// reconfigurations; added by the tick and in `on_done`.
    increments: Rc<Increments>,
}

/// The managed-mode state of one worker VM.
struct SyncLoop {
    cfg: SidecarConfig,
    /// Random per worker VM: the owner id of the sync election.
    worker: u64,
    instance_id: String,
    /// The call this worker has out, and what it sent.
    inflight: Option<(u32, Outgoing)>,
    last_sent_ms: u64,
    /// Sync at the next tick (a new policy needs leases for its counters).
    again: bool,
}

// === impl Root ===

impl<H: Default> Default for Root<H> {
    fn default() -> Self {
        Root::new(H::default())
    }
}

impl<H> Root<H> {
    pub fn new(host: H) -> Self {
        Root {
            host,
            shared: None,
            sync: None,
            slices: Rc::default(),
            usage: Rc::default(),
            decisions: Rc::default(),
            keys: Rc::default(),
            increments: Rc::default(),
        }
    }

    /// What a new HTTP context reads: `None` without a valid configuration (fail closed).
    pub fn shared(&self) -> Option<Rc<Shared>> {
        self.shared.clone()
    }
}

impl<H: RootHost> Root<H> {
    fn load(host: &H, bytes: &[u8], increments: Rc<Increments>) -> Result<Shared, ConfigError> {
        let c = config::parse(bytes)?;
        let metrics = Metrics::define(host, increments);
        if let Some(policy) = c.policy.as_deref() {
            metrics.attribute(host, policy);
        }
        Ok(Shared {
            policy: c.policy,
            policy_version: 0,
            mode: match c.sidecar {
                Some(sidecar) => Mode::Managed {
                    sidecar,
                    usage: None,
                    decisions: None,
                },
                None => Mode::Standalone { slices: None },
            },
            api_key_header: c.api_key_header,
            max_body_bytes: c.max_body_bytes,
            cache: c.cache,
            metrics: Rc::new(metrics),
            keys: Rc::default(),
        })
    }

    /// Adopts the sidecar's policy if shared data holds a newer version than this worker's.
    fn refresh_policy(&mut self) {
        let Some(shared) = &self.shared else { return };
        let Ok(version) = managed::policy_version(&self.host) else {
            return;
        };
        if version == 0 || version == shared.policy_version {
            return;
        }
        match managed::load_policy(&self.host) {
            Ok(Some((version, policy))) => {
                // The cache's per-project and per-cost-centre series of the new policy.
                shared.metrics.attribute(&self.host, &policy);
                self.shared = Some(Rc::new(Shared {
                    policy: PolicySlot::new(Some(Box::new(policy))),
                    policy_version: version,
                    mode: match &shared.mode {
                        Mode::Managed {
                            sidecar,
                            usage,
                            decisions,
                        } => Mode::Managed {
                            sidecar: sidecar.clone(),
                            usage: usage.clone(),
                            decisions: decisions.clone(),
                        },
                        // Only the sidecar sends policies; kept as it is all the same.
                        Mode::Standalone { slices } => Mode::Standalone {
                            slices: slices.clone(),
                        },
                    },
                    api_key_header: shared.api_key_header.clone(),
                    max_body_bytes: shared.max_body_bytes,
                    cache: shared.cache,
                    metrics: shared.metrics.clone(),
                    keys: shared.keys.clone(),
                }));
                self.host.log(
                    LogLevel::Info,
                    &format!("pag0: policy version {version} from the sidecar is in force"),
                );
            }
            Ok(None) => {}
            Err(e) => self.host.log(
                LogLevel::Error,
                &format!("pag0: sidecar policy version {version} not adopted: {e}"),
            ),
        }
    }

    /// Appends this worker's waiting usage records to the shared batch state; on error they
    /// stay in the buffer for the next tick.
    fn flush_usage(&self) {
        if let Err(e) = self.usage.flush(&self.host) {
            self.host.log(
                LogLevel::Error,
                &format!(
                    "pag0: shared data error {e:?} recording usage ({} records kept for the next tick)",
                    self.usage.len()
                ),
            );
        }
    }

    /// Appends this worker's waiting decision events to the shared queue (managed mode).
    fn flush_decisions(&self) {
        let Some(s) = &self.sync else { return };
        let dropped = self.decisions.flush(&self.host, s.cfg.decision_queue_max);
        self.count_dropped(dropped);
    }

    fn count_dropped(&self, dropped: Result<u64, counters::HostError>) {
        match dropped {
            Ok(0) => {}
            Ok(n) => {
                if let Some(shared) = &self.shared {
                    shared.metrics.decisions_dropped(&self.host, n);
                }
            }
            Err(e) => self.host.log(
                LogLevel::Error,
                &format!(
                    "pag0: shared data error {e:?} queueing decision events ({} kept for the next tick)",
                    self.decisions.len()
                ),
            ),
        }
    }

    /// Gives every budget slice back to the shared counters.
    fn return_slices(&self) {
        if let Err(e) = self.slices.return_all(&self.host) {
            self.host.log(
                LogLevel::Warn,
                &format!("pag0: shared data error {e:?} giving budget slices back"),
            );
        }
    }

    fn now_ms(&self) -> u64 {
        self.host.now_nanos() / 1_000_000
    }

    /// The sync owner's turn: send the pending batch and lease requests.
    fn maybe_sync(&mut self) {
        let now_ms = self.now_ms();
        let host = &self.host;
        let Some(s) = &mut self.sync else { return };
        if s.inflight.is_some() {
            return; // stop and wait: Envoy always calls back (answer, error or timeout)
        }
        let stale = s.cfg.sync_interval_ms.saturating_mul(3) + s.cfg.timeout_ms;
        match managed::try_own(host, s.worker, now_ms, stale) {
            Ok(true) => {}
            _ => return,
        }
        let early = managed::take_early(host).unwrap_or(false);
        // Every `syncIntervalMs − tick`: a new policy is then fetched and seen by every
        // worker's tick within one `syncIntervalMs` (plus the round trip).
        let period = s.cfg.sync_interval_ms.saturating_sub(tick_ms(&s.cfg));
        if !(s.again || early || now_ms.saturating_sub(s.last_sent_ms) >= period) {
            return;
        }
        s.again = false;
        let policy = self.shared.as_ref().and_then(|sh| sh.policy.as_deref());
        let counters = policy
            .map(|p| managed::policy_counters(p, host.now()))
            .unwrap_or_default();
        let version = managed::policy_version(host).unwrap_or(0);
        let out = match managed::prepare_sync(host, &s.instance_id, version, &counters, now_ms) {
            Ok(o) => o,
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!("pag0: shared data error {e:?} preparing a sync"),
                );
                return;
            }
        };
        let auth = s
            .cfg
            .sync_secret
            .as_ref()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/v1/sync"),
            (":authority", s.cfg.authority.as_str()),
            ("content-type", "application/json"),
        ];
        if !auth.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        s.last_sent_ms = now_ms;
        match host.dispatch_http_call(
            &s.cfg.cluster,
            &headers,
            &out.body,
            Duration::from_millis(s.cfg.timeout_ms),
        ) {
            Ok(token) => s.inflight = Some((token, out)),
            Err(e) => mark_down(
                host,
                &format!("dispatch failed: {:?}", StatusName(e)),
                now_ms,
            ),
        }
    }
}

/// The tick of managed mode: a quarter of the sync interval, at least 10 ms.
fn tick_ms(cfg: &SidecarConfig) -> u64 {
    (cfg.sync_interval_ms / 4).max(10)
}

/// Records that the sidecar did not answer; logs only the transition.
fn mark_down<H: RootHost>(host: &H, why: &str, now_ms: u64) {
    if let Ok(true) = managed::set_down(host, true, now_ms) {
        host.log(
            LogLevel::Warn,
            &format!(
                "pag0: sidecar unreachable ({why}); enforcing the last policy on leased budget"
            ),
        );
    }
}

/// The root context's callbacks, as the host calls them (the cdylib's `RootContext` delegates
/// here).
impl<H: RootHost> Root<H> {
    /// The VM stops (Envoy drains this configuration): give the budget slices back, add the
    /// counts since the last tick to Envoy's counters.
    pub fn on_done(&mut self) -> bool {
        self.increments.close(&self.host);
        if let Err(e) = self.slices.close(&self.host) {
            self.host.log(
                LogLevel::Warn,
                &format!("pag0: shared data error {e:?} giving budget slices back"),
            );
        }
        if let Err(e) = self.usage.close(&self.host) {
            self.host.log(
                LogLevel::Error,
                &format!(
                    "pag0: shared data error {e:?} recording usage as the VM stops ({} records not appended)",
                    self.usage.len()
                ),
            );
        }
        let cap = self
            .sync
            .as_ref()
            .map_or(managed::decisions::DEFAULT_QUEUE_MAX, |s| {
                s.cfg.decision_queue_max
            });
        let dropped = self.decisions.close(&self.host, cap);
        self.count_dropped(dropped);
        true
    }

    /// The answer to the sync call (or its failure: zero headers).
    pub fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let now_ms = self.now_ms();
        let host = &self.host;
        let Some(s) = &mut self.sync else { return };
        let Some((token, sent)) = s.inflight.take() else {
            return;
        };
        if token != token_id {
            s.inflight = Some((token, sent));
            return;
        }
        if num_headers == 0 {
            if let Some(shared) = &self.shared {
                shared.metrics.synced(&self.host, false);
            }
            mark_down(host, "no answer within timeoutMs", now_ms);
            return;
        }
        let status = host
            .header(MapType::HttpCallResponseHeaders, ":status")
            .unwrap_or_default();
        let body = host.body(BufferType::HttpCallResponseBody, body_size);
        if let Some(shared) = &self.shared {
            shared.metrics.synced(&self.host, status.starts_with('2'));
        }
        if !status.starts_with('2') {
            let text = String::from_utf8_lossy(body.get(..300).unwrap_or(&body)).into_owned();
            if managed::refused_as_invalid(&status) {
                // Never resent: the same bytes would be refused again, forever.
                match managed::drop_refused(&self.host, &sent) {
                    Ok(Some((n, events))) => {
                        self.host.log(
                            LogLevel::Error,
                            &format!(
                                "pag0: the sidecar refused usage batch {} ({n} records) as invalid, dropped: status {status}: {text}",
                                sent.seq.unwrap_or(0)
                            ),
                        );
                        if let Some(shared) = &self.shared {
                            shared.metrics.refused_batch(&self.host, n);
                            shared.metrics.decisions_dropped(&self.host, events);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => self.host.log(
                        LogLevel::Error,
                        &format!("pag0: shared data error {e:?} dropping a refused batch"),
                    ),
                }
            }
            mark_down(host, &format!("status {status}: {text}"), now_ms);
            return;
        }
        match managed::apply_response(&self.host, &sent, &body) {
            Ok(applied) => {
                if let Ok(true) = managed::set_down(host, false, now_ms) {
                    host.log(LogLevel::Info, "pag0: sidecar reachable again");
                }
                if applied.new_policy_version.is_some() {
                    s.again = true;
                }
                // A backlog (a sidecar restart under load) drains one bounded batch per tick,
                // not one per sync interval.
                if applied.acked.is_some() && managed::backlog(&self.host) {
                    s.again = true;
                }
            }
            Err(e) => mark_down(host, &e, now_ms),
        }
        self.refresh_policy();
    }

    /// A new plugin configuration; `false` refuses it (Envoy then refuses the listener).
    pub fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = self
            .host
            .body(BufferType::PluginConfiguration, plugin_configuration_size);
        match Root::load(&self.host, &bytes, self.increments.clone()) {
            Ok(mut shared) => {
                shared.keys = self.keys.clone();
                // Everything that can fail comes first: a configuration refused here leaves
                // the running one (its policy, its sync loop, its timer) exactly as it was.
                if let Err(e) = counters::create::prepare(&self.host) {
                    self.host.log(
                        LogLevel::Error,
                        &format!("pag0: shared data unusable: {e:?}"),
                    );
                    return false;
                }
                // Managed: the sidecar settings and this Envoy's instance id.
                let managed = match shared.sidecar() {
                    None => None,
                    Some(cfg) => match managed::instance_id(&self.host) {
                        Ok(id) => Some((cfg.clone(), id)),
                        Err(e) => {
                            self.host.log(
                                LogLevel::Error,
                                &format!("pag0: shared data unusable: {e:?}"),
                            );
                            return false;
                        }
                    },
                };
                // Standalone: the tick flushes counters and gives idle budget slices back;
                // managed: it also drives the sync.
                let tick = managed
                    .as_ref()
                    .map_or(counters::slices::TICK_MS, |(cfg, _)| tick_ms(cfg));
                if let Err(e) = self.host.set_tick_period(Duration::from_millis(tick)) {
                    self.host.log(
                        LogLevel::Error,
                        &format!("pag0: no timer: {:?}", StatusName(e)),
                    );
                    return false;
                }
                self.sync = None;
                match managed {
                    Some((cfg, instance_id)) => {
                        self.return_slices();
                        if let Mode::Managed {
                            usage, decisions, ..
                        } = &mut shared.mode
                        {
                            *usage = Some(self.usage.clone());
                            *decisions = Some(self.decisions.clone());
                        }
                        self.sync = Some(SyncLoop {
                            cfg,
                            worker: managed::random_u64(self.host.now_nanos()),
                            instance_id,
                            inflight: None,
                            last_sent_ms: 0,
                            again: false,
                        });
                    }
                    None => {
                        if let Mode::Standalone { slices } = &mut shared.mode {
                            *slices = Some(self.slices.clone());
                        }
                    }
                }
                self.shared = Some(Rc::new(shared));
                self.refresh_policy();
                true
            }
            Err(e) => {
                // Returning false makes Envoy refuse the listener: never serve without policy.
                self.host.log(LogLevel::Error, &e.to_string());
                self.shared = None;
                false
            }
        }
    }

    pub fn on_tick(&mut self) {
        // What this worker counted since the last tick, one host call per counter. Every
        // configuration that serves requests sets a tick (standalone and managed); one that
        // failed serves none and counts nothing.
        self.increments.flush(&self.host);
        // Also in managed mode: refunds of standalone requests still in flight when the
        // configuration changed land in the slices and are given back here.
        if let Err(e) = self.slices.return_idle(&self.host) {
            self.host.log(
                LogLevel::Warn,
                &format!("pag0: shared data error {e:?} giving budget slices back"),
            );
        }
        // Before the sync, so what this worker settled since the last tick goes with it.
        self.flush_usage();
        self.flush_decisions();
        if self.sync.is_none() {
            return;
        }
        self.refresh_policy();
        self.maybe_sync();
    }
}

#[cfg(test)]
mod tests;
