//! PCA-style chains of two and three levels, made in code, and every way they can be wrong.

use std::time::{Duration, SystemTime};

use halyard_proto::TrustDomain;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::*;
use crate::authority::{Authority, KeyType, Policy, PrivateKey, certs_to_pem};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// A CA of the emulated PCA hierarchy: its parameters, key and certificate.
struct PcaCa {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl PcaCa {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn pem(&self) -> String {
        certs_to_pem([self.der.as_slice()])
    }
}

fn ca_params(
    name: &str,
    path_len: Option<u8>,
    now: SystemTime,
    life: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Example Corp PCA");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = OffsetDateTime::from(now - DAY);
    params.not_after = OffsetDateTime::from(now + life);
    params.use_authority_key_identifier_extension = true;
    params
}

/// A root as `RootCACertificate/V1` makes it: no SPIFFE ID, no path length limit.
fn pca_root(now: SystemTime) -> PcaCa {
    let params = ca_params("PCA root", None, now, 3650 * DAY);
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    PcaCa { params, key, der }
}

/// A subordinate PCA CA (`SubordinateCACertificate_PathLen1/V1`) under `parent`.
fn pca_subordinate(parent: &PcaCa, now: SystemTime) -> PcaCa {
    let params = ca_params("PCA issuing CA", Some(1), now, 1000 * DAY);
    let key = KeyPair::generate().unwrap();
    let der = params
        .signed_by(&key, &parent.issuer())
        .unwrap()
        .der()
        .to_vec();
    PcaCa { params, key, der }
}

/// What PCA returns for Halyard's CSR: by default what `SubordinateCACertificate_PathLen0/V1`
/// makes, valid for 7 days.
struct Issue {
    is_ca: IsCa,
    key_usages: Vec<KeyUsagePurpose>,
    san: Option<&'static str>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Issue {
    fn new(now: SystemTime) -> Issue {
        Issue {
            is_ca: IsCa::Ca(BasicConstraints::Constrained(0)),
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ],
            san: Some("spiffe://example.org"),
            not_before: now - Duration::from_secs(3600),
            not_after: now + 7 * DAY,
        }
    }

    fn sign(&self, key: &PrivateKey, issuer: &PcaCa) -> String {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Halyard");
        dn.push(DnType::CommonName, "Halyard intermediate CA example.org");
        params.distinguished_name = dn;
        params.is_ca = self.is_ca;
        params.key_usages = self.key_usages.clone();
        params.subject_alt_names = self
            .san
            .map(|uri| vec![SanType::URI(uri.try_into().unwrap())])
            .unwrap_or_default();
        params.not_before = OffsetDateTime::from(self.not_before);
        params.not_after = OffsetDateTime::from(self.not_after);
        params.use_authority_key_identifier_extension = true;
        let der = params
            .signed_by(key, &issuer.issuer())
            .unwrap()
            .der()
            .to_vec();
        certs_to_pem([der.as_slice()])
    }
}

fn our_key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcP256).unwrap()
}

fn expect(
    key: &PrivateKey,
    td: &TrustDomain,
    now: SystemTime,
) -> (Vec<u8>, TrustDomain, SystemTime) {
    (key.public_key_spki(), td.clone(), now + 7 * DAY)
}

fn assemble(
    certificate: &str,
    chain: Option<&str>,
    key: &PrivateKey,
    now: SystemTime,
) -> Result<PcaChain, PcaChainError> {
    let (spki, td, not_after) = expect(key, &td(), now);
    let expected = Expected {
        spki: &spki,
        trust_domain: &td,
        not_after,
    };
    PcaChain::from_pem(certificate, chain, &expected, now)
}

#[test]
fn two_levels_the_issuing_ca_is_the_root() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &root);

    let pca = assemble(&issued, Some(&root.pem()), &key, now).unwrap();
    assert_eq!(pca.chain.len(), 1, "the chain is the intermediate alone");
    assert_eq!(pca.root, root.der);
    assert_eq!(
        authority::verify_chain(&pca.chain, std::slice::from_ref(&pca.root), now),
        Ok(0)
    );
    let authority = Authority::new(key, pca.chain.clone(), Policy::default()).unwrap();
    assert_eq!(authority.trust_domain(), &td());
}

#[test]
fn three_levels_the_chain_keeps_the_pca_intermediate() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let sub = pca_subordinate(&root, now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &sub);
    let pca_chain = format!("{}{}", sub.pem(), root.pem());

    let pca = assemble(&issued, Some(&pca_chain), &key, now).unwrap();
    assert_eq!(pca.chain.len(), 2);
    assert_eq!(pca.chain[1], sub.der);
    assert_eq!(pca.root, root.der);
    Authority::new(key, pca.chain, Policy::default()).unwrap();
}

