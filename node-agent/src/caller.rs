//! The caller on the agent's socket: its credentials, selectors and the identities it may hold.

use std::sync::Arc;

use halyard_proto::SpiffeId;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::attest::{AttestError, Attestor, Workload, entitled};
use crate::cache::TrustState;

/// Who is calling, attested.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The kernel's view of it.
    pub workload: Workload,
    /// What the attestor says of it.
    pub selectors: Vec<String>,
    /// Identities it holds without a registration entry (its pod's, in Kubernetes mode).
    pub implied: Vec<SpiffeId>,
}

impl Caller {
    /// Attests the caller of `request` with `attestor`. The credentials are read now; the
    /// returned future does not hold on to the request.
    pub fn of<'a, T>(
        request: &Request<T>,
        attestor: &'a dyn Attestor,
    ) -> impl Future<Output = Result<Caller, Status>> + Send + use<'a, T> {
        let workload = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| Workload {
                pid: cred.pid(),
                uid: cred.uid(),
                gid: cred.gid(),
            });
        async move {
            let workload = workload.ok_or_else(|| {
                Status::unauthenticated(
                    "the caller's credentials are unknown: connect over the agent's unix socket",
                )
            })?;
            let selectors = attestor
                .selectors(&workload)
                .await
                .map_err(|e| attest_status(&e))?;
            let implied = attestor.implied_identities(&selectors);
            Ok(Caller {
                workload,
                selectors,
                implied,
            })
        }
    }

    /// The identities this caller may hold under `trust`'s entries: first those its
    /// attestation implies (its pod's service account in Kubernetes mode), then those of the
    /// entries that match its selectors.
    pub fn identities(&self, trust: &TrustState) -> Vec<SpiffeId> {
        let mut ids = self.implied.clone();
        for id in entitled(&trust.entries, &self.selectors) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// A refusal naming the caller, for when it may hold nothing (or not `what`).
    pub fn refusal(&self, what: &str) -> Status {
        Status::permission_denied(format!(
            "workload uid {} gid {}{} may not hold {what}: no registration entry of this node matches its selectors [{}]",
            self.workload.uid,
            self.workload.gid,
            self.workload
                .pid
                .map_or(String::new(), |p| format!(" pid {p}")),
            self.selectors.join(", ")
        ))
    }
}

/// How much of a caller's text a refusal quotes.
const SHOWN_BYTES: usize = 128;

/// `text` quoted for a refusal, cut after [`SHOWN_BYTES`] bytes: a status message travels in an
/// HTTP/2 trailer, and echoing a megabyte name would make the refusal itself unreadable (the
/// client's header limit) instead of precise.
pub(crate) fn shown(text: &str) -> String {
    if text.len() <= SHOWN_BYTES {
        return format!("{text:?}");
    }
    let mut end = SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// The status a caller sees when it cannot be attested: a pod the agent has not seen yet is
/// worth retrying, anything else is a refusal.
fn attest_status(error: &AttestError) -> Status {
    match error {
        AttestError::PodUnknown { .. } => Status::unavailable(error.to_string()),
        _ => Status::permission_denied(error.to_string()),
    }
}

/// Shared by the socket's services.
#[derive(Clone)]
pub struct AgentState {
    /// The SVID cache.
    pub cache: crate::cache::Cache,
    /// The workload attestor.
    pub attestor: Arc<dyn Attestor>,
}
