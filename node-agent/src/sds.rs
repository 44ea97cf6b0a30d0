//! Envoy's Secret Discovery Service: `StreamSecrets` (state of the world), `DeltaSecrets`
//! (incremental) and `FetchSecrets`, on the agent's socket.
//!
//! Resource names: `default` is the caller's SVID (its first entitled identity); `ROOTCA` is the
//! validation context (the trust bundle, and the CRLs with `only_verify_leaf_cert_crl`); a
//! SPIFFE ID is that SVID, if the caller may hold it. Anything else is refused.

mod delta;
mod entitlements;
mod secrets;
mod sotw;
mod subscriptions;

use std::pin::Pin;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::caller::{AgentState, Caller};

pub use secrets::{ROOTCA, SECRET_TYPE_URL};
pub use subscriptions::MAX_RESOURCE_NAMES;

/// The SDS service.
pub struct Sds {
    state: AgentState,
    entitlements: entitlements::Entitlements,
}

impl Sds {
    /// The service over the agent's state.
    pub fn new(state: AgentState) -> Sds {
        Sds {
            state,
            entitlements: entitlements::Entitlements::default(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Refuses a request for another type than secrets. An empty type is the service's own (Envoy
/// always names it; other xDS servers infer it from the service too).
fn check_type_url(type_url: &str) -> Result<(), Status> {
    if type_url.is_empty() || type_url == SECRET_TYPE_URL {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "type_url {} is not served here: the Secret Discovery Service serves {SECRET_TYPE_URL} only",
        crate::caller::shown(type_url)
    )))
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let span = tracing::info_span!("sds", uid = caller.workload.uid, pid = ?caller.workload.pid, mode = "sotw");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(
            sotw::serve(
                self.state.clone(),
                caller,
                self.entitlements.clone(),
                request.into_inner(),
                tx,
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let span = tracing::info_span!("sds", uid = caller.workload.uid, pid = ?caller.workload.pid, mode = "delta");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(
            delta::serve(
                self.state.clone(),
                caller,
                self.entitlements.clone(),
                request.into_inner(),
                tx,
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let request = request.into_inner();
        check_type_url(&request.type_url)?;
        let mut subscriptions = subscriptions::Subscriptions::new(
            self.state.clone(),
            caller,
            self.entitlements.clone(),
        );
        subscriptions.set(&request.resource_names).await?;
        let resources = subscriptions.wait_all().await?;
        Ok(Response::new(DiscoveryResponse {
            version_info: "1".into(),
            resources: resources.into_iter().map(|(_, any)| any).collect(),
            type_url: SECRET_TYPE_URL.into(),
            nonce: "1".into(),
            ..DiscoveryResponse::default()
        }))
    }
}
