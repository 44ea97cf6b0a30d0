//! What an Envoy is asked to be ([`EnvoyConfig`]) and the bootstrap YAML that makes it so.
//!
//! Built as JSON values with Envoy's v3 field names, one function per block, then written as
//! YAML ([`render`]). `deploy/envoy/*.yaml` are examples rendered by this module (a test keeps
//! them current), so the demo and operators see the same configuration the tests run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use halyard_proto::SpiffeId;
use serde_json::{Value, json};

/// The SDS secret Envoy asks for its own certificate (Istio's and the agent's convention).
pub const SDS_CERTIFICATE: &str = "default";
/// The SDS secret Envoy asks for its trust roots (and CRLs).
pub const SDS_ROOTS: &str = "ROOTCA";
/// The static cluster that reaches the SDS server.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// One Envoy: its role, where its credentials come from, and how it runs.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// Names the Envoy: its node id, listener name and the body a server answers with.
    pub name: String,
    /// Server or client.
    pub role: Role,
    /// Where the certificate, key and trust roots come from.
    pub credentials: Credentials,
    /// Run as this unix uid and gid instead of ours (we are root in the tests).
    pub run_as: Option<(u32, u32)>,
    /// Envoy's `--log-level`.
    pub log_level: String,
    /// How long to wait for the admin endpoint's `/ready` to say LIVE.
    pub ready_timeout: Duration,
    /// A client opens a new upstream connection (a new TLS handshake) for every request.
    pub handshake_per_request: bool,
}

/// What the Envoy does.
#[derive(Clone, Debug)]
pub enum Role {
    /// A TLS listener that requires a client certificate whose URI SAN is one of
    /// `allowed_clients`, and answers every request itself: 200, a body naming the Envoy and
    /// the header `x-peer-spiffe-id` with the client's URI SAN.
    Server {
        /// The SPIFFE IDs whose certificates are accepted.
        allowed_clients: Vec<SpiffeId>,
    },
    /// A plain HTTP listener that proxies every request to `upstream` over mTLS, accepting only
    /// a server certificate with URI SAN `server_id`.
    Client {
        /// The server Envoy's TLS listener.
        upstream: SocketAddr,
        /// The SPIFFE ID the server must present.
        server_id: SpiffeId,
    },
}

/// Where an Envoy gets its certificate, key and trust roots.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Static PEM files.
    Files {
        /// The certificate chain, leaf first.
        chain_pem: PathBuf,
        /// The private key.
        key_pem: PathBuf,
        /// The trusted roots.
        roots_pem: PathBuf,
    },
    /// An SDS server on a unix socket: the certificate is the secret [`SDS_CERTIFICATE`], the
    /// trust roots the secret [`SDS_ROOTS`], combined with the role's static SAN matcher.
    Sds {
        /// The SDS server's unix socket.
        socket: PathBuf,
        /// State-of-the-world or delta xDS.
        api: SdsApi,
    },
}

/// Which xDS protocol variant Envoy speaks to the SDS server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdsApi {
    /// State of the world: `SecretDiscoveryService/StreamSecrets`.
    Grpc,
    /// Incremental: `SecretDiscoveryService/DeltaSecrets`.
    DeltaGrpc,
}

impl SdsApi {
    fn api_type(self) -> &'static str {
        match self {
            SdsApi::Grpc => "GRPC",
            SdsApi::DeltaGrpc => "DELTA_GRPC",
        }
    }
}

/// The loopback ports an Envoy listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The admin endpoint.
    pub admin: u16,
    /// The server's TLS listener or the client's HTTP listener.
    pub listen: u16,
}

impl EnvoyConfig {
    /// A server Envoy named `name` accepting clients with the given SPIFFE IDs.
    pub fn server(name: &str, allowed_clients: &[SpiffeId], credentials: Credentials) -> Self {
        Self::new(
            name,
            Role::Server {
                allowed_clients: allowed_clients.to_vec(),
            },
            credentials,
        )
    }

    /// A client Envoy named `name` proxying to `upstream`, which must present `server_id`.
    pub fn client(
        name: &str,
        upstream: SocketAddr,
        server_id: &SpiffeId,
        credentials: Credentials,
    ) -> Self {
        Self::new(
            name,
            Role::Client {
                upstream,
                server_id: server_id.clone(),
            },
            credentials,
        )
    }

    fn new(name: &str, role: Role, credentials: Credentials) -> Self {
        EnvoyConfig {
            name: name.to_owned(),
            role,
            credentials,
            run_as: None,
            log_level: "warn".to_owned(),
            ready_timeout: Duration::from_secs(30),
            handshake_per_request: false,
        }
    }

    /// A client that opens a new upstream connection, so a new TLS handshake with the
    /// certificates of the moment, for every request.
    pub fn handshake_per_request(mut self) -> Self {
        self.handshake_per_request = true;
        self
    }

    /// Runs the Envoy as `uid`:`gid`.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// Envoy's `--log-level` (default `warn`).
    pub fn log_level(mut self, level: &str) -> Self {
        level.clone_into(&mut self.log_level);
        self
    }

    /// How long to wait for LIVE (default 30 s; SDS listeners wait for their secrets first).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }
}

