//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, as istio-agent and ztunnel call it:
//! a PEM CSR for the caller's own identity → the chain in PEM, leaf first, root last.
//!
//! The caller is who its mTLS SVID says, or else, as istiod tries its authenticators in the same
//! order, the service account of its `authorization: Bearer` token (audience `istio-ca`).

use std::sync::Arc;

use halyard_proto::api::istio_auth::istio_certificate_service_server::IstioCertificateService;
use halyard_proto::api::istio_auth::{IstioCertificateRequest, IstioCertificateResponse};
use halyard_proto::{SpiffeId, Ttl};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::peer::{bearer_token, caller_id};
use super::status::{issue_status, token_status};
use crate::authority::{Grant, certs_to_pem};
use crate::kube::TokenReviewer;
use crate::server::Ca;

/// Istio's certificate service.
pub struct IstioApi {
    ca: Arc<Ca>,
    tokens: Option<Arc<TokenReviewer>>,
}

impl IstioApi {
    /// The service over `ca`; `tokens` authenticates bearer tokens when Kubernetes is enabled.
    pub fn new(ca: Arc<Ca>, tokens: Option<Arc<TokenReviewer>>) -> IstioApi {
        IstioApi { ca, tokens }
    }

    /// The caller: its mTLS SVID's ID, else its service-account token's.
    async fn caller<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let mtls_error = match caller_id(request) {
            Ok(id) => return Ok(id),
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
        Ok(account.spiffe_id)
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
        let grant = Grant::new(caller.clone());
        let svid = self
            .ca
            .issue(
                request.csr.as_bytes(),
                &grant,
                ttl,
                &format!("istio:{caller}"),
                None,
            )
            .instrument(info_span!("create_certificate", caller = %caller))
            .await
            .map_err(|e| issue_status(&e))?;
        let mut cert_chain: Vec<String> = svid.chain().map(|der| certs_to_pem([der])).collect();
        cert_chain.push(certs_to_pem([self.ca.issuing_root().as_slice()]));
        Ok(IstioCertificateResponse { cert_chain })
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
