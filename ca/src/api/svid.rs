//! `SvidService.SignX509Svids`: a node's batch of workload CSRs, each authorized on its own
//! against the node's registration entries, and in Kubernetes mode against the pods of the node:
//! a node attested by its agent's projected token may hold `spiffe://<td>/ns/<ns>/sa/<sa>` while
//! a pod of that service account runs on it, without an entry. Join-token nodes get no identity
//! from pods, whatever their name.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::join_all;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_server::SvidService;
use halyard_proto::api::ca::{
    ItemError, SignX509SvidsRequest, SignX509SvidsResponse, SvidRequest, SvidResult,
};
use halyard_proto::{SpiffeId, Ttl};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::node::KUBERNETES_METHOD;
use super::peer::{Peer, peer};
use super::status::{issue_code, pods_status, store_status};
use super::svid_message;
use crate::authority::Grant;
use crate::kube::{PodIndex, pods};
use crate::server::Ca;
use crate::store::{Entry, NodeRecord};

/// The workload certificate service.
pub struct SvidApi {
    ca: Arc<Ca>,
    pods: Option<Arc<PodIndex>>,
}

/// The node a batch comes from, as far as authorizing its items goes.
struct Requester<'a> {
    /// Its name.
    name: &'a str,
    /// Its registration entries.
    entries: &'a [Entry],
    /// The pod index, when the node attested as a Kubernetes node and Kubernetes is enabled.
    pods: Option<&'a PodIndex>,
}

impl SvidApi {
    /// The service over `ca`, authorizing by registration entries only.
    pub fn new(ca: Arc<Ca>) -> SvidApi {
        SvidApi { ca, pods: None }
    }

    /// The same, also authorizing Kubernetes nodes by the pods that run on them.
    #[must_use]
    pub fn with_pods(self, pods: Arc<PodIndex>) -> SvidApi {
        SvidApi {
            pods: Some(pods),
            ..self
        }
    }

