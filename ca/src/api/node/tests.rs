//! Node attestation with a Kubernetes projected service-account token.

use secrecy::ExposeSecret;
use tonic::Code;

use super::*;
use crate::kube::mock::{dev_ca, reviewer, sa_token, token_review_api};
use crate::testing::key_and_csr;

const AGENT: &str = "system:serviceaccount:halyard:halyard-agent";

fn attest_with(token: &secrecy::SecretString) -> Request<AttestRequest> {
    Request::new(AttestRequest {
        credential: Some(Credential::ServiceAccountToken(
            token.expose_secret().to_owned(),
        )),
        csr: key_and_csr(None).1,
    })
}

#[tokio::test]
async fn an_agent_token_attests_the_node_of_its_pod() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let nodes = NodeApi::new(ca.clone(), Some(Arc::new(reviewer(&api))));
    let token = sa_token(AGENT, &["halyard-ca"], Some("node-1"), None);

    let response = NodeService::attest(&nodes, attest_with(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.svid.unwrap().spiffe_id,
        "spiffe://cluster.local/halyard/node/node-1"
    );
    let record = ca.store().node("node-1").await.unwrap().unwrap();
    assert_eq!(record.method, "k8s");
    assert_eq!(
        api.calls_to("POST", "/tokenreviews")[0].body["spec"]["audiences"],
        serde_json::json!(["halyard-ca"])
    );
}

#[tokio::test]
async fn only_the_agents_bound_tokens_attest_nodes() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let nodes = NodeApi::new(ca.clone(), Some(Arc::new(reviewer(&api))));
    let workload = sa_token(
        "system:serviceaccount:apps:web",
        &["halyard-ca"],
        Some("node-1"),
        None,
    );
    let unbound = sa_token(AGENT, &["halyard-ca"], None, None);
    let istio = sa_token(AGENT, &["istio-ca"], Some("node-1"), None);
    for (token, code) in [
        (workload, Code::PermissionDenied),
        (unbound, Code::Unauthenticated),
        (istio, Code::Unauthenticated),
    ] {
        let err = NodeService::attest(&nodes, attest_with(&token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    assert!(ca.store().node("node-1").await.unwrap().is_none());
}

#[tokio::test]
async fn token_attestation_needs_kubernetes_enabled() {
    let (ca, _dir) = dev_ca().await;
    let nodes = NodeApi::new(ca, None);
    let token = sa_token(AGENT, &["halyard-ca"], Some("node-1"), None);
    let err = NodeService::attest(&nodes, attest_with(&token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("--kubernetes"), "{}", err.message());
}
