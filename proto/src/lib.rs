//! The contract between the Halyard CA and its node agents.
//!
//! This crate holds the identity types both sides share — [`TrustDomain`] and [`SpiffeId`], which
//! can only exist valid per the SPIFFE-ID specification — the [`Ttl`] of a certificate request, and
//! X509-SVID validation ([`validate_leaf`], [`validate_signing_cert`]), and the gRPC contracts
//! in [`api`]: `halyard.ca.v1` and Istio's `istio.v1.auth` CA service.
//!
//! ```
//! use halyard_proto::{SpiffeId, TrustDomain};
//!
//! let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse()?;
//! assert_eq!(id.trust_domain(), &TrustDomain::new("cluster.local")?);
//! assert_eq!(id.path(), "/ns/default/sa/web");
//! assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
//!
//! // Only valid IDs can exist: every rule of the SPIFFE-ID spec is checked on parse.
//! assert!("spiffe://Cluster.local/web".parse::<SpiffeId>().is_err());
//! assert!("spiffe://cluster.local/web/".parse::<SpiffeId>().is_err());
//! # Ok::<(), halyard_proto::SpiffeIdError>(())
//! ```

pub mod api;
mod bundle;
pub mod files;
mod spiffe_id;
mod svid;
pub mod transport;
mod trust_domain;
mod ttl;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use bundle::{BundleError, TrustBundle};
pub use spiffe_id::{SpiffeId, SpiffeIdError};
pub use svid::{SigningCert, SvidError, X509Svid, validate_leaf, validate_signing_cert};
pub use trust_domain::TrustDomain;
pub use ttl::{Ttl, TtlError};
