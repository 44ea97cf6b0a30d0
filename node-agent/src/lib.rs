//! Halyard's node agent.
//!
//! One per node: it attests its node to `halyard-ca`, keeps each workload's private key on the
//! node, and serves X509-SVIDs to Envoy over SDS and to workloads over the SPIFFE Workload API,
//! rotating them before they expire.
//!
//! - [`attest`]: who is calling, as selectors, and which identities they may hold.
//! - [`cache`]: keys, CSRs, renewal, the last good certificate.
//! - [`node`]: the link to the CA: attestation, the node SVID, trust snapshots.
//! - [`sds`]: Envoy's Secret Discovery Service.
//! - [`workload_api`]: the SPIFFE Workload API.

pub mod attest;
pub mod cache;
pub mod caller;
pub mod cli;
pub mod node;
pub mod sds;
pub mod server;
pub mod workload_api;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
