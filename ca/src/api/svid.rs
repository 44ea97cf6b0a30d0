//! `SvidService.SignX509Svids`: a node's batch of workload CSRs, each authorized on its own
//! against the node's registration entries.

use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_server::SvidService;
use halyard_proto::api::ca::{
    ItemError, SignX509SvidsRequest, SignX509SvidsResponse, SvidRequest, SvidResult,
};
use halyard_proto::{SpiffeId, Ttl};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::peer::{Peer, peer};
use super::status::{issue_code, store_status};
use super::svid_message;
use crate::authority::Grant;
use crate::server::Ca;
use crate::store::{Entry, EntryScope};

/// The workload certificate service.
pub struct SvidApi {
    ca: Arc<Ca>,
}

impl SvidApi {
    /// The service over `ca`.
    pub fn new(ca: Arc<Ca>) -> SvidApi {
        SvidApi { ca }
    }

    async fn sign(
        &self,
        request: Request<SignX509SvidsRequest>,
    ) -> Result<SignX509SvidsResponse, Status> {
        let ca = &self.ca;
        let (node, _) = authenticated_node(ca, &request).await?;
        let requests = request.into_inner().requests;
        if requests.len() > ca.config().max_batch {
            return Err(Status::invalid_argument(format!(
                "batch of {} CSRs; the limit is {}",
                requests.len(),
                ca.config().max_batch
            )));
        }
        let entries = ca
            .store()
            .entries(EntryScope::ForNode(node.clone()))
            .await
            .map_err(|e| store_status(&e))?;
        let caller = format!("node:{node}");
        let mut results = Vec::with_capacity(requests.len());
        for item in requests {
            let result = match self.sign_one(&node, &caller, &entries, item).await {
                Ok(svid) => ItemResult::Svid(svid),
                Err(status) => ItemResult::Error(ItemError {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }),
            };
            results.push(SvidResult {
                result: Some(result),
            });
        }
        Ok(SignX509SvidsResponse { results })
    }

    async fn sign_one(
        &self,
        node: &str,
        caller: &str,
        entries: &[Entry],
        item: SvidRequest,
    ) -> Result<halyard_proto::api::ca::X509Svid, Status> {
        let id = SpiffeId::new(&item.spiffe_id).map_err(|e| {
            Status::invalid_argument(format!("spiffe_id {:?}: {e}", item.spiffe_id))
        })?;
        let entry = entries
            .iter()
            .find(|e| e.spiffe_id == id.as_str())
            .ok_or_else(|| {
                Status::permission_denied(format!("node {node} has no registration entry for {id}"))
            })?;
        let grant = Grant {
            dns_names: entry.dns_names.clone(),
            ..Grant::new(id)
        };
        let ttl = Ttl::from_secs(item.ttl_seconds).or(entry.ttl_seconds.and_then(Ttl::from_secs));
        let span = info_span!("sign", spiffe_id = %grant.spiffe_id);
        self.ca
            .issue(&item.csr, &grant, ttl, caller, Some(node))
            .instrument(span)
            .await
            .map(|svid| svid_message(&svid))
            .map_err(|e| Status::new(issue_code(&e), e.to_string()))
    }
}

/// The node a request comes from: its mTLS client certificate must be a node SVID of this trust
/// domain, for a node that attested and is not banned.
pub(super) async fn authenticated_node<T>(
    ca: &Ca,
    request: &Request<T>,
) -> Result<(String, SystemTime), Status> {
    let Peer { id, not_after } = peer(request)?;
    let name = ca
        .node_name(&id)
        .ok_or_else(|| Status::permission_denied(format!("{id} is not a node identity")))?;
    match ca.store().node(name).await.map_err(|e| store_status(&e))? {
        Some(node) if node.banned => {
            Err(Status::permission_denied(format!("node {name} is banned")))
        }
        Some(_) => Ok((name.to_owned(), not_after)),
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
