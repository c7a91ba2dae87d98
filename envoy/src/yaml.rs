//! The one Envoy YAML template: used for every test run, the demo, and (rendered with fixed
//! ports) the shipped `envoy/standalone.yaml`, so they cannot drift apart.

/// Everything that varies between renders.
#[derive(Clone, Debug)]
pub struct YamlParams {
    /// HTTP listener (address, port); port 0 = ephemeral.
    pub listener: (String, u16),
    /// Admin interface (address, port).
    pub admin: (String, u16),
    /// The upstream every host is routed to (the mock in tests and the demo).
    pub upstream: (String, u16),
    /// Path of `pag0_plugin.wasm` (relative paths resolve against Envoy's working directory).
    pub wasm_path: String,
    /// The filter's configuration as JSON text (README.md#configuration-reference), inserted verbatim.
    pub plugin_config: String,
    /// `max_request_bytes` of the buffer filter after pag0 and the listener's
    /// `per_connection_buffer_limit_bytes`: at least the plugin's `maxBodyBytes`.
    pub buffer_bytes: u64,
    /// Managed mode: the pag0 sidecar (address, port), served as cluster `pag0_sidecar`
    /// (HTTP/1.1). `None`: no sidecar cluster.
    pub sidecar: Option<(String, u16)>,
    /// The HTTP connection manager's own path protections (`normalize_path`, `merge_slashes`,
    /// `path_with_escaped_slashes_action: REJECT_REQUEST`). On in everything shipped; tests
    /// turn them off to show the filter holds without them.
    pub path_protections: bool,
}

/// Envoy's default per-connection buffer limit and pag0's default `maxBodyBytes` (1 MiB).
pub const DEFAULT_BUFFER_BYTES: u64 = 1_048_576;

impl YamlParams {
    /// The parameters of the shipped `envoy/standalone.yaml`, for a given plugin configuration.
    pub fn standalone(plugin_config: String) -> Self {
        Self {
            listener: ("127.0.0.1".into(), 10000),
            admin: ("127.0.0.1".into(), 9901),
            upstream: ("127.0.0.1".into(), 18080),
            wasm_path: "target/wasm32-wasip1/wasm-release/pag0_plugin.wasm".into(),
            plugin_config,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            sidecar: None,
            path_protections: true,
        }
    }
}

/// Envoy normalises the path before any filter sees it (RFC 3986 dot segments, `//`) and
/// rejects `%2F` / `%5C` with a 400; pag0 matches on its own normalisation either way.
pub const PATH_PROTECTIONS: &str =
    "          # Path normalisation before any filter (pag0 also holds without it).
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
";

/// Renders the bootstrap. The configuration JSON goes in as a YAML literal block scalar, so
/// the shipped file stays readable and diffable.
///
/// A buffer filter follows pag0: pag0 must let the request headers continue to be able to
/// read the body (see plugin/README.md), so without it the router would open the upstream
/// request before a body-priced refusal; with it, a refused request never reaches the upstream.
pub fn render_envoy_yaml(p: &YamlParams) -> String {
    let indent = " ".repeat(20);
    let config_block: String = p
        .plugin_config
        .lines()
        .map(|l| format!("{indent}{l}\n"))
        .collect();
    format!(
        r#"# Pag0 in front of paid APIs: every request passes the pag0 wasm filter, then the router.
# Every host is routed to one upstream (the mock at {up_addr}:{up_port}); point the
# `paid_apis` cluster at real endpoints (with TLS) in production.
admin:
  address:
    socket_address: {{ address: {admin_addr}, port_value: {admin_port} }}
# A ceiling on downstream connections (Envoy warns without one).
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 50000
static_resources:
  listeners:
  - name: pag0_ingress
    address:
      socket_address: {{ address: {l_addr}, port_value: {l_port} }}
    per_connection_buffer_limit_bytes: {buffer_bytes}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: pag0_ingress
          codec_type: AUTO
          # One line per request. `pag0=` is the filter's decision event in standalone mode
          # (decision, code, scope, project, client, estimate, cost, latency; JSON, money in
          # micro-USD strings), `-` in managed mode, where the events go to the sidecar's
          # audit log instead (docs/audit.md). The path is left out: it may carry secrets in
          # its query; the event has it without the query.
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "[%START_TIME%] %REQ(:METHOD)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %DURATION%ms pag0=%FILTER_STATE(wasm.pag0_decision:PLAIN)%\n"
{path_protections}          route_config:
            name: all_hosts
            virtual_hosts:
            - name: all_hosts
              domains: ["*"]
              routes:
{agent_routes}              - match: {{ prefix: "/" }}
                route: {{ cluster: paid_apis, timeout: 60s }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: pag0
                root_id: pag0
                failure_policy: FAIL_RELOAD
                vm_config:
                  vm_id: pag0
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
{config_block}          # Holds the request until its body is complete (pag0 has priced it by then).
          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: {buffer_bytes}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: paid_apis
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: paid_apis
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {up_addr}, port_value: {up_port} }}
"#,
        admin_addr = p.admin.0,
        admin_port = p.admin.1,
        l_addr = p.listener.0,
        l_port = p.listener.1,
        up_addr = p.upstream.0,
        up_port = p.upstream.1,
        buffer_bytes = p.buffer_bytes,
        wasm = serde_json::to_string(&p.wasm_path).unwrap_or_default(),
        agent_routes = if p.sidecar.is_some() {
            AGENT_ROUTES
        } else {
            ""
        },
        path_protections = if p.path_protections {
            PATH_PROTECTIONS
        } else {
            ""
        },
    ) + &sidecar_cluster(p.sidecar.as_ref())
}

/// Managed mode: agents read their own approval through the proxy they already talk to.
/// `GET /pag0/approvals/{id}` on the listener (any host) goes to the sidecar as
/// `GET /v1/approvals/{id}`, with the pag0 filter off for this route (it is not a paid call)
/// and `authorization`/`cookie` removed, so only the agent's `x-pag0-api-key` read
/// (its own approvals, by id) is reachable this way — no admin or approver API. The shipped
/// `envoy/managed.yaml` carries this block verbatim (checked by `envoy/tests/clients.rs`).
pub const AGENT_ROUTES: &str = r#"              # Agents poll their own approval here (GET only, by id; see docs/clients.md).
              - match:
                  safe_regex: { regex: "^/pag0/approvals/[A-Za-z0-9_-]+$" }
                  headers:
                  - name: ":method"
                    string_match: { exact: GET }
                route:
                  cluster: pag0_sidecar
                  timeout: 5s
                  host_rewrite_literal: pag0-sidecar
                  regex_rewrite:
                    pattern: { regex: "^/pag0/approvals/" }
                    substitution: /v1/approvals/
                request_headers_to_remove: [authorization, cookie]
                typed_per_filter_config:
                  envoy.filters.http.wasm:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
"#;

/// The `pag0_sidecar` cluster of managed mode (HTTP/1.1: no `http2_protocol_options`).
fn sidecar_cluster(sidecar: Option<&(String, u16)>) -> String {
    let Some((addr, port)) = sidecar else {
        return String::new();
    };
    format!(
        r#"  # Managed mode: the filter syncs with the pag0 sidecar through this cluster.
  - name: pag0_sidecar
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: pag0_sidecar
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {addr}, port_value: {port} }}
"#
    )
}
