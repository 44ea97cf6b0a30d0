//! The SPIFFE Workload API (X.509): `FetchX509SVID` and `FetchX509Bundles` streams on the
//! agent's socket. Requests must carry the `workload.spiffe.io: true` header.

use std::pin::Pin;
use std::sync::Arc;

use halyard_proto::SpiffeId;
use halyard_proto::api::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use halyard_proto::api::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest,
    X509svidResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};

use crate::cache::{SvidSlot, TrustState};
use crate::caller::{AgentState, Caller, shown};

/// The Workload API service.
pub struct WorkloadApi {
    state: AgentState,
}

impl WorkloadApi {
    /// The service over the agent's state.
    pub fn new(state: AgentState) -> WorkloadApi {
        WorkloadApi { state }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Refuses requests without the security header the specification requires, or with another
/// value than `true`.
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("workload.spiffe.io") {
        Some(value) if value == "true" => Ok(()),
        Some(value) => Err(Status::invalid_argument(format!(
            "security header workload.spiffe.io is {}: it must be \"true\"",
            value.to_str().map_or_else(|_| "not text".to_owned(), shown)
        ))),
        None => Err(Status::invalid_argument(
            "security header missing from request: workload.spiffe.io: true",
        )),
    }
}

fn concat(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.concat()
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented("JWT-SVIDs are not issued yet"))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented("JWT bundles are not served yet"))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented("JWT-SVIDs are not validated yet"))
    }

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let trust = self.state.cache.trust();
        if caller.identities(&trust.borrow()).is_empty() {
            return Err(caller.refusal("any identity"));
        }
        let span =
            info_span!("workload_api", uid = caller.workload.uid, pid = ?caller.workload.pid);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(stream_svids(self.state.clone(), caller, tx).instrument(span));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let caller = Caller::of(&request, self.state.attestor.as_ref()).await?;
        let mut trust = self.state.cache.trust();
        if caller.identities(&trust.borrow()).is_empty() {
            return Err(caller.refusal("any identity"));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let state = trust.borrow_and_update().clone();
                if let Some(td) = &state.trust_domain {
                    let response = X509BundlesResponse {
                        crl: state.crls.clone(),
                        bundles: [(td.id().to_string(), concat(&state.roots))]
                            .into_iter()
                            .collect(),
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = tx.closed() => return,
                    r = trust.changed() => if r.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Sends every SVID the caller may hold, whenever one of them or the trust state changes.
async fn stream_svids(
    state: AgentState,
    caller: Caller,
    tx: mpsc::Sender<Result<X509svidResponse, Status>>,
) {
    let mut trust = state.cache.trust();
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let mut watched: Vec<(
        SpiffeId,
        watch::Receiver<SvidSlot>,
        tokio::task::JoinHandle<()>,
    )> = Vec::new();
    let mut last: Option<Vec<String>> = None;
    loop {
        let snapshot: Arc<TrustState> = trust.borrow_and_update().clone();
        let ids = caller.identities(&snapshot);
        if ids.is_empty() {
            let _ = tx.send(Err(caller.refusal("any identity"))).await;
            break;
        }
        watched.retain(|(id, _, forwarder)| {
            let keep = ids.contains(id);
            if !keep {
                forwarder.abort();
            }
            keep
        });
        for id in &ids {
            if watched.iter().any(|(w, _, _)| w == id) {
                continue;
            }
            let Ok(rx) = state.cache.subscribe(id).await else {
                return;
            };
            let mut changes = rx.clone();
            let notify = changed_tx.clone();
            let forwarder = tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let _ = notify.try_send(());
                }
            });
            watched.push((id.clone(), rx, forwarder));
        }
        let svids: Vec<_> = watched
            .iter()
            .filter_map(|(_, rx, _)| rx.borrow().svid.clone())
            .collect();
        if svids.len() == watched.len() {
            let serials: Vec<String> = svids.iter().map(|s| s.serial.clone()).collect();
            if last.as_ref() != Some(&serials) {
                let bundle = concat(&snapshot.roots);
                let response = X509svidResponse {
                    svids: svids
                        .iter()
                        .map(|svid| X509svid {
                            spiffe_id: svid.spiffe_id.to_string(),
                            x509_svid: concat(&svid.chain),
                            x509_svid_key: svid.key_pkcs8_der().to_vec(),
                            bundle: bundle.clone(),
                            hint: String::new(),
                        })
                        .collect(),
                    crl: snapshot.crls.clone(),
                    federated_bundles: Default::default(),
                };
                debug!(?serials, "sending X509-SVIDs");
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
                last = Some(serials);
            }
        }
        tokio::select! {
            () = tx.closed() => break,
            r = trust.changed() => if r.is_err() { break },
            Some(()) = changed.recv() => {}
        }
    }
    for (_, _, forwarder) in watched {
        forwarder.abort();
    }
}
