//! Kubernetes' contract for signers, path by path, against a mock API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;
use crate::authority::certs_from_pem;
use crate::kube::mock::{Answer, Call, MockApi, dev_ca, not_found};
use crate::store::JournalQuery;
use crate::testing::{CsrSpec, webpki_verify};

const WEB: &str = "spiffe://cluster.local/ns/apps/sa/web";
const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests/";
const ISTIOD: &str = "system:serviceaccount:istio-system:istiod";

/// A CertificateSigningRequest `name` for the CSR `csr` (DER), to `signer`, with `conditions`.
fn csr_object(
    name: &str,
    signer: &str,
    csr: &[u8],
    conditions: Value,
) -> CertificateSigningRequest {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr.to_vec()));
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
        "spec": {
            "request": STANDARD.encode(pem),
            "signerName": signer,
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "expirationSeconds": 3600,
            "username": ISTIOD,
        },
        "status": {"conditions": conditions},
    }))
    .unwrap()
}

/// An approved CSR `name` for `WEB`, to Halyard's signer.
fn approved_csr(name: &str) -> CertificateSigningRequest {
    csr_object(name, SIGNER_NAME, &CsrSpec::for_id(WEB).der(), approved())
}

fn approved() -> Value {
    json!([{"type": "Approved", "status": "True", "reason": "IstiodApproved", "message": "ok"}])
}

/// A mock API server that takes every status write, after refusing the first `conflicts` with
/// 409 Conflict (another writer got there first), and a CA to sign with.
struct Cluster {
    api: MockApi,
    ctx: Arc<SignerContext>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::with_conflicts(0).await
    }

    async fn with_conflicts(conflicts: usize) -> Cluster {
        let refused = AtomicUsize::new(0);
        let api = MockApi::new(move |call: &Call| -> Answer {
            match call.method.as_str() {
                "PUT" if call.path.starts_with(CSRS) && call.path.ends_with("/status") => {
                    if refused.fetch_add(1, Ordering::SeqCst) < conflicts {
                        return (
                            409,
                            json!({
                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "Conflict", "code": 409,
                                "message": "the object has been modified",
                            }),
                        );
                    }
                    (200, call.body.clone())
                }
                _ => not_found(&call.path),
            }
        });
        let (ca, dir) = dev_ca().await;
        Cluster {
            ctx: Arc::new(SignerContext::new(api.client(), ca)),
            api,
            _dir: dir,
        }
    }

    async fn reconcile(&self, csr: &CertificateSigningRequest) -> Result<Action, ReconcileError> {
        reconcile(Arc::new(csr.clone()), self.ctx.clone()).await
    }

    /// The status writes made, as sent.
    fn status_writes(&self) -> Vec<Call> {
        self.api.calls_to("PUT", "/status")
    }

    /// The one status write made: the object sent.
    fn only_write(&self) -> Value {
        let writes = self.status_writes();
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(
            writes[0].path,
            format!(
                "{CSRS}{}/status",
                writes[0].body["metadata"]["name"].as_str().unwrap()
            )
        );
        writes[0].body.clone()
    }

    /// Certificates journaled for CertificateSigningRequests.
    async fn signatures(&self) -> usize {
        self.ctx
            .ca
            .store()
            .journal(JournalQuery::default())
            .await
            .unwrap()
            .iter()
            .filter(|row| row.record.caller.starts_with("k8s-csr:"))
            .count()
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
}

