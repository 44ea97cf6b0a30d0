//! Node authorization by the pod index through the real gRPC API: `halyard-ca serve` in this
//! process (TLS on a loopback port, SQLite), its Kubernetes client a mock API server that
//! reviews tokens and lists the pods below. Nodes try identities outside their pods.
//!
//! The cluster: `apps/web` runs on node-1, `apps/db` on node-2, `apps/batch` finished on node-1;
//! an agent pod and a ztunnel pod on each node.

use std::time::SystemTime;

use halyard_proto::api::ca::attest_request::Credential;
use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{AttestRequest, SignX509SvidsRequest, SvidRequest};
use halyard_proto::api::istio_auth::IstioCertificateRequest;
use halyard_proto::api::istio_auth::istio_certificate_service_client::IstioCertificateServiceClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::config::{ConfigFile, KubernetesFile};
use crate::kube::mock::{Call, review_token, sa_token};
use crate::server::Ca;
use crate::store::{JournalQuery, NewEntry};
use crate::testing::{free_port, key_and_csr, tls_channel};

const AGENT: &str = "system:serviceaccount:halyard:halyard-agent";
const ZTUNNEL: &str = "system:serviceaccount:istio-system:ztunnel";
const WEB: &str = "spiffe://cluster.local/ns/apps/sa/web";
const DB: &str = "spiffe://cluster.local/ns/apps/sa/db";
const BATCH: &str = "spiffe://cluster.local/ns/apps/sa/batch";
const GHOST: &str = "spiffe://cluster.local/ns/apps/sa/ghost";
/// A node in [`sa_token`] named `legacy:<pod>` stands for a token reviewed by an API server
/// before 1.30: the review names the pod, not the node.
const LEGACY: &str = "legacy:";

fn cluster_pods() -> Vec<Value> {
    vec![
        pod_json("apps", "web-1", Some("web"), Some("node-1"), "Running"),
        pod_json("apps", "db-0", Some("db"), Some("node-2"), "Running"),
        pod_json(
            "apps",
            "batch-1",
            Some("batch"),
            Some("node-1"),
            "Succeeded",
        ),
        pod_json(
            "halyard",
            "agent-1",
            Some("halyard-agent"),
            Some("node-1"),
            "Running",
        ),
        pod_json(
            "halyard",
            "agent-2",
            Some("halyard-agent"),
            Some("node-2"),
            "Running",
        ),
        pod_json(
            "istio-system",
            "ztunnel-1",
            Some("ztunnel"),
            Some("node-1"),
            "Running",
        ),
        pod_json(
            "istio-system",
            "ztunnel-2",
            Some("ztunnel"),
            Some("node-2"),
            "Running",
        ),
    ]
}

/// The TokenReview answer of [`review_token`], with [`LEGACY`] nodes turned into pods.
fn review(call: &Call) -> (u16, Value) {
    let (status, mut answer) = review_token(call);
    let extra = &mut answer["status"]["user"]["extra"];
    let node = extra[crate::kube::token_review::NODE_NAME_EXTRA][0]
        .as_str()
        .map(str::to_owned);
    if let Some(pod) = node.as_deref().and_then(|node| node.strip_prefix(LEGACY)) {
        *extra = json!({ crate::kube::token_review::POD_NAME_EXTRA: [pod] });
    }
    (status, answer)
}

