//! The one Envoy YAML renderer: every test run, the demo, the load and instruction benchmarks
//! (`pag0-benches`) and (rendered with fixed ports) the shipped `envoy/standalone.yaml` use
//! it, so they cannot drift apart. [`YamlParams::standalone`] and [`YamlParams::ephemeral`]
//! give the shipped shape; the benchmarks turn parts of it off (no access log, no buffer
//! filter, no overload manager), put another filter before the router ([`HttpFilter`]) or
//! answer every request in Envoy itself ([`Upstream::DirectResponse`]).

/// Where the listener's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Every host routed to this (address, port): the cluster `paid_apis` (the mock in tests
    /// and the demo).
    Cluster(String, u16),
    /// No cluster: Envoy answers every request itself (the benchmarks' fast upstream).
    DirectResponse { status: u16, body: String },
}

/// The HTTP filter before the buffer filter (if any) and the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpFilter {
    /// Only the router.
    None,
    /// A proxy-wasm filter on V8 (`name` is also its `root_id` and `vm_id`).
    Wasm {
        name: String,
        /// Path of the `.wasm` (relative paths resolve against Envoy's working directory).
        wasm_path: String,
        /// The filter's configuration string (for pag0: JSON, README.md#configuration-reference).
        configuration: String,
        /// The configuration as a YAML literal block scalar, inserted verbatim (readable and
        /// diffable in the shipped file); else as one quoted string.
        literal_block: bool,
    },
    /// Envoy's ext_authz filter calling the sidecar's `/v1/authz` (cluster `pag0_sidecar`,
    /// which needs [`YamlParams::sidecar`]) with `authorization: Bearer <bearer>`.
    ExtAuthz { bearer: String },
}

impl HttpFilter {
    /// The pag0 filter as shipped: its configuration JSON text as a literal block.
    pub fn pag0(wasm_path: String, plugin_config: String) -> Self {
        HttpFilter::Wasm {
            name: "pag0".into(),
            wasm_path,
            configuration: plugin_config,
            literal_block: true,
        }
    }
}

/// Everything that varies between renders.
#[derive(Clone, Debug)]
pub struct YamlParams {
    /// HTTP listener (address, port); port 0 = ephemeral.
    pub listener: (String, u16),
    /// Admin interface (address, port).
    pub admin: (String, u16),
    pub upstream: Upstream,
    pub filter: HttpFilter,
    /// The listener's `per_connection_buffer_limit_bytes` and the buffer filter's
    /// `max_request_bytes`: at least the plugin's `maxBodyBytes`.
    pub buffer_bytes: u64,
    /// A buffer filter after [`YamlParams::filter`] (see [`render_envoy_yaml`]).
    pub buffer_filter: bool,
    /// Managed mode: the pag0 sidecar (address, port), served as cluster `pag0_sidecar`
    /// (HTTP/1.1). `None`: no sidecar cluster.
    pub sidecar: Option<(String, u16)>,
    /// The `pag0_sidecar` cluster's `connect_timeout` (shipped: `0.25s`).
    pub sidecar_connect_timeout: String,
    /// With a sidecar, the agents' approval route to it ([`AGENT_ROUTES`]; shipped: on).
    pub agent_routes: bool,
    /// The HTTP connection manager's own path protections (`normalize_path`, `merge_slashes`,
    /// `path_with_escaped_slashes_action: REJECT_REQUEST`). On in everything shipped; tests
    /// turn them off to show the filter holds without them.
    pub path_protections: bool,
    /// One access log line per request on stdout (shipped: on).
    pub access_log: bool,
    /// The overload manager's ceiling on downstream connections (shipped: 50 000); `None`:
    /// no overload manager.
    pub max_downstream_connections: Option<u64>,
    /// The route's timeout to [`Upstream::Cluster`] (shipped: `60s`).
    pub route_timeout: String,
}

/// Envoy's default per-connection buffer limit and pag0's default `maxBodyBytes` (1 MiB).
pub const DEFAULT_BUFFER_BYTES: u64 = 1_048_576;

impl YamlParams {
    /// The shipped shape on ephemeral ports of 127.0.0.1 (port 0; read back from the admin
    /// API), with no sidecar.
    pub fn ephemeral(upstream: Upstream, filter: HttpFilter) -> Self {
        Self {
            listener: ("127.0.0.1".into(), 0),
            admin: ("127.0.0.1".into(), 0),
            upstream,
            filter,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            buffer_filter: true,
            sidecar: None,
            sidecar_connect_timeout: "0.25s".into(),
            agent_routes: true,
            path_protections: true,
            access_log: true,
            max_downstream_connections: Some(50_000),
            route_timeout: "60s".into(),
        }
    }

