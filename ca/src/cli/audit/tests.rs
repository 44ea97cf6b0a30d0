//! The checks of `audit verify` on a PKI made in code; the command itself, on real stores and a
//! running CA, is tested in `ca/tests/audit.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use super::chains::{self, CheckedAuthority};
use super::crls::{self, CrlSource};
use super::fetch::CrlBase;
use crate::authority::{
    Authority, KeyType, Policy, PrivateKey, RevocationReason, RevokedEntry, Serial, certs_to_pem,
};
use crate::store::{AuthorityRecord, AuthorityState, IssuedRecord, JournalRow, Revocation};
use crate::testing::{TestPki, intermediate_for, shifted, ttl};

fn record(authority: &Authority) -> AuthorityRecord {
    AuthorityRecord {
        id: authority.id().to_owned(),
        state: AuthorityState::Active,
        chain_pem: certs_to_pem(authority.chain().iter().map(Vec::as_slice)),
        not_after: authority.not_after(),
        created_at: SystemTime::UNIX_EPOCH,
        activated_at: None,
        tainted_at: None,
    }
}

fn checked(pki: &TestPki) -> HashMap<String, CheckedAuthority> {
    let roots = vec![pki.root_der().to_vec()];
    HashMap::from([(
        pki.authority.id().to_owned(),
        chains::check_authority(&record(&pki.authority), &roots),
    )])
}

fn row(authority: &str, not_before: SystemTime, not_after: SystemTime) -> JournalRow {
    JournalRow {
        seq: 7,
        record: IssuedRecord {
            serial: "0a".to_owned(),
            spiffe_id: "spiffe://example.org/w".to_owned(),
            caller: "cli".to_owned(),
            authority: authority.to_owned(),
            not_before,
            not_after,
            der_sha256: [0; 32],
        },
        issued_at: not_before,
        prev_hash: [0; 32],
        row_hash: [0; 32],
    }
}

#[test]
fn a_row_inside_its_authority_under_a_bundle_root_passes() {
    let pki = TestPki::new("example.org");
    let authorities = checked(&pki);
    let now = SystemTime::now();
    let ok = row(pki.authority.id(), now, now + Duration::from_secs(3600));
    assert_eq!(chains::check_row(&ok, &authorities), None);
}

#[test]
fn a_row_outside_its_authority_or_under_an_unknown_one_is_named() {
    let pki = TestPki::new("example.org");
    let authorities = checked(&pki);
    let now = SystemTime::now();
    let late = row(
        pki.authority.id(),
        now,
        now + Duration::from_secs(2 * 365 * 86_400),
    );
    let problem = chains::check_row(&late, &authorities).unwrap();
    assert!(
        problem.contains("is not inside the validity of authority"),
        "{problem}"
    );
    let early = row(pki.authority.id(), shifted(now, -3600), now);
    assert!(chains::check_row(&early, &authorities).is_some());
    let unknown = row("abcd", now, now);
    assert_eq!(
        chains::check_row(&unknown, &authorities).unwrap(),
        "authority abcd is not in the store"
    );
}

#[test]
fn an_authority_under_another_root_does_not_chain() {
    let pki = TestPki::new("example.org");
    let other = TestPki::new("example.org");
    let checked = chains::check_authority(&record(&pki.authority), &[other.root_der().to_vec()]);
    let reason = checked.verdict.as_ref().unwrap_err().clone();
    assert!(
        reason.starts_with("does not chain to a root of the bundle"),
        "{reason}"
    );
    let rows_reason = chains::check_row(
        &row(pki.authority.id(), SystemTime::now(), SystemTime::now()),
        &HashMap::from([(pki.authority.id().to_owned(), checked)]),
    )
    .unwrap();
    assert!(rows_reason.contains(pki.authority.id()), "{rows_reason}");
}

#[test]
fn a_stored_chain_that_is_not_the_authoritys_own_or_not_a_ca_is_refused() {
    let pki = TestPki::new("example.org");
    let roots = vec![pki.root_der().to_vec()];
    let mut swapped = record(&pki.authority);
    swapped.id = "00ff".to_owned();
    let reason = chains::check_authority(&swapped, &roots)
        .verdict
        .unwrap_err();
    assert!(
        reason.contains("certificate of another authority"),
        "{reason}"
    );

    let mut empty = record(&pki.authority);
    empty.chain_pem = String::new();
    let reason = chains::check_authority(&empty, &roots).verdict.unwrap_err();
    assert!(reason.starts_with("has no usable certificate"), "{reason}");

    let leaf = crate::testing::self_signed_leaf("spiffe://example.org/w");
    let mut not_ca = record(&pki.authority);
    not_ca.id = crate::authority::authority_id(&leaf);
    not_ca.chain_pem = certs_to_pem([leaf.as_slice()]);
    let reason = chains::check_authority(&not_ca, &roots)
        .verdict
        .unwrap_err();
    assert!(reason.starts_with("is not a signing CA"), "{reason}");
}

fn revocation(authority: &Authority, serial: &str, at: SystemTime) -> Revocation {
    Revocation {
        serial: serial.to_owned(),
        spiffe_id: "spiffe://example.org/w".to_owned(),
        authority: authority.id().to_owned(),
        reason: "keyCompromise".to_owned(),
        revoked_at: at,
        not_after: at + Duration::from_secs(3600),
    }
}

fn crl(authority: &Authority, serials: &[&str], at: SystemTime, validity: u64) -> CrlSource {
    let entries: Vec<RevokedEntry> = serials
        .iter()
        .map(|s| RevokedEntry {
            serial: s.parse::<Serial>().unwrap(),
            revoked_at: at,
            reason: RevocationReason::KeyCompromise,
        })
        .collect();
    CrlSource {
        name: "test.crl".to_owned(),
        authority: None,
        der: authority
            .sign_crl(&entries, at, Duration::from_secs(validity))
            .unwrap(),
    }
}

