//! The caller on the agent's socket: its credentials, selectors and the identities it may hold.

use std::sync::Arc;

use halyard_proto::SpiffeId;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::attest::{Attestor, Workload, entitled};
use crate::cache::TrustState;

/// Who is calling, attested.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The kernel's view of it.
    pub workload: Workload,
    /// What the attestor says of it.
    pub selectors: Vec<String>,
}

impl Caller {
    /// Attests the caller of `request` with `attestor`.
    pub fn of<T>(request: &Request<T>, attestor: &dyn Attestor) -> Result<Caller, Status> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the caller's credentials are unknown: connect over the agent's unix socket",
                )
            })?;
        let workload = Workload {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        };
        let selectors = attestor
            .selectors(&workload)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(Caller {
            workload,
            selectors,
        })
    }

    /// The identities this caller may hold under `trust`'s entries.
    pub fn identities(&self, trust: &TrustState) -> Vec<SpiffeId> {
        entitled(&trust.entries, &self.selectors)
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

/// Shared by the socket's services.
#[derive(Clone)]
pub struct AgentState {
    /// The SVID cache.
    pub cache: crate::cache::Cache,
    /// The workload attestor.
    pub attestor: Arc<dyn Attestor>,
}
