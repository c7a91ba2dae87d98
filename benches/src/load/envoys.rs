//! The Envoys of a benchmark run, as options of the one renderer ([`pag0_envoy::yaml`]): the
//! fast upstream (a `direct_response` listener) and one proxy configuration that differs
//! between variants only in its HTTP filter chain. Lean: no access log, no buffer filter, no
//! overload manager. Ports are ephemeral (0); the harness reads them back from the admin API.

use pag0_envoy::yaml::{render_envoy_yaml, HttpFilter, Upstream, YamlParams};
use serde_json::Value;

use super::{Variant, SPEC_MINIMUM_PATTERN};

/// The shipped shape without what a benchmark must not measure.
fn lean(upstream: Upstream, filter: HttpFilter) -> YamlParams {
    YamlParams {
        buffer_filter: false,
        access_log: false,
        max_downstream_connections: None,
        agent_routes: false,
        route_timeout: "10s".into(),
        sidecar_connect_timeout: "2s".into(),
        ..YamlParams::ephemeral(upstream, filter)
    }
}

/// The upstream: answers every request with 200 and a two-byte body, no cluster behind it.
pub fn upstream_yaml() -> String {
    render_envoy_yaml(&YamlParams {
        path_protections: false,
        ..lean(
            Upstream::DirectResponse {
                status: 200,
                body: "ok".into(),
            },
            HttpFilter::None,
        )
    })
}

/// What a proxy variant needs besides its filter kind.
pub struct ProxyParams<'a> {
    pub upstream_port: u16,
    /// `.wasm` file for the wasm variants.
    pub wasm: &'a str,
    /// The Pag0 filter's configuration JSON (README.md#configuration-reference).
    pub plugin_config: &'a Value,
    /// The probe's configuration (`hostcalls-probe`).
    pub hostcall_pattern: &'a str,
    /// The sidecar port and bearer secret for the ext_authz variant.
    pub sidecar: Option<(u16, &'a str)>,
}

/// The proxy: one listener, one route to the upstream; `variant` decides the filter before
/// the router.
pub fn proxy_yaml(variant: Variant, p: &ProxyParams<'_>) -> String {
    render_envoy_yaml(&proxy_params(variant, p))
}

fn proxy_params(variant: Variant, p: &ProxyParams<'_>) -> YamlParams {
    let wasm = |name: &str, configuration: String| HttpFilter::Wasm {
        name: name.into(),
        wasm_path: p.wasm.into(),
        configuration,
        literal_block: false,
    };
    let filter = match variant {
        Variant::Baseline => HttpFilter::None,
        // `{}` (or nothing) is the plain filter.
        Variant::Passthrough => wasm("passthrough", "{}".into()),
        Variant::HostCalls => wasm("hostcalls", p.hostcall_pattern.into()),
        Variant::SpecMinimum => wasm("spec_minimum", SPEC_MINIMUM_PATTERN.into()),
        Variant::Pag0 | Variant::Pag0Before => wasm(
            "pag0",
            serde_json::to_string(p.plugin_config).unwrap_or_default(),
        ),
        Variant::ExtAuthz => HttpFilter::ExtAuthz {
            bearer: p.sidecar.map(|s| s.1).unwrap_or("").into(),
        },
    };
    YamlParams {
        sidecar: match p.sidecar {
            Some((port, _)) if variant == Variant::ExtAuthz => Some(("127.0.0.1".into(), port)),
            _ => None,
        },
        ..lean(
            Upstream::Cluster("127.0.0.1".into(), p.upstream_port),
            filter,
        )
    }
}

/// The Pag0 filter in managed mode (`p.plugin_config` names the `pag0_sidecar` cluster):
/// the pag0 proxy with the sidecar's cluster added.
pub fn managed_yaml(p: &ProxyParams<'_>) -> String {
    render_envoy_yaml(&YamlParams {
        sidecar: p.sidecar.map(|(port, _)| ("127.0.0.1".into(), port)),
        ..proxy_params(Variant::Pag0, p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        wasm: &'a str,
        pattern: &'a str,
        sidecar: Option<(u16, &'a str)>,
    ) -> ProxyParams<'a> {
        static CONFIG: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        ProxyParams {
            upstream_port: 1,
            wasm,
            plugin_config: CONFIG.get_or_init(|| serde_json::json!({})),
            hostcall_pattern: pattern,
            sidecar,
        }
    }

    #[test]
    fn the_spec_minimum_probe_is_the_empty_filter_configured_with_the_contracts_calls() {
        let p = params("/x/pag0_passthrough.wasm", "map=9", None);
        let y = proxy_yaml(Variant::SpecMinimum, &p);
        assert!(y.contains("/x/pag0_passthrough.wasm"), "{y}");
        assert!(
            y.contains(&format!("value: \"{SPEC_MINIMUM_PATTERN}\"")),
            "{y}"
        );
        assert!(!y.contains("map=9"), "not the --probe pattern: {y}");
        let probe = proxy_yaml(Variant::HostCalls, &p);
        assert!(probe.contains("value: \"map=9\""), "{probe}");
    }

    #[test]
    fn only_ext_authz_and_managed_mode_get_the_sidecar_cluster_and_nothing_is_logged() {
        let p = params("/x/pag0_plugin.wasm", "", Some((2, "s3cret")));
        for v in Variant::ALL {
            let y = proxy_yaml(v, &p);
            assert_eq!(
                y.contains("pag0_sidecar"),
                v == Variant::ExtAuthz,
                "{v:?}: {y}"
            );
            assert!(!y.contains("access_log") && !y.contains("buffer.v3"), "{y}");
            assert!(!y.contains("overload_manager"), "{y}");
        }
        let m = managed_yaml(&p);
        assert!(
            m.contains("- name: pag0_sidecar") && !m.contains("/pag0/approvals"),
            "{m}"
        );
        let up = upstream_yaml();
        assert!(
            up.contains("direct_response") && !up.contains("clusters:"),
            "{up}"
        );
    }
}
