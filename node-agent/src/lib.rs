//! Halyard's node agent.
//!
//! One per node: it attests its node to `halyard-ca`, keeps each workload's private key on the
//! node, and serves X509-SVIDs to Envoy over SDS and to workloads over the SPIFFE Workload API,
//! rotating them before they expire and replacing them at once when they are revoked.
//!
//! This crate is a skeleton for now: the identity types it shares with the CA live in
//! [`halyard_proto`].

pub use halyard_proto::{SpiffeId, TrustDomain};
