//! The offline root ceremony and the one-shot signer, file by file.
//!
//! A root directory holds `root.crt` and `root.key`; a CA data directory holds
//! `intermediate.key`, `intermediate.crt` (the intermediate followed by any upstream
//! intermediates) and `bundle.pem` (every trusted root). Keys are written 0600 and refused when
//! group or other can read them; every file is replaced atomically.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use halyard_proto::{TrustDomain, Ttl};

use crate::authority::{
    self, Authority, AuthorityError, ChainError, Csr, CsrError, Grant, IssuedSvid, KeyError,
    KeyPolicy, KeyType, Policy, PrivateKey, RootCa, RootError, SignError,
};
use crate::files::{self, FileError, Overwrite};

mod layout;

pub use layout::{DataDir, RootDir};

/// What went wrong in a ceremony step, naming the file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// A file could not be read or written, or is unsafe.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key file does not hold a usable key.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// A certificate file does not hold certificates.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CSR file holds no acceptable CSR.
    #[error("{path}: {source}")]
    Csr {
        /// The CSR file.
        path: PathBuf,
        /// What is wrong with it.
        source: CsrError,
    },
    /// The root could not be made, loaded or used.
    #[error("{dir}: {source}")]
    Root {
        /// The root directory.
        dir: PathBuf,
        /// What is wrong.
        source: RootError,
    },
    /// The intermediate does not fit its key, or is no CA.
    #[error("{path}: {source}")]
    Intermediate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        source: AuthorityError,
    },
    /// The intermediate does not chain to the root.
    #[error("{path} does not chain to {root}: {source}")]
    Chain {
        /// The certificate file.
        path: PathBuf,
        /// The root file.
        root: PathBuf,
        /// Where the chain breaks.
        source: Box<ChainError>,
    },
    /// The intermediate's trust domain differs from what was asked.
    #[error("{path} is for trust domain {found}, not {expected}")]
    TrustDomainMismatch {
        /// The certificate file.
        path: PathBuf,
        /// What it says.
        found: TrustDomain,
        /// What was expected.
        expected: TrustDomain,
    },
    /// A root directory or data directory that already holds what would be created.
    #[error("{0} already exists; refusing to replace it")]
    AlreadyExists(PathBuf),
    /// A data directory without an intermediate.
    #[error(
        "{0} does not exist: run `halyard-ca intermediate csr` and `intermediate import` first"
    )]
    NoIntermediate(PathBuf),
    /// The signer refused the request.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Creates a new offline root in `dir`: `root.key` (0600) and `root.crt`.
pub fn root_init(
    dir: &RootDir,
    trust_domain: &TrustDomain,
    key_type: KeyType,
    ttl: Ttl,
    now: SystemTime,
) -> Result<RootCa, CeremonyError> {
    for path in [dir.key(), dir.cert()] {
        if path.exists() {
            return Err(CeremonyError::AlreadyExists(path));
        }
    }
    dir.create()?;
    let root = RootCa::generate(trust_domain, key_type, ttl, now).map_err(|source| {
        CeremonyError::Root {
            dir: dir.path().to_owned(),
            source,
        }
    })?;
    files::write_secret(
        &dir.key(),
        root.key().to_pkcs8_pem().as_bytes(),
        Overwrite::Refuse,
    )?;
    let pem = authority::certs_to_pem([root.cert_der()]);
    files::write_public(&dir.cert(), pem.as_bytes(), Overwrite::Refuse)?;
    Ok(root)
}

/// Loads the root in `dir`, refusing a key file others can read or a key that does not match.
pub fn load_root(dir: &RootDir) -> Result<RootCa, CeremonyError> {
    let key = read_key(&dir.key())?;
    let cert = read_certs(&dir.cert())?.swap_remove(0);
    RootCa::load(key, cert).map_err(|source| CeremonyError::Root {
        dir: dir.path().to_owned(),
        source,
    })
}

/// Signs the intermediate CSR at `csr` with the root in `dir`; writes the certificate PEM to `out`.
pub fn root_sign_intermediate(
    dir: &RootDir,
    csr: &Path,
    out: &Path,
    ttl: Ttl,
    now: SystemTime,
) -> Result<Vec<u8>, CeremonyError> {
    let root = load_root(dir)?;
    let csr = read_csr(csr, &KeyPolicy::for_ca())?;
    let cert = root
        .sign_intermediate(&csr, ttl, now)
        .map_err(|source| CeremonyError::Root {
            dir: dir.path().to_owned(),
            source,
        })?;
    let pem = authority::certs_to_pem([cert.as_slice()]);
    files::write_public(out, pem.as_bytes(), Overwrite::Allow)?;
    Ok(cert)
}

