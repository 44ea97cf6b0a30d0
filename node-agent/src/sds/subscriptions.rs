//! What one SDS stream serves: the names it asked for, resolved against the caller's identities,
//! and a wake-up whenever any of them changes.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use halyard_proto::SpiffeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};
use tracing::debug;

use super::entitlements::{CallerView, Entitlements};
use super::secrets::{ROOTCA, tls_certificate};
use crate::cache::{SvidSlot, TrustState};
use crate::caller::{AgentState, Caller, shown};

/// Most names one stream (or one `FetchSecrets`) may ask for. Every name costs a secret in each
/// response: without a limit, one request of a few megabytes naming `ROOTCA` again and again
/// would make the agent build responses of hundreds of megabytes. Envoy asks for a handful.
pub const MAX_RESOURCE_NAMES: usize = 1024;

/// One resource as it stands: its name, a version that changes with its content, the secret.
pub(super) struct Resource {
    pub(super) name: String,
    pub(super) version: String,
    pub(super) secret: Any,
}

/// Where a name's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Svid(SpiffeId),
    RootCa,
}

/// The state of all requested names.
pub(super) struct Current {
    /// Names whose content is ready.
    pub(super) ready: Vec<Resource>,
    /// Names still waiting for a certificate.
    pub(super) pending: Vec<String>,
    /// Names the caller may no longer have.
    pub(super) withdrawn: Vec<String>,
}

pub(super) struct Subscriptions {
    state: AgentState,
    caller: Caller,
    entitlements: Entitlements,
    trust: watch::Receiver<Arc<TrustState>>,
    names: Vec<String>,
    svids: HashMap<SpiffeId, (watch::Receiver<SvidSlot>, JoinHandle<()>)>,
    changed_tx: mpsc::Sender<()>,
    changed_rx: mpsc::Receiver<()>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for (_, forwarder) in self.svids.values() {
            forwarder.abort();
        }
    }
}

impl Subscriptions {
    pub(super) fn new(
        state: AgentState,
        caller: Caller,
        entitlements: Entitlements,
    ) -> Subscriptions {
        let trust = state.cache.trust();
        let (changed_tx, changed_rx) = mpsc::channel(1);
        Subscriptions {
            state,
            caller,
            entitlements,
            trust,
            names: Vec::new(),
            svids: HashMap::new(),
            changed_tx,
            changed_rx,
        }
    }

    /// The requested names.
    pub(super) fn names(&self) -> &[String] {
        &self.names
    }

    fn resolve(&self, name: &str, view: &CallerView) -> Result<Source, Status> {
        if name == ROOTCA {
            return Ok(Source::RootCa);
        }
        if name == "default" {
            return view
                .first(&self.caller)
                .map(Source::Svid)
                .ok_or_else(|| self.caller.refusal("any identity (resource \"default\")"));
        }
        match SpiffeId::new(name) {
            Ok(id) if view.may_hold(&self.caller, &id) => Ok(Source::Svid(id)),
            Ok(id) => Err(self.caller.refusal(id.as_str())),
            Err(e) if name.starts_with("spiffe://") => Err(Status::invalid_argument(format!(
                "resource name {} is not a valid SPIFFE ID: {e}",
                shown(name)
            ))),
            Err(_) => Err(Status::invalid_argument(format!(
                "resource name {} is neither \"default\", \"{ROOTCA}\" nor a SPIFFE ID",
                shown(name)
            ))),
        }
    }

    /// Serves `names` from now on. Every name must be one the caller may have, and there may be
    /// at most [`MAX_RESOURCE_NAMES`].
    pub(super) async fn set(&mut self, names: &[String]) -> Result<(), Status> {
        if names.len() > MAX_RESOURCE_NAMES {
            return Err(Status::invalid_argument(format!(
                "{} resource names requested; the limit is {MAX_RESOURCE_NAMES}",
                names.len()
            )));
        }
        let trust = self.trust.borrow().clone();
        let view = self.entitlements.of(&trust);
        let mut wanted = Vec::new();
        for name in names {
            if let Source::Svid(id) = self.resolve(name, &view)? {
                wanted.push(id);
            }
        }
        self.names = names.to_vec();
        self.watch(wanted).await
    }

