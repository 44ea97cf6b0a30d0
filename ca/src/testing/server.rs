//! A real `halyard-ca serve` process (`--dev`, or `--config FILE`) on free loopback ports, and
//! clients for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::{AttestRequest, attest_request::Credential};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A running CA server, killed when dropped.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    binary: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    log_filter: Option<String>,
    /// `--config FILE` instead of `--dev`.
    config: Option<PathBuf>,
    /// Added to the server's environment.
    env: Vec<(String, String)>,
}

/// The `halyard-ca` binary of this build, for tests in other packages (Cargo hands
/// `CARGO_BIN_EXE_*` only to the binary's own package): next to the test executable's `deps/`.
pub fn ca_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = dir.join("halyard-ca");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build -p halyard-ca`; the README test command does)",
        binary.display()
    );
    binary
}

/// A free loopback port (bound and released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestServer {
    /// Starts `binary serve --dev` in a fresh data directory, with `extra` flags, and waits
    /// until its admin socket answers.
    pub fn start(binary: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_logging(binary, extra, None)
    }

    /// Same, logging with `RUST_LOG=log_filter` (e.g. `trace`) instead of what the test
    /// process has.
    pub fn start_logging(binary: &Path, extra: &[&str], log_filter: Option<&str>) -> TestServer {
        let mut server = TestServer {
            dir: tempfile::tempdir().unwrap(),
            grpc: ([127, 0, 0, 1], free_port()).into(),
            http: ([127, 0, 0, 1], free_port()).into(),
            binary: binary.to_owned(),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_filter: log_filter.map(str::to_owned),
            config: None,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts `binary serve --config FILE` with `config` (TOML) as the file, in a fresh data
    /// directory given as `--data-dir`, on free ports given as flags, with `env` added to its
    /// environment and `extra` flags; waits until its admin socket answers.
    pub fn start_with_config(
        binary: &Path,
        config: &str,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> TestServer {
        TestServer::start_with_config_and_data(binary, config, env, extra, |_| {})
    }

    /// The same, with `populate` called on the (created, empty) data directory first: to share
    /// another server's files, say.
    pub fn start_with_config_and_data(
        binary: &Path,
        config: &str,
        env: &[(&str, &str)],
        extra: &[&str],
        populate: impl FnOnce(&Path),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        populate(&data);
        let config_path = dir.path().join("halyard-ca.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut server = TestServer {
            dir,
            grpc: ([127, 0, 0, 1], free_port()).into(),
            http: ([127, 0, 0, 1], free_port()).into(),
            binary: binary.to_owned(),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_filter: None,
            config: Some(config_path),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        server.spawn();
        server
    }

    /// Starts a second replica of `first`: a new data directory holding a copy of `first`'s
    /// intermediate, key and bundle (so both sign as one CA), with `extra` flags (give both the
    /// same `--store-url`).
    pub fn start_replica(first: &TestServer, extra: &[&str]) -> TestServer {
        let mut server = TestServer {
            dir: tempfile::tempdir().unwrap(),
            grpc: ([127, 0, 0, 1], free_port()).into(),
            http: ([127, 0, 0, 1], free_port()).into(),
            binary: first.binary.clone(),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_filter: first.log_filter.clone(),
            config: None,
            env: Vec::new(),
        };
        let data = server.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        for file in ["intermediate.key", "intermediate.crt", "bundle.pem"] {
            std::fs::copy(first.data_dir().join(file), data.join(file)).unwrap();
        }
        server.spawn();
        server
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let mut command = Command::new(&self.binary);
        if let Some(filter) = &self.log_filter {
            command.env("RUST_LOG", filter);
        }
        command.arg("serve");
        match &self.config {
            Some(config) => command.arg("--config").arg(config),
            None => command.arg("--dev"),
        };
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--grpc-listen", &self.grpc.to_string()])
            .args(["--http-listen", &self.http.to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("halyard-ca exited with {status}: {}", self.log());
            }
            let ok = Command::new(&self.binary)
                .args(["healthcheck", "--data-dir"])
                .arg(self.data_dir())
                .output()
                .is_ok_and(|o| o.status.success());
            if ok && std::net::TcpStream::connect(self.grpc).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("halyard-ca did not become ready: {}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `halyard-ca ARGS --data-dir DATA` and returns its stdout, or its stderr on failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `GET path` on the server's HTTP port: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, Vec<u8>) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.http).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let status = head.lines().next().unwrap().to_owned();
        (status, response[split + 4..].to_vec())
    }

    /// The trust bundle, PEM.
    pub fn bundle_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("bundle.pem")).unwrap()
    }

    /// A gRPC channel over TLS to the server, checking its name `localhost` against the
    /// bundle, presenting `identity` (chain PEM, key PEM) when given.
    pub async fn channel(&self, identity: Option<(&str, &str)>) -> Channel {
        tls_channel(self.grpc, &self.bundle_pem(), identity)
            .await
            .unwrap()
    }

    /// Attests node `name` with a fresh join token; returns (chain PEM, key PEM) of its SVID.
    pub async fn attest_node(&self, name: &str) -> (String, String) {
        let token = self.cli(&["token", "create", "--node", name]).unwrap();
        let (key, csr) = key_and_csr(None);
        let response = NodeServiceClient::new(self.channel(None).await)
            .attest(AttestRequest {
                credential: Some(Credential::JoinToken(token.trim().to_owned())),
                csr,
            })
            .await
            .unwrap()
            .into_inner();
        let svid = response.svid.unwrap();
        let chain = crate::authority::certs_to_pem(svid.cert_chain.iter().map(Vec::as_slice));
        (chain, key)
    }
}

impl TestServer {
    /// Registers `id` for workloads with uid 1000 on `node`.
    pub fn entry(&self, node: &str, id: &str) {
        self.cli(&[
            "entry",
            "create",
            "--node",
            node,
            "--spiffe-id",
            id,
            "--selector",
            "unix:uid:1000",
        ])
        .unwrap();
    }

    /// Has node `node_identity` (chain PEM, key PEM) sign one SVID for `id`; returns
    /// (chain PEM, key PEM).
    pub async fn workload_svid(&self, node_identity: (&str, &str), id: &str) -> (String, String) {
        use halyard_proto::api::ca::svid_result::Result as ItemResult;
        use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
        use halyard_proto::api::ca::{SignX509SvidsRequest, SvidRequest};
        let (key, csr) = key_and_csr(Some(id));
        let result = SvidServiceClient::new(self.channel(Some(node_identity)).await)
            .sign_x509_svids(SignX509SvidsRequest {
                requests: vec![SvidRequest {
                    spiffe_id: id.into(),
                    csr,
                    ttl_seconds: 0,
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .results
            .remove(0);
        let Some(ItemResult::Svid(svid)) = result.result else {
            panic!("{result:?}")
        };
        (
            crate::authority::certs_to_pem(svid.cert_chain.iter().map(Vec::as_slice)),
            key,
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh P-256 key (PKCS#8 PEM) and a DER CSR over it, with `id` as its URI SAN if given.
pub fn key_and_csr(id: Option<&str>) -> (String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = id {
        params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    }
    let csr = params.serialize_request(&key).unwrap().der().to_vec();
    (key.serialize_pem(), csr)
}

/// Lowercase hex of a certificate's subject key identifier (an authority's id), or of its
/// authority key identifier (its issuer's id) when `of_issuer`.
pub fn key_id(der: &[u8], of_issuer: bool) -> String {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) if !of_issuer => Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(id) if of_issuer => {
                id.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gRPC channel over TLS to a CA listening on `grpc`, checking its name `localhost` against
/// `bundle_pem`, presenting `identity` (chain PEM, key PEM) when given; the error when it cannot
/// connect (yet).
pub async fn tls_channel(
    grpc: std::net::SocketAddr,
    bundle_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle_pem))
        .domain_name("localhost");
    if let Some((chain, key)) = identity {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    Endpoint::from_shared(format!("https://{grpc}"))?
        .tls_config(tls)?
        .connect()
        .await
}
