//! An issuer's `Ready` condition: True when its spec compiles and the CA has a valid
//! intermediate, with the generation it was computed from.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::info;

use super::{
    Context, FIELD_MANAGER, Issuer, IssuerCondition, IssuerPolicy, ReconcileError, k8s_time,
};
use crate::authority::rfc3339;
use crate::server::Ca;

/// How often a Ready issuer is looked at again (the intermediate may expire or rotate).
const RECHECK: Duration = Duration::from_secs(5 * 60);

/// Why an issuer cannot sign: a `Ready` reason and a message.
pub(super) struct NotReady {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// The policy of `issuer` if it can sign now.
pub(super) fn evaluate<I: Issuer>(issuer: &I, ca: &Ca) -> Result<IssuerPolicy, NotReady> {
    let policy = IssuerPolicy::compile(
        issuer.policy_spec(),
        ca.trust_domain(),
        issuer.bounding_namespace().as_deref(),
    )
    .map_err(|e| NotReady {
        reason: "InvalidSpec",
        message: e.to_string(),
    })?;
    if !ca.is_ready() {
        return Err(NotReady {
            reason: "CaNotReady",
            message: format!(
                "halyard-ca has no valid intermediate (the active one expired at {})",
                rfc3339(ca.authority().not_after())
            ),
        });
    }
    Ok(policy)
}

/// Whether `issuer`'s status says it is Ready for its current spec.
pub(super) fn is_ready<I: Issuer>(issuer: &I) -> Result<(), String> {
    let condition = issuer
        .issuer_status()
        .and_then(|status| status.conditions.iter().find(|c| c.type_ == "Ready"));
    match condition {
        None => Err("it has no Ready condition yet".to_owned()),
        Some(c) if c.status != "True" => Err(format!(
            "it is not Ready: {}",
            c.message.as_deref().unwrap_or("no reason given")
        )),
        Some(c) if c.observed_generation != issuer.meta().generation => Err(format!(
            "its Ready condition is for generation {:?}, its spec is at {:?}",
            c.observed_generation,
            issuer.meta().generation
        )),
        Some(_) => Ok(()),
    }
}

/// Sets `issuer`'s Ready condition when it changed.
pub(super) async fn reconcile<I: Issuer>(
    issuer: Arc<I>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ca = &ctx.ca;
    let (status, reason, message, next) = match evaluate(issuer.as_ref(), ca) {
        Ok(_) => {
            let authority = ca.authority();
            (
                "True",
                "Ready",
                format!(
                    "signs with intermediate {}, valid until {}",
                    authority.id(),
                    rfc3339(authority.not_after())
                ),
                RECHECK,
            )
        }
        Err(not_ready) => (
            "False",
            not_ready.reason,
            not_ready.message,
            super::PENDING_RETRY,
        ),
    };
    let generation = issuer.meta().generation;
    let current = issuer
        .issuer_status()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let unchanged = current.is_some_and(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
            && c.observed_generation == generation
    });
    if unchanged {
        return Ok(Action::requeue(next));
    }
    let since = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => None,
    }
    .unwrap_or_else(|| k8s_time(SystemTime::now()));
    let condition = IssuerCondition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.clone()),
        last_transition_time: Some(since),
        observed_generation: generation,
    };
    let name = issuer
        .meta()
        .name
        .clone()
        .ok_or_else(|| ReconcileError::Object(format!("{} without a name", I::KIND)))?;
    let patch = json!({
        "apiVersion": I::api_version(&()),
        "kind": I::KIND,
        "status": { "conditions": [condition] },
    });
    I::api(ctx.client.clone(), issuer.meta().namespace.as_deref())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    info!(issuer = %issuer.describe(), ready = status, reason, %message, "issuer status");
    Ok(Action::requeue(next))
}
