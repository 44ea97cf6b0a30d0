//! End-to-end against a real cluster (README: "Kubernetes end-to-end tests on kind"). Run them on
//! the machine that hosts the cluster's nodes (kind's docker host, or a node), with `KUBECONFIG`
//! naming a cluster-admin context: they create a namespace, a service account and a pod, and
//! find the pod's process in this machine's `/proc`.
//!
//! Without `KUBECONFIG` they fail with a message saying so, never pass silently.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_agent::attest::{ApiServerPods, Attestor, KubernetesAttestor, Workload, cgroup};
use halyard_ca::testing::{TestServer, ca_binary};
use halyard_proto::TrustDomain;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

const KUBECONFIG_MISSING: &str = "set KUBECONFIG (see README: kind)";

/// A client for the cluster `KUBECONFIG` names; panics with a clear message without one.
async fn cluster() -> kube::Client {
    let path = std::env::var_os("KUBECONFIG").expect(KUBECONFIG_MISSING);
    assert!(
        Path::new(&path).exists(),
        "KUBECONFIG={} does not exist: {KUBECONFIG_MISSING}",
        path.to_string_lossy()
    );
    kube::Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the cluster in KUBECONFIG: {e}"))
}

/// A fresh namespace with service account `sa` and a running pod `sleeper` under it (label
/// `app=halyard-e2e`), deleted when dropped.
struct Scene {
    client: kube::Client,
    namespace: String,
    pod: Pod,
}

