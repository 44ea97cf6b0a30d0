//! Properties the fuzz targets assert, shared with the tests that replay their corpus.
//!
//! Each function takes arbitrary bytes and panics if, and only if, a property is violated. They
//! sign with one in-memory authority ([`FuzzPki`]), made once per process from this crate's own
//! root and intermediate code (no test-only verifiers), and check what it signs with
//! `x509-parser` and [`halyard_proto::validate_leaf`].
//!
//! Compiled for tests and with the `fuzzing` feature only.

mod config;
mod crl;
mod csr_policy;
mod grpc_requests;

use std::sync::OnceLock;
use std::time::SystemTime;

use halyard_proto::{TrustDomain, Ttl};
use zeroize::Zeroizing;

use crate::authority::{
    Authority, Csr, KeyPolicy, KeyType, Policy, PrivateKey, RootCa, intermediate_csr,
};

pub use config::config;
pub use crl::crl;
pub use csr_policy::csr_policy;
pub use grpc_requests::grpc_requests;

/// The trust domain the fuzzing authority serves.
pub const TRUST_DOMAIN: &str = "example.org";

/// A P-256 root and intermediate for [`TRUST_DOMAIN`], made in memory.
pub struct FuzzPki {
    /// The root, which signed the intermediate.
    pub root: RootCa,
    /// The intermediate, with a CRL base URL so that leaves carry a distribution point.
    pub authority: Authority,
    /// The intermediate's key, PKCS#8 PEM, to rebuild it from other chains.
    pub intermediate_key_pem: Zeroizing<String>,
}

/// The process's one fuzzing PKI, valid for a year from its first use.
///
/// # Panics
///
/// If the root or intermediate cannot be made: nothing can be checked without them.
pub fn pki() -> &'static FuzzPki {
    static PKI: OnceLock<FuzzPki> = OnceLock::new();
    PKI.get_or_init(|| match make_pki() {
        Ok(pki) => pki,
        Err(e) => panic!("cannot make the fuzzing PKI: {e}"),
    })
}

fn make_pki() -> Result<FuzzPki, String> {
    let now = SystemTime::now();
    let td = TrustDomain::new(TRUST_DOMAIN).map_err(|e| e.to_string())?;
    let ttl = |text: &str| text.parse::<Ttl>().map_err(|e| e.to_string());
    let root =
        RootCa::generate(&td, KeyType::EcP256, ttl("10y")?, now).map_err(|e| e.to_string())?;
    let key = PrivateKey::generate(KeyType::EcP256).map_err(|e| e.to_string())?;
    let csr = intermediate_csr(&td, &key, now).map_err(|e| e.to_string())?;
    let csr = Csr::parse(csr.as_bytes(), &KeyPolicy::for_ca()).map_err(|e| e.to_string())?;
    let cert = root
        .sign_intermediate(&csr, ttl("1y")?, now)
        .map_err(|e| e.to_string())?;
    let intermediate_key_pem = key.to_pkcs8_pem();
    let policy = Policy {
        crl_base_url: Some("http://halyard-ca.example.org:9090/crl".to_owned()),
        ..Policy::default()
    };
    let authority = Authority::new(key, vec![cert], policy).map_err(|e| e.to_string())?;
    Ok(FuzzPki {
        root,
        authority,
        intermediate_key_pem,
    })
}

#[cfg(test)]
mod tests;
