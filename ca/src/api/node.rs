//! `NodeService.Attest`: a join token, a Kubernetes projected service-account token (the node of
//! the agent's pod), or, to renew, the current node SVID, and the agent's CSR for the node's
//! X509-SVID and the trust bundle.
//!
//! The node of a projected token is the one the TokenReview names (Kubernetes 1.30 and later),
//! else the one the pod index places the token's pod on. A renewal keeps the method the node
//! attested with: a Kubernetes node stays one, and a join-token node never becomes one.

use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::SpiffeId;
use halyard_proto::api::ca::attest_request::Credential;
use halyard_proto::api::ca::node_service_server::NodeService;
use halyard_proto::api::ca::{AttestRequest, AttestResponse, TrustBundle};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::peer::caller_id;
use super::status::{issue_status, pods_status, store_status, token_status};
use super::svid_message;
use crate::authority::{Csr, Grant};
use crate::kube::{PodIndex, PodIndexError, TokenError, TokenReviewer};
use crate::server::Ca;
use crate::store::{NodeRecord, StoreError};

/// The attestation method of nodes attested by their agent's projected service-account token:
/// only these are Kubernetes nodes, whose pods' identities they may obtain.
pub(super) const KUBERNETES_METHOD: &str = "k8s";

/// The node attestation service.
pub struct NodeApi {
    ca: Arc<Ca>,
    tokens: Option<Arc<TokenReviewer>>,
    pods: Option<Arc<PodIndex>>,
}

impl NodeApi {
    /// The service over `ca`; `tokens` reviews service-account tokens when Kubernetes is enabled.
    pub fn new(ca: Arc<Ca>, tokens: Option<Arc<TokenReviewer>>) -> NodeApi {
        NodeApi {
            ca,
            tokens,
            pods: None,
        }
    }

    /// The same, finding the node of a token that names only its pod in `pods`.
    #[must_use]
    pub fn with_pods(self, pods: Arc<PodIndex>) -> NodeApi {
        NodeApi {
            pods: Some(pods),
            ..self
        }
    }

    async fn attest(&self, request: Request<AttestRequest>) -> Result<AttestResponse, Status> {
        let ca = &self.ca;
        let peer = caller_id(&request).ok();
        let request = request.into_inner();
        // Judge the CSR before spending the token, so a bad CSR does not burn it.
        Csr::parse(&request.csr, &ca.authority().policy().keys)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (name, method) = match request.credential {
            Some(Credential::JoinToken(token)) => {
                let name = ca
                    .store()
                    .consume_join_token(token_hash(&token), SystemTime::now())
                    .await
                    .map_err(|e| match e {
                        StoreError::TokenUnknown
                        | StoreError::TokenUsed
                        | StoreError::TokenExpired => Status::unauthenticated(e.to_string()),
                        other => store_status(&other),
                    })?;
                (name, "join_token")
            }
            Some(Credential::ServiceAccountToken(token)) => {
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    Status::failed_precondition(
                        "service-account token attestation needs Kubernetes enabled on the CA \
                         ([kubernetes] enabled = true, or --kubernetes); use a join token",
                    )
                })?;
                let account = tokens
                    .agent_account(&token.into())
                    .await
                    .map_err(|e| token_status(&e))?;
                let name = match (&account.node_name, &self.pods) {
                    (Some(node), _) => node.clone(),
                    (None, Some(pods)) => pods.node_of(&account).map_err(|e| match e {
                        PodIndexError::Unbound { .. } => {
                            token_status(&TokenError::NoNodeName(account.qualified_name()))
                        }
                        other => pods_status(&other),
                    })?,
                    (None, None) => {
                        return Err(token_status(&TokenError::NoNodeName(
                            account.qualified_name(),
                        )));
                    }
                };
                (name, KUBERNETES_METHOD)
            }
            None => {
                let id = peer.ok_or_else(|| {
                    Status::unauthenticated(
                        "no credential: present a join token, or renew over mTLS with the node SVID",
                    )
                })?;
                let name = ca.node_name(&id).ok_or_else(|| {
                    Status::permission_denied(format!("{id} is not a node identity"))
                })?;
                (name.to_owned(), "renewal")
            }
        };
        let record = ca.store().node(&name).await.map_err(|e| store_status(&e))?;
        if record.as_ref().is_some_and(|r| r.banned) {
            return Err(Status::permission_denied(format!("node {name} is banned")));
        }
        // A renewal is no attestation: the node remains what it attested as.
        let method = match (&record, method) {
            (Some(record), "renewal") => record.method.clone(),
            (_, method) => method.to_owned(),
        };
        let id: SpiffeId = ca
            .node_id(&name)
            .map_err(|e| Status::internal(format!("node name {name:?}: {e}")))?;
        let grant = Grant {
            id_in_csr: false,
            ..Grant::new(id.clone())
        };
        let caller = format!("node:{name}");
        let svid = ca
            .issue(
                &request.csr,
                &grant,
                Some(ca.config().max_ttl),
                &caller,
                None,
            )
            .await
            .map_err(|e| issue_status(&e))?;
        let now = SystemTime::now();
        ca.store()
            .record_node(NodeRecord {
                name: name.clone(),
                spiffe_id: id.to_string(),
                serial: svid.serial.to_string(),
                not_after: svid.not_after,
                attested_at: now,
                method: method.clone(),
                banned: false,
            })
            .await
            .map_err(|e| store_status(&e))?;
        info!(node = %name, method = %method, serial = %svid.serial, "node attested");
        Ok(AttestResponse {
            svid: Some(svid_message(&svid)),
            bundle: Some(bundle_message(ca)),
        })
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    #[instrument(skip_all, name = "attest")]
    async fn attest(
        &self,
        request: Request<AttestRequest>,
    ) -> Result<Response<AttestResponse>, Status> {
        let result = NodeApi::attest(self, request).await;
        self.ca.metrics().request(
            "Attest",
            result.as_ref().err().map_or(tonic::Code::Ok, Status::code),
        );
        result.map(Response::new)
    }
}

/// The trust bundle as the wire carries it.
pub(super) fn bundle_message(ca: &Ca) -> TrustBundle {
    TrustBundle {
        trust_domain: ca.trust_domain().to_string(),
        roots: ca.bundle().to_vec(),
    }
}

/// How join tokens are stored: SHA-256 of the token text.
pub(super) fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests;