/// Makes the intermediate's key in the data dir (or reuses one not yet imported) and writes its
/// CSR to `out`. Returns whether an existing key was reused.
pub fn intermediate_csr(
    data: &DataDir,
    trust_domain: &TrustDomain,
    key_type: KeyType,
    out: &Path,
    now: SystemTime,
) -> Result<bool, CeremonyError> {
    if data.intermediate_cert().exists() {
        return Err(CeremonyError::AlreadyExists(data.intermediate_cert()));
    }
    data.create()?;
    let key_path = data.intermediate_key();
    let (key, reused) = if key_path.exists() {
        (read_key(&key_path)?, true)
    } else {
        let key = PrivateKey::generate(key_type).map_err(|source| CeremonyError::Key {
            path: key_path.clone(),
            source,
        })?;
        files::write_secret(&key_path, key.to_pkcs8_pem().as_bytes(), Overwrite::Refuse)?;
        (key, false)
    };
    let csr = authority::intermediate_csr(trust_domain, &key, now).map_err(|source| {
        CeremonyError::Intermediate {
            path: key_path,
            source,
        }
    })?;
    files::write_public(out, csr.as_bytes(), Overwrite::Allow)?;
    Ok(reused)
}

/// Imports the intermediate at `cert` (followed by any upstream intermediates) into the data dir,
/// after checking it matches the stored key, is a CA with keyCertSign, is valid now and chains
/// to the root at `root`. Writes `intermediate.crt` and `bundle.pem`.
pub fn intermediate_import(
    data: &DataDir,
    cert: &Path,
    root: &Path,
    now: SystemTime,
) -> Result<Authority, CeremonyError> {
    let key_path = data.intermediate_key();
    if !key_path.exists() {
        return Err(CeremonyError::NoIntermediate(key_path));
    }
    let key = read_key(&key_path)?;
    let chain = read_certs(cert)?;
    let roots = read_certs(root)?;
    let authority = Authority::new(key, chain, Policy::default()).map_err(|source| {
        CeremonyError::Intermediate {
            path: cert.to_owned(),
            source,
        }
    })?;
    authority::verify_chain(authority.chain(), &roots, now).map_err(|source| {
        CeremonyError::Chain {
            path: cert.to_owned(),
            root: root.to_owned(),
            source: Box::new(source),
        }
    })?;
    let chain_pem = authority::certs_to_pem(authority.chain().iter().map(Vec::as_slice));
    let bundle_pem = authority::certs_to_pem(roots.iter().map(Vec::as_slice));
    // The bundle first: an intermediate.crt without its bundle would be unusable.
    files::write_public(&data.bundle(), bundle_pem.as_bytes(), Overwrite::Allow)?;
    files::write_public(
        &data.intermediate_cert(),
        chain_pem.as_bytes(),
        Overwrite::Allow,
    )?;
    Ok(authority)
}

/// Loads the data dir's intermediate under `policy`, checking it still chains to the bundle.
pub fn load_authority(
    data: &DataDir,
    policy: Policy,
    now: SystemTime,
) -> Result<Authority, CeremonyError> {
    let cert_path = data.intermediate_cert();
    if !cert_path.exists() {
        return Err(CeremonyError::NoIntermediate(cert_path));
    }
    let key = read_key(&data.intermediate_key())?;
    let chain = read_certs(&cert_path)?;
    let roots = read_certs(&data.bundle())?;
    let authority =
        Authority::new(key, chain, policy).map_err(|source| CeremonyError::Intermediate {
            path: cert_path.clone(),
            source,
        })?;
    authority::verify_chain(authority.chain(), &roots, now).map_err(|source| {
        CeremonyError::Chain {
            path: cert_path,
            root: data.bundle(),
            source: Box::new(source),
        }
    })?;
    Ok(authority)
}

/// Signs the workload CSR at `csr` for `grant` with the data dir's intermediate; writes the chain
/// (leaf, then intermediates) as PEM to `out`.
pub fn sign(
    data: &DataDir,
    csr: &Path,
    grant: &Grant,
    ttl: Option<Ttl>,
    out: &Path,
    now: SystemTime,
) -> Result<IssuedSvid, CeremonyError> {
    let authority = load_authority(data, Policy::default(), now)?;
    let csr = read_csr(csr, &authority.policy().keys)?;
    let svid = authority.sign_svid(&csr, grant, ttl, now)?;
    files::write_public(out, svid.chain_pem().as_bytes(), Overwrite::Allow)?;
    Ok(svid)
}

fn read_key(path: &Path) -> Result<PrivateKey, CeremonyError> {
    let pem = files::read_secret(path)?;
    PrivateKey::from_pkcs8_pem(&pem).map_err(|source| CeremonyError::Key {
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CeremonyError> {
    let pem = files::read_public(path)?;
    authority::certs_from_pem(&pem).map_err(|reason| CeremonyError::Pem {
        path: path.to_owned(),
        reason,
    })
}

fn read_csr(path: &Path, keys: &KeyPolicy) -> Result<Csr, CeremonyError> {
    let bytes = files::read_public(path)?;
    Csr::parse(&bytes, keys).map_err(|source| CeremonyError::Csr {
        path: path.to_owned(),
        source,
    })
}
