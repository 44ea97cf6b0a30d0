//! Upstream CAs that sign Halyard's intermediate over the network: AWS Private CA.
//!
//! The intermediate's key is made by Halyard and never leaves the process: an upstream gets only
//! its CSR, and what it returns (the intermediate, its chain and the root) is checked before
//! anything uses it. Calls are rate-limited below the upstream's quota, and throttling and
//! network errors are retried with backoff, never fatal. Deciding *when* to ask for an intermediate (rotation)
//! and storing it belong to the server.

pub mod aws_pca;
mod rate;

use std::path::PathBuf;
use std::time::Duration;

use halyard_proto::files::FileError;

use crate::authority::CsrError;

pub use aws_pca::{
    AwsPca, AwsPcaConfig, CaArn, CaDescription, CaKeyAlgorithm, DEFAULT_TEMPLATE_ARN, DirLedger,
    Expected, IdempotencyToken, IssuanceLedger, IssuedIntermediate, MemoryLedger, PcaChain,
    PcaChainError, SigningAlgorithm, UsageMode,
};

/// Why an upstream could not be set up or did not deliver a usable intermediate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// A configuration value that cannot be used.
    #[error("aws_pca: key {key}: {message}")]
    Config {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// An extra root file that cannot be read or holds no usable root.
    #[error("aws_pca: extra root {path}: {message}")]
    ExtraRoot {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// AWS refused a call, or it kept failing until the retries ran out.
    #[error(
        "AWS Private CA {operation} failed with {code}: {message} (after {attempts} attempt(s)){hint}"
    )]
    Aws {
        /// The API operation, e.g. `IssueCertificate`.
        operation: &'static str,
        /// The AWS error code (e.g. `AccessDeniedException`), or the kind of local failure
        /// (`DispatchFailure`, `Timeout`, …) when no response came back.
        code: String,
        /// The error message AWS sent, or what failed locally.
        message: String,
        /// How many times the call was made.
        attempts: u32,
        /// What to check, for errors that have a usual cause ("" otherwise).
        hint: &'static str,
    },
    /// The certificate authority cannot issue now.
    #[error(
        "AWS Private CA {ca_arn} is {status}, not ACTIVE: it cannot issue the intermediate until it is \
         activated (ImportCertificateAuthorityCertificate) or re-enabled"
    )]
    CaNotActive {
        /// The CA.
        ca_arn: String,
        /// Its status, as AWS reports it.
        status: String,
    },
    /// The CA's key or the configured signing algorithm cannot be used.
    #[error("AWS Private CA {ca_arn}: {message}")]
    Algorithm {
        /// The CA.
        ca_arn: String,
        /// What does not fit.
        message: String,
    },
    /// The intermediate asked for cannot be issued by this CA (lifetime, CSR).
    #[error("cannot ask AWS Private CA for this intermediate: {0}")]
    Request(String),
    /// The CSR does not parse or is not an intermediate's CSR.
    #[error("intermediate CSR: {0}")]
    Csr(#[from] CsrError),
    /// The certificate was not issued within the wait.
    #[error(
        "AWS Private CA did not issue {certificate_arn} within {waited:?}; it is remembered and will \
         be fetched, not requested again, on the next attempt"
    )]
    NotIssuedInTime {
        /// The certificate being waited for.
        certificate_arn: String,
        /// How long was waited.
        waited: Duration,
    },
    /// What AWS returned is not a usable intermediate.
    #[error("AWS Private CA returned an unusable intermediate: {0}")]
    Chain(#[from] PcaChainError),
    /// The issuance ledger could not be read or written.
    #[error("issuance ledger: {0}")]
    Ledger(#[from] FileError),
}
