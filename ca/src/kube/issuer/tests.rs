//! cert-manager's contract, path by path, against a mock API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;
use crate::authority::certs_from_pem;
use crate::kube::mock::{Answer, Call, MockApi, dev_ca, not_found};
use crate::store::JournalQuery;
use crate::testing::{key_and_csr, webpki_verify};

const NS: &str = "apps";
const WEB: &str = "spiffe://cluster.local/ns/apps/sa/web";
const ISSUER_PATH: &str = "/apis/halyard.dev/v1alpha1/namespaces/apps/halyardissuers/web-issuer";
const STATUS_SUFFIX: &str = "/status";

/// A HalyardIssuer `apps/web-issuer` for its namespace's service accounts, with its Ready
/// condition as given (`None`: never reconciled).
fn issuer(ready: Option<&str>) -> Value {
    let mut issuer = json!({
        "apiVersion": "halyard.dev/v1alpha1",
        "kind": "HalyardIssuer",
        "metadata": {"name": "web-issuer", "namespace": NS, "generation": 2, "uid": "i-1"},
        "spec": {"allowedSpiffeIds": ["spiffe://cluster.local/ns/{namespace}/sa/*"]},
    });
    if let Some(status) = ready {
        issuer["status"] = json!({"conditions": [{
            "type": "Ready", "status": status, "reason": "Ready", "message": "m",
            "observedGeneration": 2,
        }]});
    }
    issuer
}

/// A CertificateRequest `apps/<name>` of `spiffe_id` to `apps/web-issuer`, with `conditions`.
fn request(name: &str, spiffe_id: &str, conditions: Value) -> CertificateRequest {
    let (_key, der) = key_and_csr(Some(spiffe_id));
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {
            "request": STANDARD.encode(pem),
            "issuerRef": {"group": "halyard.dev", "kind": "HalyardIssuer", "name": "web-issuer"},
            "usages": ["digital signature", "key encipherment"],
            "duration": "2160h0m0s",
        },
        "status": {"conditions": conditions},
    }))
    .unwrap()
}

fn approved() -> Value {
    json!([{"type": "Approved", "status": "True", "reason": "policy.cert-manager.io"}])
}

/// The issuer's answers: `issuer` at its path (404 without), every status patch accepted unless
/// `fail_patches` says how many to refuse first.
struct Cluster {
    api: MockApi,
    ctx: Arc<Context>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn new(issuer: Option<Value>) -> Cluster {
        Cluster::failing_patches(issuer, 0).await
    }

    async fn failing_patches(issuer: Option<Value>, fail_patches: usize) -> Cluster {
        let refused = AtomicUsize::new(0);
        let api = MockApi::new(move |call: &Call| -> Answer {
            match (call.method.as_str(), call.path.as_str()) {
                ("GET", ISSUER_PATH) => match &issuer {
                    Some(issuer) => (200, issuer.clone()),
                    None => not_found("halyardissuers.halyard.dev \"web-issuer\""),
                },
                ("PATCH", path) if path.ends_with(STATUS_SUFFIX) => {
                    if refused.fetch_add(1, Ordering::SeqCst) < fail_patches {
                        return (
                            500,
                            json!({"kind": "Status", "code": 500, "message": "etcd"}),
                        );
                    }
                    let mut object = call.body.clone();
                    object["metadata"] = json!({"name": "x", "namespace": NS});
                    object["spec"] = json!({"allowedSpiffeIds": ["spiffe://cluster.local/x"]});
                    (200, object)
                }
                _ => not_found(&call.path),
            }
        });
        let (ca, dir) = dev_ca().await;
        Cluster {
            ctx: Arc::new(Context::new(api.client(), ca)),
            api,
            _dir: dir,
        }
    }

    async fn reconcile(&self, request: &CertificateRequest) -> Result<Action, ReconcileError> {
        reconcile_request(Arc::new(request.clone()), self.ctx.clone()).await
    }

    /// The status patches made, as sent.
    fn status_patches(&self) -> Vec<Call> {
        self.api.calls_to("PATCH", STATUS_SUFFIX)
    }

