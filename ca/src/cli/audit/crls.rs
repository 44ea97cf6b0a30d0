//! The CRL check of `audit verify`: every unexpired revocation in the store is listed by the
//! current CRL of the authority that issued the certificate, and every CRL given is signed by its
//! authority (x509-parser's signature verification) and current.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::time::ASN1Time;

use super::chains::CheckedAuthority;
use crate::authority::rfc3339;
use crate::store::Revocation;

/// One CRL as given: from a file or fetched for an authority.
#[derive(Debug, Clone)]
pub(super) struct CrlSource {
    /// Where it came from (a path or a URL), for the report.
    pub(super) name: String,
    /// The authority it was fetched for; `None` for a file (found from the CRL itself).
    pub(super) authority: Option<String>,
    /// The CRL, DER.
    pub(super) der: Vec<u8>,
}

/// Reads the CRLs in `path`: one DER CRL, or PEM with one or more `X509 CRL` blocks.
pub(super) fn read_crl_file(path: &Path) -> Result<Vec<CrlSource>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--crl {}: {e}", path.display()))?;
    let name = path.display().to_string();
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(vec![CrlSource {
            name,
            authority: None,
            der: bytes,
        }]);
    }
    let blocks =
        pem::parse_many(&bytes).map_err(|e| format!("--crl {}: bad PEM: {e}", path.display()))?;
    let crls: Vec<CrlSource> = blocks
        .into_iter()
        .filter(|block| block.tag() == "X509 CRL")
        .map(|block| CrlSource {
            name: name.clone(),
            authority: None,
            der: block.into_contents(),
        })
        .collect();
    if crls.is_empty() {
        return Err(format!(
            "--crl {}: no X509 CRL block in this PEM file",
            path.display()
        ));
    }
    Ok(crls)
}

/// The outcome of the CRL check.
#[derive(Debug, Default)]
pub(super) struct CrlReport {
    /// One line per problem.
    pub(super) problems: Vec<String>,
    /// CRLs read.
    pub(super) crls: usize,
    /// Unexpired revocations looked up.
    pub(super) revocations: usize,
}

/// A CRL that verified under its authority's key.
struct AcceptedCrl {
    name: String,
    this_update: SystemTime,
    /// Its serials, lowercase hex without leading zeros.
    serials: BTreeSet<String>,
}

/// Checks `sources` against the store's `authorities` and `revoked` (unexpired revocations);
/// `ever_revoked` holds every serial the store has a revocation for (expired ones too, read
/// after the CRLs were), so that a serial a CRL lists without a revocation behind it shows.
pub(super) fn check(
    sources: &[CrlSource],
    authorities: &HashMap<String, CheckedAuthority>,
    revoked: &[Revocation],
    ever_revoked: &BTreeSet<String>,
    now: SystemTime,
) -> CrlReport {
    let mut report = CrlReport {
        crls: sources.len(),
        revocations: revoked.len(),
        ..CrlReport::default()
    };
    // The newest valid CRL of each authority.
    let mut current: HashMap<String, AcceptedCrl> = HashMap::new();
    for source in sources {
        if let Some((id, crl)) = accept(source, authorities, now, &mut report.problems) {
            let newer = current
                .get(&id)
                .is_none_or(|known| crl.this_update > known.this_update);
            if newer {
                current.insert(id, crl);
            }
        }
    }
    for revocation in revoked {
        let serial = bare_serial(&revocation.serial);
        let id = &revocation.authority;
        let what = format!(
            "serial {} (revoked {}, authority {id})",
            revocation.serial,
            rfc3339(revocation.revoked_at)
        );
        match current.get(id) {
            None => report
                .problems
                .push(format!("{what}: no valid CRL of its authority was given")),
            Some(crl) if !crl.serials.contains(&serial) => {
                let hint = if crl.this_update < revocation.revoked_at {
                    ", which was signed before the revocation"
                } else {
                    ""
                };
                report.problems.push(format!(
                    "{what}: missing from the CRL {} (thisUpdate {}{hint})",
                    crl.name,
                    rfc3339(crl.this_update)
                ));
            }
            Some(_) => {}
        }
    }
    for (id, crl) in &current {
        for serial in crl.serials.difference(ever_revoked) {
            report.problems.push(format!(
                "CRL {} of authority {id} lists serial {serial}, which the store has no \
                 revocation for",
                crl.name
            ));
        }
    }
    report.problems.sort();
    report
}

