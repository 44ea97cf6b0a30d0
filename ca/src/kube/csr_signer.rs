//! The Kubernetes CSR signer [`SIGNER_NAME`] (`halyard.dev/spiffe`): signs
//! `certificates.k8s.io/v1` CertificateSigningRequests through [`Ca::issue`], so every
//! certificate is journaled like any other. It is what Istio's `ISTIOD_RA_KUBERNETES_API` mode
//! (`EXTERNAL_CA=ISTIOD_RA_KUBERNETES_API`, `K8S_SIGNER=halyard.dev/spiffe`) talks to: istiod
//! authenticates the workload, creates a CSR for its SPIFFE ID, approves it, and waits for
//! `status.certificate`.
//!
//! Kubernetes' contract for signers, request by request:
//!
//! - another `spec.signerName` → ignored (the watch selects ours only);
//! - `status.certificate` set, or a `Failed` condition → terminal, left alone: never signed twice;
//! - `Denied`, or neither approved nor denied → left alone (approval is the authorization: who
//!   may approve for `halyard.dev/spiffe` is RBAC's `approve` verb on `signers`);
//! - approved, but not what an X509-SVID may be (no or several SPIFFE IDs, another trust domain,
//!   a usage beyond digital signature, key encipherment, server and client auth) or refused by
//!   the CA's policy → a `Failed` condition with the reason, never retried;
//! - approved, the CA unable to sign now (busy, rate limited, journal down) → retried;
//! - signed → `status.certificate`: the leaf and its intermediates, PEM (the root is the trust
//!   bundle's, which Istio takes from its mesh config). `spec.expirationSeconds` is the lifetime
//!   asked for; the CA clamps it to its maximum.
//!
//! Status is written with `PUT …/status` carrying the object's resourceVersion, so two replicas
//! that both signed cannot both write: the second gets a conflict and, on its retry, finds the
//! request terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use halyard_proto::{SpiffeId, Ttl};

use super::issuer::{ReconcileError, drain};
use crate::authority::{Csr, Grant, rfc3339};
use crate::server::Ca;

/// The signer name Halyard signs for.
pub const SIGNER_NAME: &str = "halyard.dev/spiffe";
/// The usages an X509-SVID may carry, as `certificates.k8s.io/v1` names them.
const USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];
/// How soon a request the CA could not sign now is looked at again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// What every reconcile shares.
pub struct SignerContext {
    client: Client,
    ca: Arc<Ca>,
    /// Chains signed whose status write failed, by CSR (name/uid): written on the retry instead
    /// of signing again.
    unwritten: Mutex<HashMap<String, String>>,
}

impl SignerContext {
    /// The context of reconciles that talk to the API server through `client` and sign with `ca`.
    pub fn new(client: Client, ca: Arc<Ca>) -> SignerContext {
        SignerContext {
            client,
            ca,
            unwritten: Mutex::new(HashMap::new()),
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.unwritten
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs the signer until `shutdown` is cancelled.
pub async fn run(client: Client, ca: Arc<Ca>, shutdown: CancellationToken) {
    let ctx = Arc::new(SignerContext::new(client.clone(), ca));
    info!(
        signer = SIGNER_NAME,
        "Kubernetes CSR signer: watching CertificateSigningRequests"
    );
    let csrs = Controller::new(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default().fields(&format!("spec.signerName={SIGNER_NAME}")),
    )
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, ctx);
    drain("CertificateSigningRequest", csrs).await;
}

fn error_policy(
    _csr: Arc<CertificateSigningRequest>,
    error: &ReconcileError,
    _ctx: Arc<SignerContext>,
) -> Action {
    debug!(%error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Where a CSR stands.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Another signer's.
    NotOurs,
    /// Signed or failed already.
    Terminal,
    /// Denied, or not yet approved: an approver's move.
    NotApproved,
    /// Approved and not yet signed.
    Approved,
}

fn stage(csr: &CertificateSigningRequest) -> Stage {
    if csr.spec.signer_name != SIGNER_NAME {
        return Stage::NotOurs;
    }
    let status = csr.status.as_ref();
    let is_true = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == "True")
            })
    };
    let signed = status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if signed || is_true("Failed") {
        Stage::Terminal
    } else if is_true("Denied") || !is_true("Approved") {
        Stage::NotApproved
    } else {
        Stage::Approved
    }
}

/// Reconciles one CertificateSigningRequest (the controller's reconcile function, public for
/// tests and callers that drive it themselves).
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<SignerContext>,
) -> Result<Action, ReconcileError> {
    match stage(&csr) {
        Stage::NotOurs | Stage::NotApproved => Ok(Action::await_change()),
        Stage::Terminal => {
            ctx.unwritten().remove(&unwritten_key(&csr));
            Ok(Action::await_change())
        }
        Stage::Approved => sign(&ctx, &csr).await,
    }
}

