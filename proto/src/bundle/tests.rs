use super::*;

fn root(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn spiffe_json_has_one_x509_svid_jwk_per_root() {
    let td = TrustDomain::new("example.org").unwrap();
    let roots = vec![
        root(&rcgen::PKCS_ECDSA_P256_SHA256),
        root(&rcgen::PKCS_ECDSA_P384_SHA384),
    ];
    let json: serde_json::Value = serde_json::from_str(
        &TrustBundle::new(td, roots.clone())
            .to_spiffe_json()
            .unwrap(),
    )
    .unwrap();
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, (der, crv, len)) in keys
        .iter()
        .zip([(&roots[0], "P-256", 32), (&roots[1], "P-384", 48)])
    {
        assert_eq!(key["use"], "x509-svid");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], crv);
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), len);
        let x5c = STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
        assert_eq!(&x5c, der);
    }
}

#[test]
fn refuses_what_is_not_a_certificate_or_has_an_odd_key() {
    let td = TrustDomain::new("example.org").unwrap();
    let err = TrustBundle::new(td.clone(), vec![b"junk".to_vec()])
        .to_spiffe_json()
        .unwrap_err();
    assert!(
        matches!(err, BundleError::BadRoot { index: 0, .. }),
        "{err}"
    );
    let ed = root(&rcgen::PKCS_ED25519);
    let err = TrustBundle::new(td, vec![ed]).to_spiffe_json().unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedKey { index: 0, .. }),
        "{err}"
    );
}
