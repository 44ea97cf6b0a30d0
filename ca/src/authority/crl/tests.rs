use std::time::{Duration, SystemTime};

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;
use crate::testing::TestPki;

#[test]
fn a_crl_lists_its_serials_with_reasons_and_verifies_with_the_intermediate() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    let revoked = [
        RevokedEntry {
            serial: "0a0b".parse().unwrap(),
            revoked_at: now,
            reason: RevocationReason::KeyCompromise,
        },
        RevokedEntry {
            serial: Serial::random().unwrap(),
            revoked_at: now,
            reason: RevocationReason::Superseded,
        },
    ];
    let der = pki
        .authority
        .sign_crl(&revoked, now, Duration::from_secs(600))
        .unwrap();
    let (rest, crl) = CertificateRevocationList::from_der(&der).unwrap();
    assert!(rest.is_empty());
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials[0], [0x0a, 0x0b]);
    assert_eq!(serials.len(), 2);
    let (_, intermediate) = x509_parser::parse_x509_certificate(&pki.authority.chain()[0]).unwrap();
    crl.verify_signature(intermediate.public_key()).unwrap();
    assert_eq!(crl.issuer(), intermediate.subject());
    let next = crl.next_update().unwrap().timestamp() - crl.last_update().timestamp();
    assert_eq!(next, 600);
}

#[test]
fn reasons_parse_by_their_rfc_names_and_refuse_others() {
    assert_eq!("keyCompromise".parse(), Ok(RevocationReason::KeyCompromise));
    assert_eq!(RevocationReason::CaCompromise.to_string(), "cACompromise");
    let err = "stolen".parse::<RevocationReason>().unwrap_err();
    assert!(
        err.starts_with(
            "unknown revocation reason \"stolen\": expected one of unspecified, keyCompromise"
        ),
        "{err}"
    );
}

#[test]
fn a_time_a_crl_cannot_hold_is_refused_not_a_panic() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    let year_10000 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    let entry = |revoked_at| RevokedEntry {
        serial: "0a0b".parse().unwrap(),
        revoked_at,
        reason: RevocationReason::KeyCompromise,
    };
    let err = pki
        .authority
        .sign_crl(&[entry(year_10000)], now, Duration::from_secs(600))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "signing failed: the revocation time of serial 0a0b is outside the years 0 to 9999 that a CRL can hold"
    );
    let last_second = year_10000 - Duration::from_secs(1);
    assert!(
        pki.authority
            .sign_crl(&[entry(last_second)], now, Duration::from_secs(600))
            .is_ok()
    );
    let err = pki
        .authority
        .sign_crl(&[], last_second, Duration::from_secs(600))
        .unwrap_err();
    assert!(err.to_string().contains("next update"), "{err}");
}
