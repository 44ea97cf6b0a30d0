//! Every certificate the signing core issues verifies with independent verifiers (webpki, and
//! OpenSSL in strict mode) and satisfies every rule of the certificate profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use halyard_ca::authority::{Csr, Grant, KeyPolicy};
use halyard_ca::testing::{
    CsrSpec, TestKey, TestPki, check_intermediate_profile, check_leaf_profile, openssl_verify,
    webpki_verify,
};
use halyard_proto::{SpiffeId, validate_leaf, validate_signing_cert};

const ID: &str = "spiffe://example.org/ns/default/sa/web";

fn issue(pki: &TestPki, key: TestKey) -> halyard_ca::authority::IssuedSvid {
    let csr = Csr::parse(&CsrSpec::for_id(ID).key(key).der(), &KeyPolicy::default()).unwrap();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    pki.authority
        .sign_svid(&csr, &grant, None, SystemTime::now())
        .unwrap()
}

const KEYS: [TestKey; 4] = [
    TestKey::EcP256,
    TestKey::EcP384,
    TestKey::Ed25519,
    TestKey::Rsa(2048),
];

#[test]
fn every_key_type_gives_a_chain_webpki_accepts_for_client_and_server() {
    let pki = TestPki::new("example.org");
    for key in KEYS {
        let svid = issue(&pki, key);
        for server in [true, false] {
            webpki_verify(
                &svid.leaf,
                &svid.intermediates,
                pki.root_der(),
                SystemTime::now(),
                server,
            )
            .unwrap_or_else(|e| panic!("{key:?} server={server}: {e}"));
        }
    }
}

#[test]
fn every_key_type_gives_a_leaf_with_the_whole_profile() {
    let pki = TestPki::new("example.org");
    let intermediate = &pki.authority.chain()[0];
    check_intermediate_profile(intermediate, pki.root_der(), "example.org");
    validate_signing_cert(intermediate).unwrap();
    validate_signing_cert(pki.root_der()).unwrap();
    for key in KEYS {
        let svid = issue(&pki, key);
        check_leaf_profile(&svid.leaf, intermediate, ID, SystemTime::now());
        let parsed = validate_leaf(&svid.leaf).unwrap();
        assert_eq!(parsed.spiffe_id().as_str(), ID);
        assert_eq!(parsed.serial(), svid.serial.as_bytes(), "{key:?}");
        assert_eq!(parsed.not_after(), svid.not_after);
    }
}

#[test]
fn webpki_refuses_the_chain_after_it_expires_and_under_another_root() {
    let pki = TestPki::new("example.org");
    let svid = issue(&pki, TestKey::EcP256);
    let later = svid.not_after + std::time::Duration::from_secs(1);
    assert!(webpki_verify(&svid.leaf, &svid.intermediates, pki.root_der(), later, true).is_err());
    let other = TestPki::new("example.org");
    assert!(
        webpki_verify(
            &svid.leaf,
            &svid.intermediates,
            other.root_der(),
            SystemTime::now(),
            true
        )
        .is_err()
    );
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn openssl_strict_accepts_every_key_type_for_client_and_server() {
    let pki = TestPki::new("example.org");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    let intermediates = dir.path().join("intermediates.pem");
    std::fs::write(&root, halyard_ca::authority::certs_to_pem([pki.root_der()])).unwrap();
    std::fs::write(
        &intermediates,
        halyard_ca::authority::certs_to_pem(pki.authority.chain().iter().map(Vec::as_slice)),
    )
    .unwrap();
    for key in KEYS {
        let svid = issue(&pki, key);
        let leaf = dir.path().join("leaf.pem");
        std::fs::write(
            &leaf,
            halyard_ca::authority::certs_to_pem([svid.leaf.as_slice()]),
        )
        .unwrap();
        for purpose in ["sslclient", "sslserver"] {
            openssl_verify(purpose, &root, &intermediates, &leaf)
                .unwrap_or_else(|e| panic!("{key:?} {purpose}: {e}"));
        }
    }
}

/// The URIs of a certificate's CRL distribution points.
fn crl_distribution_points(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for point in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                    for name in names {
                        if let GeneralName::URI(uri) = name {
                            uris.push((*uri).to_owned());
                        }
                    }
                }
            }
        }
    }
    uris
}

#[test]
fn a_crl_distribution_point_is_added_only_when_configured() {
    let plain = TestPki::new("example.org");
    assert!(crl_distribution_points(&issue(&plain, TestKey::EcP256).leaf).is_empty());

    let policy = halyard_ca::authority::Policy {
        crl_base_url: Some("http://halyard-ca.halyard.svc:9090/crl/".into()),
        ..halyard_ca::authority::Policy::default()
    };
    let pki = TestPki::with_policy("example.org", policy, SystemTime::now());
    let svid = issue(&pki, TestKey::EcP256);
    assert_eq!(
        crl_distribution_points(&svid.leaf),
        [format!(
            "http://halyard-ca.halyard.svc:9090/crl/{}.crl",
            pki.authority.id()
        )]
    );
    // Still the whole profile, and still accepted by webpki.
    check_leaf_profile(&svid.leaf, &pki.authority.chain()[0], ID, SystemTime::now());
    validate_leaf(&svid.leaf).unwrap();
    webpki_verify(
        &svid.leaf,
        &svid.intermediates,
        pki.root_der(),
        SystemTime::now(),
        false,
    )
    .unwrap();
}

/// A leaf signed just after its intermediate became valid is not backdated past the
/// intermediate's start (an upstream such as AWS Private CA may not backdate intermediates),
/// and still verifies under strict OpenSSL.
#[test]
fn a_leaf_never_starts_before_its_intermediate() {
    let pki = TestPki::new("example.org");
    let csr = Csr::parse(
        &CsrSpec::for_id(ID).key(TestKey::EcP256).der(),
        &KeyPolicy::default(),
    )
    .unwrap();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    let start = pki.authority.not_before();
    let svid = pki
        .authority
        .sign_svid(
            &csr,
            &grant,
            None,
            start + std::time::Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        svid.not_before, start,
        "clamped to the intermediate's notBefore"
    );
    let backdated = pki
        .authority
        .sign_svid(
            &csr,
            &grant,
            None,
            start + std::time::Duration::from_secs(3600),
        )
        .unwrap();
    assert!(backdated.not_before < start + std::time::Duration::from_secs(3600));
    assert!(
        backdated.not_before > start,
        "an ordinary leaf is backdated, not clamped"
    );
}

/// Leaf serials are 20 bytes, positive, and follow the issue time by the millisecond, as the
/// certificates hold them: the journal's index by serial then grows at one end.
#[test]
fn leaf_serials_are_20_bytes_in_issue_order() {
    let pki = TestPki::new("example.org");
    let csr = Csr::parse(&CsrSpec::for_id(ID).der(), &KeyPolicy::default()).unwrap();
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    let start = pki.authority.not_before() + std::time::Duration::from_secs(60);
    let serials: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let at = start + std::time::Duration::from_millis(3 * i);
            let svid = pki.authority.sign_svid(&csr, &grant, None, at).unwrap();
            let leaf = validate_leaf(&svid.leaf).unwrap();
            assert_eq!(leaf.serial(), svid.serial.as_bytes());
            leaf.serial().to_vec()
        })
        .collect();
    for serial in &serials {
        assert_eq!(serial.len(), 20, "{serial:02x?}");
        assert!((0x40..0x80).contains(&serial[0]), "{serial:02x?}");
    }
    assert!(
        serials.windows(2).all(|pair| pair[0] < pair[1]),
        "{serials:02x?}"
    );
}
