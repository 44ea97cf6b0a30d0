use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::*;

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn leaf_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri("spiffe://example.org/ns/default/sa/web")];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.subject_alt_names = vec![uri("spiffe://example.org")];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn der(params: &CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn accepts_a_spec_leaf() {
    let mut params = leaf_params();
    params
        .subject_alt_names
        .push(SanType::DnsName("web.default.svc".try_into().unwrap()));
    let svid = validate_leaf(&der(&params)).unwrap();
    assert_eq!(
        svid.spiffe_id().as_str(),
        "spiffe://example.org/ns/default/sa/web"
    );
    assert_eq!(svid.dns_names(), ["web.default.svc"]);
    assert!(svid.not_before() <= svid.not_after());
}

#[test]
fn refuses_each_broken_leaf_rule() {
    type Breaker = fn(&mut CertificateParams);
    type Expect = fn(&SvidError) -> bool;
    let cases: &[(&str, Breaker, Expect)] = &[
        (
            "no URI SAN",
            |p| p.subject_alt_names = vec![SanType::DnsName("a.example".try_into().unwrap())],
            |e| matches!(e, SvidError::NoUriSan),
        ),
        (
            "two URI SANs",
            |p| p.subject_alt_names.push(uri("spiffe://example.org/other")),
            |e| matches!(e, SvidError::MultipleUriSans(2)),
        ),
        (
            "URI that is not a SPIFFE ID",
            |p| p.subject_alt_names = vec![uri("https://example.org/web")],
            |e| matches!(e, SvidError::NotSpiffeId { .. }),
        ),
        (
            "trust domain ID on a leaf",
            |p| p.subject_alt_names = vec![uri("spiffe://example.org")],
            |e| matches!(e, SvidError::LeafIdWithoutPath(_)),
        ),
        (
            "CA leaf",
            |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
            |e| matches!(e, SvidError::LeafIsCa),
        ),
        (
            "no key usage",
            |p| p.key_usages.clear(),
            |e| matches!(e, SvidError::NoKeyUsage),
        ),
        (
            "no digitalSignature",
            |p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment],
            |e| matches!(e, SvidError::LeafWithoutDigitalSignature),
        ),
        (
            "keyCertSign on a leaf",
            |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign),
            |e| matches!(e, SvidError::LeafMaySign("keyCertSign")),
        ),
        (
            "cRLSign on a leaf",
            |p| p.key_usages.push(KeyUsagePurpose::CrlSign),
            |e| matches!(e, SvidError::LeafMaySign("cRLSign")),
        ),
        (
            "empty subject with a non-critical SAN",
            |p| {
                let uri = b"spiffe://example.org/w";
                let mut content = vec![0x30, uri.len() as u8 + 2, 0x86, uri.len() as u8];
                content.extend_from_slice(uri);
                p.subject_alt_names.clear();
                p.custom_extensions =
                    vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], content)];
            },
            |e| matches!(e, SvidError::SanNotCriticalWithEmptySubject),
        ),
    ];
    for (name, break_it, expected) in cases {
        let mut params = leaf_params();
        break_it(&mut params);
        let err = validate_leaf(&der(&params)).expect_err(name);
        assert!(expected(&err), "{name}: got {err:?}");
    }
}

#[test]
fn refuses_garbage_and_trailing_bytes() {
    assert!(matches!(
        validate_leaf(b"not a certificate"),
        Err(SvidError::Malformed(_))
    ));
    assert!(matches!(validate_leaf(&[]), Err(SvidError::Malformed(_))));
    let mut bytes = der(&leaf_params());
    bytes.extend_from_slice(&[0, 0]);
    assert_eq!(validate_leaf(&bytes), Err(SvidError::TrailingData(2)));
    let truncated = der(&leaf_params());
    assert!(matches!(
        validate_leaf(&truncated[..truncated.len() / 2]),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn accepts_a_spec_signing_cert() {
    let cert = validate_signing_cert(&der(&ca_params())).unwrap();
    assert_eq!(
        cert.trust_domain().map(TrustDomain::as_str),
        Some("example.org")
    );
    assert_eq!(cert.path_len(), Some(0));
    assert!(cert.is_self_issued());

    // AWS Private CA sets digitalSignature on the CAs it issues; that is allowed.
    let mut params = ca_params();
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.subject_alt_names.clear();
    let cert = validate_signing_cert(&der(&params)).unwrap();
    assert_eq!(cert.trust_domain(), None);
}

#[test]
fn refuses_each_broken_signing_rule() {
    let mut not_ca = ca_params();
    not_ca.is_ca = IsCa::ExplicitNoCa;
    assert_eq!(validate_signing_cert(&der(&not_ca)), Err(SvidError::NotCa));

    let mut no_bc = ca_params();
    no_bc.is_ca = IsCa::NoCa;
    assert_eq!(validate_signing_cert(&der(&no_bc)), Err(SvidError::NotCa));

    let mut no_cert_sign = ca_params();
    no_cert_sign.key_usages = vec![KeyUsagePurpose::CrlSign];
    assert_eq!(
        validate_signing_cert(&der(&no_cert_sign)),
        Err(SvidError::NoKeyCertSign)
    );

    let mut with_path = ca_params();
    with_path.subject_alt_names = vec![uri("spiffe://example.org/ca")];
    assert!(matches!(
        validate_signing_cert(&der(&with_path)),
        Err(SvidError::SigningIdWithPath(_))
    ));

    // A leaf is refused as a signer: its SPIFFE ID has a path, and it is no CA.
    assert!(matches!(
        validate_signing_cert(&der(&leaf_params())),
        Err(SvidError::SigningIdWithPath(_))
    ));
}