    /// The one status patch made: its `status`.
    fn only_status(&self) -> Value {
        let patches = self.status_patches();
        assert_eq!(patches.len(), 1, "{patches:#?}");
        let patch = &patches[0];
        assert!(
            patch.query.contains("fieldManager=halyard-ca") && patch.query.contains("force=true"),
            "server-side apply as halyard-ca: {}",
            patch.query
        );
        assert_eq!(patch.body["kind"], "CertificateRequest");
        patch.body["status"].clone()
    }

    /// Certificates journaled for cert-manager.
    async fn signatures(&self) -> usize {
        self.ctx
            .ca
            .store()
            .journal(JournalQuery::default())
            .await
            .unwrap()
            .iter()
            .filter(|row| row.record.caller.starts_with("cert-manager:"))
            .count()
    }
}

fn ready_condition(status: &Value) -> &Value {
    let conditions = status["conditions"].as_array().unwrap();
    assert_eq!(
        conditions.len(),
        1,
        "only the Ready condition is applied: {conditions:?}"
    );
    assert_eq!(conditions[0]["type"], "Ready");
    &conditions[0]
}

#[tokio::test]
async fn a_request_not_yet_approved_is_left_untouched() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    for conditions in [
        json!([]),
        json!([{"type": "Ready", "status": "False", "reason": "Pending"}]),
    ] {
        let action = cluster
            .reconcile(&request("web-1", WEB, conditions))
            .await
            .unwrap();
        assert_eq!(action, Action::await_change());
    }
    assert!(cluster.api.calls().is_empty(), "{:#?}", cluster.api.calls());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn an_approved_request_is_issued() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    let action = cluster
        .reconcile(&request("web-1", WEB, approved()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());

    let status = cluster.only_status();
    let ready = ready_condition(&status);
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Issued"))
    );
    assert!(status.get("failureTime").is_none());
    let chain = certs_from_pem(
        &STANDARD
            .decode(status["certificate"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let roots = certs_from_pem(&STANDARD.decode(status["ca"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0], cluster.ctx.ca.issuing_root());
    let svid = halyard_proto::validate_leaf(&chain[0]).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), WEB);
    for server in [true, false] {
        webpki_verify(&chain[0], &chain[1..], &roots[0], SystemTime::now(), server).unwrap();
    }
    // 2160h asked, the CA's maximum (24 h) granted.
    let lifetime = svid.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(lifetime <= Duration::from_secs(24 * 3600), "{lifetime:?}");

    let rows = cluster
        .ctx
        .ca
        .store()
        .journal(JournalQuery::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.caller, "cert-manager:apps/web-1");
    assert_eq!(rows[0].record.spiffe_id, WEB);
}

#[tokio::test]
async fn a_denied_request_is_never_signed() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    let denied = json!([{"type": "Denied", "status": "True", "reason": "policy.cert-manager.io"}]);
    cluster
        .reconcile(&request("web-1", WEB, denied))
        .await
        .unwrap();

    let status = cluster.only_status();
    let ready = ready_condition(&status);
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Denied"))
    );
    assert!(status["failureTime"].as_str().unwrap().ends_with('Z'));
    assert!(status.get("certificate").is_none());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn terminal_requests_stay_terminal() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    let issued = {
        let mut r = request(
            "web-1",
            WEB,
            json!([
                {"type": "Approved", "status": "True"},
                {"type": "Ready", "status": "True", "reason": "Issued"},
            ]),
        );
        r.status.as_mut().unwrap().certificate = Some(k8s_openapi::ByteString(b"PEM".to_vec()));
        r
    };
    let failed = request(
        "web-2",
        WEB,
        json!([
            {"type": "Approved", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "Failed"},
        ]),
    );
    let denied = request(
        "web-3",
        WEB,
        json!([
            {"type": "Denied", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "Denied"},
        ]),
    );
    let mut failure_time = request("web-4", WEB, approved());
    failure_time.status.as_mut().unwrap().failure_time = Some("2030-01-01T00:00:00Z".into());
    for terminal in [issued, failed, denied, failure_time] {
        assert_eq!(
            cluster.reconcile(&terminal).await.unwrap(),
            Action::await_change()
        );
    }
    assert!(cluster.api.calls().is_empty(), "{:#?}", cluster.api.calls());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn an_issued_request_is_never_signed_again() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    let mut request = request("web-1", WEB, approved());
    cluster.reconcile(&request).await.unwrap();
    assert_eq!(cluster.signatures().await, 1);

    // The watch delivers the request with the status just written; and again, say on a resync.
    let written = cluster.only_status();
    let mut conditions = approved().as_array().unwrap().clone();
    conditions.push(ready_condition(&written).clone());
    let mut status: CertificateRequestStatus =
        serde_json::from_value(json!({"conditions": conditions})).unwrap();
    status.certificate = Some(k8s_openapi::ByteString(
        STANDARD
            .decode(written["certificate"].as_str().unwrap())
            .unwrap(),
    ));
    request.status = Some(status);
    for _ in 0..3 {
        cluster.reconcile(&request).await.unwrap();
    }
    assert_eq!(cluster.signatures().await, 1, "signed once");
    assert_eq!(cluster.status_patches().len(), 1, "written once");
}