    async fn sign(
        &self,
        request: Request<SignX509SvidsRequest>,
    ) -> Result<SignX509SvidsResponse, Status> {
        let ca = &self.ca;
        let (name, _) = peer_node(ca, &request)?;
        // The hot path: the node's record and entries from the CA's cache, not the store.
        let authorization = ca
            .node_authorization(&name)
            .await
            .map_err(|e| store_status(&e))?;
        let record = usable_node(&name, authorization.record)?;
        let node = record.name;
        let requests = request.into_inner().requests;
        if requests.len() > ca.config().max_batch {
            return Err(Status::invalid_argument(format!(
                "batch of {} CSRs; the limit is {}",
                requests.len(),
                ca.config().max_batch
            )));
        }
        let entries = authorization.entries;
        let caller = format!("node:{node}");
        let requester = Requester {
            name: &node,
            entries: &entries,
            pods: self
                .pods
                .as_deref()
                .filter(|_| record.method == KUBERNETES_METHOD),
        };
        // The items run together: each is signed as soon as it is polled, in order, and then
        // waits for its journal row, so the batch's rows share the writer's next commit. One
        // after another, each item waited for a commit of its own.
        let signed = join_all(
            requests
                .into_iter()
                .map(|item| self.sign_one(&requester, &caller, item)),
        )
        .await;
        let results = signed
            .into_iter()
            .map(|result| SvidResult {
                result: Some(match result {
                    Ok(svid) => ItemResult::Svid(svid),
                    Err(status) => ItemResult::Error(ItemError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(SignX509SvidsResponse { results })
    }

    async fn sign_one(
        &self,
        requester: &Requester<'_>,
        caller: &str,
        item: SvidRequest,
    ) -> Result<halyard_proto::api::ca::X509Svid, Status> {
        let node = requester.name;
        let id = SpiffeId::new(&item.spiffe_id).map_err(|e| {
            Status::invalid_argument(format!("spiffe_id {:?}: {e}", item.spiffe_id))
        })?;
        let (grant, ttl) = match requester
            .entries
            .iter()
            .find(|e| e.spiffe_id == id.as_str())
        {
            Some(entry) => {
                let ttl =
                    Ttl::from_secs(item.ttl_seconds).or(entry.ttl_seconds.and_then(Ttl::from_secs));
                let grant = Grant {
                    dns_names: entry.dns_names.clone(),
                    ..Grant::new(id)
                };
                (grant, ttl)
            }
            None => {
                self.authorize_by_pods(requester, &id)?;
                (Grant::new(id), Ttl::from_secs(item.ttl_seconds))
            }
        };
        let span = info_span!("sign", spiffe_id = %grant.spiffe_id);
        self.ca
            .issue(&item.csr, &grant, ttl, caller, Some(node))
            .instrument(span)
            .await
            .map(|svid| svid_message(&svid))
            .map_err(|e| Status::new(issue_code(&e), e.to_string()))
    }
}

impl SvidApi {
    /// Whether `requester`, having no entry for `id`, may hold it because a pod of that
    /// service account runs on the node; PERMISSION_DENIED naming the identity and the node if
    /// not, UNAVAILABLE while the pod index cannot tell.
    fn authorize_by_pods(&self, requester: &Requester<'_>, id: &SpiffeId) -> Result<(), Status> {
        let node = requester.name;
        let denied = |why: String| {
            Status::permission_denied(format!(
                "node {node} may not hold {id}: it has no registration entry for it{why}"
            ))
        };
        let Some((namespace, account)) = pods::workload_account(id, self.ca.trust_domain()) else {
            return Err(denied(String::new()));
        };
        let Some(pods) = requester.pods else {
            return Err(denied(if self.pods.is_some() {
                ", and it did not attest as a Kubernetes node (a projected token of the agent's \
                 pod), so the pods give it no identities"
                    .to_owned()
            } else {
                String::new()
            }));
        };
        match pods.may_hold(node, namespace, account) {
            Ok(true) => Ok(()),
            Ok(false) => Err(denied(format!(
                ", and no pod of service account {namespace}/{account} runs on node {node}"
            ))),
            Err(e) => Err(pods_status(&e)),
        }
    }
}

/// The node a request comes from: its mTLS client certificate must be a node SVID of this trust
/// domain, for a node that attested and is not banned.
pub(super) async fn authenticated_node<T>(
    ca: &Ca,
    request: &Request<T>,
) -> Result<(String, SystemTime), Status> {
    authenticated_node_record(ca, request)
        .await
        .map(|(record, not_after)| (record.name, not_after))
}

/// [`authenticated_node`], with the node's record: how it attested.
async fn authenticated_node_record<T>(
    ca: &Ca,
    request: &Request<T>,
) -> Result<(NodeRecord, SystemTime), Status> {
    let (name, not_after) = peer_node(ca, request)?;
    let record = ca.store().node(&name).await.map_err(|e| store_status(&e))?;
    Ok((usable_node(&name, record)?, not_after))
}

/// The node name in the caller's SVID, and when that SVID expires.
fn peer_node<T>(ca: &Ca, request: &Request<T>) -> Result<(String, SystemTime), Status> {
    let Peer { id, not_after } = peer(request)?;
    let name = ca
        .node_name(&id)
        .ok_or_else(|| Status::permission_denied(format!("{id} is not a node identity")))?;
    Ok((name.to_owned(), not_after))
}

/// The node's record, unless it never attested or is banned.
fn usable_node(name: &str, record: Option<NodeRecord>) -> Result<NodeRecord, Status> {
    match record {
        Some(node) if node.banned => {
            Err(Status::permission_denied(format!("node {name} is banned")))
        }
        Some(node) => Ok(node),
        None => Err(Status::permission_denied(format!(
            "node {name} has not attested"
        ))),
    }
}

#[tonic::async_trait]
impl SvidService for SvidApi {
    async fn sign_x509_svids(
        &self,
        request: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let result = self
            .sign(request)
            .instrument(info_span!("sign_x509_svids"))
            .await;
        self.ca.metrics().request(
            "SignX509Svids",
            result.as_ref().err().map_or(Code::Ok, Status::code),
        );
        result.map(Response::new)
    }
}
