//! `upstream = "aws-pca"`: AWS Private CA signs the CA's intermediates.
//!
//! At startup ([`PcaUpstream::starting_authority`]) the data directory's intermediate is used
//! when it is valid; else the store's active authority, when this data directory holds its key;
//! only else does PCA issue one, written to `intermediate.key`, `intermediate.crt` and
//! `bundle.pem` like an imported one. Then the [`rotation`] worker prepares the next
//! intermediate at ½ of the active one's life and activates it at ⅚ ([`timing`]).
//!
//! Every request starts from a key and CSR written to `DATA/pca/pending.key` and
//! `DATA/pca/pending.csr` (0600) before PCA is called, and the certificate ARN PCA answers is
//! remembered in `DATA/pca/` (a [`DirLedger`]), so a restart at any point resumes the same
//! request: one `IssueCertificate` per intermediate. Once the intermediate is stored (the data
//! directory's files, or `authorities/<id>.key` and its record in the store) the pending files
//! and the ledger entry are removed.
//!
//! Several replicas on one PostgreSQL database: a replica prepares only while it holds the
//! store's rotation lock (an advisory lock; the others skip and wait for its record) and only
//! when the store holds no unexpired prepared authority that outlives the active one, checked
//! under the lock right before it asks PCA. So one replica prepares and one PCA certificate is
//! issued per intermediate. Only replicas that hold the key can sign with it: replicas share
//! the data directory (its `authorities/` and `pca/`); a replica whose store names an active
//! authority it has no key for leaves rotation to the one that has it.

mod rotation;
mod timing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use halyard_proto::{TrustDomain, validate_signing_cert};
use tracing::{info, warn};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::Ca;
use super::authorities::{self, ChangeError};
use crate::authority::{
    self, Authority, Csr, KeyPolicy, KeyType, Policy, PrivateKey, certs_from_pem, certs_to_pem,
    verify_chain,
};
use crate::ceremony::{self, CeremonyError, DataDir};
use crate::files::{self, FileError, Overwrite};
use crate::store::{AuthorityRecord, AuthorityState, Store, StoreError};
use crate::upstream::{AwsPca, AwsPcaConfig, DirLedger, IssuedIntermediate, UpstreamError};

pub(super) use rotation::spawn as spawn_rotation;

/// Why an intermediate could not be had from AWS Private CA, or stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PcaError {
    /// PCA refused or failed, or returned something unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A file of the data directory could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The data directory's intermediate is unusable, and not merely expired.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The bundle or the authorities could not be changed.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// A key, CSR or authority that could not be made.
    #[error("{0}")]
    Material(String),
}

/// What one preparation did.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// PCA issued the intermediate, now recorded as prepared.
    Recorded {
        /// Its id.
        id: String,
        /// Its notAfter.
        not_after: SystemTime,
    },
    /// The store already holds a successor (another replica prepared it): nothing was asked.
    Elsewhere(String),
    /// Another replica is preparing one right now (it holds the rotation lock).
    Busy,
}

/// AWS Private CA, with the data directory it keeps its requests in.
#[derive(Debug)]
pub(crate) struct PcaUpstream {
    pca: AwsPca,
    data: DataDir,
    trust_domain: TrustDomain,
}

/// The key and CSR of the request in progress.
struct Pending {
    key: PrivateKey,
    csr_pem: String,
}

impl PcaUpstream {
    /// A client for the configured CA (credentials from the standard AWS chain), remembering
    /// its requests in `DATA/pca/`. Calls nothing yet.
    pub(super) async fn connect(
        config: AwsPcaConfig,
        data: &DataDir,
        trust_domain: &TrustDomain,
    ) -> Result<PcaUpstream, PcaError> {
        let dir = data.path().join("pca");
        create_private_dir(&dir)?;
        let ledger = DirLedger::new(&dir)?;
        let pca = AwsPca::new(config).await?.with_ledger(Arc::new(ledger));
        info!(
            ca = %pca.config().ca_arn,
            region = pca.config().region(),
            endpoint = pca.config().endpoint_url.as_deref().unwrap_or("the region's"),
            intermediate_ttl = %pca.config().intermediate_ttl,
            "AWS Private CA signs the intermediates"
        );
        Ok(PcaUpstream {
            pca,
            data: data.clone(),
            trust_domain: trust_domain.clone(),
        })
    }

