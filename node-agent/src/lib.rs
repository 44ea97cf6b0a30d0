//! Halyard's node agent.
//!
//! One per node: it attests its node to `halyard-ca`, keeps each workload's private key on the
//! node, and serves X509-SVIDs to Envoy over SDS and to workloads over the SPIFFE Workload API,
//! rotating them before they expire.
//!
//! - [`attest`]: who is calling, as selectors, and which identities they may hold.
//! - [`cache`]: keys, CSRs, renewal, the last good certificate.

pub mod attest;
pub mod cache;
