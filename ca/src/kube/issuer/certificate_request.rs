//! One CertificateRequest, by cert-manager's contract for external issuers:
//!
//! - not ours (another `issuerRef`) → ignored;
//! - terminal (Ready True/Issued, or Ready False/Failed or Denied, or a certificate or failureTime
//!   already set) → left alone: a request is never signed twice;
//! - `Denied` → Ready False/Denied with `failureTime`, never signed;
//! - not `Approved` → left alone, untouched, until it is;
//! - its issuer missing or not Ready, or the CA unable to sign now → Ready False/Pending, retried;
//! - refused by the issuer's policy or the CA's → Ready False/Failed with `failureTime`;
//! - signed through [`Ca::issue`] (journaled) → `status.certificate` (leaf and intermediates,
//!   PEM), `status.ca` (the root, PEM), Ready True/Issued.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::readiness::{evaluate, is_ready};
use super::{
    Asked, CertificateRequest, Context, FIELD_MANAGER, GROUP, HalyardClusterIssuer, HalyardIssuer,
    Issuer, IssuerPolicy, PENDING_RETRY, ReconcileError, RequestCondition, k8s_time,
};
use crate::authority::{Csr, Grant, certs_to_pem, rfc3339};

/// A chain signed for a request, as the status carries it.
#[derive(Clone, Debug)]
pub(super) struct Signed {
    /// Leaf and intermediates, PEM.
    certificate: String,
    /// The root, PEM.
    ca: String,
    /// The Ready message.
    message: String,
}

/// What a request's status says about where it stands.
enum Stage {
    /// Issued, failed or denied already: nothing more to do.
    Terminal,
    /// Denied by an approver, not yet marked so.
    Denied,
    /// Neither approved nor denied yet.
    AwaitingApproval,
    /// Approved and not yet issued.
    Approved,
}

fn stage(request: &CertificateRequest) -> Stage {
    let Some(status) = &request.status else {
        return Stage::AwaitingApproval;
    };
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let is_true = |type_: &str| condition(type_).is_some_and(|c| c.status == "True");
    let ready_terminal = condition("Ready").is_some_and(|c| {
        c.status == "True"
            || (c.status == "False" && matches!(c.reason.as_deref(), Some("Failed" | "Denied")))
    });
    let issued = status.certificate.as_ref().is_some_and(|c| !c.0.is_empty());
    if ready_terminal || issued || status.failure_time.is_some() {
        Stage::Terminal
    } else if is_true("Denied") {
        Stage::Denied
    } else if is_true("Approved") {
        Stage::Approved
    } else {
        Stage::AwaitingApproval
    }
}

/// Reconciles one CertificateRequest.
pub(super) async fn reconcile(
    request: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let issuer_ref = &request.spec.issuer_ref;
    if issuer_ref.group != GROUP
        || !matches!(
            issuer_ref.kind.as_str(),
            HalyardIssuer::KIND | HalyardClusterIssuer::KIND
        )
    {
        return Ok(Action::await_change());
    }
    match stage(&request) {
        Stage::Terminal => {
            // Written after all (the retry raced the watch): nothing is pending for it.
            ctx.unwritten
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&unwritten_key(&request));
            Ok(Action::await_change())
        }
        Stage::AwaitingApproval => Ok(Action::await_change()),
        Stage::Denied => {
            let message = "The CertificateRequest was denied by an approval controller";
            write_failure(&ctx, &request, "Denied", message).await?;
            info!(request = %describe(&request), "denied: not signed");
            Ok(Action::await_change())
        }
        Stage::Approved => sign(&ctx, &request).await,
    }
}

async fn sign(ctx: &Context, request: &CertificateRequest) -> Result<Action, ReconcileError> {
    let uid = unwritten_key(request);
    let unwritten = ctx
        .unwritten
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&uid)
        .cloned();
    if let Some(signed) = unwritten {
        return write_issued(ctx, request, &uid, signed).await;
    }
    let policy = match issuer_policy(ctx, request).await? {
        Ok(policy) => policy,
        Err(why) => {
            write_pending(ctx, request, &why).await?;
            return Ok(Action::requeue(PENDING_RETRY));
        }
    };
    let ca = &ctx.ca;
    let csr_bytes = &request.spec.request.0;
    let csr = match Csr::parse(csr_bytes, &ca.authority().policy().keys) {
        Ok(csr) => csr,
        Err(e) => return fail(ctx, request, &format!("spec.request: {e}")).await,
    };
    let namespace = request.namespace().unwrap_or_default();
    let asked = Asked {
        namespace: &namespace,
        uris: csr.uris(),
        dns_names: csr.dns_names(),
        usages: &request.spec.usages,
        is_ca: request.spec.is_ca,
        duration: request.spec.duration.as_deref(),
    };
    let granted = match policy.authorize(&asked, ca.trust_domain()) {
        Ok(granted) => granted,
        Err(refusal) => return fail(ctx, request, &refusal.to_string()).await,
    };
    let grant = Grant {
        dns_names: csr.dns_names().to_vec(),
        ..Grant::new(granted.spiffe_id)
    };
    let caller = format!("cert-manager:{namespace}/{}", request.name_any());
    let svid = match ca
        .issue(csr_bytes, &grant, granted.ttl, &caller, None)
        .await
    {
        Ok(svid) => svid,
        Err(e) if e.is_refusal() => return fail(ctx, request, &e.to_string()).await,
        Err(e) => {
            warn!(request = %describe(request), error = %e, "not signed yet; retrying");
            write_pending(ctx, request, &format!("halyard-ca cannot sign now: {e}")).await?;
            return Ok(Action::requeue(PENDING_RETRY));
        }
    };
    let signed = Signed {
        certificate: svid.chain_pem(),
        ca: certs_to_pem([ca.issuing_root().as_slice()]),
        message: format!(
            "Certificate issued for {}: serial {}, valid until {}",
            svid.spiffe_id,
            svid.serial,
            rfc3339(svid.not_after)
        ),
    };
    ctx.unwritten
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(uid.clone(), signed.clone());
    write_issued(ctx, request, &uid, signed).await
}

