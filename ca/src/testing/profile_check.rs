//! An independent check of DESIGN.md's certificate profile, read straight from DER with
//! x509-parser: it shares no code with the signer, so a signer bug cannot hide here.

use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::FromDer;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("certificate parses");
    assert!(rest.is_empty(), "trailing bytes");
    cert
}

fn ext<'a>(
    cert: &'a X509Certificate<'_>,
    oid: &x509_parser::der_parser::oid::Oid<'_>,
) -> &'a x509_parser::extensions::X509Extension<'a> {
    cert.get_extension_unique(oid)
        .expect("no duplicate extension")
        .unwrap_or_else(|| panic!("extension {oid} present"))
}

fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
    match ext(cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(id) => id.0.to_vec(),
        other => panic!("SKI: {other:?}"),
    }
}

fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
    match ext(cert, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki
            .key_identifier
            .as_ref()
            .expect("AKI has a key identifier")
            .0
            .to_vec(),
        other => panic!("AKI: {other:?}"),
    }
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    match ext(cert, &OID_X509_EXT_SUBJECT_ALT_NAME).parsed_extension() {
        ParsedExtension::SubjectAlternativeName(san) => san
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect(),
        other => panic!("SAN: {other:?}"),
    }
}

fn timestamp(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts every rule DESIGN.md "Certificates" sets for a leaf issued by `issuer` at `now`
/// for `spiffe_id`: the X509-SVID rules and Halyard's profile on top of them.
pub fn check_leaf_profile(leaf: &[u8], issuer: &[u8], spiffe_id: &str, now: SystemTime) {
    let cert = parse(leaf);
    let issuer = parse(issuer);
    assert_eq!(cert.version().0, 2, "version 3");

    // Exactly one URI SAN, the SPIFFE ID; the subject is empty, so the SAN is critical.
    assert_eq!(uris(&cert), [spiffe_id], "exactly one URI SAN");
    assert!(cert.subject().iter().next().is_none(), "empty subject");
    assert!(
        ext(&cert, &OID_X509_EXT_SUBJECT_ALT_NAME).critical,
        "SAN critical"
    );

    // CA:false, critical.
    let bc = ext(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
    assert!(bc.critical, "basic constraints critical");
    match bc.parsed_extension() {
        ParsedExtension::BasicConstraints(bc) => {
            assert!(!bc.ca, "CA:false");
            assert_eq!(bc.path_len_constraint, None);
        }
        other => panic!("basic constraints: {other:?}"),
    }

    // digitalSignature (+ keyEncipherment for RSA only), critical; nothing else.
    let ku = ext(&cert, &OID_X509_EXT_KEY_USAGE);
    assert!(ku.critical, "key usage critical");
    let is_rsa =
        cert.public_key().algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
    match ku.parsed_extension() {
        ParsedExtension::KeyUsage(ku) => {
            assert!(ku.digital_signature(), "digitalSignature");
            assert_eq!(
                ku.key_encipherment(),
                is_rsa,
                "keyEncipherment for RSA only"
            );
            assert!(!ku.key_cert_sign() && !ku.crl_sign(), "leaf cannot sign");
            assert!(!ku.non_repudiation() && !ku.data_encipherment() && !ku.key_agreement());
        }
        other => panic!("key usage: {other:?}"),
    }

    // serverAuth + clientAuth, nothing else.
    let eku = cert
        .extended_key_usage()
        .unwrap()
        .expect("EKU present")
        .value;
    assert!(
        eku.server_auth && eku.client_auth,
        "serverAuth and clientAuth"
    );
    assert!(!eku.any && !eku.code_signing && !eku.email_protection && eku.other.is_empty());

    // SKI, and an AKI equal to the issuer's SKI.
    assert!(!ski(&cert).is_empty(), "SKI");
    assert_eq!(aki(&cert), ski(&issuer), "AKI is the issuer's SKI");
    assert_eq!(
        cert.issuer().as_raw(),
        issuer.subject().as_raw(),
        "issuer name"
    );

    // A positive serial of at least 64 bits (Halyard draws 128).
    let serial = cert.tbs_certificate.raw_serial();
    assert!(serial[0] & 0x80 == 0, "positive serial");
    let significant = serial.iter().skip_while(|b| **b == 0).count();
    assert!(significant >= 8, "serial of {significant} bytes");

    // Backdated a little, never beyond the issuer.
    let validity = cert.validity();
    let now = timestamp(now);
    assert!(
        validity.not_before.timestamp() <= now,
        "notBefore backdated"
    );
    assert!(
        now - validity.not_before.timestamp() <= 3600,
        "backdated by at most an hour"
    );
    assert!(validity.not_after.timestamp() > now, "valid now");
    assert!(
        validity.not_after.timestamp() <= issuer.validity().not_after.timestamp(),
        "leaf ends no later than its issuer"
    );
    cert.verify_signature(Some(issuer.public_key()))
        .expect("signed by the issuer");
}

/// Asserts DESIGN.md's rules for an intermediate of `trust_domain` signed by `root`.
pub fn check_intermediate_profile(intermediate: &[u8], root: &[u8], trust_domain: &str) {
    let cert = parse(intermediate);
    let root = parse(root);
    assert_eq!(cert.version().0, 2, "version 3");
    assert_eq!(
        uris(&cert),
        [format!("spiffe://{trust_domain}")],
        "trust domain URI SAN"
    );
    assert!(cert.subject().iter().next().is_some(), "a CA has a subject");

    let bc = ext(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
    assert!(bc.critical, "basic constraints critical");
    match bc.parsed_extension() {
        ParsedExtension::BasicConstraints(bc) => {
            assert!(bc.ca, "CA:true");
            assert_eq!(bc.path_len_constraint, Some(0), "pathLen 0");
        }
        other => panic!("basic constraints: {other:?}"),
    }
    let ku = ext(&cert, &OID_X509_EXT_KEY_USAGE);
    assert!(ku.critical, "key usage critical");
    match ku.parsed_extension() {
        ParsedExtension::KeyUsage(ku) => {
            assert!(
                ku.key_cert_sign() && ku.crl_sign(),
                "keyCertSign and cRLSign"
            );
            assert!(!ku.key_encipherment() && !ku.data_encipherment());
        }
        other => panic!("key usage: {other:?}"),
    }
    assert!(!ski(&cert).is_empty(), "SKI");
    assert_eq!(aki(&cert), ski(&root), "AKI is the root's SKI");
    assert_eq!(
        cert.issuer().as_raw(),
        root.subject().as_raw(),
        "issuer name"
    );
    assert!(
        cert.validity().not_after.timestamp() <= root.validity().not_after.timestamp(),
        "intermediate ends no later than the root"
    );
    cert.verify_signature(Some(root.public_key()))
        .expect("signed by the root");
}