async fn sign(
    ctx: &SignerContext,
    csr: &CertificateSigningRequest,
) -> Result<Action, ReconcileError> {
    let key = unwritten_key(csr);
    let unwritten = ctx.unwritten().get(&key).cloned();
    if let Some(chain) = unwritten {
        return write_certificate(ctx, csr, &key, chain).await;
    }
    let (grant, ttl) = match authorize(ctx, csr) {
        Ok(granted) => granted,
        Err(why) => return write_failed(ctx, csr, &why).await,
    };
    let requester = csr.spec.username.as_deref().unwrap_or("an unknown user");
    let caller = format!("k8s-csr:{} by {requester}", csr.name_any());
    let svid = match ctx
        .ca
        .issue(&csr.spec.request.0, &grant, ttl, &caller, None)
        .await
    {
        Ok(svid) => svid,
        Err(e) if e.is_refusal() => return write_failed(ctx, csr, &e.to_string()).await,
        Err(e) => {
            warn!(csr = %csr.name_any(), error = %e, "not signed yet; retrying");
            return Ok(Action::requeue(RETRY));
        }
    };
    info!(
        csr = %csr.name_any(),
        spiffe_id = %svid.spiffe_id,
        serial = %svid.serial,
        not_after = %rfc3339(svid.not_after),
        requester,
        "signed"
    );
    let chain = svid.chain_pem();
    ctx.unwritten().insert(key.clone(), chain.clone());
    write_certificate(ctx, csr, &key, chain).await
}

/// What an approved CSR may have: its one SPIFFE ID (in the CA's trust domain), its DNS names,
/// X509-SVID usages, and the lifetime asked for; or why not.
fn authorize(
    ctx: &SignerContext,
    csr: &CertificateSigningRequest,
) -> Result<(Grant, Option<Ttl>), String> {
    let parsed = Csr::parse(&csr.spec.request.0, &ctx.ca.authority().policy().keys)
        .map_err(|e| format!("spec.request: {e}"))?;
    let spiffe_id = match parsed.uris() {
        [uri] => SpiffeId::new(uri)
            .map_err(|e| format!("the CSR's URI SAN {uri:?} is not a SPIFFE ID: {e}"))?,
        uris => {
            return Err(format!(
                "the CSR must carry exactly one SPIFFE ID as URI SAN; it carries {}",
                uris.len()
            ));
        }
    };
    let trust_domain = ctx.ca.trust_domain();
    if spiffe_id.trust_domain() != trust_domain {
        return Err(format!(
            "{spiffe_id} is outside trust domain {trust_domain}, the only one {SIGNER_NAME} signs for"
        ));
    }
    let usages = csr.spec.usages.as_deref().unwrap_or_default();
    if let Some(usage) = usages.iter().find(|u| !USAGES.contains(&u.as_str())) {
        return Err(format!(
            "spec.usages: {usage:?} is not one an X509-SVID has: {}",
            USAGES.join(", ")
        ));
    }
    let ttl = match csr.spec.expiration_seconds {
        None => None,
        Some(secs) => Some(
            u64::try_from(secs)
                .ok()
                .and_then(Ttl::from_secs)
                .ok_or_else(|| format!("spec.expirationSeconds: {secs} is not a lifetime"))?,
        ),
    };
    let grant = Grant {
        dns_names: parsed.dns_names().to_vec(),
        ..Grant::new(spiffe_id)
    };
    Ok((grant, ttl))
}

async fn write_certificate(
    ctx: &SignerContext,
    csr: &CertificateSigningRequest,
    key: &str,
    chain: String,
) -> Result<Action, ReconcileError> {
    let mut status = csr.status.clone().unwrap_or_default();
    status.certificate = Some(ByteString(chain.into_bytes()));
    replace_status(ctx, csr, status).await?;
    ctx.unwritten().remove(key);
    Ok(Action::await_change())
}

async fn write_failed(
    ctx: &SignerContext,
    csr: &CertificateSigningRequest,
    message: &str,
) -> Result<Action, ReconcileError> {
    info!(csr = %csr.name_any(), reason = message, "failed: not signed");
    let now = k8s_now();
    let mut status = csr.status.clone().unwrap_or_default();
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("HalyardPolicy".into()),
            message: Some(message.to_owned()),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now),
        });
    replace_status(ctx, csr, status).await?;
    Ok(Action::await_change())
}

/// `PUT …/status` with `status`, as of the object's resourceVersion.
async fn replace_status(
    ctx: &SignerContext,
    csr: &CertificateSigningRequest,
    status: CertificateSigningRequestStatus,
) -> Result<(), ReconcileError> {
    let mut object = csr.clone();
    object.status = Some(status);
    object.metadata.managed_fields = None;
    Api::<CertificateSigningRequest>::all(ctx.client.clone())
        .replace_status(&csr.name_any(), &PostParams::default(), &object)
        .await?;
    Ok(())
}

/// Now, as Kubernetes' timestamps are: whole seconds.
fn k8s_now() -> Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Time(
        i64::try_from(secs)
            .ok()
            .and_then(|secs| k8s_openapi::jiff::Timestamp::from_second(secs).ok())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Which CSR a chain waiting to be written belongs to.
fn unwritten_key(csr: &CertificateSigningRequest) -> String {
    format!("{}/{}", csr.name_any(), csr.uid().unwrap_or_default())
}

#[cfg(test)]
mod tests;