    /// The parameters of the shipped `envoy/standalone.yaml`, for a given plugin configuration.
    pub fn standalone(plugin_config: String) -> Self {
        Self {
            listener: ("127.0.0.1".into(), 10000),
            admin: ("127.0.0.1".into(), 9901),
            ..Self::ephemeral(
                Upstream::Cluster("127.0.0.1".into(), 18080),
                HttpFilter::pag0(
                    "target/wasm32-wasip1/wasm-release/pag0_plugin.wasm".into(),
                    plugin_config,
                ),
            )
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

/// Renders the bootstrap. The pag0 configuration JSON goes in as a YAML literal block
/// scalar, so the shipped file stays readable and diffable.
///
/// A buffer filter follows pag0: pag0 must let the request headers continue to be able to
/// read the body (see plugin/README.md), so without it the router would open the upstream
/// request before a body-priced refusal; with it, a refused request never reaches the upstream.
pub fn render_envoy_yaml(p: &YamlParams) -> String {
    let route = match &p.upstream {
        Upstream::Cluster(..) => format!(
            "              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: paid_apis, timeout: {} }}\n",
            p.route_timeout
        ),
        Upstream::DirectResponse { status, body } => format!(
            "              - match: {{ prefix: \"/\" }}\n                direct_response: {{ status: {status}, body: {{ inline_string: {} }} }}\n",
            quoted(body)
        ),
    };
    let buffer = if p.buffer_filter {
        format!(
            r#"          # Holds the request until its body is complete (pag0 has priced it by then).
          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: {}
"#,
            p.buffer_bytes
        )
    } else {
        String::new()
    };
    let mut clusters = String::new();
    if let Upstream::Cluster(addr, port) = &p.upstream {
        clusters.push_str(&format!(
            r#"  - name: paid_apis
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: paid_apis
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {addr}, port_value: {port} }}
"#
        ));
    }
    clusters.push_str(&sidecar_cluster(
        p.sidecar.as_ref(),
        &p.sidecar_connect_timeout,
    ));
    if !clusters.is_empty() {
        clusters.insert_str(0, "  clusters:\n");
    }
    format!(
        r#"{header}admin:
  address:
    socket_address: {{ address: {admin_addr}, port_value: {admin_port} }}
{overload}static_resources:
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
{access_log}{path_protections}          route_config:
            name: all_hosts
            virtual_hosts:
            - name: all_hosts
              domains: ["*"]
              routes:
{agent_routes}{route}          http_filters:
{filter}{buffer}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{clusters}"#,
        header = header(p),
        admin_addr = p.admin.0,
        admin_port = p.admin.1,
        overload = p
            .max_downstream_connections
            .map(overload_manager)
            .unwrap_or_default(),
        l_addr = p.listener.0,
        l_port = p.listener.1,
        buffer_bytes = p.buffer_bytes,
        access_log = if p.access_log { ACCESS_LOG } else { "" },
        path_protections = if p.path_protections {
            PATH_PROTECTIONS
        } else {
            ""
        },
        agent_routes = if p.agent_routes && p.sidecar.is_some() {
            AGENT_ROUTES
        } else {
            ""
        },
        filter = http_filter(&p.filter),
    )
}

/// The comment heading the shipped file (and every bootstrap of the pag0 filter).
fn header(p: &YamlParams) -> String {
    match (&p.upstream, &p.filter) {
        (Upstream::Cluster(addr, port), HttpFilter::Wasm { name, .. }) if name == "pag0" => {
            format!(
                "# Pag0 in front of paid APIs: every request passes the pag0 wasm filter, then the router.
# Every host is routed to one upstream (the mock at {addr}:{port}); point the
# `paid_apis` cluster at real endpoints (with TLS) in production.
"
            )
        }
        _ => "# Rendered by pag0-envoy (envoy/src/yaml.rs).\n".to_owned(),
    }
}

fn overload_manager(max: u64) -> String {
    format!(
        r#"# A ceiling on downstream connections (Envoy warns without one).
overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: {max}
"#
    )
}

const ACCESS_LOG: &str = r#"          # One line per request. `pag0=` is the filter's decision event in standalone mode
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
"#;

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn http_filter(f: &HttpFilter) -> String {
    match f {
        HttpFilter::None => String::new(),
        HttpFilter::Wasm {
            name,
            wasm_path,
            configuration,
            literal_block,
        } => {
            let value = if *literal_block {
                let indent = " ".repeat(20);
                let block: String = configuration
                    .lines()
                    .map(|l| format!("{indent}{l}\n"))
                    .collect();
                format!("|\n{block}")
            } else {
                format!("{}\n", quoted(configuration))
            };
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
                  code:
                    local:
                      filename: {wasm}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {value}"#,
                wasm = quoted(wasm_path),
            )
        }
        HttpFilter::ExtAuthz { bearer } => format!(
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
            auth = quoted(&format!("Bearer {bearer}")),
        ),
    }
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
fn sidecar_cluster(sidecar: Option<&(String, u16)>, connect_timeout: &str) -> String {
    let Some((addr, port)) = sidecar else {
        return String::new();
    };
    format!(
        r#"  # Managed mode: the filter syncs with the pag0 sidecar through this cluster.
  - name: pag0_sidecar
    type: STATIC
    connect_timeout: {connect_timeout}
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