/// The authority and contents of `source` if it parses, names an authority of the store and
/// verifies under its key; every problem found is pushed to `problems` (an expired CRL is a
/// problem but still counts as that authority's CRL for membership).
fn accept(
    source: &CrlSource,
    authorities: &HashMap<String, CheckedAuthority>,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Option<(String, AcceptedCrl)> {
    let name = &source.name;
    let crl = match CertificateRevocationList::from_der(&source.der) {
        Ok((rest, _)) if !rest.is_empty() => {
            problems.push(format!(
                "CRL {name}: {} bytes after the CRL: not a DER CRL",
                rest.len()
            ));
            return None;
        }
        Ok((_, crl)) => crl,
        Err(e) => {
            problems.push(format!("CRL {name}: does not parse as a CRL: {e}"));
            return None;
        }
    };
    let claimed = authority_key_id(&crl);
    let id = match (&source.authority, &claimed) {
        (Some(wanted), Some(claimed)) if wanted != claimed => {
            problems.push(format!(
                "CRL {name}: fetched for authority {wanted} but names authority {claimed} \
                 (authority key identifier)"
            ));
            return None;
        }
        (Some(wanted), _) => wanted.clone(),
        (None, Some(claimed)) => claimed.clone(),
        (None, None) => match signer_by_name(&crl, authorities) {
            Some(id) => id,
            None => {
                problems.push(format!(
                    "CRL {name}: has no authority key identifier and no authority of the store \
                     signed it"
                ));
                return None;
            }
        },
    };
    let Some(cert) = authorities.get(&id).and_then(|a| a.cert.as_deref()) else {
        problems.push(format!(
            "CRL {name}: names authority {id}, which has no certificate in the store"
        ));
        return None;
    };
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        problems.push(format!(
            "CRL {name}: the certificate of authority {id} does not parse"
        ));
        return None;
    };
    if crl.issuer().as_raw() != cert.subject().as_raw() {
        problems.push(format!(
            "CRL {name}: its issuer ({}) is not authority {id} ({})",
            crl.issuer(),
            cert.subject()
        ));
        return None;
    }
    if let Err(e) = crl.verify_signature(cert.public_key()) {
        problems.push(format!(
            "CRL {name}: its signature does not verify under the key of authority {id} \
             (signed by another key, or changed): {e}"
        ));
        return None;
    }
    let this_update = system_time(crl.last_update());
    match crl.next_update().map(system_time) {
        None => problems.push(format!("CRL {name} of authority {id}: has no nextUpdate")),
        Some(next) if next <= now => problems.push(format!(
            "CRL {name} of authority {id}: expired at {} (nextUpdate): not current",
            rfc3339(next)
        )),
        Some(_) => {}
    }
    if this_update > now {
        problems.push(format!(
            "CRL {name} of authority {id}: not yet valid (thisUpdate {})",
            rfc3339(this_update)
        ));
    }
    let serials = crl
        .iter_revoked_certificates()
        .map(|entry| bare_serial(&hex(entry.raw_serial())))
        .collect();
    Some((
        id,
        AcceptedCrl {
            name: name.clone(),
            this_update,
            serials,
        },
    ))
}

/// The authority of the store whose subject is the CRL's issuer and whose key verifies it.
fn signer_by_name(
    crl: &CertificateRevocationList<'_>,
    authorities: &HashMap<String, CheckedAuthority>,
) -> Option<String> {
    authorities.values().find_map(|authority| {
        let der = authority.cert.as_deref()?;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        (crl.issuer().as_raw() == cert.subject().as_raw()
            && crl.verify_signature(cert.public_key()).is_ok())
        .then(|| authority.id.clone())
    })
}

/// Lowercase hex of the CRL's authority key identifier, which Halyard's CRLs set to the
/// authority's id.
fn authority_key_id(crl: &CertificateRevocationList<'_>) -> Option<String> {
    crl.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| hex(k.0))
            }
            _ => None,
        })
}

fn system_time(time: ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    match u64::try_from(secs) {
        Ok(after) => SystemTime::UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hex serial as a number: lowercase, without leading zeros (the journal keeps every byte of
/// the DER serial, CRL readers may not).
pub(super) fn bare_serial(hex: &str) -> String {
    hex.trim_start_matches('0').to_ascii_lowercase()
}