/// A CA serving on loopback with Kubernetes through a mock API server.
struct Cluster {
    ca: Arc<Ca>,
    api: MockApi,
    grpc: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Serving, with the pod index ready (`pods_listed`) or its list refused (not).
    async fn start(pods_listed: bool) -> Cluster {
        let (watching, mut watch_started) = mpsc::unbounded_channel();
        let idle = Mutex::new(Vec::new());
        let api = MockApi::with_watches(
            move |call| match (call.method.as_str(), call.path.as_str()) {
                ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => review(call),
                ("GET", "/api/v1/pods") if pods_listed => (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList",
                           "metadata": {"resourceVersion": "10"}, "items": cluster_pods()}),
                ),
                ("GET", "/api/v1/pods") => (
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "code": 500, "message": "etcdserver: request timed out"}),
                ),
                _ => not_found(&call.path),
            },
            move |call| {
                if call.path != "/api/v1/pods" || !call.query.contains("watch=true") {
                    return None;
                }
                let _ = watching.send(());
                let (keep, events) = mpsc::unbounded_channel();
                idle.lock().unwrap().push(keep);
                Some(events)
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let grpc: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let file = ConfigFile {
            data_dir: Some(dir.path().join("data")),
            grpc_listen: Some(grpc),
            http_listen: Some(([127, 0, 0, 1], free_port()).into()),
            kubernetes: Some(KubernetesFile {
                enabled: Some(true),
                cert_manager_issuer: Some(false),
                ..KubernetesFile::default()
            }),
            ..ConfigFile::default()
        };
        let ca = Ca::open(file.resolve("test", true).unwrap()).await.unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::serve(
            ca.clone(),
            Some(api.client()),
            shutdown.clone(),
        ));
        if pods_listed {
            // The watch starts once the list has been applied.
            watch_started.recv().await.unwrap();
        } else {
            while api.calls_to("GET", "/api/v1/pods").is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let cluster = Cluster {
            ca,
            api,
            grpc,
            shutdown,
            _dir: dir,
        };
        // The listener is bound a moment after the server starts.
        while cluster.try_channel(None).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        cluster
    }

    async fn try_channel(
        &self,
        identity: Option<&(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let bundle = std::fs::read_to_string(self.ca.config().data_dir.join("bundle.pem")).unwrap();
        let identity = identity.map(|(chain, key)| (chain.as_str(), key.as_str()));
        tls_channel(self.grpc, &bundle, identity).await
    }

    /// A channel presenting `identity` (chain PEM, key PEM) when given.
    async fn channel(&self, identity: Option<&(String, String)>) -> Channel {
        self.try_channel(identity).await.unwrap()
    }

    /// Attests with `credential` (none: renewal over mTLS with `identity`); the node SVID.
    async fn attest(
        &self,
        credential: Option<Credential>,
        identity: Option<&(String, String)>,
    ) -> Result<(String, String), tonic::Status> {
        let (key, csr) = key_and_csr(None);
        let svid = NodeServiceClient::new(self.channel(identity).await)
            .attest(AttestRequest { credential, csr })
            .await?
            .into_inner()
            .svid
            .unwrap();
        let chain = crate::authority::certs_to_pem(svid.cert_chain.iter().map(Vec::as_slice));
        Ok((chain, key))
    }

    /// Attests a node with its agent's projected token bound to a pod on `node`.
    async fn agent(&self, node: &str) -> (String, String) {
        let token = sa_token(AGENT, &["halyard-ca"], Some(node), None);
        let credential = Credential::ServiceAccountToken(token.expose_secret().to_owned());
        self.attest(Some(credential), None).await.unwrap()
    }

    /// Has `node` sign one CSR for each of `ids`: per ID, the certificate's ID or the refusal.
    async fn sign(
        &self,
        node: &(String, String),
        ids: &[&str],
    ) -> Vec<Result<String, (Code, String)>> {
        let requests = ids
            .iter()
            .map(|id| SvidRequest {
                spiffe_id: (*id).to_owned(),
                csr: key_and_csr(Some(id)).1,
                ttl_seconds: 0,
            })
            .collect();
        SvidServiceClient::new(self.channel(Some(node)).await)
            .sign_x509_svids(SignX509SvidsRequest { requests })
            .await
            .unwrap()
            .into_inner()
            .results
            .into_iter()
            .map(|result| match result.result.unwrap() {
                ItemResult::Svid(svid) => {
                    let leaf = halyard_proto::validate_leaf(&svid.cert_chain[0]).unwrap();
                    Ok(leaf.spiffe_id().to_string())
                }
                ItemResult::Error(e) => Err((Code::from(e.code), e.message)),
            })
            .collect()
    }

    /// Istio's CreateCertificate with `token` as the Bearer credential, for `id` (the CSR's URI
    /// SAN), impersonating `impersonated` when given: the leaf's SPIFFE ID.
    async fn istio(
        &self,
        token: &SecretString,
        id: &str,
        impersonated: Option<&str>,
    ) -> Result<String, tonic::Status> {
        let (_key, der) = key_and_csr(Some(id));
        let metadata = impersonated.map(|impersonated| prost_types::Struct {
            fields: [(
                crate::api::IMPERSONATED_IDENTITY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(
                        impersonated.to_owned(),
                    )),
                },
            )]
            .into(),
        });
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)),
            validity_duration: 3600,
            metadata,
            ..IstioCertificateRequest::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.expose_secret()).parse().unwrap(),
        );
        let chain = IstioCertificateServiceClient::new(self.channel(None).await)
            .create_certificate(request)
            .await?
            .into_inner()
            .cert_chain;
        let leaf = crate::authority::certs_from_pem(chain[0].as_bytes()).unwrap();
        Ok(halyard_proto::validate_leaf(&leaf[0])
            .unwrap()
            .spiffe_id()
            .to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn denied(result: &Result<String, (Code, String)>) -> &str {
    match result {
        Err((Code::PermissionDenied, message)) => message,
        other => panic!("not PERMISSION_DENIED: {other:?}"),
    }
}

#[tokio::test]
async fn a_node_obtains_the_identities_of_its_own_pods_only() {
    let cluster = Cluster::start(true).await;
    let node_1 = cluster.agent("node-1").await;
    assert_eq!(
        cluster
            .ca
            .store()
            .node("node-1")
            .await
            .unwrap()
            .unwrap()
            .method,
        "k8s"
    );

    let results = cluster.sign(&node_1, &[WEB, DB, GHOST, BATCH]).await;
    assert_eq!(results[0], Ok(WEB.to_owned()), "its pod, with no entry");
    assert_eq!(
        denied(&results[1]),
        format!(
            "node node-1 may not hold {DB}: it has no registration entry for it, and no pod of \
             service account apps/db runs on node node-1"
        ),
        "a pod of another node"
    );
    assert!(
        denied(&results[2]).contains("no pod of service account apps/ghost runs on node node-1"),
        "no such pod anywhere"
    );
    assert!(denied(&results[3]).contains("apps/batch"), "a finished pod");
    // Entries still grant what they grant, pod or not.
    cluster
        .ca
        .store()
        .create_entry(NewEntry {
            spiffe_id: DB.to_owned(),
            node: Some("node-1".into()),
            selectors: vec!["k8s:sa:db".into()],
            ttl_seconds: None,
            dns_names: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(cluster.sign(&node_1, &[DB]).await[0], Ok(DB.to_owned()));

    // Renewing over mTLS keeps the node a Kubernetes node.
    let renewed = cluster.attest(None, Some(&node_1)).await.unwrap();
    assert_eq!(
        cluster
            .ca
            .store()
            .node("node-1")
            .await
            .unwrap()
            .unwrap()
            .method,
        "k8s"
    );
    assert_eq!(cluster.sign(&renewed, &[WEB]).await[0], Ok(WEB.to_owned()));

    // Node-2's agent, whose review (before Kubernetes 1.30) names only its pod: the pod index
    // places the pod, and the node gets node-2's pods.
    let node_2 = cluster.agent(&format!("{LEGACY}agent-2")).await;
    assert!(
        cluster.ca.store().node("node-2").await.unwrap().is_some(),
        "attested as node-2"
    );
    let results = cluster.sign(&node_2, &[DB, WEB]).await;
    assert_eq!(results[0], Ok(DB.to_owned()));
    assert!(denied(&results[1]).contains("runs on node node-2"));

    // Every certificate handed out is journaled, to its node.
    let rows = cluster
        .ca
        .store()
        .journal(JournalQuery::default())
        .await
        .unwrap();
    let workloads: Vec<(String, String)> = rows
        .iter()
        .filter(|row| !row.record.spiffe_id.contains("/halyard/"))
        .map(|row| (row.record.spiffe_id.clone(), row.record.caller.clone()))
        .collect();
    assert_eq!(workloads.len(), 4, "{workloads:?}");
    assert!(workloads.contains(&(DB.to_owned(), "node:node-2".to_owned())));
}

#[tokio::test]
async fn an_agent_token_bound_to_an_unknown_pod_attests_no_node() {
    let cluster = Cluster::start(true).await;
    let token = sa_token(
        AGENT,
        &["halyard-ca"],
        Some(&format!("{LEGACY}agent-9")),
        None,
    );
    let err = cluster
        .attest(
            Some(Credential::ServiceAccountToken(
                token.expose_secret().to_owned(),
            )),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("pod halyard/agent-9"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_join_token_node_gets_no_identity_from_pods() {
    let cluster = Cluster::start(true).await;
    // An operator made a join token for a name that is also a Kubernetes node's.
    let token = "hjt_test-join-token";
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    cluster
        .ca
        .store()
        .create_join_token(
            hash.as_ref().try_into().unwrap(),
            "node-1",
            SystemTime::now() + std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
    let node = cluster
        .attest(Some(Credential::JoinToken(token.to_owned())), None)
        .await
        .unwrap();
    let result = &cluster.sign(&node, &[WEB]).await[0];
    assert!(
        denied(result).contains("did not attest as a Kubernetes node"),
        "{result:?}"
    );
}

#[tokio::test]
async fn ztunnel_impersonates_only_the_pods_of_its_node() {
    let cluster = Cluster::start(true).await;
    let ztunnel = sa_token(ZTUNNEL, &["istio-ca"], Some("node-1"), None);

    assert_eq!(
        cluster.istio(&ztunnel, WEB, Some(WEB)).await.unwrap(),
        WEB,
        "a pod of its node"
    );
    let err = cluster.istio(&ztunnel, DB, Some(DB)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "spiffe://cluster.local/ns/istio-system/sa/ztunnel may not impersonate \
         spiffe://cluster.local/ns/apps/sa/db: no pod of service account apps/db runs on node \
         node-1, the node of the caller's pod"
    );
    let err = cluster
        .istio(&ztunnel, GHOST, Some(GHOST))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The CSR must still be for the identity certified.
    let err = cluster.istio(&ztunnel, DB, Some(WEB)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Not a pod identity at all.
    let node_id = "spiffe://cluster.local/halyard/node/node-1";
    let err = cluster
        .istio(&ztunnel, node_id, Some(node_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // The ztunnel of node-2 gets node-2's pods instead.
    let ztunnel_2 = sa_token(ZTUNNEL, &["istio-ca"], Some("node-2"), None);
    assert_eq!(cluster.istio(&ztunnel_2, DB, Some(DB)).await.unwrap(), DB);
    let err = cluster.istio(&ztunnel_2, WEB, Some(WEB)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A workload on node-1 is no ztunnel, even for its own node's pods.
    let web = sa_token(
        "system:serviceaccount:apps:web",
        &["istio-ca"],
        Some("node-1"),
        None,
    );
    let err = cluster.istio(&web, WEB, Some(WEB)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("service account apps/web is not in kubernetes.ztunnel_service_accounts"),
        "{}",
        err.message()
    );
    // Without impersonation it gets its own identity, as before.
    assert_eq!(cluster.istio(&web, WEB, None).await.unwrap(), WEB);

    // One TokenReview per token however many requests it made.
    let reviews = cluster.api.calls_to("POST", "/tokenreviews");
    assert_eq!(reviews.len(), 3, "ztunnel-1, ztunnel-2, web");

    let rows = cluster
        .ca
        .store()
        .journal(JournalQuery::default())
        .await
        .unwrap();
    assert!(
        rows.iter().any(|row| row.record.spiffe_id == WEB
            && row.record.caller
                == "istio:spiffe://cluster.local/ns/istio-system/sa/ztunnel@node-1"),
        "the journal names the ztunnel and its node"
    );
}

#[tokio::test]
async fn until_the_pods_are_listed_pod_identities_are_unavailable() {
    let cluster = Cluster::start(false).await;
    let node_1 = cluster.agent("node-1").await;
    let result = &cluster.sign(&node_1, &[WEB]).await[0];
    let Err((Code::Unavailable, message)) = result else {
        panic!("{result:?}")
    };
    assert!(
        message.contains("pod index has not yet listed"),
        "{message}"
    );

    let ztunnel = sa_token(ZTUNNEL, &["istio-ca"], Some("node-1"), None);
    let err = cluster.istio(&ztunnel, WEB, Some(WEB)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
