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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SERVICE_NAME, SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use http_body::Frame;
use prost::bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
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

/// A channel for a stream's responses, and the stream its response body sends from.
fn outgoing<T: Send + 'static>() -> (Outgoing<T>, BoxStream<T>) {
    let (tx, rx) = mpsc::channel(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|r: Result<Box<T>, Status>| r.map(|b| *b));
    (tx, Box::pin(stream))
}

/// The SDS service as the agent serves it: `StreamSecrets` and `DeltaSecrets` with small
/// buffers ([`streaming`]), `FetchSecrets` by the generated server.
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
            "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets" => {
                Box::pin(async move { Ok(streaming(request, |r| sds.stream_secrets(r)).await) })
            }
            "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets" => {
                Box::pin(async move { Ok(streaming(request, |r| sds.delta_secrets(r)).await) })
            }
            _ => self.generated.call(request),
        }
    }
}

/// Serves one bidirectional SDS stream: tonic decodes the requests (from a 1 KiB buffer, where
/// its default is 8 KiB), and every response is framed in a buffer of exactly its size, freed
/// once sent.
///
/// An SDS stream lives as long as its Envoy. tonic's response body keeps one encode buffer per
/// stream, at the size of the largest response so far; with 10,000 streams those buffers were
/// a fifth of the agent's memory, and a bundle push (a bigger `ROOTCA`) grew every one.
async fn streaming<B, Req, Resp, F, Fut>(
    request: http::Request<B>,
    serve: F,
) -> http::Response<tonic::body::Body>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + 'static,
    F: FnOnce(Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Response<BoxStream<Resp>>, Status>>,
{
    // The same answer tonic gives: this server accepts no compressed requests.
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        return Status::unimplemented(format!(
            "requests compressed with {encoding:?} are not accepted; send them uncompressed"
        ))
        .into_http();
    }
    let decoder = ProstCodec::<Resp, Req>::raw_decoder(BufferSettings::new(1024, 32 * 1024));
    let request =
        Request::from_http(request.map(|body| Streaming::new_request(decoder, body, None, None)));
    match serve(request).await {
        Ok(response) => {
            let (metadata, responses, extensions) = response.into_parts();
            let mut http = http::Response::new(tonic::body::Body::new(Framed {
                responses: Some(responses),
            }));
            *http.headers_mut() = metadata.into_headers();
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            *http.extensions_mut() = extensions;
            http
        }
        Err(status) => status.into_http(),
    }
}

/// A stream of responses as a gRPC response body: each message framed on its own, then the
/// stream's status as trailers.
struct Framed<T> {
    /// None once the trailers are sent.
    responses: Option<BoxStream<T>>,
}

impl<T: prost::Message> Body for Framed<T> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(responses) = self.responses.as_mut() else {
            return Poll::Ready(None);
        };
        let status = match std::task::ready!(responses.as_mut().poll_next(cx)) {
            Some(Ok(message)) => return Poll::Ready(Some(frame(&message))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.responses = None;
        let mut trailers = http::HeaderMap::new();
        Poll::Ready(Some(
            status
                .add_header(&mut trailers)
                .map(|()| Frame::trailers(trailers)),
        ))
    }

    fn is_end_stream(&self) -> bool {
        self.responses.is_none()
    }
}

/// One gRPC message frame: uncompressed, its length, the message; allocated once, exactly.
fn frame<T: prost::Message>(message: &T) -> Result<Frame<Bytes>, Status> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| Status::internal(format!("a response of {len} bytes cannot be framed")))?;
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    message
        .encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(Frame::data(buf.freeze()))
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

#[cfg(test)]
mod tests;
