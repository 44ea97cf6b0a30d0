//! Which certificate each intermediate CSR was already issued as, so that a CSR is sent to
//! `IssueCertificate` once: again in this process, after a restart, or after PCA's own
//! idempotency window (five minutes) has closed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use halyard_proto::files::{self, FileError, Overwrite};

/// PCA's `IdempotencyToken` for a CSR: the first 144 bits of the SHA-256 of its DER, in hex
/// (36 characters, PCA's limit). The same CSR always gets the same token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyToken(String);

impl IdempotencyToken {
    /// The token for the CSR whose DER is `csr_der`.
    pub fn for_csr(csr_der: &[u8]) -> IdempotencyToken {
        let digest = ring::digest::digest(&ring::digest::SHA256, csr_der);
        IdempotencyToken(
            digest.as_ref()[..18]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the ARNs of requested certificates are remembered, by the token of their CSR.
///
/// A record is written as soon as `IssueCertificate` answers, before waiting for the
/// certificate; the server forgets it once the intermediate is stored.
pub trait IssuanceLedger: Send + Sync + fmt::Debug {
    /// The certificate ARN recorded for `token`, if any.
    fn lookup(&self, token: &IdempotencyToken) -> Result<Option<String>, FileError>;
    /// Records that `token`'s CSR was issued as `certificate_arn`.
    fn record(&self, token: &IdempotencyToken, certificate_arn: &str) -> Result<(), FileError>;
    /// Forgets `token` (its intermediate is stored elsewhere now).
    fn forget(&self, token: &IdempotencyToken) -> Result<(), FileError>;
}

/// A ledger in memory: repeated requests in one process are answered from it.
#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<HashMap<IdempotencyToken, String>>);

impl MemoryLedger {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IdempotencyToken, String>> {
        // A poisoned lock only means a panic during a single map operation.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl IssuanceLedger for MemoryLedger {
    fn lookup(&self, token: &IdempotencyToken) -> Result<Option<String>, FileError> {
        Ok(self.map().get(token).cloned())
    }

    fn record(&self, token: &IdempotencyToken, certificate_arn: &str) -> Result<(), FileError> {
        self.map().insert(token.clone(), certificate_arn.to_owned());
        Ok(())
    }

    fn forget(&self, token: &IdempotencyToken) -> Result<(), FileError> {
        self.map().remove(token);
        Ok(())
    }
}

/// A ledger in a directory (the CA's data directory, say): one file `pca-<token>.arn` per
/// request, written atomically, so a restart finds what was requested before it.
#[derive(Debug)]
pub struct DirLedger {
    dir: PathBuf,
}

impl DirLedger {
    /// A ledger in `dir`, which is created if missing.
    pub fn new(dir: &Path) -> Result<DirLedger, FileError> {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Write {
            path: dir.to_owned(),
            source,
        })?;
        Ok(DirLedger {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, token: &IdempotencyToken) -> PathBuf {
        self.dir.join(format!("pca-{token}.arn"))
    }
}

impl IssuanceLedger for DirLedger {
    fn lookup(&self, token: &IdempotencyToken) -> Result<Option<String>, FileError> {
        let path = self.path(token);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|arn| !arn.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FileError::Read { path, source }),
        }
    }

    fn record(&self, token: &IdempotencyToken, certificate_arn: &str) -> Result<(), FileError> {
        files::write_public(
            &self.path(token),
            format!("{certificate_arn}\n").as_bytes(),
            Overwrite::Allow,
        )
    }

    fn forget(&self, token: &IdempotencyToken) -> Result<(), FileError> {
        let path = self.path(token);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FileError::Write { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_36_hex_characters_and_depends_on_the_csr() {
        let a = IdempotencyToken::for_csr(b"csr one");
        assert_eq!(a.as_str().len(), 36);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, IdempotencyToken::for_csr(b"csr one"));
        assert_ne!(a, IdempotencyToken::for_csr(b"csr two"));
    }

    fn round_trip(ledger: &dyn IssuanceLedger) {
        let token = IdempotencyToken::for_csr(b"csr");
        assert_eq!(ledger.lookup(&token).unwrap(), None);
        ledger.record(&token, "arn:cert/1").unwrap();
        assert_eq!(
            ledger.lookup(&token).unwrap().as_deref(),
            Some("arn:cert/1")
        );
        ledger.forget(&token).unwrap();
        assert_eq!(ledger.lookup(&token).unwrap(), None);
        ledger.forget(&token).unwrap();
    }

    #[test]
    fn memory_ledger_round_trips() {
        round_trip(&MemoryLedger::default());
    }

    #[test]
    fn dir_ledger_round_trips_and_survives_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = DirLedger::new(&dir.path().join("ledger")).unwrap();
        round_trip(&ledger);
        let token = IdempotencyToken::for_csr(b"csr");
        ledger.record(&token, "arn:cert/2").unwrap();
        let again = DirLedger::new(&dir.path().join("ledger")).unwrap();
        assert_eq!(again.lookup(&token).unwrap().as_deref(), Some("arn:cert/2"));
    }

    #[test]
    fn dir_ledger_reports_an_unreadable_entry() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = DirLedger::new(dir.path()).unwrap();
        let token = IdempotencyToken::for_csr(b"csr");
        std::fs::create_dir(ledger.path(&token)).unwrap();
        let err = ledger.lookup(&token).unwrap_err();
        assert!(err.to_string().contains("pca-"), "{err}");
    }
}
