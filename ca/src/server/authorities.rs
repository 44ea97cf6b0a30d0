//! The CA's signing authorities and trust bundle as the running server holds them.
//!
//! The store says which intermediates exist and which one is active; the data directory holds
//! their keys (`authorities/<id>.key`, 0600; the first one stays `intermediate.key`). The trust
//! bundle is `bundle.pem`. Every change goes through the store (or the bundle file) first and is
//! then loaded here whole: [`Ca::reload_authorities`] builds a new [`AuthoritySet`], swaps it in,
//! re-signs the CRLs and tells every watcher.

use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::Ttl;
use tracing::{info, warn};

use super::{Ca, dev};
use crate::authority::{
    self, Authority, AuthorityError, ChainError, Csr, KeyPolicy, KeyType, PrivateKey,
    certs_from_pem, certs_to_pem, verify_chain,
};
use crate::ceremony::{self, CeremonyError, DataDir};
use crate::files::{self, FileError, Overwrite};
use crate::store::{AuthorityRecord, AuthorityState, StoreError, Taint};

/// One authority the store knows, with its key when this CA's data directory holds it.
#[derive(Debug, Clone)]
pub struct KnownAuthority {
    /// As stored.
    pub record: AuthorityRecord,
    /// Ready to sign (and to sign CRLs), when the key is here and the chain leads to a root of
    /// the bundle.
    pub authority: Option<Arc<Authority>>,
    /// The bundle root it chains to, DER.
    pub root: Option<Vec<u8>>,
}

/// Every authority, and the one that signs.
#[derive(Debug)]
pub struct AuthoritySet {
    /// The active authority.
    pub active: Arc<Authority>,
    /// The root the active authority chains to, DER.
    pub active_root: Vec<u8>,
    /// Every unexpired authority in the store, oldest first.
    pub known: Vec<KnownAuthority>,
}

impl AuthoritySet {
    /// The ids of tainted authorities.
    pub fn tainted(&self) -> impl Iterator<Item = &str> {
        self.known
            .iter()
            .filter(|k| k.record.state == AuthorityState::Tainted)
            .map(|k| k.record.id.as_str())
    }
}

/// Why an authority or bundle change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The request cannot be carried out as asked (the message says what to do instead).
    #[error("{0}")]
    Precondition(String),
    /// What was given is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The root to remove is not in the bundle.
    #[error("{0}")]
    NotFound(String),
    /// The root to add is already in the bundle.
    #[error("{0}")]
    AlreadyExists(String),
}

/// What `authority prepare` produced.
#[derive(Debug)]
pub enum Prepared {
    /// A CSR for the root to sign; its key waits in the data directory.
    Csr(String),
    /// A new prepared authority.
    Authority(AuthorityRecord),
}

/// What removing a root left behind.
#[derive(Debug)]
pub struct RootRemoved {
    /// Roots left in the bundle.
    pub roots: usize,
    /// Old or tainted authorities that chained to it: certificates they signed are no longer
    /// trusted.
    pub orphaned: Vec<String>,
}

/// The data directory's files for authorities.
pub(super) fn key_path(data: &DataDir, id: &str) -> std::path::PathBuf {
    data.path().join("authorities").join(format!("{id}.key"))
}

fn pending_key_path(data: &DataDir) -> std::path::PathBuf {
    data.path().join("authorities").join("pending.key")
}

fn create_authorities_dir(data: &DataDir) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = data.path().join("authorities");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| FileError::Write { path: dir, source })
}

fn read_key(path: &std::path::Path) -> Result<PrivateKey, CeremonyError> {
    let pem = files::read_secret(path)?;
    PrivateKey::from_pkcs8_pem(&pem).map_err(|source| CeremonyError::Key {
        path: path.to_owned(),
        source,
    })
}

impl Ca {
    fn data(&self) -> DataDir {
        DataDir::new(&self.config.data_dir)
    }

