//! CSRs made by another tool (OpenSSL) are judged exactly like Halyard's own: accepted when they
//! follow the rules, refused with the precise reason when their key is not allowed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::SystemTime;

use halyard_ca::authority::{Csr, CsrError, Grant, KeyPolicy, PublicKeyKind};
use halyard_ca::testing::{TestPki, check_leaf_profile, webpki_verify};
use halyard_proto::SpiffeId;

const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// `openssl req` with a fresh key from `keygen` (the `-newkey` argument and its `-pkeyopt`s).
fn openssl_csr(keygen: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/", "-outform", "DER"])
        .args(keygen)
        .args(["-addext", &format!("subjectAltName=URI:{ID}")])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(dir.path().join("r.der"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("r.der")).unwrap()
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn openssl_csrs_with_allowed_keys_are_signed() {
    let pki = TestPki::new("example.org");
    let grant = Grant::new(SpiffeId::new(ID).unwrap());
    for keygen in [
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        &["-newkey", "rsa:2048"][..],
        &["-newkey", "ed25519"][..],
    ] {
        let csr = Csr::parse(&openssl_csr(keygen), &KeyPolicy::default())
            .unwrap_or_else(|e| panic!("{keygen:?}: {e}"));
        let svid = pki
            .authority
            .sign_svid(&csr, &grant, None, SystemTime::now())
            .unwrap();
        check_leaf_profile(&svid.leaf, &svid.intermediates[0], ID, SystemTime::now());
        webpki_verify(
            &svid.leaf,
            &svid.intermediates,
            pki.root_der(),
            SystemTime::now(),
            true,
        )
        .unwrap_or_else(|e| panic!("{keygen:?}: {e}"));
    }
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn openssl_csrs_with_refused_keys_name_the_key() {
    let cases: [(&[&str], PublicKeyKind); 3] = [
        (&["-newkey", "rsa:1024"], PublicKeyKind::Rsa(1024)),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
            PublicKeyKind::EcOther("1.3.132.0.10".into()),
        ),
        (
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
            PublicKeyKind::EcOther("1.3.132.0.35".into()),
        ),
    ];
    for (keygen, expected) in cases {
        let err = Csr::parse(&openssl_csr(keygen), &KeyPolicy::default()).unwrap_err();
        assert!(
            matches!(&err, CsrError::KeyNotAllowed { key, .. } if *key == expected),
            "{keygen:?}: {err}"
        );
    }
}
