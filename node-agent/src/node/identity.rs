//! The node SVID and its key, kept in the data directory: `node.key` (0600) and `node.crt`.

use std::path::Path;
use std::time::SystemTime;

use halyard_proto::files::{self, FileError, Overwrite};
use halyard_proto::{SpiffeId, validate_leaf};
use zeroize::Zeroizing;

use crate::cache::pem_certs;

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
    pub fn load(dir: &Path) -> Result<Option<NodeSvid>, FileError> {
        let (key_path, crt_path) = (dir.join("node.key"), dir.join("node.crt"));
        if !key_path.exists() || !crt_path.exists() {
            return Ok(None);
        }
        let key = files::read_secret(&key_path)?;
        let crt = files::read_public(&crt_path)?;
        let chain: Vec<Vec<u8>> = match pem::parse_many(&crt) {
            Ok(blocks) => blocks.into_iter().map(|b| b.into_contents()).collect(),
            Err(_) => return Ok(None),
        };
        let key_pem = Zeroizing::new(String::from_utf8_lossy(&key).into_owned());
        // A key and certificate written by different runs (a crash between the two writes) do
        // not belong together: start over with a token.
        let Ok(pair) = rcgen::KeyPair::from_pem(&key_pem) else {
            return Ok(None);
        };
        let svid = match NodeSvid::from_parts(chain, key_pem) {
            Ok(svid) => svid,
            Err(_) => return Ok(None),
        };
        let matches = x509_parser::parse_x509_certificate(&svid.chain[0]).is_ok_and(|(_, c)| {
            c.public_key().subject_public_key.data.as_ref() == pair.public_key_raw()
        });
        Ok(matches.then_some(svid))
    }
}
