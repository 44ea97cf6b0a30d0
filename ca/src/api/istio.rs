//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, as istio-agent and ztunnel call it:
//! a PEM CSR for the caller's own identity → the chain in PEM, leaf first, root last.
//!
//! The caller is who its mTLS SVID says, or else, as istiod tries its authenticators in the same
//! order, the service account of its `authorization: Bearer` token (audience `istio-ca`).
//!
//! ztunnel asks for the identities of the pods of its node with `ImpersonatedIdentity` in the
//! request's metadata. As in istiod (`CA_TRUSTED_NODE_ACCOUNTS`), that is honoured only for a
//! caller authenticated by the token of a trusted ztunnel service account, and only for
//! `spiffe://<td>/ns/<ns>/sa/<sa>` while a pod of that service account runs on the node of the
//! caller's pod (the pod index). Unlike istiod's opaque UNAUTHENTICATED, a refusal is
//! PERMISSION_DENIED and says why.

use std::sync::Arc;

use halyard_proto::api::istio_auth::istio_certificate_service_server::IstioCertificateService;
use halyard_proto::api::istio_auth::{IstioCertificateRequest, IstioCertificateResponse};
use halyard_proto::{SpiffeId, Ttl};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::peer::{bearer_token, caller_id};
use super::status::{issue_status, pods_status, token_status};
use crate::authority::{Grant, certs_to_pem};
use crate::kube::{PodIndex, ServiceAccount, TokenReviewer, pods};
use crate::server::Ca;

/// The metadata key under which ztunnel names the identity it asks for (Istio's
/// `security.ImpersonatedIdentity`).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Istio's certificate service.
pub struct IstioApi {
    ca: Arc<Ca>,
    tokens: Option<Arc<TokenReviewer>>,
    impersonation: Option<Impersonation>,
}

/// Who may impersonate whom.
struct Impersonation {
    pods: Arc<PodIndex>,
    /// ztunnel's service accounts, `namespace/name`.
    ztunnel_service_accounts: Vec<String>,
}

/// An authenticated caller.
struct Caller {
    /// Its SPIFFE ID.
    id: SpiffeId,
    /// Its service account, when it authenticated with a token.
    account: Option<ServiceAccount>,
}

impl IstioApi {
    /// The service over `ca`; `tokens` authenticates bearer tokens when Kubernetes is enabled.
    pub fn new(ca: Arc<Ca>, tokens: Option<Arc<TokenReviewer>>) -> IstioApi {
        IstioApi {
            ca,
            tokens,
            impersonation: None,
        }
    }

    /// The same, honouring `ImpersonatedIdentity` from `ztunnel_service_accounts`
    /// (`namespace/name`) for the pods `pods` places on the caller's node.
    #[must_use]
    pub fn with_impersonation(
        self,
        pods: Arc<PodIndex>,
        ztunnel_service_accounts: Vec<String>,
    ) -> IstioApi {
        IstioApi {
            impersonation: Some(Impersonation {
                pods,
                ztunnel_service_accounts,
            }),
            ..self
        }
    }