#[test]
fn a_certificate_that_is_not_a_ca_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.is_ca = IsCa::ExplicitNoCa;
    issue.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert_eq!(err, PcaChainError::NotACa);
    let message = err.to_string();
    assert!(
        message.contains("not a CA") && message.contains("SubordinateCACertificate"),
        "{message}"
    );

    // The EndEntityCertificate template: no basicConstraints at all.
    issue.is_ca = IsCa::NoCa;
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert_eq!(err, PcaChainError::NotACa);
}

#[test]
fn a_ca_without_key_cert_sign_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert_eq!(err, PcaChainError::NoKeyCertSign);
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let other = our_key();
    let issued = Issue::new(now).sign(&other, &root);
    let err = assemble(&issued, Some(&root.pem()), &key, now).unwrap_err();
    assert_eq!(err, PcaChainError::KeyMismatch);
    assert!(err.to_string().contains("public key"), "{err}");
}

#[test]
fn a_certificate_for_another_trust_domain_or_none_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.san = Some("spiffe://other.org");
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert!(
        matches!(&err, PcaChainError::TrustDomain { found, .. } if found == "spiffe://other.org"),
        "{err:?}"
    );
    issue.san = None;
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert!(err.to_string().contains("no spiffe:// URI"), "{err}");
}

#[test]
fn a_missing_or_broken_chain_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &root);
    for chain in [None, Some(""), Some("  \n")] {
        let err = assemble(&issued, chain, &key, now).unwrap_err();
        assert!(matches!(err, PcaChainError::NoChain(_)), "{err:?}");
    }
    let err = assemble(&issued, Some("not pem"), &key, now).unwrap_err();
    assert!(err.to_string().contains("not PEM"), "{err}");
}

#[test]
fn a_certificate_field_with_several_certificates_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &root);
    let two = format!("{issued}{}", root.pem());
    let err = assemble(&two, Some(&root.pem()), &key, now).unwrap_err();
    assert_eq!(
        err,
        PcaChainError::Certificate("it holds 2 certificates".into())
    );
    let err = assemble("garbage", Some(&root.pem()), &key, now).unwrap_err();
    assert!(matches!(err, PcaChainError::Certificate(_)), "{err:?}");
}

#[test]
fn an_intermediate_outliving_its_issuer_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let sub = pca_subordinate(&root, now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.not_after = now + 2000 * DAY;
    let pca_chain = format!("{}{}", sub.pem(), root.pem());
    let (spki, td, _) = expect(&key, &td(), now);
    let expected = Expected {
        spki: &spki,
        trust_domain: &td,
        not_after: now + 2000 * DAY,
    };
    let err =
        PcaChain::from_pem(&issue.sign(&key, &sub), Some(&pca_chain), &expected, now).unwrap_err();
    assert!(
        matches!(err, PcaChainError::OutlivesIssuer { .. }),
        "{err:?}"
    );
}

#[test]
fn an_intermediate_longer_than_asked_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.not_after = now + 365 * DAY;
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert!(
        matches!(err, PcaChainError::LongerThanAsked { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("did not apply the Validity"),
        "{err}"
    );

    // Within a minute of what was asked is fine.
    issue.not_after = now + 7 * DAY + Duration::from_secs(30);
    assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap();
}

#[test]
fn an_expired_intermediate_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let key = our_key();
    let mut issue = Issue::new(now);
    issue.not_before = now - 2 * DAY;
    issue.not_after = now - DAY;
    let err = assemble(&issue.sign(&key, &root), Some(&root.pem()), &key, now).unwrap_err();
    assert!(matches!(err, PcaChainError::Expired(_)), "{err:?}");
}

#[test]
fn an_intermediate_from_another_hierarchy_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let stranger = pca_root(now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &stranger);
    let err = assemble(&issued, Some(&root.pem()), &key, now).unwrap_err();
    assert!(
        matches!(
            err,
            PcaChainError::Chain(ChainError::UntrustedRoot { index: 0 })
        ),
        "{err:?}"
    );
}

#[test]
fn a_chain_cut_short_of_its_root_is_refused() {
    let now = SystemTime::now();
    let root = pca_root(now);
    let sub = pca_subordinate(&root, now);
    let key = our_key();
    let issued = Issue::new(now).sign(&key, &sub);
    let err = assemble(&issued, Some(&sub.pem()), &key, now).unwrap_err();
    assert!(matches!(err, PcaChainError::NotARoot(_)), "{err:?}");
}