    /// The key file of authority `record`: its own, or the data directory's first intermediate.
    fn load_known(&self, record: AuthorityRecord, bundle: &[Vec<u8>]) -> KnownAuthority {
        let data = self.data();
        let own = key_path(&data, &record.id);
        let path = if own.exists() {
            own
        } else {
            data.intermediate_key()
        };
        let loaded = certs_from_pem(record.chain_pem.as_bytes())
            .map_err(|e| format!("stored chain: {e}"))
            .and_then(|chain| {
                let key = read_key(&path).map_err(|e| e.to_string())?;
                Authority::new(key, chain, self.policy()).map_err(|e| e.to_string())
            })
            .and_then(|authority| {
                if authority.id() != record.id {
                    return Err(format!(
                        "{} holds the key of another authority",
                        path.display()
                    ));
                }
                let root = verify_chain(authority.chain(), bundle, SystemTime::now())
                    .map_err(|e| format!("does not chain to the bundle: {e}"))?;
                Ok((Arc::new(authority), bundle[root].clone()))
            });
        match loaded {
            Ok((authority, root)) => KnownAuthority {
                record,
                authority: Some(authority),
                root: Some(root),
            },
            Err(reason) => {
                if record.state != AuthorityState::Tainted {
                    warn!(authority = %record.id, state = %record.state, %reason, "authority unusable here");
                }
                KnownAuthority {
                    record,
                    authority: None,
                    root: None,
                }
            }
        }
    }

