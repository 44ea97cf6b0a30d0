//! `halyard-ca serve` configuration: a TOML file, every key also a flag, and `--dev` defaults.

mod kubernetes;
mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use halyard_proto::{TrustDomain, Ttl};
use serde::Deserialize;

pub use kubernetes::{KubernetesConfig, KubernetesFile};
pub use upstream::{AwsPcaFile, Upstream};

/// Why a configuration was refused: names the file (or flag), the key and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with the key and line.
        message: String,
    },
    /// A value that parses but cannot be used.
    #[error("{source_name}: key {key}: {message}")]
    Invalid {
        /// The file, or "flags".
        source_name: String,
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// The configuration as written in a file: every key optional, defaults applied later.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Trust domain served, e.g. `cluster.local`.
    pub trust_domain: Option<String>,
    /// Data directory: intermediate key and chain, bundle, SQLite database, admin socket.
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`; default: SQLite `halyard.db` in the data directory.
    pub store_url: Option<String>,
    /// gRPC over TLS listen address.
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address (metrics, health).
    pub http_listen: Option<SocketAddr>,
    /// Admin socket path; default `admin.sock` in the data directory.
    pub admin_socket: Option<PathBuf>,
    /// DNS names in the server's own certificate (the names clients dial).
    pub server_dns_names: Option<Vec<String>>,
    /// IP addresses in the server's own certificate.
    pub server_ip_addresses: Option<Vec<IpAddr>>,
    /// Default workload certificate lifetime.
    pub default_ttl: Option<String>,
    /// Maximum workload certificate lifetime; longer requests are clamped.
    pub max_ttl: Option<String>,
    /// Default join token lifetime.
    pub join_token_ttl: Option<String>,
    /// Most CSRs in one `SignX509Svids` batch.
    pub max_batch: Option<usize>,
    /// Most signatures in flight; beyond it requests get RESOURCE_EXHAUSTED.
    pub max_in_flight: Option<usize>,
    /// Certificates per second each node may request (burst: twice that).
    pub node_rate_limit: Option<u32>,
    /// Certificates per MINUTE each SPIFFE ID may be issued, across every node and API.
    pub identity_rate_limit: Option<u32>,
    /// Certificates one SPIFFE ID may be issued at once (the bucket's size): replicas sharing a
    /// service account share its budget, so this must cover a rollout.
    pub identity_rate_burst: Option<u32>,
    /// How long journal rows of expired certificates are kept.
    pub journal_retention: Option<String>,
    /// When set, leaves carry a CRL distribution point `<this>/<authority>.crl`: the CA's
    /// `/crl` path as relying parties reach it, e.g. `http://halyard-ca.halyard.svc:9090/crl`.
    pub crl_base_url: Option<String>,
    /// Where the intermediate comes from: `offline` (the default) or `aws-pca`.
    pub upstream: Option<String>,
    /// AWS Private CA, for `upstream = "aws-pca"`.
    pub aws_pca: Option<AwsPcaFile>,
    /// Kubernetes: service-account tokens, the cert-manager issuer.
    pub kubernetes: Option<KubernetesFile>,
}

/// A complete, checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Trust domain served.
    pub trust_domain: TrustDomain,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store URL.
    pub store_url: String,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// DNS names of the server certificate.
    pub server_dns_names: Vec<String>,
    /// IP addresses of the server certificate.
    pub server_ip_addresses: Vec<IpAddr>,
    /// Default workload TTL.
    pub default_ttl: Ttl,
    /// Maximum workload TTL.
    pub max_ttl: Ttl,
    /// Default join token TTL.
    pub join_token_ttl: Ttl,
    /// Most CSRs per batch.
    pub max_batch: usize,
    /// Most signatures in flight.
    pub max_in_flight: usize,
    /// Certificates per second per node.
    pub node_rate_limit: u32,
    /// Certificates per minute per SPIFFE ID.
    pub identity_rate_limit: u32,
    /// Certificates per SPIFFE ID at once.
    pub identity_rate_burst: u32,
    /// Journal retention after expiry.
    pub journal_retention: Ttl,
    /// The CRL distribution point base put in leaves, if any.
    pub crl_base_url: Option<String>,
    /// Development mode: a root is made in the data directory and signs the intermediate.
    pub dev: bool,
    /// Whether every certificate is journaled before it is handed out. Always true, except in
    /// a `--dev` CA started with `--unjournaled-for-benchmarks` to measure what the journal costs.
    pub journal: bool,
    /// Where the intermediate comes from.
    pub upstream: Upstream,
    /// Kubernetes, when enabled.
    pub kubernetes: Option<KubernetesConfig>,
}