#[tokio::test]
async fn an_approved_csr_is_signed_with_the_chain_and_the_lifetime_asked_for() {
    let cluster = Cluster::new().await;
    let action = cluster.reconcile(&approved_csr("web-1")).await.unwrap();
    assert_eq!(action, Action::await_change());

    let written = cluster.only_write();
    assert_eq!(
        written["metadata"]["resourceVersion"], "7",
        "written as of the version read, so that a second writer conflicts"
    );
    assert_eq!(
        condition(&written, "Approved").unwrap()["reason"],
        "IstiodApproved",
        "the approver's condition is kept"
    );
    assert!(condition(&written, "Failed").is_none());
    let pem = STANDARD
        .decode(written["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let chain = certs_from_pem(&pem).unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    let svid = halyard_proto::validate_leaf(&chain[0]).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), WEB);
    let root = cluster.ctx.ca.issuing_root();
    for server in [true, false] {
        webpki_verify(&chain[0], &chain[1..], &root, SystemTime::now(), server).unwrap();
    }
    let lifetime = svid.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime <= Duration::from_secs(3600),
        "expirationSeconds 3600: {lifetime:?}"
    );
    assert!(lifetime > Duration::from_secs(3000), "{lifetime:?}");

    let rows = cluster
        .ctx
        .ca
        .store()
        .journal(JournalQuery::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.caller, format!("k8s-csr:web-1 by {ISTIOD}"));
    assert_eq!(rows[0].record.spiffe_id, WEB);
}

#[tokio::test]
async fn csrs_not_approved_denied_or_for_another_signer_are_left_alone() {
    let cluster = Cluster::new().await;
    let der = CsrSpec::for_id(WEB).der();
    let denied = json!([{"type": "Denied", "status": "True", "reason": "Nope"}]);
    let both = json!([
        {"type": "Approved", "status": "True"},
        {"type": "Denied", "status": "True"},
    ]);
    let approved_false = json!([{"type": "Approved", "status": "False"}]);
    for (what, csr) in [
        (
            "no condition",
            csr_object("a", SIGNER_NAME, &der, json!([])),
        ),
        ("denied", csr_object("b", SIGNER_NAME, &der, denied)),
        (
            "approved and denied",
            csr_object("c", SIGNER_NAME, &der, both),
        ),
        (
            "Approved False",
            csr_object("d", SIGNER_NAME, &der, approved_false),
        ),
        (
            "another signer",
            csr_object("e", "kubernetes.io/kube-apiserver-client", &der, approved()),
        ),
    ] {
        let action = cluster.reconcile(&csr).await.unwrap();
        assert_eq!(action, Action::await_change(), "{what}");
    }
    assert!(cluster.api.calls().is_empty(), "{:#?}", cluster.api.calls());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn signed_and_failed_csrs_stay_terminal() {
    let cluster = Cluster::new().await;
    let mut signed = approved_csr("web-1");
    signed.status.as_mut().unwrap().certificate = Some(ByteString(b"PEM".to_vec()));
    let failed = csr_object(
        "web-2",
        SIGNER_NAME,
        &CsrSpec::for_id(WEB).der(),
        json!([
            {"type": "Approved", "status": "True"},
            {"type": "Failed", "status": "True", "reason": "HalyardPolicy"},
        ]),
    );
    for csr in [&signed, &failed] {
        assert_eq!(
            cluster.reconcile(csr).await.unwrap(),
            Action::await_change()
        );
    }
    assert!(cluster.api.calls().is_empty(), "{:#?}", cluster.api.calls());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn approved_csrs_an_x509_svid_cannot_satisfy_fail_with_the_reason() {
    let other_domain = "spiffe://other.example/ns/apps/sa/web";
    let mut cert_sign = approved_csr("usage");
    cert_sign.spec.usages = Some(vec!["digital signature".into(), "cert sign".into()]);
    let mut forever = approved_csr("lifetime");
    forever.spec.expiration_seconds = Some(-5);
    let cases = [
        (
            csr_object(
                "td",
                SIGNER_NAME,
                &CsrSpec::for_id(other_domain).der(),
                approved(),
            ),
            "spiffe://other.example/ns/apps/sa/web is outside trust domain cluster.local",
        ),
        (
            csr_object(
                "two",
                SIGNER_NAME,
                &CsrSpec::for_id(WEB)
                    .uris(&[WEB, "spiffe://cluster.local/ns/apps/sa/db"])
                    .der(),
                approved(),
            ),
            "exactly one SPIFFE ID as URI SAN; it carries 2",
        ),
        (
            csr_object(
                "none",
                SIGNER_NAME,
                &CsrSpec::for_id(WEB).uris(&[]).der(),
                approved(),
            ),
            "exactly one SPIFFE ID as URI SAN; it carries 0",
        ),
        (
            csr_object(
                "https",
                SIGNER_NAME,
                &CsrSpec::for_id(WEB)
                    .uris(&["https://cluster.local/web"])
                    .der(),
                approved(),
            ),
            "is not a SPIFFE ID",
        ),
        (
            csr_object("garbage", SIGNER_NAME, b"not a CSR", approved()),
            "spec.request:",
        ),
        (
            cert_sign,
            "spec.usages: \"cert sign\" is not one an X509-SVID has",
        ),
        (forever, "spec.expirationSeconds: -5 is not a lifetime"),
    ];
    for (csr, expected) in cases {
        let cluster = Cluster::new().await;
        let name = csr.name_any();
        let action = cluster.reconcile(&csr).await.unwrap();
        assert_eq!(action, Action::await_change(), "{name}");
        let written = cluster.only_write();
        let failed = condition(&written, "Failed").unwrap_or_else(|| panic!("{name}: {written}"));
        assert_eq!(failed["status"], "True", "{name}");
        assert_eq!(failed["reason"], "HalyardPolicy", "{name}");
        let message = failed["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{name}: {message:?} lacks {expected:?}"
        );
        assert!(
            failed["lastTransitionTime"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert!(condition(&written, "Approved").is_some(), "{name}");
        assert!(written["status"].get("certificate").is_none(), "{name}");
        assert_eq!(cluster.signatures().await, 0, "{name}");
    }
}

#[tokio::test]
async fn a_chain_whose_write_failed_is_written_on_the_retry_without_signing_again() {
    let cluster = Cluster::with_conflicts(1).await;
    let csr = approved_csr("web-1");
    let err = cluster.reconcile(&csr).await.unwrap_err();
    assert!(err.to_string().contains("modified"), "{err}");
    assert_eq!(cluster.signatures().await, 1);

    cluster.reconcile(&csr).await.unwrap();
    let writes = cluster.status_writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        writes[0].body["status"]["certificate"], writes[1].body["status"]["certificate"],
        "the same chain, written again"
    );
    assert_eq!(cluster.signatures().await, 1, "signed once");

    // Once the watch shows it signed, nothing is kept for it.
    let mut signed = csr.clone();
    signed.status.as_mut().unwrap().certificate = Some(ByteString(b"PEM".to_vec()));
    cluster.reconcile(&signed).await.unwrap();
    assert!(cluster.ctx.unwritten().is_empty());
}
