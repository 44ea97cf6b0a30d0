//! Halyard's certificate authority.
//!
//! - [`authority`] signs: roots, intermediates and X509-SVID leaves, from parsed and verified
//!   CSRs, under a [`authority::Policy`]. It knows no network, no SQL and no files.
//! - [`files`] reads and writes key and certificate files: secrets 0600, atomically, and refused
//!   when group or other can read them.
//! - [`ceremony`] is the offline root ceremony and the one-shot signer over those two: the root
//!   directory and the CA data directory, file by file.
//! - [`upstream`] gets the intermediate signed by an upstream CA over the network (AWS Private
//!   CA): key and CSR made here, the returned chain checked before use, calls rate-limited and
//!   retried.
//! - [`kube`] is Kubernetes: service-account token authentication (TokenReview) and the
//!   cert-manager external issuer.
//! - [`cli`] is the `halyard-ca` command line.

pub mod api;
pub mod authority;
pub mod ceremony;
pub mod cli;
pub mod config;
/// Key and certificate files (shared with the node agent).
pub use halyard_proto::files;
pub mod kube;
pub mod server;
pub mod store;
pub mod upstream;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
