//! `istio.v1.auth.IstioCertificateService/CreateCertificate`, as istio-agent and ztunnel call it:
//! a PEM CSR for the caller's own identity → the chain in PEM, leaf first, root last.

use std::sync::Arc;

use halyard_proto::Ttl;
use halyard_proto::api::istio_auth::istio_certificate_service_server::IstioCertificateService;
use halyard_proto::api::istio_auth::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::peer::caller_id;
use super::status::issue_status;
use crate::authority::{Grant, certs_to_pem};
use crate::server::Ca;

/// Istio's certificate service.
pub struct IstioApi {
    ca: Arc<Ca>,
}

impl IstioApi {
    /// The service over `ca`.
    pub fn new(ca: Arc<Ca>) -> IstioApi {
        IstioApi { ca }
    }

    async fn create(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let caller = caller_id(&request)?;
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
