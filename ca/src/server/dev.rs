//! `--dev`: a root kept in the data directory signs the intermediate, so that the CA needs
//! nothing else. Never for production: the root key sits next to the CA.

use std::time::SystemTime;

use halyard_proto::{TrustDomain, Ttl};
use tracing::warn;

use crate::authority::KeyType;
use crate::ceremony::{self, CeremonyError, DataDir, RootDir};

/// Makes a development root and intermediate in `data` unless it already has an intermediate.
pub(super) fn bootstrap(data: &DataDir, trust_domain: &TrustDomain) -> Result<(), CeremonyError> {
    let root = root_dir(data);
    warn!(
        root_key = %root.key().display(),
        "DEVELOPMENT MODE: the root key is kept in the data directory and signs intermediates \
         automatically. Never use --dev for a real trust domain."
    );
    if data.intermediate_cert().exists() {
        return Ok(());
    }
    let now = SystemTime::now();
    if !root.cert().exists() {
        ceremony::root_init(
            &root,
            trust_domain,
            KeyType::EcP256,
            ttl(10 * 365 * 86_400),
            now,
        )?;
    }
    let csr = data.path().join("intermediate.csr");
    let crt = data.path().join("intermediate-signed.crt");
    ceremony::intermediate_csr(data, trust_domain, KeyType::EcP256, &csr, now)?;
    ceremony::root_sign_intermediate(&root, &csr, &crt, ttl(365 * 86_400), now)?;
    ceremony::intermediate_import(data, &crt, &root.cert(), now)?;
    // Both were copied into the data directory's own files.
    let _ = std::fs::remove_file(&csr);
    let _ = std::fs::remove_file(&crt);
    Ok(())
}

/// The development root's directory inside `data`.
pub(super) fn root_dir(data: &DataDir) -> RootDir {
    RootDir::new(data.path().join("dev-root"))
}

fn ttl(secs: u64) -> Ttl {
    Ttl::from_secs(secs).unwrap_or(Ttl::ONE_HOUR)
}
