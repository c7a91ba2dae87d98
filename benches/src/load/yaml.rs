//! Envoy bootstraps for the load benchmark: the fast upstream (a `direct_response`
//! listener) and one proxy configuration that differs between variants only in its HTTP
//! filter chain. Ports are ephemeral (0); the harness reads them back from the admin API.

use serde_json::Value;

use super::Variant;

/// The upstream: answers every request with 200 and a two-byte body, no cluster behind it.
pub fn upstream_yaml() -> String {
    r#"admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: upstream
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: upstream
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "ok" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    .to_owned()
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
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let filter = match variant {
        Variant::Baseline => String::new(),
        Variant::Passthrough => wasm_filter("passthrough", &quoted(p.wasm), "{}"),
        Variant::HostCalls => {
            wasm_filter("hostcalls", &quoted(p.wasm), &quoted(p.hostcall_pattern))
        }
        Variant::SpecMinimum => wasm_filter(
            "spec_minimum",
            &quoted(p.wasm),
            &quoted(super::SPEC_MINIMUM_PATTERN),
        ),
        Variant::Pag0 | Variant::Pag0Before => {
            let config = serde_json::to_string(p.plugin_config).unwrap_or_default();
            wasm_filter("pag0", &quoted(p.wasm), &quoted(&config))
        }
        Variant::ExtAuthz => format!(
            r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              allowed_headers:
                patterns:
                - exact: x-pag0-api-key
                - exact: x-pag0-requires-approval
              http_service:
                server_uri: {{ uri: "http://pag0-sidecar", cluster: pag0_sidecar, timeout: 1s }}
                path_prefix: /v1/authz
                authorization_request:
                  headers_to_add:
                  - key: authorization
                    value: {auth}
"#,
            auth = quoted(&format!("Bearer {}", p.sidecar.map(|s| s.1).unwrap_or(""))),
        ),
    };
    let sidecar_cluster = match p.sidecar {
        Some((port, _)) if variant == Variant::ExtAuthz => cluster("pag0_sidecar", port),
        _ => String::new(),
    };
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 0 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          # Path normalisation before any filter (pag0 also holds without it).
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream, timeout: 10s }}
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{upstream}{sidecar_cluster}"#,
        upstream = cluster("upstream", p.upstream_port),
    )
}

/// The Pag0 filter in managed mode (`p.plugin_config` names the `pag0_sidecar` cluster):
/// the pag0 proxy with the sidecar's cluster added.
pub fn managed_yaml(p: &ProxyParams<'_>) -> String {
    let mut y = proxy_yaml(Variant::Pag0, p);
    if let Some((port, _)) = p.sidecar {
        y.push_str(&cluster("pag0_sidecar", port));
    }
    y
}

fn wasm_filter(name: &str, wasm_quoted: &str, config_quoted: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm_quoted} }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config_quoted}
"#
    )
}

fn cluster(name: &str, port: u16) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_minimum_probe_is_the_empty_filter_configured_with_the_contracts_calls() {
        let config = serde_json::json!({});
        let p = ProxyParams {
            upstream_port: 1,
            wasm: "/x/pag0_passthrough.wasm",
            plugin_config: &config,
            hostcall_pattern: "map=9",
            sidecar: None,
        };
        let y = proxy_yaml(Variant::SpecMinimum, &p);
        assert!(y.contains("/x/pag0_passthrough.wasm"), "{y}");
        assert!(
            y.contains(&format!(
                "value: \"{}\"",
                super::super::SPEC_MINIMUM_PATTERN
            )),
            "{y}"
        );
        assert!(!y.contains("map=9"), "not the --probe pattern: {y}");
        let probe = proxy_yaml(Variant::HostCalls, &p);
        assert!(probe.contains("value: \"map=9\""), "{probe}");
    }
}