impl ConfigFile {
    /// Reads and parses a TOML configuration file.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn overlay(self, over: ConfigFile) -> ConfigFile {
        let aws_pca = match (self.aws_pca, over.aws_pca) {
            (Some(file), Some(flags)) => Some(file.overlay(flags)),
            (file, flags) => flags.or(file),
        };
        let kubernetes = match (self.kubernetes, over.kubernetes) {
            (Some(file), Some(flags)) => Some(file.overlay(flags)),
            (file, flags) => flags.or(file),
        };
        macro_rules! pick {
            ($($field:ident),*) => {
                ConfigFile { $($field: over.$field.or(self.$field),)* aws_pca, kubernetes }
            };
        }
        pick!(
            trust_domain,
            data_dir,
            store_url,
            grpc_listen,
            http_listen,
            admin_socket,
            server_dns_names,
            server_ip_addresses,
            default_ttl,
            max_ttl,
            join_token_ttl,
            max_batch,
            max_in_flight,
            node_rate_limit,
            identity_rate_limit,
            identity_rate_burst,
            journal_retention,
            crl_base_url,
            upstream
        )
    }

    /// Applies defaults and checks every value; `source_name` (a file or "flags") names where
    /// a bad value came from. In `dev` mode the trust domain and data directory have defaults and
    /// the server listens on loopback.
    pub fn resolve(self, source_name: &str, dev: bool) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            key,
            message,
        };
        let ttl =
            |key: &'static str, value: Option<String>, default: &str| -> Result<Ttl, ConfigError> {
                value
                    .as_deref()
                    .unwrap_or(default)
                    .parse::<Ttl>()
                    .map_err(|e| invalid(key, e.to_string()))
            };
        let trust_domain = match (self.trust_domain, dev) {
            (Some(td), _) => {
                TrustDomain::new(&td).map_err(|e| invalid("trust_domain", e.to_string()))?
            }
            (None, true) => TrustDomain::new("cluster.local")
                .map_err(|e| invalid("trust_domain", e.to_string()))?,
            (None, false) => return Err(invalid("trust_domain", "is required".into())),
        };
        let data_dir = match (self.data_dir, dev) {
            (Some(dir), _) => dir,
            (None, true) => PathBuf::from("halyard-dev"),
            (None, false) => return Err(invalid("data_dir", "is required".into())),
        };
        let store_url = self
            .store_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("halyard.db").display()));
        if !(store_url.starts_with("sqlite://")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store_url",
                format!("{store_url:?} is neither sqlite://… nor postgres://…"),
            ));
        }
        let (default_grpc, default_http) = if dev {
            ("127.0.0.1:8443", "127.0.0.1:9090")
        } else {
            ("0.0.0.0:8443", "0.0.0.0:9090")
        };
        let default_ttl = ttl("default_ttl", self.default_ttl, "1h")?;
        let max_ttl = ttl("max_ttl", self.max_ttl, "24h")?;
        if default_ttl > max_ttl {
            return Err(invalid(
                "default_ttl",
                format!("{default_ttl} is longer than max_ttl {max_ttl}"),
            ));
        }
        let positive = |key: &'static str, value: Option<usize>, default: usize| match value
            .unwrap_or(default)
        {
            0 => Err(invalid(key, "must be at least 1".into())),
            n => Ok(n),
        };
        let positive_u32 =
            |key: &'static str, value: Option<u32>, default: u32| match value.unwrap_or(default) {
                0 => Err(invalid(key, "must be at least 1".into())),
                n => Ok(n),
            };
        let upstream = upstream::resolve(self.upstream.as_deref(), self.aws_pca, dev, &invalid)?;
        let kubernetes = kubernetes::resolve(self.kubernetes, &invalid)?;
        let crl_base_url = match self.crl_base_url {
            Some(url)
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(char::is_whitespace) =>
            {
                return Err(invalid(
                    "crl_base_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            other => other.map(|url| url.trim_end_matches('/').to_owned()),
        };
        Ok(Config {
            upstream,
            kubernetes,
            crl_base_url,
            admin_socket: self
                .admin_socket
                .unwrap_or_else(|| data_dir.join("admin.sock")),
            grpc_listen: self.grpc_listen.unwrap_or_else(|| parse_addr(default_grpc)),
            http_listen: self.http_listen.unwrap_or_else(|| parse_addr(default_http)),
            server_dns_names: self
                .server_dns_names
                .unwrap_or_else(|| vec!["localhost".into()]),
            server_ip_addresses: self
                .server_ip_addresses
                .unwrap_or_else(|| vec![IpAddr::from([127, 0, 0, 1])]),
            join_token_ttl: ttl("join_token_ttl", self.join_token_ttl, "1h")?,
            journal_retention: ttl("journal_retention", self.journal_retention, "30d")?,
            max_batch: positive("max_batch", self.max_batch, 256)?,
            max_in_flight: positive("max_in_flight", self.max_in_flight, 1024)?,
            node_rate_limit: positive_u32("node_rate_limit", self.node_rate_limit, 500)?,
            identity_rate_limit: positive_u32(
                "identity_rate_limit",
                self.identity_rate_limit,
                DEFAULT_IDENTITY_RATE_LIMIT,
            )?,
            identity_rate_burst: positive_u32(
                "identity_rate_burst",
                self.identity_rate_burst,
                DEFAULT_IDENTITY_RATE_BURST,
            )?,
            trust_domain,
            data_dir,
            store_url,
            default_ttl,
            max_ttl,
            dev,
            journal: true,
        })
    }
}

/// Certificates per minute per SPIFFE ID by default. A pod renews its certificate a few times an
/// hour at most; every replica of a deployment shares its service account's ID, so the budget is
/// the deployment's: 60 a minute sustains 1,800 replicas on 1 h certificates renewed at half life.
pub const DEFAULT_IDENTITY_RATE_LIMIT: u32 = 60;

/// Certificates one SPIFFE ID may be issued at once by default: a rollout of 1,000 replicas
/// sharing one service account, all starting together, is not refused.
pub const DEFAULT_IDENTITY_RATE_BURST: u32 = 1000;

fn parse_addr(text: &str) -> SocketAddr {
    // The defaults above are literals that parse.
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests;