#[tokio::test]
async fn a_status_write_that_failed_is_retried_without_signing_again() {
    let cluster = Cluster::failing_patches(Some(issuer(Some("True"))), 1).await;
    let request = request("web-1", WEB, approved());
    assert!(matches!(
        cluster.reconcile(&request).await,
        Err(ReconcileError::Kube(_))
    ));
    assert_eq!(cluster.signatures().await, 1);
    cluster.reconcile(&request).await.unwrap();
    assert_eq!(
        cluster.signatures().await,
        1,
        "the retry wrote the chain already signed"
    );
    let patches = cluster.status_patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].body, patches[1].body);
}

#[tokio::test]
async fn an_issuer_not_ready_leaves_the_request_pending() {
    for (issuer, why) in [
        (None, "HalyardIssuer apps/web-issuer does not exist"),
        (Some(issuer(None)), "it has no Ready condition yet"),
        (Some(issuer(Some("False"))), "it is not Ready: m"),
    ] {
        let cluster = Cluster::new(issuer).await;
        let action = cluster
            .reconcile(&request("web-1", WEB, approved()))
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(PENDING_RETRY));
        let status = cluster.only_status();
        let ready = ready_condition(&status);
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("Pending"))
        );
        assert!(ready["message"].as_str().unwrap().contains(why), "{ready}");
        assert!(
            status.get("failureTime").is_none(),
            "Pending is not a failure"
        );
        assert_eq!(cluster.signatures().await, 0);
    }
}

#[tokio::test]
async fn an_issuer_ready_for_an_older_spec_is_not_ready() {
    let mut stale = issuer(Some("True"));
    stale["status"]["conditions"][0]["observedGeneration"] = json!(1);
    let cluster = Cluster::new(Some(stale)).await;
    cluster
        .reconcile(&request("web-1", WEB, approved()))
        .await
        .unwrap();
    let status = cluster.only_status();
    assert_eq!(ready_condition(&status)["reason"], "Pending");
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn a_policy_refusal_fails_the_request() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    // Another namespace's identity, from a namespaced issuer.
    let foreign = "spiffe://cluster.local/ns/kube-system/sa/admin";
    cluster
        .reconcile(&request("admin-1", foreign, approved()))
        .await
        .unwrap();

    let status = cluster.only_status();
    let ready = ready_condition(&status);
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Failed"))
    );
    assert_eq!(
        ready["message"],
        "spiffe://cluster.local/ns/kube-system/sa/admin is outside namespace apps: a HalyardIssuer \
         signs only spiffe://<trust domain>/ns/apps/…"
    );
    assert!(status["failureTime"].is_string());
    assert!(status.get("certificate").is_none());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn a_bad_csr_fails_the_request() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    let mut bad = request("web-1", WEB, approved());
    bad.spec.request = k8s_openapi::ByteString(
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
    );
    cluster.reconcile(&bad).await.unwrap();
    let status = cluster.only_status();
    let ready = ready_condition(&status);
    assert_eq!(ready["reason"], "Failed");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.request: CSR"),
        "{ready}"
    );
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn requests_for_other_issuers_are_ignored() {
    let cluster = Cluster::new(Some(issuer(Some("True")))).await;
    for (group, kind) in [
        ("cert-manager.io", "Issuer"),
        ("", "ClusterIssuer"),
        ("awspca.cert-manager.io", "AWSPCAIssuer"),
        ("halyard.dev", "SomethingElse"),
    ] {
        let mut other = request("web-1", WEB, approved());
        other.spec.issuer_ref.group = group.into();
        other.spec.issuer_ref.kind = kind.into();
        cluster.reconcile(&other).await.unwrap();
    }
    assert!(cluster.api.calls().is_empty());
    assert_eq!(cluster.signatures().await, 0);
}

