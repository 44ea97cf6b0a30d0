//! The moto AWS emulator with Halyard's test shim (`tests/moto_shim.py`, whose header says what
//! it changes in the emulator and why), and AWS Private CAs made in it as an operator makes them.
//!
//! The launcher is `$HALYARD_MOTO_SERVER` (`source tests/moto.sh`); without it [`Moto::start`]
//! fails the test, saying how to get it. Each test starts its own emulator on a free port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use aws_sdk_acmpca::Client;
use aws_sdk_acmpca::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityType, KeyAlgorithm,
    SigningAlgorithm as SdkSigningAlgorithm, Validity, ValidityPeriodType,
};

use super::free_port;
use crate::upstream::{AwsPca, AwsPcaConfig, CaArn};

/// The variable naming the emulator's launcher.
pub const MOTO_VAR: &str = "HALYARD_MOTO_SERVER";

/// The region every emulated CA lives in.
pub const MOTO_REGION: &str = "us-east-1";

/// The moto emulator with the test shim, on a free port; killed when dropped.
pub struct Moto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The shim's counters (see `tests/moto_shim.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MotoCounts {
    /// IssueCertificate requests that reached the emulator, throttled ones included.
    pub calls: u64,
    /// Of those, answered with ThrottlingException.
    pub throttled: u64,
    /// Certificates actually made.
    pub issued: u64,
}

impl Moto {
    /// Starts the emulator; panics, saying how to get it, when `$HALYARD_MOTO_SERVER` is unset.
    pub fn start() -> Moto {
        let Ok(launcher) = std::env::var(MOTO_VAR) else {
            panic!(
                "{MOTO_VAR} is not set: this test needs the moto AWS emulator and its shim. \
                 Run it through the README test command (tests/run.sh), or \
                 `source tests/moto.sh` first."
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let port = free_port();
        let mut child = Command::new(&launcher)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOTO_VAR}={launcher}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let moto = Moto { child, port, dir };
        assert!(
            line.starts_with("listening on"),
            "moto did not start ({launcher} {port}); its log:\n{}",
            moto.log()
        );
        moto
    }

    /// The emulator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Its URL, for `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A request to the shim's own endpoints, over plain HTTP/1.0.
    fn shim(&self, method: &str, path: &str) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(" 200 "), "{method} {path}: {head}");
        serde_json::from_str(body).unwrap()
    }

    /// The IssueCertificate counters.
    pub fn counts(&self) -> MotoCounts {
        let state = self.shim("GET", "/_halyard/state");
        let n = |key: &str| state[key].as_u64().unwrap();
        MotoCounts {
            calls: n("issue_certificate_calls"),
            throttled: n("throttled"),
            issued: n("certificates_issued"),
        }
    }

    /// The next `n` IssueCertificate calls get ThrottlingException.
    pub fn throttle(&self, n: u32) {
        self.shim("POST", &format!("/_halyard/throttle?count={n}"));
    }

    /// An SDK client for setting up the emulator (not the code under test).
    pub fn client(&self) -> Client {
        let config = aws_sdk_acmpca::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(MOTO_REGION))
            .credentials_provider(moto_credentials())
            .endpoint_url(self.endpoint())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(config)
    }

    /// Halyard's upstream client for the CA `ca_arn`, with `configure` applied to its config.
    pub async fn upstream(
        &self,
        ca_arn: &str,
        configure: impl FnOnce(&mut AwsPcaConfig),
    ) -> AwsPca {
        let mut config = AwsPcaConfig::new(CaArn::new(ca_arn).unwrap());
        config.endpoint_url = Some(self.endpoint());
        configure(&mut config);
        AwsPca::with_credentials(config, moto_credentials())
            .await
            .unwrap()
    }

    /// The environment a `halyard-ca serve` child needs to reach the emulator through the
    /// standard AWS credential chain: fake static keys, and no profile or instance metadata
    /// of the machine the tests run on.
    pub fn child_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_CONFIG_FILE", "/nonexistent/halyard-test-aws-config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/halyard-test-aws-credentials",
            ),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    /// A `halyard-ca serve` configuration file for trust domain `trust_domain` with
    /// `upstream = "aws-pca"`: the CA `ca_arn` in this emulator, intermediates valid for
    /// `intermediate_ttl`.
    pub fn serve_config(&self, trust_domain: &str, ca_arn: &str, intermediate_ttl: &str) -> String {
        format!(
            "trust_domain = {trust_domain:?}\nupstream = \"aws-pca\"\n\n[aws_pca]\n\
             ca_arn = {ca_arn:?}\nendpoint_url = {:?}\nintermediate_ttl = {intermediate_ttl:?}\n",
            self.endpoint()
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulator's fake credentials.
pub fn moto_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "moto")
}

