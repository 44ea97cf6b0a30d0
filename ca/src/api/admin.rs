//! `AdminService`, served only on the admin unix socket: join tokens, entries, the bundle,
//! health. Whoever can open the socket (its owner) is the operator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use halyard_proto::api::ca::admin_service_server::AdminService;
use halyard_proto::api::ca::{
    ActivateAuthorityRequest, ActivateAuthorityResponse, AddRootRequest, AddRootResponse,
    AuthorityInfo, ListAuthoritiesRequest, ListAuthoritiesResponse, PrepareAuthorityRequest,
    PrepareAuthorityResponse, RemoveRootRequest, RemoveRootResponse, TaintAuthorityRequest,
    TaintAuthorityResponse, prepare_authority_response,
};
use halyard_proto::api::ca::{
    BanNodeRequest, BanNodeResponse, ListNodesRequest, ListNodesResponse, NodeInfo,
};
use halyard_proto::api::ca::{
    CreateEntryRequest, CreateEntryResponse, CreateJoinTokenRequest, CreateJoinTokenResponse,
    DeleteEntryRequest, DeleteEntryResponse, GetBundleRequest, GetBundleResponse, HealthRequest,
    HealthResponse, ListEntriesRequest, ListEntriesResponse, RevokeRequest, RevokeResponse,
    revoke_request,
};
use halyard_proto::{SpiffeId, Ttl};
use ring::rand::{SecureRandom, SystemRandom};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::node::{bundle_message, token_hash};
use super::status::store_status;
use super::trust::entry_message;
use super::unix_secs;
use crate::authority::{RevocationReason, Serial};
use crate::server::{Ca, ChangeError, KnownAuthority, Prepared, RevokeTarget};
use crate::store::{AuthorityRecord, EntryScope, NewEntry, StoreError};

/// The operator's service.
pub struct AdminApi {
    ca: Arc<Ca>,
}

impl AdminApi {
    /// The service over `ca`.
    pub fn new(ca: Arc<Ca>) -> AdminApi {
        AdminApi { ca }
    }
}

/// Selector kinds and keys this CA knows; anything else is refused at entry creation.
const SELECTOR_KEYS: &[(&str, &[&str])] = &[("unix", &["uid", "gid", "path"])];

