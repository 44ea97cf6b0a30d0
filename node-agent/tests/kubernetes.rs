//! Kubernetes mode in the agent: a caller in a pod, attested through the agent's real socket by
//! its cgroups and its pod, gets its service account's identity without an entry (and those of
//! entries its pod selectors match); the node token flags refuse what cannot work. Also the
//! end-to-end tests against a real cluster (`#[ignore]`d: they need `KUBECONFIG`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use halyard_agent::attest::{KubernetesAttestor, PodSource};
use halyard_agent::cache::{Cache, CacheOptions, SignRequest, SignedChain, SvidSigner, TrustState};
use halyard_agent::caller::AgentState;
use halyard_agent::node::NodeCredential;
use halyard_agent::testing::{uds_channel, x509_request};
use halyard_proto::TrustDomain;
use halyard_proto::api::ca::{Entry, Selector};
use halyard_proto::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use k8s_openapi::api::core::v1::Pod;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[path = "kubernetes/k8s_cluster.rs"]
mod k8s_cluster;

const UID: &str = "3f1e7c2a-9b4d-4e8a-a1c5-6d2f0b7e9a13";
const CID: &str = "451132b560487f8c91e58101aebe00a881ade009a28fd6ee79216f4ddd6b7562";

fn agent_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_halyard-agent"))
}

/// A fixed set of pods: what the watch on the API server would have delivered.
struct StaticPods {
    pods: Vec<Arc<Pod>>,
    changes: watch::Sender<()>,
}

impl PodSource for StaticPods {
    fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.clone()
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }
}

/// Signs every CSR with a CA made in code: the agent side only (the CA's authorization of pod
/// identities is the CA's own, tested there).
struct LocalSigner {
    issuer: Issuer<'static, KeyPair>,
    root: Vec<u8>,
}

impl LocalSigner {
    fn new() -> LocalSigner {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).unwrap().der().to_vec();
        LocalSigner {
            issuer: Issuer::new(params, key),
            root,
        }
    }
}

#[tonic::async_trait]
impl SvidSigner for LocalSigner {
    async fn sign(
        &self,
        requests: Vec<SignRequest>,
    ) -> Result<Vec<Result<SignedChain, String>>, String> {
        Ok(requests
            .iter()
            .map(|request| {
                let der = rustls_pki_types::CertificateSigningRequestDer::from(&request.csr[..]);
                let mut csr = CertificateSigningRequestParams::from_der(&der).unwrap();
                let now = SystemTime::now();
                csr.params.not_before = (now - Duration::from_secs(60)).into();
                csr.params.not_after = (now + Duration::from_secs(3600)).into();
                csr.params.is_ca = IsCa::ExplicitNoCa;
                csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                csr.params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                let leaf = csr.signed_by(&self.issuer).unwrap();
                Ok(SignedChain {
                    chain: vec![leaf.der().to_vec(), self.root.clone()],
                })
            })
            .collect())
    }
}

fn selector(kind: &str, key: &str, value: &str) -> Selector {
    Selector {
        kind: kind.into(),
        key: key.into(),
        value: value.into(),
    }
}