    /// Subscribes to exactly `ids` in the cache.
    async fn watch(&mut self, ids: Vec<SpiffeId>) -> Result<(), Status> {
        self.svids.retain(|id, (_, forwarder)| {
            let keep = ids.contains(id);
            if !keep {
                forwarder.abort();
            }
            keep
        });
        for id in ids {
            if self.svids.contains_key(&id) {
                continue;
            }
            let rx = self
                .state
                .cache
                .subscribe(&id)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut changes = rx.clone();
            let tx = self.changed_tx.clone();
            let forwarder = tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    // A full channel already holds a wake-up: nothing is lost.
                    let _ = tx.try_send(());
                }
            });
            self.svids.insert(id, (rx, forwarder));
        }
        Ok(())
    }

    /// The content of every requested name now.
    pub(super) async fn current(&mut self) -> Result<Current, Status> {
        let trust = self.trust.borrow_and_update().clone();
        let view = self.entitlements.of(&trust);
        let mut current = Current {
            ready: Vec::new(),
            pending: Vec::new(),
            withdrawn: Vec::new(),
        };
        let mut wanted = Vec::new();
        for name in self.names.clone() {
            match self.resolve(&name, &view) {
                Ok(Source::RootCa) if trust.roots.is_empty() => current.pending.push(name),
                Ok(Source::RootCa) => current.ready.push(Resource {
                    version: trust_version(&trust),
                    secret: view.rootca(),
                    name,
                }),
                Ok(Source::Svid(id)) => {
                    let svid = self
                        .svids
                        .get(&id)
                        .and_then(|(rx, _)| rx.borrow().svid.clone());
                    wanted.push(id);
                    match svid {
                        Some(svid) => current.ready.push(Resource {
                            version: svid.serial.clone(),
                            secret: tls_certificate(&name, &svid),
                            name,
                        }),
                        None => current.pending.push(name),
                    }
                }
                Err(_) => current.withdrawn.push(name),
            }
        }
        // "default" may now mean another identity, or an identity may have gone.
        self.watch(wanted).await?;
        Ok(current)
    }

    /// Waits until the trust state or any watched certificate changes.
    pub(super) async fn changed(&mut self) -> Result<(), Status> {
        tokio::select! {
            r = self.trust.changed() => r.map_err(|_| Status::unavailable("the agent is shutting down")),
            r = self.changed_rx.recv() => r.ok_or_else(|| Status::unavailable("the agent is shutting down")),
        }
    }

    /// Waits until every requested name is ready, and returns them.
    pub(super) async fn wait_all(&mut self) -> Result<Vec<(String, Any)>, Status> {
        loop {
            let current = self.current().await?;
            if let Some(name) = current.withdrawn.first() {
                return Err(self.caller.refusal(name));
            }
            if current.pending.is_empty() {
                return Ok(current
                    .ready
                    .into_iter()
                    .map(|r| (r.name, r.secret))
                    .collect());
            }
            self.changed().await?;
        }
    }
}

/// What woke a stream up.
pub(super) enum Event<R> {
    /// Envoy sent a request.
    Request(Box<R>),
    /// A served resource changed.
    Changed,
    /// Envoy or the agent is gone.
    Done,
}

/// Waits for the next request from Envoy, or (once `started`) a change of a served resource.
pub(super) async fn next_event<R, T>(
    requests: &mut Streaming<R>,
    subscriptions: &mut Subscriptions,
    started: bool,
    tx: &super::Outgoing<T>,
) -> Event<R> {
    tokio::select! {
        request = requests.message() => match request {
            Ok(Some(request)) => Event::Request(Box::new(request)),
            Ok(None) => Event::Done,
            Err(status) => {
                debug!(%status, "Envoy closed the stream");
                Event::Done
            }
        },
        changed = subscriptions.changed(), if started => match changed {
            Ok(()) => Event::Changed,
            Err(_) => Event::Done,
        },
        () = tx.closed() => Event::Done,
    }
}

/// A version of the validation context that changes with its roots and CRLs.
fn trust_version(trust: &TrustState) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for der in trust.roots.iter().chain(&trust.crls) {
        ctx.update(&(der.len() as u64).to_be_bytes());
        ctx.update(der);
    }
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