/// The policy of the request's issuer, or why the request must wait.
async fn issuer_policy(
    ctx: &Context,
    request: &CertificateRequest,
) -> Result<Result<IssuerPolicy, String>, ReconcileError> {
    let namespace = request.namespace();
    let name = &request.spec.issuer_ref.name;
    match request.spec.issuer_ref.kind.as_str() {
        HalyardIssuer::KIND => lookup::<HalyardIssuer>(ctx, namespace.as_deref(), name).await,
        _ => lookup::<HalyardClusterIssuer>(ctx, None, name).await,
    }
}

async fn lookup<I: Issuer>(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
) -> Result<Result<IssuerPolicy, String>, ReconcileError> {
    let shown = match namespace {
        Some(ns) => format!("{} {ns}/{name}", I::KIND),
        None => format!("{} {name}", I::KIND),
    };
    let Some(issuer) = I::api(ctx.client.clone(), namespace).get_opt(name).await? else {
        return Ok(Err(format!("{shown} does not exist")));
    };
    if let Err(why) = is_ready(&issuer) {
        return Ok(Err(format!("{shown} is not ready: {why}")));
    }
    Ok(evaluate(&issuer, &ctx.ca)
        .map_err(|not_ready| format!("{shown} is not ready: {}", not_ready.message)))
}

async fn fail(
    ctx: &Context,
    request: &CertificateRequest,
    message: &str,
) -> Result<Action, ReconcileError> {
    info!(request = %describe(request), reason = message, "failed: not signed");
    write_failure(ctx, request, "Failed", message).await?;
    Ok(Action::await_change())
}

async fn write_issued(
    ctx: &Context,
    request: &CertificateRequest,
    uid: &str,
    signed: Signed,
) -> Result<Action, ReconcileError> {
    apply_status(
        ctx,
        request,
        json!({
            "conditions": [ready(request, "True", "Issued", &signed.message)],
            "certificate": STANDARD.encode(signed.certificate.as_bytes()),
            "ca": STANDARD.encode(signed.ca.as_bytes()),
        }),
    )
    .await?;
    ctx.unwritten
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(uid);
    info!(request = %describe(request), message = %signed.message, "issued");
    Ok(Action::await_change())
}

async fn write_failure(
    ctx: &Context,
    request: &CertificateRequest,
    reason: &str,
    message: &str,
) -> Result<(), ReconcileError> {
    apply_status(
        ctx,
        request,
        json!({
            "conditions": [ready(request, "False", reason, message)],
            "failureTime": k8s_time(SystemTime::now()),
        }),
    )
    .await
}

async fn write_pending(
    ctx: &Context,
    request: &CertificateRequest,
    message: &str,
) -> Result<(), ReconcileError> {
    let current = current_ready(request);
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Pending")
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    apply_status(
        ctx,
        request,
        json!({ "conditions": [ready(request, "False", "Pending", message)] }),
    )
    .await
}

fn current_ready(request: &CertificateRequest) -> Option<&RequestCondition> {
    request
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The Ready condition, keeping its transition time when the status does not change.
fn ready(request: &CertificateRequest, status: &str, reason: &str, message: &str) -> Value {
    let since = current_ready(request)
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| k8s_time(SystemTime::now()));
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    })
}

/// Server-side applies `status` (the fields the issuer owns) through the status subresource.
async fn apply_status(
    ctx: &Context,
    request: &CertificateRequest,
    status: Value,
) -> Result<(), ReconcileError> {
    let namespace = request
        .namespace()
        .ok_or_else(|| ReconcileError::Object("CertificateRequest without a namespace".into()))?;
    let patch = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "status": status,
    });
    Api::<CertificateRequest>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &request.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Which request a chain waiting to be written belongs to.
fn unwritten_key(request: &CertificateRequest) -> String {
    format!(
        "{}/{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any(),
        request.uid().unwrap_or_default()
    )
}

fn describe(request: &CertificateRequest) -> String {
    format!(
        "{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any()
    )
}