fn check_selector(kind: &str, key: &str, value: &str) -> Result<String, Status> {
    let keys = SELECTOR_KEYS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, keys)| *keys)
        .ok_or_else(|| {
            Status::invalid_argument(format!("selector kind {kind:?} is unknown: expected unix"))
        })?;
    if !keys.contains(&key) {
        return Err(Status::invalid_argument(format!(
            "selector {kind}:{key} is unknown: expected one of {}",
            keys.iter()
                .map(|k| format!("{kind}:{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "selector {kind}:{key} has no value"
        )));
    }
    if matches!(key, "uid" | "gid") && value.parse::<u32>().is_err() {
        return Err(Status::invalid_argument(format!(
            "selector {kind}:{key}:{value}: {key} must be a number"
        )));
    }
    Ok(format!("{kind}:{key}:{value}"))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        let request = request.into_inner();
        self.ca
            .node_id(&request.node)
            .map_err(|e| Status::invalid_argument(format!("node name {:?}: {e}", request.node)))?;
        let ttl = Ttl::from_secs(request.ttl_seconds).unwrap_or(self.ca.config().join_token_ttl);
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| Status::internal("no randomness for a token"))?;
        // A fixed prefix: a token never starts with "-" (which a command line would take for a
        // flag) and is recognisable in a leaked log or file.
        let token = format!(
            "hjt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let expires_at = SystemTime::now() + ttl.as_duration();
        self.ca
            .store()
            .create_join_token(token_hash(&token), &request.node, expires_at)
            .await
            .map_err(|e| store_status(&e))?;
        info!(node = %request.node, ttl = %ttl, "join token created");
        Ok(Response::new(CreateJoinTokenResponse {
            token,
            expires_at: unix_secs(expires_at),
        }))
    }

    async fn create_entry(
        &self,
        request: Request<CreateEntryRequest>,
    ) -> Result<Response<CreateEntryResponse>, Status> {
        let entry = request
            .into_inner()
            .entry
            .ok_or_else(|| Status::invalid_argument("no entry given"))?;
        let id = SpiffeId::new(&entry.spiffe_id).map_err(|e| {
            Status::invalid_argument(format!("spiffe_id {:?}: {e}", entry.spiffe_id))
        })?;
        if !id.is_member_of(self.ca.trust_domain()) {
            return Err(Status::invalid_argument(format!(
                "{id} is not in trust domain {}",
                self.ca.trust_domain()
            )));
        }
        if id.is_trust_domain_id() {
            return Err(Status::invalid_argument(format!(
                "{id} has no path: it names the trust domain"
            )));
        }
        let node = match (entry.any_node, entry.node.is_empty()) {
            (true, true) => None,
            (false, false) => {
                self.ca.node_id(&entry.node).map_err(|e| {
                    Status::invalid_argument(format!("node name {:?}: {e}", entry.node))
                })?;
                Some(entry.node.clone())
            }
            (true, false) => {
                return Err(Status::invalid_argument(
                    "give a node or any_node, not both",
                ));
            }
            (false, true) => return Err(Status::invalid_argument("give a node or any_node")),
        };
        if entry.selectors.is_empty() {
            return Err(Status::invalid_argument(
                "an entry needs at least one selector",
            ));
        }
        let selectors = entry
            .selectors
            .iter()
            .map(|s| check_selector(&s.kind, &s.key, &s.value))
            .collect::<Result<Vec<_>, _>>()?;
        for name in &entry.dns_names {
            if name.is_empty() || !name.is_ascii() || name.contains(char::is_whitespace) {
                return Err(Status::invalid_argument(format!(
                    "DNS name {name:?} is not ASCII"
                )));
            }
        }
        let created = self
            .ca
            .store()
            .create_entry(NewEntry {
                spiffe_id: id.to_string(),
                node,
                selectors,
                ttl_seconds: (entry.ttl_seconds > 0).then_some(entry.ttl_seconds),
                dns_names: entry.dns_names,
            })
            .await
            .map_err(|e| match e {
                StoreError::EntryExists { .. } => Status::already_exists(e.to_string()),
                other => store_status(&other),
            })?;
        info!(entry = %created.id, spiffe_id = %created.spiffe_id, "entry created");
        Ok(Response::new(CreateEntryResponse {
            entry: Some(entry_message(&created)),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let node = request.into_inner().node;
        let scope = if node.is_empty() {
            EntryScope::All
        } else {
            EntryScope::ForNode(node)
        };
        let entries = self
            .ca
            .store()
            .entries(scope)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(ListEntriesResponse {
            entries: entries.iter().map(entry_message).collect(),
        }))
    }

    async fn delete_entry(
        &self,
        request: Request<DeleteEntryRequest>,
    ) -> Result<Response<DeleteEntryResponse>, Status> {
        let id = request.into_inner().id;
        if self
            .ca
            .store()
            .delete_entry(&id)
            .await
            .map_err(|e| store_status(&e))?
        {
            info!(entry = %id, "entry deleted");
            Ok(Response::new(DeleteEntryResponse {}))
        } else {
            Err(Status::not_found(format!("no entry with id {id:?}")))
        }
    }

    async fn get_bundle(
        &self,
        _request: Request<GetBundleRequest>,
    ) -> Result<Response<GetBundleResponse>, Status> {
        Ok(Response::new(GetBundleResponse {
            bundle: Some(bundle_message(&self.ca)),
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let request = request.into_inner();
        let reason: RevocationReason = if request.reason.is_empty() {
            RevocationReason::Unspecified
        } else {
            request.reason.parse().map_err(Status::invalid_argument)?
        };
        let serial;
        let target = match &request.target {
            Some(revoke_request::Target::Serial(text)) => {
                serial = text
                    .parse::<Serial>()
                    .map_err(|e| Status::invalid_argument(format!("serial: {e}")))?
                    .to_string();
                RevokeTarget::Serial(&serial)
            }
            Some(revoke_request::Target::SpiffeId(id)) => {
                SpiffeId::new(id)
                    .map_err(|e| Status::invalid_argument(format!("spiffe_id {id:?}: {e}")))?;
                RevokeTarget::SpiffeId(id)
            }
            None => {
                return Err(Status::invalid_argument(
                    "give a serial or a SPIFFE ID to revoke",
                ));
            }
        };
        let revoked = self.ca.revoke(target, reason).await.map_err(|e| match e {
            StoreError::NotIssued { .. } => Status::not_found(e.to_string()),
            StoreError::AlreadyExpired { .. } => Status::failed_precondition(e.to_string()),
            StoreError::AlreadyRevoked { .. } => Status::already_exists(e.to_string()),
            other => store_status(&other),
        })?;
        Ok(Response::new(RevokeResponse {
            serials: revoked.into_iter().map(|r| r.serial).collect(),
        }))
    }

    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let authority = self.ca.authority();
        let store_ok = self.ca.store().node("").await.is_ok();
        let ready = self.ca.is_ready() && store_ok;
        let left = authority
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let message = match (self.ca.is_ready(), store_ok) {
            (true, true) => format!(
                "ready; intermediate valid for {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
            (false, _) => "not ready: the intermediate has expired".to_owned(),
            (true, false) => "not ready: the store does not answer".to_owned(),
        };
        Ok(Response::new(HealthResponse {
            ready,
            message,
            intermediate_expires_at: unix_secs(authority.not_after()),
        }))
    }

    async fn list_authorities(
        &self,
        _request: Request<ListAuthoritiesRequest>,
    ) -> Result<Response<ListAuthoritiesResponse>, Status> {
        let set = self.ca.authority_set();
        let records = self
            .ca
            .store()
            .authorities()
            .await
            .map_err(|e| store_status(&e))?;
        let authorities = records
            .iter()
            .map(|record| {
                authority_info(record, set.known.iter().find(|k| k.record.id == record.id))
            })
            .collect();
        Ok(Response::new(ListAuthoritiesResponse { authorities }))
    }

    async fn prepare_authority(
        &self,
        request: Request<PrepareAuthorityRequest>,
    ) -> Result<Response<PrepareAuthorityResponse>, Status> {
        let request = request.into_inner();
        let given = (!request.certificate_pem.is_empty()).then_some(&request.certificate_pem[..]);
        let result = match self
            .ca
            .prepare_authority(given, request.want_csr)
            .await
            .map_err(|e| change_status(&e))?
        {
            Prepared::Csr(pem) => prepare_authority_response::Result::CsrPem(pem),
            Prepared::Authority(record) => {
                prepare_authority_response::Result::Authority(self.info(&record))
            }
        };
        Ok(Response::new(PrepareAuthorityResponse {
            result: Some(result),
        }))
    }

    async fn activate_authority(
        &self,
        request: Request<ActivateAuthorityRequest>,
    ) -> Result<Response<ActivateAuthorityResponse>, Status> {
        let id = request.into_inner().id;
        let record = self
            .ca
            .activate_authority(&id)
            .await
            .map_err(|e| change_status(&e))?;
        Ok(Response::new(ActivateAuthorityResponse {
            authority: Some(self.info(&record)),
        }))
    }

    async fn taint_authority(
        &self,
        request: Request<TaintAuthorityRequest>,
    ) -> Result<Response<TaintAuthorityResponse>, Status> {
        let id = request.into_inner().id;
        let taint = self
            .ca
            .taint_authority(&id)
            .await
            .map_err(|e| change_status(&e))?;
        Ok(Response::new(TaintAuthorityResponse {
            tainted: Some(self.info(&taint.tainted)),
            activated: taint.activated.as_ref().map(|r| self.info(r)),
        }))
    }

    async fn add_root(
        &self,
        request: Request<AddRootRequest>,
    ) -> Result<Response<AddRootResponse>, Status> {
        let roots = self
            .ca
            .add_root(&request.into_inner().certificate_pem)
            .await
            .map_err(|e| change_status(&e))?;
        Ok(Response::new(AddRootResponse {
            roots: u32::try_from(roots).unwrap_or(u32::MAX),
        }))
    }

    async fn remove_root(
        &self,
        request: Request<RemoveRootRequest>,
    ) -> Result<Response<RemoveRootResponse>, Status> {
        let removed = self
            .ca
            .remove_root(&request.into_inner().certificate_pem)
            .await
            .map_err(|e| change_status(&e))?;
        Ok(Response::new(RemoveRootResponse {
            roots: u32::try_from(removed.roots).unwrap_or(u32::MAX),
            orphaned_authorities: removed.orphaned,
        }))
    }
    async fn list_nodes(
        &self,
        _request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        Ok(Response::new(ListNodesResponse {
            nodes: self.nodes().await?,
        }))
    }

    async fn ban_node(
        &self,
        request: Request<BanNodeRequest>,
    ) -> Result<Response<BanNodeResponse>, Status> {
        let name = request.into_inner().name;
        if self
            .ca
            .store()
            .ban_node(&name)
            .await
            .map_err(|e| store_status(&e))?
        {
            warn!(node = %name, "node banned: it can no longer renew, sign, watch or attest");
            Ok(Response::new(BanNodeResponse {}))
        } else {
            Err(Status::not_found(format!(
                "no node named {name:?} has attested: see `halyard-ca node list`"
            )))
        }
    }
}

impl AdminApi {
    async fn nodes(&self) -> Result<Vec<NodeInfo>, Status> {
        let nodes = self
            .ca
            .store()
            .list_nodes()
            .await
            .map_err(|e| store_status(&e))?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeInfo {
                name: n.name,
                spiffe_id: n.spiffe_id,
                serial: n.serial,
                not_after: unix_secs(n.not_after),
                attested_at: unix_secs(n.attested_at),
                method: n.method,
                banned: n.banned,
            })
            .collect())
    }

    /// `record` as the operator sees it, with what this CA knows of it now.
    fn info(&self, record: &AuthorityRecord) -> AuthorityInfo {
        let set = self.ca.authority_set();
        authority_info(record, set.known.iter().find(|k| k.record.id == record.id))
    }
}

fn authority_info(record: &AuthorityRecord, known: Option<&KnownAuthority>) -> AuthorityInfo {
    let first = crate::authority::certs_from_pem(record.chain_pem.as_bytes())
        .ok()
        .and_then(|certs| certs.into_iter().next());
    let subject = first
        .as_deref()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_default();
    let usable = known.is_some_and(|k| k.authority.is_some());
    let root_sha256 = known
        .and_then(|k| k.root.as_ref())
        .map(|root| {
            ring::digest::digest(&ring::digest::SHA256, root)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default();
    AuthorityInfo {
        id: record.id.clone(),
        state: record.state.to_string(),
        subject,
        not_after: unix_secs(record.not_after),
        created_at: unix_secs(record.created_at),
        activated_at: record.activated_at.map_or(0, unix_secs),
        tainted_at: record.tainted_at.map_or(0, unix_secs),
        usable,
        root_sha256,
        chain_pem: record.chain_pem.clone(),
    }
}

/// The status for a refused authority or bundle change.
fn change_status(error: &ChangeError) -> Status {
    match error {
        ChangeError::Store(StoreError::AuthorityUnknown { .. }) => {
            Status::not_found(error.to_string())
        }
        ChangeError::Store(StoreError::AuthorityExists { .. }) => {
            Status::already_exists(error.to_string())
        }
        ChangeError::Store(StoreError::AuthorityState { .. } | StoreError::NoSuccessor { .. }) => {
            Status::failed_precondition(error.to_string())
        }
        ChangeError::Store(other) => store_status(other),
        ChangeError::File(_) => Status::internal(error.to_string()),
        ChangeError::Precondition(_) => Status::failed_precondition(error.to_string()),
        ChangeError::Invalid(_) => Status::invalid_argument(error.to_string()),
        ChangeError::NotFound(_) => Status::not_found(error.to_string()),
        ChangeError::AlreadyExists(_) => Status::already_exists(error.to_string()),
    }
}