/// A CA in the emulator: its ARN and certificate (PEM).
pub struct EmulatedCa {
    pub arn: String,
    pub cert_pem: String,
}

/// Creates a CA of `kind` named `name` (EC P-256), not yet activated.
pub async fn create_ca(client: &Client, kind: CertificateAuthorityType, name: &str) -> String {
    let configuration = CertificateAuthorityConfiguration::builder()
        .key_algorithm(KeyAlgorithm::EcPrime256v1)
        .signing_algorithm(SdkSigningAlgorithm::Sha256Withecdsa)
        .subject(
            Asn1Subject::builder()
                .organization("Example Corp")
                .common_name(name)
                .build(),
        )
        .build()
        .unwrap();
    client
        .create_certificate_authority()
        .certificate_authority_configuration(configuration)
        .certificate_authority_type(kind)
        .send()
        .await
        .unwrap()
        .certificate_authority_arn()
        .unwrap()
        .to_owned()
}

/// Has `issuer_arn` sign the CSR of the CA `arn` with `template`, and returns (certificate,
/// chain) as the emulator hands them out.
pub async fn sign_ca(
    client: &Client,
    issuer_arn: &str,
    arn: &str,
    template: &str,
) -> (String, Option<String>) {
    let csr = client
        .get_certificate_authority_csr()
        .certificate_authority_arn(arn)
        .send()
        .await
        .unwrap()
        .csr()
        .unwrap()
        .to_owned();
    let certificate_arn = client
        .issue_certificate()
        .certificate_authority_arn(issuer_arn)
        .csr(Blob::new(csr))
        .signing_algorithm(SdkSigningAlgorithm::Sha256Withecdsa)
        .template_arn(template)
        .validity(
            Validity::builder()
                .r#type(ValidityPeriodType::Days)
                .value(3650)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .certificate_arn()
        .unwrap()
        .to_owned();
    let got = client
        .get_certificate()
        .certificate_authority_arn(issuer_arn)
        .certificate_arn(certificate_arn)
        .send()
        .await
        .unwrap();
    (
        got.certificate().unwrap().to_owned(),
        got.certificate_chain().map(str::to_owned),
    )
}

/// A ROOT CA, self-signed with `RootCACertificate/V1` and activated, as an operator makes one.
pub async fn root_ca(client: &Client) -> EmulatedCa {
    let arn = create_ca(client, CertificateAuthorityType::Root, "Example PCA root").await;
    let (cert_pem, _) = sign_ca(
        client,
        &arn,
        &arn,
        "arn:aws:acm-pca:::template/RootCACertificate/V1",
    )
    .await;
    client
        .import_certificate_authority_certificate()
        .certificate_authority_arn(&arn)
        .certificate(Blob::new(cert_pem.as_bytes()))
        .send()
        .await
        .unwrap();
    EmulatedCa { arn, cert_pem }
}

/// A SUBORDINATE CA under `root` (path length 1, so it may sign Halyard's intermediate).
pub async fn subordinate_ca(client: &Client, root: &EmulatedCa) -> EmulatedCa {
    let arn = create_ca(
        client,
        CertificateAuthorityType::Subordinate,
        "Example PCA issuing CA",
    )
    .await;
    let (cert_pem, chain) = sign_ca(
        client,
        &root.arn,
        &arn,
        "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen1/V1",
    )
    .await;
    client
        .import_certificate_authority_certificate()
        .certificate_authority_arn(&arn)
        .certificate(Blob::new(cert_pem.as_bytes()))
        .certificate_chain(Blob::new(chain.unwrap().as_bytes()))
        .send()
        .await
        .unwrap();
    EmulatedCa { arn, cert_pem }
}

/// Starts the emulator and makes an active root CA in it, from a synchronous test (a runtime
/// of its own for the SDK calls).
pub fn moto_with_root_ca() -> (Moto, EmulatedCa) {
    let moto = Moto::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = runtime.block_on(root_ca(&moto.client()));
    (moto, root)
}
