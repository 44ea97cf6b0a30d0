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

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SERVICE_NAME, SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstCodec, ProstDecoder};
use tower::Service;
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

/// Where a stream's task puts its responses. Boxed, so that the channel's block of slots (which
/// lives as long as the stream) holds pointers, not responses.
type Outgoing<T> = mpsc::Sender<Result<Box<T>, Status>>;

/// A channel for a stream's responses, and the stream tonic sends from.
fn outgoing<T: Send + 'static>() -> (Outgoing<T>, BoxStream<T>) {
    let (tx, rx) = mpsc::channel(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|r: Result<Box<T>, Status>| r.map(|b| *b));
    (tx, Box::pin(stream))
}

/// The SDS service as the agent serves it: `StreamSecrets` and `DeltaSecrets` with small codec
/// buffers, `FetchSecrets` by the generated server.
///
/// An SDS stream lives as long as its Envoy, and tonic gives every streaming call an 8 KiB
/// encode buffer and an 8 KiB decode buffer. With one stream per proxy that was most of what
/// the agent spent per stream; SDS messages are a few KiB, and the buffers grow when one is
/// larger.
#[derive(Clone)]
pub struct SdsServer {
    sds: Arc<Sds>,
    generated: SecretDiscoveryServiceServer<Sds>,
}

impl SdsServer {
    /// The server over the agent's state.
    pub fn new(state: AgentState) -> SdsServer {
        let sds = Arc::new(Sds::new(state));
        SdsServer {
            generated: SecretDiscoveryServiceServer::from_arc(sds.clone()),
            sds,
        }
    }
}

impl NamedService for SdsServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for SdsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let sds = self.sds.clone();
        match request.uri().path() {
            "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets" => Box::pin(async {
                Ok(Grpc::new(SmallBuffers::default())
                    .streaming(StreamSecrets(sds), request)
                    .await)
            }),
            "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets" => Box::pin(async {
                Ok(Grpc::new(SmallBuffers::default())
                    .streaming(DeltaSecrets(sds), request)
                    .await)
            }),
            _ => self.generated.call(request),
        }
    }
}

/// Protobuf with 1 KiB buffers to start with, grown to each response's exact size.
///
/// tonic keeps one encode buffer per stream and reuses its allocation for the next response,
/// so a stream holds on to the largest allocation its responses grew it to. Grown a field at a
/// time, a 4.6 KiB state-of-the-world response doubled it to 8 KiB; reserved up front, it stays
/// near the response's size.
struct SmallBuffers<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ExactEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ExactEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(small_buffers())
    }
}

fn small_buffers() -> BufferSettings {
    // The yield threshold stays tonic's default (32 KiB).
    BufferSettings::new(1024, 32 * 1024)
}

/// Encodes a message after reserving room for all of it at once.
struct ExactEncoder<T>(PhantomData<fn(T)>);

impl<T: prost::Message> Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        small_buffers()
    }
}

struct StreamSecrets(Arc<Sds>);

impl StreamingService<DiscoveryRequest> for StreamSecrets {
    type Response = DiscoveryResponse;
    type ResponseStream = BoxStream<DiscoveryResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let sds = self.0.clone();
        Box::pin(async move { sds.stream_secrets(request).await })
    }
}

struct DeltaSecrets(Arc<Sds>);

impl StreamingService<DeltaDiscoveryRequest> for DeltaSecrets {
    type Response = DeltaDiscoveryResponse;
    type ResponseStream = BoxStream<DeltaDiscoveryResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let sds = self.0.clone();
        Box::pin(async move { sds.delta_secrets(request).await })
    }
}

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
        let (tx, responses) = outgoing();
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
        Ok(Response::new(responses))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let span = tracing::info_span!("sds", uid = caller.workload.uid, pid = ?caller.workload.pid, mode = "delta");
        let (tx, responses) = outgoing();
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
        Ok(Response::new(responses))
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