impl Scene {
    async fn create(client: kube::Client, sa: &str) -> Scene {
        let namespace = format!("halyard-e2e-{:08x}", rand_u32());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
                    .unwrap(),
            )
            .await
            .unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": sa}})).unwrap(),
            )
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sleeper", "labels": {"app": "halyard-e2e"}},
            "spec": {
                "serviceAccountName": sa,
                "containers": [{
                    "name": "sleeper",
                    "image": "busybox:1.36",
                    "command": ["sleep", "3600"],
                }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        // Image pulls take what they take: wait for Running with a generous bound that only
        // turns a stuck cluster into a clear failure.
        let deadline = Instant::now() + Duration::from_secs(300);
        let pod = loop {
            let pod = pods.get("sleeper").await.unwrap();
            let running = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|c| c.container_id.is_some() && c.ready);
            if running {
                break pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {namespace}/sleeper did not start: {:?}",
                pod.status
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        Scene {
            client,
            namespace,
            pod,
        }
    }

    fn node(&self) -> String {
        self.pod.spec.as_ref().unwrap().node_name.clone().unwrap()
    }

    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap()
    }

    fn container_id(&self) -> String {
        let status = &self
            .pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        let full = status.container_id.clone().unwrap();
        full.split_once("://").unwrap().1.to_owned()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let client = self.client.clone();
        let namespace = self.namespace.clone();
        // Best effort, off the test's runtime (which may be shutting down).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces
                    .delete(&namespace, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    u32::from_le_bytes(bytes)
}

/// The pid, in this machine's `/proc`, of a process of container `id`.
fn host_pid_of(id: &str) -> i32 {
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(contents) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        seen += 1;
        if let Ok(Some(found)) = cgroup::parse(&contents)
            && found.container_id == id
        {
            return pid;
        }
    }
    panic!(
        "no process of container {id} among the {seen} in this machine's /proc: run the test on \
         the machine that hosts the cluster's nodes (kind's docker host)"
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG"]
async fn a_pod_on_a_real_cluster_is_attested_from_its_cgroups_and_the_api_server() {
    let client = cluster().await;
    let scene = Scene::create(client.clone(), "e2e-sa").await;
    let pid = host_pid_of(&scene.container_id());
    let node = scene.node();
    let shutdown = CancellationToken::new();
    let pods = ApiServerPods::spawn(client, &node, shutdown.clone());
    let attestor = KubernetesAttestor::new(
        Arc::new(pods),
        node.clone(),
        TrustDomain::new("cluster.local").unwrap(),
    );
    let workload = Workload {
        pid: Some(pid),
        uid: 0,
        gid: 0,
    };
    let selectors = attestor.selectors(&workload).await.unwrap();
    let k8s: Vec<&str> = selectors
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with("k8s:"))
        .collect();
    let ns = &scene.namespace;
    let uid = scene.uid();
    assert_eq!(
        k8s,
        [
            format!("k8s:ns:{ns}"),
            "k8s:sa:e2e-sa".to_owned(),
            "k8s:pod-name:sleeper".to_owned(),
            format!("k8s:pod-uid:{uid}"),
            "k8s:pod-label:app=halyard-e2e".to_owned(),
            "k8s:container-name:sleeper".to_owned(),
            format!("k8s:node-name:{node}"),
        ]
    );
    let implied: Vec<String> = attestor
        .implied_identities(&selectors)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        implied,
        [format!("spiffe://cluster.local/ns/{ns}/sa/e2e-sa")]
    );
    shutdown.cancel();
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG"]
async fn an_agent_attests_its_node_with_a_projected_token_on_a_real_cluster() {
    let client = cluster().await;
    let scene = Scene::create(client.clone(), "halyard-agent").await;
    let ns = scene.namespace.clone();
    // The token the kubelet would project into the agent's pod: audience halyard-ca, bound to
    // the pod (so the API server vouches for its node).
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["halyard-ca".into()],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("sleeper".into()),
                uid: Some(scene.uid()),
            }),
            expiration_seconds: Some(600),
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("halyard-agent", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("halyard-ca");
    std::fs::write(&token_file, &token).unwrap();

    let account = format!("{ns}/halyard-agent");
    let ca = TestServer::start(
        &ca_binary(),
        &[
            "--kubernetes",
            "--kubernetes-agent-service-account",
            &account,
            "--kubernetes-cert-manager-issuer",
            "false",
        ],
    );
    let socket = dir.path().join("agent.sock");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = KillOnDrop(
        Command::new(super::agent_binary())
            .args(["run", "--ca-address", &format!("https://{}", ca.grpc)])
            .arg("--trust-bundle")
            .arg(ca.data_dir().join("bundle.pem"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(&socket)
            .arg("--node-token-file")
            .arg(&token_file)
            .env_remove("HALYARD_JOIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        if let Some(status) = agent.0.try_wait().unwrap() {
            panic!("the agent exited with {status}: {}", agent_log());
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not start: {}",
            agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = scene.node();
    let nodes = ca.cli(&["node", "list"]).unwrap();
    let row = nodes
        .lines()
        .find(|line| line.contains(&format!("spiffe://cluster.local/halyard/node/{node}")))
        .unwrap_or_else(|| panic!("node {node} is not listed: {nodes}\n{}", agent_log()));
    assert!(row.contains("k8s"), "{row}");
    assert!(
        agent_log().contains("attested with a service-account token"),
        "{}",
        agent_log()
    );
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG"]
async fn the_csr_signer_signs_an_approved_certificate_signing_request_on_a_real_cluster() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestSpec,
    };
    use kube::api::{ObjectMeta, Patch, PatchParams};

    let client = cluster().await;
    // The CA elects itself (Lease halyard-ca-controllers in the kubeconfig's namespace) and runs
    // the signer.
    let ca = TestServer::start(
        &ca_binary(),
        &["--kubernetes", "--kubernetes-cert-manager-issuer", "false"],
    );
    let id = "spiffe://cluster.local/ns/halyard-e2e/sa/web";
    let (_key, der) = halyard_ca::testing::key_and_csr(Some(id));
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let name = format!("halyard-e2e-{:08x}", rand_u32());
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let request = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: "halyard.dev/spiffe".into(),
            usages: Some(
                [
                    "digital signature",
                    "key encipherment",
                    "client auth",
                    "server auth",
                ]
                .map(String::from)
                .to_vec(),
            ),
            expiration_seconds: Some(3600),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    csrs.create(&PostParams::default(), &request).await.unwrap();
    let _cleanup = DeleteCsrOnDrop(csrs.clone(), name.clone());
    let approval = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "HalyardE2E",
        "message": "approved by the end-to-end test",
    }]}});
    csrs.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let chain = loop {
        let csr = csrs.get(&name).await.unwrap();
        let status = csr.status.unwrap_or_default();
        if let Some(failed) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Failed")
        {
            panic!("the signer failed the CSR: {failed:?}");
        }
        if let Some(certificate) = status.certificate {
            break certificate.0;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate after 60 s; CA log:\n{}",
            ca.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let chain = halyard_ca::authority::certs_from_pem(&chain).unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    let svid = halyard_proto::validate_leaf(&chain[0]).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), id);
    let journal = ca.cli(&["audit", "list"]).unwrap();
    assert!(
        journal.contains(&format!("k8s-csr:{name}")),
        "journaled: {journal}"
    );
}

/// Deletes a CertificateSigningRequest when dropped.
struct DeleteCsrOnDrop(
    Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest>,
    String,
);

impl Drop for DeleteCsrOnDrop {
    fn drop(&mut self) {
        let (api, name) = (self.0.clone(), self.1.clone());
        // Best effort, off the test's runtime (which may be shutting down).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = runtime.block_on(api.delete(&name, &DeleteParams::default()));
        })
        .join();
    }
}