#[tokio::test]
async fn an_issuer_becomes_ready_once_and_says_why_not_otherwise() {
    let cluster = Cluster::new(None).await;
    let ready: HalyardIssuer = serde_json::from_value(issuer(None)).unwrap();
    reconcile_issuer(Arc::new(ready), cluster.ctx.clone())
        .await
        .unwrap();
    let patches = cluster.status_patches();
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0]
            .path
            .ends_with("/namespaces/apps/halyardissuers/web-issuer/status")
    );
    assert_eq!(patches[0].body["kind"], "HalyardIssuer");
    let condition = &patches[0].body["status"]["conditions"][0];
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("True"), Some("Ready"))
    );
    assert_eq!(condition["observedGeneration"], 2);

    // Reconciled again with the status it wrote: nothing to change, nothing written.
    let mut again = issuer(None);
    again["status"] = json!({"conditions": [condition]});
    let again: HalyardIssuer = serde_json::from_value(again).unwrap();
    reconcile_issuer(Arc::new(again), cluster.ctx.clone())
        .await
        .unwrap();
    assert_eq!(cluster.status_patches().len(), 1);

    let mut invalid = issuer(None);
    invalid["spec"]["allowedSpiffeIds"] = json!(["spiffe://elsewhere.org/ns/*/sa/*"]);
    let invalid: HalyardIssuer = serde_json::from_value(invalid).unwrap();
    reconcile_issuer(Arc::new(invalid), cluster.ctx.clone())
        .await
        .unwrap();
    let patches = cluster.status_patches();
    let condition = &patches[1].body["status"]["conditions"][0];
    assert_eq!(
        (condition["status"].as_str(), condition["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("does not start with spiffe://cluster.local/"),
        "{condition}"
    );
}

#[tokio::test]
async fn a_cluster_issuer_signs_across_namespaces_within_its_patterns() {
    let cluster_issuer = json!({
        "apiVersion": "halyard.dev/v1alpha1",
        "kind": "HalyardClusterIssuer",
        "metadata": {"name": "mesh", "generation": 1},
        "spec": {"allowedSpiffeIds": ["spiffe://cluster.local/ns/{namespace}/sa/*"]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]},
    });
    let api = MockApi::new(
        move |call| match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/apis/halyard.dev/v1alpha1/halyardclusterissuers/mesh") => {
                (200, cluster_issuer.clone())
            }
            ("PATCH", _) => (
                200,
                json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "x"}, "spec": {}}),
            ),
            _ => not_found(&call.path),
        },
    );
    let (ca, _dir) = dev_ca().await;
    let ctx = Arc::new(Context::new(api.client(), ca));
    let to_mesh = |name: &str, id: &str| {
        let mut r = request(name, id, approved());
        r.spec.issuer_ref.kind = "HalyardClusterIssuer".into();
        r.spec.issuer_ref.name = "mesh".into();
        Arc::new(r)
    };
    reconcile_request(to_mesh("own", WEB), ctx.clone())
        .await
        .unwrap();
    // The request lives in apps; {namespace} keeps it to apps' identities.
    reconcile_request(
        to_mesh("foreign", "spiffe://cluster.local/ns/db/sa/x"),
        ctx.clone(),
    )
    .await
    .unwrap();
    let patches = api.calls_to("PATCH", STATUS_SUFFIX);
    let reasons: Vec<&str> = patches
        .iter()
        .map(|p| {
            p.body["status"]["conditions"][0]["reason"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(reasons, ["Issued", "Failed"]);
}

#[test]
fn the_crds_in_deploy_are_the_ones_the_types_generate() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/halyard.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crds_yaml().unwrap(),
        "{} is stale: regenerate it with `cargo run -p halyard-ca -- kube crds > deploy/crds/halyard.dev.yaml`",
        path.display()
    );
}
