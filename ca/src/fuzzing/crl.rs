//! `crl`: arbitrary revoked entries through [`Authority::sign_crl`], read back by `x509-parser`.
//!
//! [`Authority::sign_crl`]: crate::authority::Authority::sign_crl

use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::pki;
use crate::authority::{RevocationReason, RevokedEntry, Serial};

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in unix seconds: the times an X.509
/// GeneralizedTime can hold.
const FIRST_X509_SECOND: i64 = -62_167_219_200;
const LAST_X509_SECOND: i64 = 253_402_300_799;

/// Each reason with the code its CRL entry carries: none for `unspecified`, whose reason code
/// extension RFC 5280 (5.3.1) says should be absent.
const REASONS: [(RevocationReason, Option<u8>); 7] = [
    (RevocationReason::Unspecified, None),
    (RevocationReason::KeyCompromise, Some(1)),
    (RevocationReason::CaCompromise, Some(2)),
    (RevocationReason::AffiliationChanged, Some(3)),
    (RevocationReason::Superseded, Some(4)),
    (RevocationReason::CessationOfOperation, Some(5)),
    (RevocationReason::PrivilegeWithdrawn, Some(9)),
];

/// Asserts the CRL properties on arbitrary revoked entries.
///
/// The input is read as: the signing time (8 bytes, big-endian unix seconds, taken within the
/// years a clock can show, 1970 to 9999), the validity (4 bytes, seconds), then entries of
/// a serial length (1 byte, 0 to 21), that many serial bytes, a reason (1 byte) and a
/// revocation time (8 bytes, big-endian signed unix seconds: anything a stored row can say).
///
/// Serials parse exactly when they are positive and fit 20 DER bytes. The CRL is signed exactly
/// when every time in it fits an X.509 time (an error otherwise, never a panic), and then:
/// it parses with nothing after it, is signed by the intermediate (issuer name, authority key
/// identifier and signature), carries the signing time as its number and this update, ends
/// its validity later, and lists exactly the entries given, in order, with their serials,
/// reason codes and times.
///
/// # Panics
///
/// When any of those properties fails; never otherwise.
pub fn crl(data: &[u8]) {
    let mut input = Input(data);
    let (Some(now), Some(validity)) = (input.array::<8>(), input.array::<4>()) else {
        return;
    };
    let now_secs = u64::from_be_bytes(now) % (LAST_X509_SECOND.unsigned_abs() + 1);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
    let validity = Duration::from_secs(u64::from(u32::from_be_bytes(validity)));

    let mut entries = Vec::new();
    let mut revoked_secs = Vec::new();
    while let Some(entry) = next_entry(&mut input) {
        let (entry, secs) = entry;
        entries.push(entry);
        revoked_secs.push(secs);
    }

    let this_update = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let next_update = this_update.saturating_add(
        i64::try_from(validity.max(Duration::from_secs(1)).as_secs()).unwrap_or(i64::MAX),
    );
    let expressible = [this_update, next_update]
        .iter()
        .chain(&revoked_secs)
        .all(|secs| (FIRST_X509_SECOND..=LAST_X509_SECOND).contains(secs));

    let authority = &pki().authority;
    let der = match authority.sign_crl(&entries, now, validity) {
        Ok(der) => der,
        Err(e) => {
            assert!(!expressible, "refused a CRL whose times all fit X.509: {e}");
            return;
        }
    };
    assert!(expressible, "signed a CRL with a time X.509 cannot hold");

    let (rest, crl) = match CertificateRevocationList::from_der(&der) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the CRL does not parse: {e}"),
    };
    assert!(rest.is_empty(), "{} bytes follow the CRL", rest.len());
    let intermediate_der = authority.chain().first().map_or(&[][..], Vec::as_slice);
    let (_, intermediate) = match X509Certificate::from_der(intermediate_der) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the intermediate does not parse: {e}"),
    };
    assert_eq!(
        crl.issuer(),
        intermediate.subject(),
        "issuer is not the intermediate"
    );
    if let Err(e) = crl.verify_signature(intermediate.public_key()) {
        panic!("the CRL's signature does not verify with the intermediate's key: {e}");
    }
    assert_eq!(
        authority_key_id(crl.extensions()),
        subject_key_id(&intermediate),
        "the CRL names another authority key"
    );
    assert_eq!(
        crl.crl_number().map(|n| n.to_bytes_be()),
        Some(unsigned_be_bytes(now_secs)),
        "the CRL number is not the signing time"
    );
    assert_eq!(crl.last_update().timestamp(), this_update);
    assert_eq!(crl.next_update().map(|t| t.timestamp()), Some(next_update));

    let listed: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(
        listed.len(),
        entries.len(),
        "the CRL lists another number of entries"
    );
    for ((listed, entry), secs) in listed.iter().zip(&entries).zip(&revoked_secs) {
        assert_eq!(
            strip_zeros(listed.raw_serial()),
            entry.serial.as_bytes(),
            "serial differs"
        );
        assert_eq!(listed.serial().to_bytes_be(), entry.serial.as_bytes());
        assert_eq!(
            listed.revocation_date.timestamp(),
            *secs,
            "revocation time differs"
        );
        let code = REASONS
            .iter()
            .find(|(reason, _)| *reason == entry.reason)
            .and_then(|(_, code)| *code);
        assert_eq!(
            listed.reason_code().map(|(_, code)| code.0),
            code,
            "reason differs for {}",
            entry.serial
        );
    }
}

/// The unread rest of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|bytes| bytes.try_into().ok())
    }
}

/// The next entry whose serial parses, with its revocation time in unix seconds; `None` at the
/// end of the input or at a time no clock can hold.
fn next_entry(input: &mut Input<'_>) -> Option<(RevokedEntry, i64)> {
    loop {
        let [len] = input.array::<1>()?;
        let serial = input.take(usize::from(len % 22))?.to_vec();
        let [reason] = input.array::<1>()?;
        let secs = i64::from_be_bytes(input.array::<8>()?);
        let revoked_at = if secs >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
        }?;
        let significant = strip_zeros(&serial);
        let der_len =
            significant.len() + usize::from(significant.first().is_some_and(|b| *b >= 0x80));
        let parsed = Serial::from_be_bytes(&serial);
        assert_eq!(
            parsed.is_ok(),
            !significant.is_empty() && der_len <= 20,
            "serial {serial:02x?}: {parsed:?}"
        );
        let Ok(serial) = parsed else {
            continue;
        };
        assert_eq!(serial.as_bytes(), significant);
        let reason = REASONS[usize::from(reason) % REASONS.len()].0;
        return Some((
            RevokedEntry {
                serial,
                revoked_at,
                reason,
            },
            secs,
        ));
    }
}

/// `n` big-endian without leading zeros, as a big integer writes it (zero is one zero byte).
fn unsigned_be_bytes(n: u64) -> Vec<u8> {
    match strip_zeros(&n.to_be_bytes()) {
        [] => vec![0],
        bytes => bytes.to_vec(),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn authority_key_id(extensions: &[x509_parser::extensions::X509Extension<'_>]) -> Option<Vec<u8>> {
    extensions
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
            _ => None,
        })
}