/// The pod `web` in `apps`, service account `web-sa`, label `app=web`, container `web` = `CID`.
fn web_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "apps", "uid": UID, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "web-sa",
                 "containers": [{"name": "web"}]},
        "status": {"containerStatuses": [{
            "name": "web", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0,
            "containerID": format!("containerd://{CID}"),
        }]},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_caller_in_a_pod_gets_its_service_account_identity_over_the_socket() {
    // This test process is the caller. Its stand-in /proc holds its real start time (so the
    // pid checks pass) and the cgroups of the pod's container.
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let proc_dir = dir.path().join("proc").join(pid.to_string());
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::copy("/proc/self/stat", proc_dir.join("stat")).unwrap();
    std::fs::write(
        proc_dir.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CID}.scope\n",
            UID.replace('-', "_")
        ),
    )
    .unwrap();

    let signer = Arc::new(LocalSigner::new());
    let by_label = "spiffe://cluster.local/by-label";
    let trust = TrustState {
        version: 1,
        trust_domain: Some(TrustDomain::new("cluster.local").unwrap()),
        roots: vec![signer.root.clone()],
        entries: vec![
            Entry {
                spiffe_id: by_label.into(),
                selectors: vec![
                    selector("k8s", "pod-label", "app=web"),
                    selector("k8s", "container-name", "web"),
                ],
                ..Entry::default()
            },
            Entry {
                spiffe_id: "spiffe://cluster.local/other-container".into(),
                selectors: vec![selector("k8s", "container-name", "sidecar")],
                ..Entry::default()
            },
        ],
        ..TrustState::default()
    };
    let (_trust_tx, trust_rx) = watch::channel(Arc::new(trust));
    let shutdown = CancellationToken::new();
    let cache = Cache::spawn(signer, trust_rx, CacheOptions::default(), shutdown.clone());
    let pods = StaticPods {
        pods: vec![Arc::new(web_pod())],
        changes: watch::channel(()).0,
    };
    let attestor = KubernetesAttestor::new(
        Arc::new(pods),
        "node-1",
        TrustDomain::new("cluster.local").unwrap(),
    )
    .with_proc_root(dir.path().join("proc"));
    let state = AgentState {
        cache,
        attestor: Arc::new(attestor),
    };
    let socket = dir.path().join("agent.sock");
    let server = tokio::spawn({
        let socket = socket.clone();
        let shutdown = shutdown.clone();
        async move { halyard_agent::server::serve(&socket, state, shutdown).await }
    });
    while !socket.exists() {
        tokio::task::yield_now().await;
    }

    let mut client = SpiffeWorkloadApiClient::new(uds_channel(socket).await);
    let response = client
        .fetch_x509svid(x509_request())
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = response
        .svids
        .iter()
        .map(|svid| svid.spiffe_id.as_str())
        .collect();
    // The pod's identity first (it is what `default` serves), then the entry its labels match.
    assert_eq!(ids, ["spiffe://cluster.local/ns/apps/sa/web-sa", by_label]);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Runs `halyard-agent run` with `flags` against nothing (these fail before any connection).
fn run_agent(dir: &Path, flags: &[&str]) -> (bool, String) {
    let bundle = dir.join("bundle.pem");
    // A real certificate: the agent refuses a bundle it cannot read before anything else.
    let cert = halyard_ca::testing::self_signed_leaf("spiffe://cluster.local/x");
    std::fs::write(
        &bundle,
        halyard_ca::authority::certs_to_pem([cert.as_slice()]),
    )
    .unwrap();
    let out = Command::new(agent_binary())
        .args([
            "run",
            "--ca-address",
            "https://127.0.0.1:1",
            "--trust-bundle",
        ])
        .arg(&bundle)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("agent.sock"))
        .args(flags)
        .env_remove("HALYARD_JOIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn node_token_flags_refuse_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("no-such-token");
    let missing = missing.to_str().unwrap();

    let (ok, stderr) = run_agent(
        dir.path(),
        &["--join-token", "abc", "--node-token-file", missing],
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!(
            "halyard-agent: error: --join-token and --node-token-file {missing} both attest the node: give one"
        )
    );

    let (ok, stderr) = run_agent(dir.path(), &["--node-token-file", missing]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("--node-token-file {missing}: No such file")),
        "{stderr}"
    );

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let (ok, stderr) = run_agent(dir.path(), &["--node-token-file", empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "--node-token-file {}: the file is empty",
            empty.display()
        )),
        "{stderr}"
    );

    // The join token never shows in a Debug rendering (logs); the token file's path does.
    let debug = format!(
        "{:?} {:?}",
        NodeCredential::JoinToken("s3cret-join-token".into()),
        NodeCredential::TokenFile(empty.clone())
    );
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("empty-token"), "{debug}");

    // Kubernetes mode looks for the projected token where deploy/ mounts it.
    let (ok, stderr) = run_agent(dir.path(), &["--kubernetes"]);
    assert!(!ok);
    assert!(
        stderr.contains("--node-token-file /var/run/secrets/tokens/halyard-ca: "),
        "{stderr}"
    );
}