fn ever(serials: &[&str]) -> BTreeSet<String> {
    serials.iter().map(|s| crls::bare_serial(s)).collect()
}

#[test]
fn a_current_crl_listing_every_revocation_passes() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    let revoked = [revocation(&pki.authority, "00ab12", shifted(now, -10))];
    let report = crls::check(
        &[crl(&pki.authority, &["ab12"], now, 600)],
        &checked(&pki),
        &revoked,
        &ever(&["00ab12"]),
        now,
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.crls, report.revocations), (1, 1));
}

#[test]
fn a_missing_serial_an_expired_crl_and_an_unexplained_serial_are_named() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    let revoked = [revocation(&pki.authority, "ab12", now)];
    // Signed an hour ago for ten minutes, before the revocation, and listing another serial.
    let old = crl(&pki.authority, &["cd34"], shifted(now, -3600), 600);
    let report = crls::check(&[old], &checked(&pki), &revoked, &ever(&["ab12"]), now);
    let text = report.problems.join("\n");
    assert_eq!(report.problems.len(), 3, "{text}");
    assert!(text.contains("serial ab12 (revoked"), "{text}");
    assert!(
        text.contains("which was signed before the revocation"),
        "{text}"
    );
    assert!(text.contains("not current"), "{text}");
    assert!(
        text.contains("lists serial cd34, which the store has no revocation for"),
        "{text}"
    );
}

#[test]
fn a_crl_signed_by_another_key_or_garbage_is_refused() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    // Another intermediate of the same root: the same subject, another key.
    let (key, cert) = intermediate_for(&pki.root, ttl("1y"), now);
    let other = Authority::new(key, vec![cert], Policy::default()).unwrap();
    let mut forged = crl(&other, &[], now, 600);
    forged.authority = Some(pki.authority.id().to_owned());
    let garbage = CrlSource {
        name: "junk.crl".to_owned(),
        authority: None,
        der: b"not a crl".to_vec(),
    };
    let unknown = crl(&other, &[], now, 600);
    let revoked = [revocation(&pki.authority, "ab12", now)];
    let report = crls::check(
        &[forged, garbage, unknown],
        &checked(&pki),
        &revoked,
        &ever(&["ab12"]),
        now,
    );
    let text = report.problems.join("\n");
    assert!(text.contains("fetched for authority"), "{text}");
    assert!(text.contains("junk.crl: does not parse as a CRL"), "{text}");
    assert!(
        text.contains("which has no certificate in the store"),
        "{text}"
    );
    assert!(
        text.contains("no valid CRL of its authority was given"),
        "{text}"
    );
    assert_eq!(report.problems.len(), 4, "{text}");
}

#[test]
fn a_crl_claiming_an_authority_but_signed_by_another_key_fails_its_signature() {
    let pki = TestPki::new("example.org");
    let now = SystemTime::now();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    // The authority's own certificate with another key: its name and key id, not its key.
    let issuer = rcgen::Issuer::from_ca_cert_der(
        &rustls_pki_types::CertificateDer::from(pki.authority.chain()[0].as_slice()),
        key,
    )
    .unwrap();
    let params = rcgen::CertificateRevocationListParams {
        this_update: time::OffsetDateTime::now_utc(),
        next_update: time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(hex_bytes(pki.authority.id())),
    };
    let der = params.signed_by(&issuer).unwrap().der().to_vec();
    let report = crls::check(
        &[CrlSource {
            name: "forged.crl".to_owned(),
            authority: None,
            der,
        }],
        &checked(&pki),
        &[],
        &BTreeSet::new(),
        now,
    );
    let text = report.problems.join("\n");
    assert!(
        text.contains("forged.crl: its signature does not verify under the key of authority"),
        "{text}"
    );
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn crl_files_are_read_as_der_or_pem_and_other_pem_is_refused() {
    let pki = TestPki::new("example.org");
    let der = crl(&pki.authority, &[], SystemTime::now(), 600).der;
    let dir = tempfile::tempdir().unwrap();
    let der_path = dir.path().join("a.crl");
    std::fs::write(&der_path, &der).unwrap();
    assert_eq!(crls::read_crl_file(&der_path).unwrap()[0].der, der);
    let pem_path = dir.path().join("a.pem");
    let block = pem::encode(&pem::Pem::new("X509 CRL", der.clone()));
    std::fs::write(&pem_path, format!("{block}{block}")).unwrap();
    assert_eq!(crls::read_crl_file(&pem_path).unwrap().len(), 2);
    let cert_path = dir.path().join("c.pem");
    std::fs::write(&cert_path, certs_to_pem([pki.root_der()])).unwrap();
    let err = crls::read_crl_file(&cert_path).unwrap_err();
    assert!(
        err.contains("c.pem") && err.contains("no X509 CRL block"),
        "{err}"
    );
    let err = crls::read_crl_file(&dir.path().join("missing.crl")).unwrap_err();
    assert!(
        err.starts_with("--crl ") && err.contains("missing.crl"),
        "{err}"
    );
}

#[test]
fn the_crl_base_must_be_plain_http_with_a_host() {
    assert!("http://127.0.0.1:9090/crl/".parse::<CrlBase>().is_ok());
    for bad in [
        "https://ca/crl",
        "ftp://x",
        "http://",
        "http://ca/crl?x=1",
        "ca:9090",
    ] {
        assert!(bad.parse::<CrlBase>().is_err(), "{bad}");
    }
}
