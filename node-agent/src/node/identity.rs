//! The node SVID and its key, kept in the data directory: `node.key` (0600) and `node.crt`.

use std::path::Path;
use std::time::SystemTime;

use halyard_proto::files::{self, FileError, Overwrite};
use halyard_proto::{SpiffeId, validate_leaf};
use zeroize::Zeroizing;

use crate::cache::pem_certs;

/// What the data directory holds.
pub enum Stored {
    /// Neither `node.key` nor `node.crt` (a node that never joined).
    Nothing,
    /// Files that do not make a node SVID, and why (a crash between the two writes, a damaged
    /// or foreign file).
    Unusable(String),
    /// A node SVID whose key and certificate belong together.
    Svid(NodeSvid),
}

/// The node's own X509-SVID.
pub struct NodeSvid {
    /// `spiffe://<td>/halyard/node/<name>`.
    pub spiffe_id: SpiffeId,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's serial, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The id of the authority that signed it.
    pub issuer: String,
    key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for NodeSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl NodeSvid {
    /// A fresh P-256 key (PEM) and a CSR over it without names: the CA names the node.
    pub(super) fn new_key_and_csr() -> Result<(Zeroizing<String>, Vec<u8>), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        Ok((Zeroizing::new(key.serialize_pem()), csr.der().to_vec()))
    }

    /// Checks the chain the CA returned and pairs it with its key.
    pub(super) fn from_parts(
        chain: Vec<Vec<u8>>,
        key_pem: Zeroizing<String>,
    ) -> Result<NodeSvid, String> {
        let leaf = chain.first().ok_or("empty chain")?;
        let parsed = validate_leaf(leaf).map_err(|e| e.to_string())?;
        Ok(NodeSvid {
            spiffe_id: parsed.spiffe_id().clone(),
            serial: parsed.serial().iter().map(|b| format!("{b:02x}")).collect(),
            not_before: parsed.not_before(),
            not_after: parsed.not_after(),
            issuer: crate::cache::authority_key_id(leaf),
            chain,
            key_pem,
        })
    }

    /// The chain, PEM.
    pub fn chain_pem(&self) -> String {
        pem_certs(&self.chain)
    }

    /// The key, PEM.
    pub fn key_pem(&self) -> &Zeroizing<String> {
        &self.key_pem
    }

    /// Writes `node.key` (0600) then `node.crt`, each atomically.
    pub(super) fn store(&self, dir: &Path) -> Result<(), FileError> {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Write {
            path: dir.to_owned(),
            source,
        })?;
        files::write_secret(
            &dir.join("node.key"),
            self.key_pem.as_bytes(),
            Overwrite::Allow,
        )?;
        files::write_public(
            &dir.join("node.crt"),
            self.chain_pem().as_bytes(),
            Overwrite::Allow,
        )
    }

    /// The stored node SVID, if both files are there and agree; a key file others can read is
    /// refused.
    pub fn load(dir: &Path) -> Result<Stored, FileError> {
        let (key_path, crt_path) = (dir.join("node.key"), dir.join("node.crt"));
        match (key_path.exists(), crt_path.exists()) {
            (false, false) => return Ok(Stored::Nothing),
            (true, false) => return Ok(unusable(format!("{} is missing", crt_path.display()))),
            (false, true) => return Ok(unusable(format!("{} is missing", key_path.display()))),
            (true, true) => {}
        }
        let key = files::read_secret(&key_path)?;
        let crt = files::read_public(&crt_path)?;
        let chain: Vec<Vec<u8>> = match pem::parse_many(&crt) {
            // `parse_many` skips a block cut short (a crash while writing, a full disk).
            Ok(blocks) if count(&crt, b"-----BEGIN ") != blocks.len() => {
                return Ok(unusable(format!(
                    "{} is cut short: {} PEM blocks begin, only {} ends",
                    crt_path.display(),
                    count(&crt, b"-----BEGIN "),
                    blocks.len()
                )));
            }
            Ok(blocks) => blocks.into_iter().map(|b| b.into_contents()).collect(),
            Err(e) => return Ok(unusable(format!("{} is not PEM: {e}", crt_path.display()))),
        };
        let key_pem = Zeroizing::new(String::from_utf8_lossy(&key).into_owned());
        let Ok(pair) = rcgen::KeyPair::from_pem(&key_pem) else {
            return Ok(unusable(format!(
                "{} is not a PEM private key",
                key_path.display()
            )));
        };
        let svid = match NodeSvid::from_parts(chain, key_pem) {
            Ok(svid) => svid,
            Err(e) => {
                return Ok(unusable(format!(
                    "{} holds no node SVID: {e}",
                    crt_path.display()
                )));
            }
        };
        // A key and certificate written by different runs (a crash between the two writes) do
        // not belong together: start over with a token.
        let matches = x509_parser::parse_x509_certificate(&svid.chain[0]).is_ok_and(|(_, c)| {
            c.public_key().subject_public_key.data.as_ref() == pair.public_key_raw()
        });
        if !matches {
            return Ok(unusable(format!(
                "{} does not hold the key of the certificate in {}",
                key_path.display(),
                crt_path.display()
            )));
        }
        Ok(Stored::Svid(svid))
    }

    /// Whether the chain leads to one of the roots in `bundle_pem` (the CA checks client
    /// certificates against the same roots): a node SVID of another CA or trust domain would
    /// be refused at every handshake, so it is as good as none.
    pub fn issued_under(&self, bundle_pem: &str) -> Result<(), String> {
        let roots: Vec<Vec<u8>> = pem::parse_many(bundle_pem)
            .map(|blocks| blocks.into_iter().map(|b| b.into_contents()).collect())
            .unwrap_or_default();
        let top = self.chain.last().ok_or("empty chain")?;
        let issued = roots.contains(top)
            || x509_parser::parse_x509_certificate(top).is_ok_and(|(_, top)| {
                roots.iter().any(|root| {
                    x509_parser::parse_x509_certificate(root).is_ok_and(|(_, root)| {
                        top.verify_signature(Some(root.public_key())).is_ok()
                    })
                })
            });
        if issued {
            Ok(())
        } else {
            let n = self.chain.len();
            Err(format!(
                "the chain of the node SVID {} ({n} certificate{}) leads to no root of the trust bundle",
                self.spiffe_id,
                if n == 1 { "" } else { "s" }
            ))
        }
    }
}

/// How often `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn unusable(reason: String) -> Stored {
    Stored::Unusable(reason)
}
