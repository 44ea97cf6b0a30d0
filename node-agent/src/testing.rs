//! Test helpers: a real `halyard-agent run` process joined to a test CA, and clients for its
//! socket. Compiled for tests and with the `testing` feature only.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_proto::api::workload::X509svidRequest;
use halyard_proto::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::Channel;

/// A running agent, killed when dropped.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    ca_address: String,
    bundle: PathBuf,
    token: Option<String>,
    extra: Vec<String>,
    log_filter: String,
    child: Option<Child>,
}

impl TestAgent {
    /// Starts `binary run` against the CA at `ca_address` (its bundle at `bundle`) with a join
    /// token, in a fresh directory whose socket any uid may reach.
    pub fn start(
        binary: &Path,
        ca_address: &str,
        bundle: &Path,
        token: &str,
        extra: &[&str],
    ) -> TestAgent {
        TestAgent::start_logging(
            binary,
            ca_address,
            bundle,
            token,
            extra,
            "info,halyard_agent=debug",
        )
    }

    /// Same, logging with `RUST_LOG=log_filter` (e.g. `trace`).
    pub fn start_logging(
        binary: &Path,
        ca_address: &str,
        bundle: &Path,
        token: &str,
        extra: &[&str],
        log_filter: &str,
    ) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut agent = TestAgent {
            dir,
            binary: binary.to_owned(),
            ca_address: ca_address.to_owned(),
            bundle: bundle.to_owned(),
            token: Some(token.to_owned()),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_filter: log_filter.to_owned(),
            child: None,
        };
        agent.spawn();
        agent
    }

    /// The agent's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The agent's data directory (node SVID).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let mut command = Command::new(&self.binary);
        command
            .args(["run", "--ca-address", &self.ca_address, "--trust-bundle"])
            .arg(&self.bundle)
            .arg("--socket")
            .arg(self.socket())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .env("RUST_LOG", &self.log_filter)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(token) = &self.token {
            command.args(["--join-token", token]);
        }
        self.child = Some(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("halyard-agent exited with {status}: {}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("halyard-agent did not open its socket: {}", self.log());
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts the agent without a join token: it must use its stored node SVID.
    pub fn restart_without_token(&mut self) {
        self.kill();
        self.token = None;
        self.spawn();
    }

    /// A Workload API client on the agent's socket.
    pub async fn workload_client(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(uds_channel(self.socket()).await)
    }

    /// Runs `halyard-agent api fetch` as `uid`; returns (success, stdout + stderr).
    pub fn fetch_as(&self, uid: u32) -> (bool, String) {
        use std::os::unix::process::CommandExt;
        let out = Command::new(&self.binary)
            .args(["api", "fetch", "--socket"])
            .arg(self.socket())
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gRPC channel over a unix socket.
pub async fn uds_channel(path: PathBuf) -> Channel {
    halyard_proto::transport::unix_channel(path).await.unwrap()
}

/// An `X509svidRequest` with the Workload API's security header.
pub fn x509_request() -> tonic::Request<X509svidRequest> {
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}