    /// The caller: its mTLS SVID's ID, else its service-account token's.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let mtls_error = match caller_id(request) {
            Ok(id) => return Ok(Caller { id, account: None }),
            Err(e) => e,
        };
        let Some(token) = bearer_token(request)? else {
            return Err(mtls_error);
        };
        let Some(tokens) = &self.tokens else {
            return Err(Status::unauthenticated(format!(
                "{}; a bearer token was presented, but Kubernetes authentication is off \
                 ([kubernetes] enabled = true, or --kubernetes)",
                mtls_error.message()
            )));
        };
        let account = tokens
            .istio_caller(&token)
            .await
            .map_err(|e| token_status(&e))?;
        Ok(Caller {
            id: account.spiffe_id.clone(),
            account: Some(account),
        })
    }

    /// The identity `caller` may have certified as `impersonated`, and the journal's name for
    /// the caller: the impersonated identity on the node of a trusted ztunnel's pod.
    fn impersonate(
        &self,
        caller: &Caller,
        impersonated: &str,
    ) -> Result<(SpiffeId, String), Status> {
        let who = &caller.id;
        let denied = |why: String| {
            Status::permission_denied(format!("{who} may not impersonate {impersonated}: {why}"))
        };
        let Some(impersonation) = &self.impersonation else {
            return Err(denied(
                "impersonation needs Kubernetes enabled on the CA ([kubernetes] enabled = true, \
                 or --kubernetes) and the caller among kubernetes.ztunnel_service_accounts"
                    .to_owned(),
            ));
        };
        let Some(account) = &caller.account else {
            return Err(denied(
                "only a ztunnel authenticated by its service-account token (authorization: \
                 Bearer) may impersonate, so that its pod's node is known"
                    .to_owned(),
            ));
        };
        let qualified = account.qualified_name();
        if !impersonation.ztunnel_service_accounts.contains(&qualified) {
            return Err(denied(format!(
                "service account {qualified} is not in kubernetes.ztunnel_service_accounts"
            )));
        }
        let id = SpiffeId::new(impersonated).map_err(|e| {
            Status::invalid_argument(format!(
                "metadata {IMPERSONATED_IDENTITY} {impersonated:?} is not a SPIFFE ID: {e}"
            ))
        })?;
        let Some((namespace, name)) = pods::workload_account(&id, self.ca.trust_domain()) else {
            return Err(denied(format!(
                "only identities spiffe://{}/ns/<namespace>/sa/<service account> of pods can be \
                 impersonated",
                self.ca.trust_domain()
            )));
        };
        let node = impersonation
            .pods
            .node_of(account)
            .map_err(|e| pods_status(&e))?;
        match impersonation.pods.may_hold(&node, namespace, name) {
            Ok(true) => {}
            Ok(false) => {
                return Err(denied(format!(
                    "no pod of service account {namespace}/{name} runs on node {node}, the node \
                     of the caller's pod"
                )));
            }
            Err(e) => return Err(pods_status(&e)),
        }
        let journal = format!("istio:{who}@{node}");
        Ok((id, journal))
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .and_then(Ttl::from_secs);
        let (id, journal_caller) = match impersonated_identity(&request)? {
            Some(impersonated) => self.impersonate(&caller, impersonated)?,
            None => (caller.id.clone(), format!("istio:{}", caller.id)),
        };
        let grant = Grant::new(id.clone());
        let svid = self
            .ca
            .issue(request.csr.as_bytes(), &grant, ttl, &journal_caller, None)
            .instrument(info_span!("create_certificate", caller = %caller.id, spiffe_id = %id))
            .await
            .map_err(|e| issue_status(&e))?;
        let mut cert_chain: Vec<String> = svid.chain().map(|der| certs_to_pem([der])).collect();
        cert_chain.push(certs_to_pem([self.ca.issuing_root().as_slice()]));
        Ok(IstioCertificateResponse { cert_chain })
    }
}

/// The request's `ImpersonatedIdentity`, if it names one (an empty string names none, as in
/// istiod).
fn impersonated_identity(request: &IstioCertificateRequest) -> Result<Option<&str>, Status> {
    use prost_types::value::Kind;
    let Some(value) = request
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(id)) if id.is_empty() => Ok(None),
        Some(Kind::StringValue(id)) => Ok(Some(id)),
        Some(Kind::NullValue(_)) | None => Ok(None),
        Some(_) => Err(Status::invalid_argument(format!(
            "metadata {IMPERSONATED_IDENTITY} is not a string"
        ))),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for IstioApi {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let result = self.create(request).await;
        self.ca.metrics().request(
            "CreateCertificate",
            result.as_ref().err().map_or(Code::Ok, Status::code),
        );
        result.map(Response::new)
    }
}

#[cfg(test)]
mod tests;
