//! Istio's CSR API with `authorization: Bearer <service-account token>`.

use secrecy::ExposeSecret;
use tonic::Code;

use super::*;
use crate::kube::mock::{dev_ca, reviewer, sa_token, token_review_api};
use crate::store::JournalQuery;
use crate::testing::key_and_csr;

const WEB: &str = "spiffe://cluster.local/ns/apps/sa/web";
const WEB_ACCOUNT: &str = "system:serviceaccount:apps:web";

fn csr_for(id: &str, authorization: &str) -> Request<IstioCertificateRequest> {
    let (_key, der) = key_and_csr(Some(id));
    let mut request = Request::new(IstioCertificateRequest {
        csr: pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)),
        validity_duration: 3600,
        ..IstioCertificateRequest::default()
    });
    request
        .metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    request
}

fn bearer(token: &secrecy::SecretString) -> String {
    format!("Bearer {}", token.expose_secret())
}

#[tokio::test]
async fn a_service_account_token_gets_its_own_identity() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let istio = IstioApi::new(ca.clone(), Some(Arc::new(reviewer(&api))));
    let token = sa_token(WEB_ACCOUNT, &["istio-ca"], Some("node-1"), None);

    let chain = istio
        .create_certificate(csr_for(WEB, &bearer(&token)))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let leaf = crate::authority::certs_from_pem(chain[0].as_bytes()).unwrap();
    let svid = halyard_proto::validate_leaf(&leaf[0]).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), WEB);

    let err = istio
        .create_certificate(csr_for(
            "spiffe://cluster.local/ns/apps/sa/admin",
            &bearer(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Both requests were served by one TokenReview.
    assert_eq!(api.calls_to("POST", "/tokenreviews").len(), 1);
    let rows = ca.store().journal(JournalQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.caller, format!("istio:{WEB}"));
}

#[tokio::test]
async fn tokens_the_api_server_does_not_vouch_for_are_unauthenticated() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let istio = IstioApi::new(ca, Some(Arc::new(reviewer(&api))));
    let forged = sa_token("", &["istio-ca"], None, None);
    let other_audience = sa_token(WEB_ACCOUNT, &["halyard-ca"], None, None);
    for (authorization, message) in [
        (bearer(&forged), "not authenticated"),
        (
            bearer(&other_audience),
            "not valid for audience \"istio-ca\"",
        ),
        (
            "Basic d2ViOnB3".to_owned(),
            "authorization header is not \"Bearer <token>\"",
        ),
        (
            "Bearer not-a-jwt".to_owned(),
            "not a Kubernetes service-account JWT",
        ),
    ] {
        let err = istio
            .create_certificate(csr_for(WEB, &authorization))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains(message), "{}", err.message());
        assert!(
            !err.message().contains(&authorization),
            "never echo the credential"
        );
    }
}

#[tokio::test]
async fn a_bearer_token_without_kubernetes_is_refused_saying_so() {
    let (ca, _dir) = dev_ca().await;
    let istio = IstioApi::new(ca, None);
    let token = sa_token(WEB_ACCOUNT, &["istio-ca"], None, None);
    let err = istio
        .create_certificate(csr_for(WEB, &bearer(&token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("--kubernetes"), "{}", err.message());
}

const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
const ZTUNNEL_ACCOUNT: &str = "system:serviceaccount:istio-system:ztunnel";

fn impersonating(
    id: &str,
    authorization: &str,
    impersonated: prost_types::value::Kind,
) -> Request<IstioCertificateRequest> {
    let mut request = csr_for(id, authorization);
    request.get_mut().metadata = Some(prost_types::Struct {
        fields: [(
            IMPERSONATED_IDENTITY.to_owned(),
            prost_types::Value {
                kind: Some(impersonated),
            },
        )]
        .into(),
    });
    request
}

fn string(text: &str) -> prost_types::value::Kind {
    prost_types::value::Kind::StringValue(text.to_owned())
}

/// An index that has listed one pod: `apps/web` on node-1.
fn pods() -> Arc<crate::kube::PodIndex> {
    use kube::runtime::watcher::Event;
    let index = crate::kube::PodIndex::new();
    index.apply(Event::Init);
    index.apply(Event::InitApply(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "apps"},
            "spec": {"containers": [], "serviceAccountName": "web", "nodeName": "node-1"},
        }))
        .unwrap(),
    ));
    index.apply(Event::InitDone);
    Arc::new(index)
}

#[tokio::test]
async fn impersonation_without_kubernetes_or_by_mtls_is_refused_saying_so() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let token = sa_token(ZTUNNEL_ACCOUNT, &["istio-ca"], Some("node-1"), None);
    let istio = IstioApi::new(ca.clone(), Some(Arc::new(reviewer(&api))));
    let err = istio
        .create_certificate(impersonating(WEB, &bearer(&token), string(WEB)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("kubernetes.ztunnel_service_accounts"),
        "{}",
        err.message()
    );

    // The same ztunnel, trusted, on the pod's node: allowed.
    let istio = IstioApi::new(ca, Some(Arc::new(reviewer(&api))))
        .with_impersonation(pods(), vec!["istio-system/ztunnel".into()]);
    istio
        .create_certificate(impersonating(WEB, &bearer(&token), string(WEB)))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_impersonated_identity_must_be_a_spiffe_id_string() {
    let api = token_review_api();
    let (ca, _dir) = dev_ca().await;
    let istio = IstioApi::new(ca, Some(Arc::new(reviewer(&api))))
        .with_impersonation(pods(), vec!["istio-system/ztunnel".into()]);
    let token = sa_token(ZTUNNEL_ACCOUNT, &["istio-ca"], Some("node-1"), None);
    for (value, message) in [
        (
            prost_types::value::Kind::NumberValue(7.0),
            "metadata ImpersonatedIdentity is not a string",
        ),
        (
            string("web"),
            "metadata ImpersonatedIdentity \"web\" is not a SPIFFE ID",
        ),
    ] {
        let err = istio
            .create_certificate(impersonating(WEB, &bearer(&token), value))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(message), "{}", err.message());
    }
    // An empty one names none, as in istiod: the caller's own identity.
    istio
        .create_certificate(impersonating(ZTUNNEL, &bearer(&token), string("")))
        .await
        .unwrap();
}