impl Credentials {
    /// Static files.
    pub fn files(chain_pem: &Path, key_pem: &Path, roots_pem: &Path) -> Self {
        Credentials::Files {
            chain_pem: chain_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            roots_pem: roots_pem.to_owned(),
        }
    }

    /// An SDS server on `socket`.
    pub fn sds(socket: &Path, api: SdsApi) -> Self {
        Credentials::Sds {
            socket: socket.to_owned(),
            api,
        }
    }
}

/// The bootstrap for `config` listening on `ports`, as YAML.
pub fn render(config: &EnvoyConfig, ports: Ports) -> String {
    let header = format!(
        "# Envoy bootstrap for the {} \"{}\", rendered by halyard-tests (tests/src/envoy/bootstrap.rs).\n",
        match config.role {
            Role::Server { .. } => "server",
            Role::Client { .. } => "client",
        },
        config.name,
    );
    header + &super::yaml::to_yaml(&bootstrap(config, ports))
}

fn bootstrap(config: &EnvoyConfig, ports: Ports) -> Value {
    let mut clusters = Vec::new();
    let listener = match &config.role {
        Role::Server { allowed_clients } => server_listener(config, ports.listen, allowed_clients),
        Role::Client {
            upstream,
            server_id,
        } => {
            clusters.push(upstream_cluster(config, *upstream, server_id));
            client_listener(&config.name, ports.listen)
        }
    };
    if let Credentials::Sds { socket, .. } = &config.credentials {
        clusters.push(sds_cluster(socket));
    }
    json!({
        "node": {"id": config.name, "cluster": "halyard-tests"},
        "admin": {"address": socket_address("127.0.0.1", ports.admin)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        // Without a limit Envoy warns at every start, which buries what a failing test's log says.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 1000,
            },
        }]},
    })
}

fn server_listener(config: &EnvoyConfig, port: u16, allowed_clients: &[SpiffeId]) -> Value {
    let routes = json!([{
        "match": {"prefix": "/"},
        "direct_response": {
            "status": 200,
            "body": {"inline_string": format!("hello from {}\n", config.name)},
        },
        // Applied to direct responses too; the formatter fills in the client's URI SAN.
        "response_headers_to_add": [{
            "header": {"key": "x-peer-spiffe-id", "value": "%DOWNSTREAM_PEER_URI_SAN%"},
        }],
    }]);
    json!({
        "name": config.name,
        "stat_prefix": config.name,
        "address": socket_address("127.0.0.1", port),
        "filter_chains": [{
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": common_tls_context(&config.credentials, allowed_clients),
                },
            },
            "filters": [http_connection_manager(&config.name, routes)],
        }],
    })
}

fn client_listener(name: &str, port: u16) -> Value {
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]);
    json!({
        "name": name,
        "stat_prefix": name,
        "address": socket_address("127.0.0.1", port),
        "filter_chains": [{"filters": [http_connection_manager(name, routes)]}],
    })
}

fn upstream_cluster(config: &EnvoyConfig, upstream: SocketAddr, server_id: &SpiffeId) -> Value {
    let mut cluster = json!({
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": socket_address(&upstream.ip().to_string(), upstream.port()),
            }}]}],
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": common_tls_context(&config.credentials, std::slice::from_ref(server_id)),
            },
        },
    });
    if config.handshake_per_request {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"max_requests_per_connection": 1},
                "explicit_http_config": {"http_protocol_options": {}},
            },
        });
    }
    cluster
}

fn http_connection_manager(name: &str, routes: Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {
                "name": name,
                "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }],
        },
    })
}

/// The certificate and the peer validation: trusted roots plus an exact URI SAN match against
/// `peers`.
fn common_tls_context(credentials: &Credentials, peers: &[SpiffeId]) -> Value {
    let san_matchers: Vec<Value> = peers
        .iter()
        .map(|id| json!({"san_type": "URI", "matcher": {"exact": id.as_str()}}))
        .collect();
    match credentials {
        Credentials::Files {
            chain_pem,
            key_pem,
            roots_pem,
        } => json!({
            "tls_certificates": [{
                "certificate_chain": {"filename": chain_pem},
                "private_key": {"filename": key_pem},
            }],
            "validation_context": {
                "trusted_ca": {"filename": roots_pem},
                "match_typed_subject_alt_names": san_matchers,
            },
        }),
        Credentials::Sds { api, .. } => json!({
            "tls_certificate_sds_secret_configs": [{
                "name": SDS_CERTIFICATE,
                "sds_config": sds_config(*api),
            }],
            // The SDS secret brings the roots (and CRLs); the SAN matcher stays local.
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": san_matchers},
                "validation_context_sds_secret_config": {
                    "name": SDS_ROOTS,
                    "sds_config": sds_config(*api),
                },
            },
        }),
    }
}

fn sds_config(api: SdsApi) -> Value {
    json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": api.api_type(),
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
            "set_node_on_first_message_only": true,
        },
    })
}

fn sds_cluster(socket: &Path) -> Value {
    json!({
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        // gRPC needs HTTP/2 to the SDS server.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"pipe": {"path": socket}},
            }}]}],
        },
    })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}
