//! cert-manager external issuer: [`HalyardIssuer`] and [`HalyardClusterIssuer`] sign
//! cert-manager `CertificateRequest`s through [`Ca::issue`], so every certificate is journaled
//! like any other.
//!
//! Three `kube::runtime::Controller`s: one keeps each issuer's `Ready` condition
//! ([`readiness`]), one per CertificateRequest follows cert-manager's contract
//! ([`certificate_request`]). Status is only ever written through the status subresource, by
//! server-side apply with the field manager [`FIELD_MANAGER`], so the approver's `Approved` and
//! `Denied` conditions are never touched.

mod certificate_request;
mod crd;
mod policy;
mod readiness;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::server::Ca;

pub use crd::{
    CertificateRequest, CertificateRequestSpec, CertificateRequestStatus, GROUP,
    HalyardClusterIssuer, HalyardClusterIssuerSpec, HalyardIssuer, HalyardIssuerSpec,
    IssuerCondition, IssuerPolicySpec, IssuerReference, IssuerStatus, RequestCondition, Usage,
    crds, crds_yaml,
};
pub use policy::{
    Asked, Granted, IssuerPolicy, NAMESPACE_PLACEHOLDER, Refusal, SpecError, glob_match,
    parse_go_duration,
};

/// The field manager of every status patch the issuer makes.
pub const FIELD_MANAGER: &str = "halyard-ca";
/// How soon a request waiting for its issuer, or for the CA, is looked at again.
const PENDING_RETRY: Duration = Duration::from_secs(30);
/// How soon a reconcile that failed (the API server, the store) is retried.
const ERROR_RETRY: Duration = Duration::from_secs(15);

/// Why a reconcile failed; the object is retried after [`ERROR_RETRY`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object without a name or namespace where one is needed.
    #[error("{0}")]
    Object(String),
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    ca: Arc<Ca>,
    /// Chains signed whose status write failed, by CertificateRequest (namespace/name/uid):
    /// written on the retry instead of signing again.
    unwritten: Mutex<HashMap<String, certificate_request::Signed>>,
}

impl Context {
    /// The context of reconciles that talk to the API server through `client` and sign with `ca`.
    pub fn new(client: Client, ca: Arc<Ca>) -> Context {
        Context {
            client,
            ca,
            unwritten: Mutex::new(HashMap::new()),
        }
    }
}

/// Reconciles `request` once (the controller's reconcile function, for tests and callers that
/// drive it themselves).
pub async fn reconcile_request(
    request: Arc<CertificateRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    certificate_request::reconcile(request, ctx).await
}

/// Reconciles an issuer's `Ready` condition once.
pub async fn reconcile_issuer<I: Issuer>(
    issuer: Arc<I>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    readiness::reconcile(issuer, ctx).await
}

/// Runs the three controllers until `shutdown` is cancelled.
pub async fn run(client: Client, ca: Arc<Ca>, shutdown: CancellationToken) {
    let ctx = Arc::new(Context::new(client.clone(), ca));
    info!(
        "cert-manager issuer: watching CertificateRequests, HalyardIssuers and HalyardClusterIssuers"
    );
    let requests = Controller::new(
        Api::<CertificateRequest>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconcile_request, error_policy, ctx.clone());
    let issuers = Controller::new(
        Api::<HalyardIssuer>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconcile_issuer, error_policy, ctx.clone());
    let cluster_issuers = Controller::new(
        Api::<HalyardClusterIssuer>::all(client),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile_issuer, error_policy, ctx);
    tokio::join!(
        drain("CertificateRequest", requests),
        drain("HalyardIssuer", issuers),
        drain("HalyardClusterIssuer", cluster_issuers),
    );
}

fn error_policy<K>(_object: Arc<K>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    // [`drain`] logs it.
    debug!(%error, "reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

/// Consumes a controller's results: the first failure of a run at warn (a missing CRD, RBAC),
/// the same failure again at debug.
pub(super) async fn drain<T: Debug, E: std::fmt::Display>(
    what: &'static str,
    results: impl Stream<Item = Result<T, E>>,
) {
    tokio::pin!(results);
    let mut last_error: Option<String> = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(done) => {
                debug!(kind = what, ?done, "reconciled");
                last_error = None;
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() == Some(text.as_str()) {
                    debug!(kind = what, error = %text, "controller error (again)");
                } else {
                    warn!(
                        kind = what,
                        error = %text,
                        "controller error (are cert-manager and deploy/crds/halyard.dev.yaml \
                         installed, and may halyard-ca watch them?)"
                    );
                    last_error = Some(text);
                }
            }
        }
    }
}

/// What the reconcilers need of [`HalyardIssuer`] and [`HalyardClusterIssuer`] alike.
pub trait Issuer:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The kind, as a CertificateRequest's `issuerRef.kind` names it.
    const KIND: &'static str;
    /// What it may sign.
    fn policy_spec(&self) -> &IssuerPolicySpec;
    /// Its status.
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    /// The API of this kind, in `namespace` for namespaced kinds.
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The namespace that bounds what it signs: a HalyardIssuer's own; none for a cluster issuer.
    fn bounding_namespace(&self) -> Option<String>;
    /// `Kind namespace/name` or `Kind name`, for messages.
    fn describe(&self) -> String {
        match self.meta().namespace.as_deref() {
            Some(ns) => format!(
                "{} {ns}/{}",
                Self::KIND,
                self.meta().name.as_deref().unwrap_or("")
            ),
            None => format!(
                "{} {}",
                Self::KIND,
                self.meta().name.as_deref().unwrap_or("")
            ),
        }
    }
}

impl Issuer for HalyardIssuer {
    const KIND: &'static str = "HalyardIssuer";
    fn policy_spec(&self) -> &IssuerPolicySpec {
        &self.spec.policy
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn bounding_namespace(&self) -> Option<String> {
        // A namespaced object without a namespace bounds to none: no ID starts with "/ns//".
        Some(self.meta().namespace.clone().unwrap_or_default())
    }
}

impl Issuer for HalyardClusterIssuer {
    const KIND: &'static str = "HalyardClusterIssuer";
    fn policy_spec(&self) -> &IssuerPolicySpec {
        &self.spec.policy
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn bounding_namespace(&self) -> Option<String> {
        None
    }
}

/// A Kubernetes timestamp: RFC 3339 in UTC, whole seconds.
fn k8s_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::authority::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