    /// The authority to start with: the data directory's valid intermediate, else the store's
    /// active one whose key is here, else a new one from PCA (written to the data directory
    /// and, when the store already knows other authorities, recorded there as the active one).
    pub(super) async fn starting_authority(
        &self,
        store: &Store,
        policy: &Policy,
    ) -> Result<Authority, PcaError> {
        let now = SystemTime::now();
        if let Some(authority) = self.data_dir_intermediate(policy, now)? {
            return Ok(authority);
        }
        let records = store.authorities().await?;
        if let Some(authority) = self.active_in_store(&records, policy, now) {
            info!(
                authority = authority.id(),
                "using the store's active intermediate (the data directory's has expired)"
            );
            return Ok(authority);
        }
        info!("no valid intermediate here: asking AWS Private CA for one");
        let (pending, issued) = self.issue(&self.used_keys(&records)).await?;
        let key_pem = pending.key.to_pkcs8_pem();
        let authority = issued
            .authority(pending.key, policy.clone())
            .map_err(|e| PcaError::Material(e.to_string()))?;
        let mut roots = match files::read_public(&self.data.bundle()) {
            Ok(pem) => certs_from_pem(&pem).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for root in self.pca.bundle(&issued) {
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        // The key first and the certificate last: intermediate.crt is what marks the data
        // directory as having an intermediate.
        files::write_secret(
            &self.data.intermediate_key(),
            key_pem.as_bytes(),
            Overwrite::Allow,
        )?;
        files::write_public(
            &self.data.bundle(),
            certs_to_pem(roots.iter().map(Vec::as_slice)).as_bytes(),
            Overwrite::Allow,
        )?;
        let chain_pem = certs_to_pem(authority.chain().iter().map(Vec::as_slice));
        files::write_public(
            &self.data.intermediate_cert(),
            chain_pem.as_bytes(),
            Overwrite::Allow,
        )?;
        // On a first start the store is empty and the server records it as active itself.
        // Otherwise the store's active authority has expired, or its key is not here (a data
        // directory lost, a store kept): this one takes over.
        if !records.is_empty() {
            record(store, &authority, &chain_pem, now).await?;
            store.activate_authority(authority.id(), now).await?;
        }
        self.finish(&issued)?;
        Ok(authority)
    }

    /// Has PCA issue the next intermediate and records it as prepared, unless the store
    /// already holds a successor (checked right before asking PCA).
    pub(super) async fn prepare(&self, ca: &Ca) -> Result<Prepared, PcaError> {
        let Some(lock) = ca.store().try_rotation_lock().await? else {
            return Ok(Prepared::Busy);
        };
        let prepared = self.prepare_locked(ca).await;
        if let Err(e) = lock.release().await {
            warn!(error = %e, "cannot release the rotation lock; it goes with its connection");
        }
        prepared
    }

    async fn prepare_locked(&self, ca: &Ca) -> Result<Prepared, PcaError> {
        let now = SystemTime::now();
        let records = ca.store().authorities().await?;
        if let Some(successor) = successor_in_store(&records, now) {
            let id = successor.id.clone();
            ca.reload_authorities().await?;
            return Ok(Prepared::Elsewhere(id));
        }
        let (pending, issued) = self.issue(&self.used_keys(&records)).await?;
        let key_pem = pending.key.to_pkcs8_pem();
        let authority = issued
            .authority(pending.key, ca.policy())
            .map_err(|e| PcaError::Material(e.to_string()))?;
        // Its root in the bundle first (agents trust it before anything it signs reaches them,
        // and the prepared authority must chain to the bundle to be usable).
        for root in self.pca.bundle(&issued) {
            if ca.bundle().contains(&root) {
                continue;
            }
            match ca
                .add_root(certs_to_pem([root.as_slice()]).as_bytes())
                .await
            {
                Ok(roots) => info!(roots, "added AWS Private CA's root to the trust bundle"),
                Err(ChangeError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let id = authority.id().to_owned();
        create_private_dir(&self.data.path().join("authorities"))?;
        // The key under its id before the record: a recorded authority without its key
        // could not sign.
        files::write_secret(
            &authorities::key_path(&self.data, &id),
            key_pem.as_bytes(),
            Overwrite::Allow,
        )?;
        let chain_pem = certs_to_pem(authority.chain().iter().map(Vec::as_slice));
        record(ca.store(), &authority, &chain_pem, now).await?;
        self.finish(&issued)?;
        ca.reload_authorities().await?;
        Ok(Prepared::Recorded {
            id,
            not_after: authority.not_after(),
        })
    }

    /// The data directory's intermediate when it is valid; `None` when there is none or it has
    /// expired. Any other problem is the operator's to see.
    fn data_dir_intermediate(
        &self,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<Authority>, PcaError> {
        let cert = self.data.intermediate_cert();
        if !cert.exists() {
            return Ok(None);
        }
        match ceremony::load_authority(&self.data, policy.clone(), now) {
            Ok(authority) => {
                info!(
                    authority = authority.id(),
                    not_after = %authority::rfc3339(authority.not_after()),
                    "using the data directory's intermediate; AWS Private CA is not asked"
                );
                Ok(Some(authority))
            }
            Err(e) => {
                let expired = first_cert(&cert)
                    .and_then(|der| validate_signing_cert(&der).ok())
                    .map(|info| info.not_after())
                    .filter(|not_after| *not_after <= now);
                match expired {
                    Some(not_after) => {
                        info!(
                            expired = %authority::rfc3339(not_after),
                            "the data directory's intermediate has expired"
                        );
                        Ok(None)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// The store's unexpired active authority, when this data directory holds its key and it
    /// chains to the bundle.
    fn active_in_store(
        &self,
        records: &[AuthorityRecord],
        policy: &Policy,
        now: SystemTime,
    ) -> Option<Authority> {
        let record = records
            .iter()
            .find(|r| r.state == AuthorityState::Active && r.not_after > now)?;
        let key_file = authorities::key_path(&self.data, &record.id);
        if !key_file.exists() {
            return None;
        }
        let loaded = read_key(&key_file)
            .and_then(|key| {
                let chain = certs_from_pem(record.chain_pem.as_bytes())
                    .map_err(|e| format!("its stored chain: {e}"))?;
                Authority::new(key, chain, policy.clone()).map_err(|e| e.to_string())
            })
            .and_then(|authority| {
                let bundle = files::read_public(&self.data.bundle())
                    .map_err(|e| e.to_string())
                    .and_then(|pem| certs_from_pem(&pem))?;
                verify_chain(authority.chain(), &bundle, now)
                    .map_err(|e| format!("it does not chain to the bundle: {e}"))?;
                if authority.id() == record.id {
                    Ok(authority)
                } else {
                    Err(format!("{} holds another key", key_file.display()))
                }
            });
        match loaded {
            Ok(authority) => Some(authority),
            Err(reason) => {
                warn!(authority = %record.id, %reason, "the store's active authority is unusable here");
                None
            }
        }
    }

    /// The public keys of every intermediate already stored: a pending key among them was
    /// used up by a request that completed.
    fn used_keys(&self, records: &[AuthorityRecord]) -> Vec<Vec<u8>> {
        records
            .iter()
            .filter_map(|r| {
                certs_from_pem(r.chain_pem.as_bytes())
                    .ok()?
                    .into_iter()
                    .next()
            })
            .chain(first_cert(&self.data.intermediate_cert()))
            .filter_map(|der| spki(&der))
            .collect()
    }

    /// PCA's intermediate for the pending key (made and written first if there is none).
    async fn issue(&self, used: &[Vec<u8>]) -> Result<(Pending, IssuedIntermediate), PcaError> {
        let pending = self.pending(used)?;
        let not_after = SystemTime::now() + self.pca.config().intermediate_ttl.as_duration();
        match self
            .pca
            .issue_intermediate(pending.csr_pem.as_bytes(), not_after)
            .await
        {
            Ok(issued) => Ok((pending, issued)),
            // PCA would return the same certificate for this CSR again: the next attempt
            // starts from a new key.
            Err(e @ UpstreamError::Chain(_)) => {
                self.discard_pending();
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn pending_paths(&self) -> (PathBuf, PathBuf) {
        let dir = self.data.path().join("pca");
        (dir.join("pending.key"), dir.join("pending.csr"))
    }

    /// The key and CSR of the request in progress: resumed when a restart left them (and the
    /// key is not one an intermediate already uses), else made and written (0600) now.
    fn pending(&self, used: &[Vec<u8>]) -> Result<Pending, PcaError> {
        let (key_path, csr_path) = self.pending_paths();
        let resumed = if key_path.exists() {
            match read_key(&key_path) {
                Ok(key) if used.contains(&key.public_key_spki()) => {
                    info!("the pending key already has its intermediate; starting a new request");
                    None
                }
                Ok(key) => Some(key),
                Err(reason) => {
                    warn!(key = %key_path.display(), %reason, "unusable pending key; starting a new request");
                    None
                }
            }
        } else {
            None
        };
        let key = match resumed {
            Some(key) => {
                let csr = files::read_secret(&csr_path)
                    .ok()
                    .filter(|pem| {
                        Csr::parse(pem, &KeyPolicy::for_ca())
                            .is_ok_and(|csr| csr.spki() == key.public_key_spki())
                    })
                    .and_then(|pem| String::from_utf8(pem.to_vec()).ok());
                if let Some(csr_pem) = csr {
                    info!("resuming the intermediate request made before a restart");
                    return Ok(Pending { key, csr_pem });
                }
                // Killed between writing the key and its CSR: nothing was sent yet.
                key
            }
            None => {
                self.discard_pending();
                let key = PrivateKey::generate(KeyType::EcP256)
                    .map_err(|e| PcaError::Material(e.to_string()))?;
                files::write_secret(&key_path, key.to_pkcs8_pem().as_bytes(), Overwrite::Allow)?;
                key
            }
        };
        let csr_pem = authority::intermediate_csr(&self.trust_domain, &key, SystemTime::now())
            .map_err(|e| PcaError::Material(e.to_string()))?;
        files::write_secret(&csr_path, csr_pem.as_bytes(), Overwrite::Allow)?;
        Ok(Pending { key, csr_pem })
    }

    fn discard_pending(&self) {
        let (key_path, csr_path) = self.pending_paths();
        for path in [csr_path, key_path] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(file = %path.display(), error = %e, "cannot remove"),
            }
        }
    }

    /// The intermediate is stored: its request is over.
    fn finish(&self, issued: &IssuedIntermediate) -> Result<(), PcaError> {
        self.discard_pending();
        self.pca.ledger().forget(&issued.token)?;
        Ok(())
    }
}

/// Records `authority` as prepared; one already recorded as prepared (a restart after the
/// record, before the cleanup) is fine.
async fn record(
    store: &Store,
    authority: &Authority,
    chain_pem: &str,
    now: SystemTime,
) -> Result<(), PcaError> {
    match store
        .add_authority(
            authority.id(),
            AuthorityState::Prepared,
            chain_pem,
            authority.not_after(),
            now,
        )
        .await
    {
        Ok(_)
        | Err(StoreError::AuthorityExists {
            state: AuthorityState::Prepared,
            ..
        }) => {
            info!(
                authority = authority.id(),
                not_after = %authority::rfc3339(authority.not_after()),
                "recorded the intermediate AWS Private CA issued as prepared"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The newest unexpired prepared authority in the store that outlives the active one.
fn successor_in_store(records: &[AuthorityRecord], now: SystemTime) -> Option<&AuthorityRecord> {
    let active = records.iter().find(|r| r.state == AuthorityState::Active)?;
    records
        .iter()
        .filter(|r| {
            r.state == AuthorityState::Prepared
                && r.not_after > now
                && r.not_after > active.not_after
        })
        .max_by_key(|r| r.not_after)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKey, String> {
    let pem = files::read_secret(path).map_err(|e| e.to_string())?;
    PrivateKey::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first certificate of a PEM file, if it has one.
fn first_cert(path: &std::path::Path) -> Option<Vec<u8>> {
    let pem = files::read_public(path).ok()?;
    certs_from_pem(&pem).ok()?.into_iter().next()
}

/// A certificate's DER SubjectPublicKeyInfo.
fn spki(der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| cert.public_key().raw.to_vec())
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| FileError::Write {
            path: dir.to_owned(),
            source,
        })
}