    /// Reloads the authorities from the store: the active one signs from now on. The first
    /// time, with an empty store, the data directory's intermediate is recorded as active.
    pub async fn reload_authorities(&self) -> Result<(), ChangeError> {
        let now = SystemTime::now();
        let mut records = self.store.authorities().await?;
        if records.is_empty() {
            let seed = self.authority();
            let chain_pem = certs_to_pem(seed.chain().iter().map(Vec::as_slice));
            match self
                .store
                .add_authority(
                    seed.id(),
                    AuthorityState::Active,
                    &chain_pem,
                    seed.not_after(),
                    now,
                )
                .await
            {
                // Another replica may have recorded its own at the same moment.
                Ok(_)
                | Err(StoreError::AuthorityExists { .. } | StoreError::AuthorityState { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            records = self.store.authorities().await?;
        }
        let bundle = self.bundle();
        let known: Vec<KnownAuthority> = records
            .into_iter()
            .filter(|r| r.not_after > now)
            .map(|r| self.load_known(r, &bundle))
            .collect();
        let current = self.authority_set();
        let next_active = known.iter().find_map(|k| {
            (k.record.state == AuthorityState::Active)
                .then(|| k.authority.clone().zip(k.root.clone()))
                .flatten()
        });
        let (active, active_root) = match next_active {
            Some(found) => found,
            None => {
                warn!(
                    keeping = current.active.id(),
                    "the store's active authority cannot sign here (no key, or no chain to the \
                     bundle); keeping the current one"
                );
                (current.active.clone(), current.active_root.clone())
            }
        };
        if active.id() != current.active.id() {
            info!(
                from = current.active.id(),
                to = active.id(),
                "activated a new authority"
            );
        }
        self.metrics.set_intermediate_expiry(active.not_after());
        let active_id = active.id().to_owned();
        *self
            .authorities
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(AuthoritySet {
            active,
            active_root,
            known,
        });
        self.active_id.send_if_modified(|id| {
            let changed = *id != active_id;
            *id = active_id;
            changed
        });
        self.refresh_revocations().await?;
        Ok(())
    }

    /// Starts a new authority. Without `chain_pem`: in `--dev` mode (or when `sign_here`), the
    /// development root signs it and it is recorded as prepared; otherwise a key is made (or the
    /// pending one reused) and its CSR returned for the offline root. With `chain_pem`: the
    /// signed certificate for the pending key, which must chain to the bundle.
    pub async fn prepare_authority(
        &self,
        chain_pem: Option<&[u8]>,
        want_csr: bool,
    ) -> Result<Prepared, ChangeError> {
        let data = self.data();
        let now = SystemTime::now();
        let chain_pem_given = chain_pem.is_some();
        create_authorities_dir(&data)?;
        let pending = pending_key_path(&data);
        let (key, chain) = match chain_pem {
            None if want_csr || !self.config.dev => {
                if !want_csr {
                    return Err(ChangeError::Precondition(
                        "this CA holds no root key: give --csr-out FILE, sign the CSR with \
                         `halyard-ca root sign-intermediate`, then run `authority prepare \
                         --cert FILE`"
                            .into(),
                    ));
                }
                let key = if pending.exists() {
                    read_key(&pending).map_err(|e| ChangeError::Invalid(e.to_string()))?
                } else {
                    let key = PrivateKey::generate(KeyType::EcP256)
                        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                    files::write_secret(
                        &pending,
                        key.to_pkcs8_pem().as_bytes(),
                        Overwrite::Refuse,
                    )?;
                    key
                };
                let csr = authority::intermediate_csr(&self.config.trust_domain, &key, now)
                    .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                info!(key = %pending.display(), "prepared a key; its CSR awaits the root");
                return Ok(Prepared::Csr(csr));
            }
            None => {
                let key = PrivateKey::generate(KeyType::EcP256)
                    .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                let chain = sign_with_dev_root(&data, &self.config.trust_domain, &key, now)?;
                (key, chain)
            }
            Some(pem) => {
                let chain = certs_from_pem(pem)
                    .map_err(|e| ChangeError::Invalid(format!("certificate: {e}")))?;
                if !pending.exists() {
                    return Err(ChangeError::Precondition(format!(
                        "{} does not exist: run `halyard-ca authority prepare --csr-out FILE` \
                         first, and have the root sign that CSR",
                        pending.display()
                    )));
                }
                let key = read_key(&pending).map_err(|e| ChangeError::Invalid(e.to_string()))?;
                (key, chain)
            }
        };
        let key_pem = key.to_pkcs8_pem();
        let authority = Authority::new(key, chain, self.policy()).map_err(|e| match e {
            AuthorityError::Cert(e) => ChangeError::Invalid(format!(
                "the certificate does not fit the prepared key or cannot sign: {e}"
            )),
            other => ChangeError::Invalid(other.to_string()),
        })?;
        if authority.trust_domain() != self.trust_domain() {
            return Err(ChangeError::Invalid(format!(
                "the certificate is for trust domain {}, not {}",
                authority.trust_domain(),
                self.trust_domain()
            )));
        }
        verify_chain(authority.chain(), &self.bundle(), now).map_err(|e| match e {
            ChainError::UntrustedRoot { .. } => ChangeError::Precondition(format!(
                "{e}: the certificate does not chain to a root of the bundle; add its root \
                 first with `halyard-ca bundle add --cert ROOT.crt`"
            )),
            other => ChangeError::Invalid(format!("the certificate chain: {other}")),
        })?;
        let id = authority.id().to_owned();
        // The key under its id first: a recorded authority without its key could not sign.
        files::write_secret(&key_path(&data, &id), key_pem.as_bytes(), Overwrite::Allow)?;
        let chain_pem = certs_to_pem(authority.chain().iter().map(Vec::as_slice));
        let record = self
            .store
            .add_authority(
                &id,
                AuthorityState::Prepared,
                &chain_pem,
                authority.not_after(),
                now,
            )
            .await?;
        if chain_pem_given {
            let _ = std::fs::remove_file(&pending);
        }
        info!(authority = %id, not_after = %authority::rfc3339(authority.not_after()), "prepared a new authority");
        self.reload_authorities().await?;
        Ok(Prepared::Authority(record))
    }

    /// Makes the prepared (or old) authority `id` the active one.
    pub async fn activate_authority(&self, id: &str) -> Result<AuthorityRecord, ChangeError> {
        self.check_usable_here(id)?;
        let record = self.store.activate_authority(id, SystemTime::now()).await?;
        self.reload_authorities().await?;
        Ok(record)
    }

    /// Marks `id` compromised; if it was active, the newest prepared authority takes over.
    /// Agents then replace every certificate it signed.
    pub async fn taint_authority(&self, id: &str) -> Result<Taint, ChangeError> {
        let taint = self.store.taint_authority(id, SystemTime::now()).await?;
        warn!(
            authority = %id,
            activated = taint.activated.as_ref().map(|a| a.id.as_str()),
            "authority tainted: agents replace every certificate it signed"
        );
        self.reload_authorities().await?;
        Ok(taint)
    }

    fn check_usable_here(&self, id: &str) -> Result<(), ChangeError> {
        let set = self.authority_set();
        match set.known.iter().find(|k| k.record.id == id) {
            Some(known)
                if known.authority.is_none() && known.record.state != AuthorityState::Tainted =>
            {
                Err(ChangeError::Precondition(format!(
                    "authority {id} cannot sign here: {} is missing or does not match, or its \
                     chain does not lead to a root of the bundle",
                    key_path(&self.data(), id).display()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Adds a root to the trust bundle (`bundle.pem`) and pushes the new bundle.
    pub async fn add_root(&self, pem: &[u8]) -> Result<usize, ChangeError> {
        let root = one_root(pem)?;
        let mut roots = self.bundle().as_ref().clone();
        if roots.contains(&root) {
            return Err(ChangeError::AlreadyExists(
                "this root is already in the bundle".into(),
            ));
        }
        roots.push(root);
        self.write_bundle(roots).await
    }

    /// Removes a root from the trust bundle. Refused for the last root and for a root that the
    /// active or a prepared authority chains to.
    pub async fn remove_root(&self, pem: &[u8]) -> Result<RootRemoved, ChangeError> {
        let root = one_root(pem)?;
        let mut roots = self.bundle().as_ref().clone();
        if !roots.contains(&root) {
            return Err(ChangeError::NotFound(
                "this root is not in the bundle".into(),
            ));
        }
        if roots.len() == 1 {
            return Err(ChangeError::Precondition(
                "this is the bundle's only root: add its successor first".into(),
            ));
        }
        let set = self.authority_set();
        let under: Vec<&KnownAuthority> = set
            .known
            .iter()
            .filter(|k| k.root.as_ref() == Some(&root))
            .collect();
        if let Some(busy) = under.iter().find(|k| {
            matches!(
                k.record.state,
                AuthorityState::Active | AuthorityState::Prepared
            )
        }) {
            return Err(ChangeError::Precondition(format!(
                "authority {} ({}) chains to this root: activate an authority under another \
                 root, and taint or wait out this one, first",
                busy.record.id, busy.record.state
            )));
        }
        let orphaned = under.iter().map(|k| k.record.id.clone()).collect();
        roots.retain(|r| r != &root);
        let left = self.write_bundle(roots).await?;
        Ok(RootRemoved {
            roots: left,
            orphaned,
        })
    }

    async fn write_bundle(&self, roots: Vec<Vec<u8>>) -> Result<usize, ChangeError> {
        let pem = certs_to_pem(roots.iter().map(Vec::as_slice));
        files::write_public(&self.data().bundle(), pem.as_bytes(), Overwrite::Allow)?;
        let count = roots.len();
        *self
            .bundle
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(roots);
        info!(roots = count, "trust bundle changed");
        self.reload_authorities().await?;
        Ok(count)
    }
}

/// A certificate for `key` from the development root kept in the data directory.
fn sign_with_dev_root(
    data: &DataDir,
    trust_domain: &halyard_proto::TrustDomain,
    key: &PrivateKey,
    now: SystemTime,
) -> Result<Vec<Vec<u8>>, ChangeError> {
    let root = ceremony::load_root(&dev::root_dir(data))
        .map_err(|e| ChangeError::Precondition(format!("the development root: {e}")))?;
    let csr_pem = authority::intermediate_csr(trust_domain, key, now)
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
    let csr = Csr::parse(csr_pem.as_bytes(), &KeyPolicy::for_ca())
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
    let ttl = Ttl::from_secs(365 * 86_400).unwrap_or(Ttl::ONE_HOUR);
    let cert = root
        .sign_intermediate(&csr, ttl, now)
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
    Ok(vec![cert])
}

/// The one CA certificate in `pem`.
fn one_root(pem: &[u8]) -> Result<Vec<u8>, ChangeError> {
    let mut certs =
        certs_from_pem(pem).map_err(|e| ChangeError::Invalid(format!("certificate: {e}")))?;
    if certs.len() != 1 {
        return Err(ChangeError::Invalid(format!(
            "expected one root certificate, found {}",
            certs.len()
        )));
    }
    let root = certs.swap_remove(0);
    let parsed = halyard_proto::validate_signing_cert(&root)
        .map_err(|e| ChangeError::Invalid(format!("not a usable root: {e}")))?;
    if !parsed.is_self_issued() {
        return Err(ChangeError::Invalid(
            "not a root: its issuer is not its subject".into(),
        ));
    }
    Ok(root)
}
