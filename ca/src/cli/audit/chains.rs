//! The chain check of `audit verify`: every journaled certificate names an authority of the store
//! whose stored chain leads to a root of the trust bundle, and lies inside that chain's validity.
//!
//! Signatures are checked by [`verify_chain`] (x509-parser's signature verification, as the CA
//! itself checks an authority before it signs with it); nothing here verifies a signature itself.

use std::collections::HashMap;
use std::time::SystemTime;

use halyard_proto::validate_signing_cert;

use crate::authority::{authority_id, certs_from_pem, rfc3339, verify_chain};
use crate::store::{AuthorityRecord, JournalRow};

/// When an authority's whole stored chain (the authority, then any upstream intermediates) is
/// valid: the latest notBefore to the earliest notAfter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

impl Window {
    fn contains(&self, not_before: SystemTime, not_after: SystemTime) -> bool {
        self.not_before <= not_before && not_after <= self.not_after
    }
}

/// An authority of the store, checked against the bundle.
#[derive(Debug)]
pub(super) struct CheckedAuthority {
    /// Its id (the store's).
    pub(super) id: String,
    /// Its own certificate, DER, when the stored chain parses: CRLs are checked against it.
    pub(super) cert: Option<Vec<u8>>,
    /// Its validity window, or why nothing it issued can be trusted.
    pub(super) verdict: Result<Window, String>,
}

/// Checks the authority `record`: its stored chain parses, its first certificate is the one its
/// id names, every certificate in it is a CA with keyCertSign, each is signed by the next and the
/// last by one of `roots`, and there is a time at which the whole chain is valid.
///
/// The chain is checked at the start of its validity window, not now: a journal row must have
/// been trusted when it was issued, and an audit reads rows of expired authorities too.
pub(super) fn check_authority(record: &AuthorityRecord, roots: &[Vec<u8>]) -> CheckedAuthority {
    let chain = match certs_from_pem(record.chain_pem.as_bytes()) {
        Ok(chain) => chain,
        Err(e) => {
            return CheckedAuthority {
                id: record.id.clone(),
                cert: None,
                verdict: Err(format!("has no usable certificate in the store ({e})")),
            };
        }
    };
    let cert = chain.first().cloned();
    let verdict = check_chain(&record.id, &chain, roots);
    CheckedAuthority {
        id: record.id.clone(),
        cert,
        verdict,
    }
}

fn check_chain(id: &str, chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<Window, String> {
    let first = chain.first().ok_or("has an empty chain in the store")?;
    let actual = authority_id(first);
    if actual != id {
        return Err(format!(
            "is stored with the certificate of another authority (key id {actual})"
        ));
    }
    let mut window: Option<Window> = None;
    for (index, der) in chain.iter().enumerate() {
        let info = validate_signing_cert(der)
            .map_err(|e| format!("is not a signing CA: certificate {index} of its chain: {e}"))?;
        window = Some(match window {
            None => Window {
                not_before: info.not_before(),
                not_after: info.not_after(),
            },
            Some(w) => Window {
                not_before: w.not_before.max(info.not_before()),
                not_after: w.not_after.min(info.not_after()),
            },
        });
    }
    let window = window.ok_or("has an empty chain in the store")?;
    if window.not_before > window.not_after {
        return Err(format!(
            "has a chain that is never valid all at once (latest notBefore {}, earliest notAfter {})",
            rfc3339(window.not_before),
            rfc3339(window.not_after)
        ));
    }
    if roots.is_empty() {
        return Err("cannot chain to an empty bundle".to_owned());
    }
    verify_chain(chain, roots, window.not_before)
        .map_err(|e| format!("does not chain to a root of the bundle: {e}"))?;
    Ok(window)
}

/// What is wrong with `row` given the checked authorities, if anything.
pub(super) fn check_row(
    row: &JournalRow,
    authorities: &HashMap<String, CheckedAuthority>,
) -> Option<String> {
    let id = &row.record.authority;
    let Some(authority) = authorities.get(id) else {
        return Some(format!("authority {id} is not in the store"));
    };
    match &authority.verdict {
        Err(reason) => Some(format!("authority {id} {reason}")),
        Ok(window) if !window.contains(row.record.not_before, row.record.not_after) => {
            Some(format!(
                "validity {} to {} is not inside the validity of authority {id} ({} to {})",
                rfc3339(row.record.not_before),
                rfc3339(row.record.not_after),
                rfc3339(window.not_before),
                rfc3339(window.not_after)
            ))
        }
        Ok(_) => None,
    }
}
