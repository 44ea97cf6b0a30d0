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

fn example_org() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn two_root_bundle() -> TrustBundle {
    TrustBundle::new(
        example_org(),
        vec![
            root(&rcgen::PKCS_ECDSA_P256_SHA256),
            root(&rcgen::PKCS_ECDSA_P384_SHA384),
        ],
    )
}

/// One key of `bundle`'s SPIFFE JSON, edited by `edit`, as a whole bundle again.
fn edited(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let json = two_root_bundle().to_spiffe_json().unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    edit(value["keys"][0].as_object_mut().unwrap());
    value.to_string().into_bytes()
}

fn refusal(json: &[u8]) -> String {
    TrustBundle::from_spiffe_json(example_org(), json)
        .unwrap_err()
        .to_string()
}

#[test]
fn spiffe_json_reads_back_what_it_wrote() {
    let bundle = two_root_bundle();
    let json = bundle.to_spiffe_json().unwrap();
    let again = TrustBundle::from_spiffe_json(example_org(), json.as_bytes()).unwrap();
    assert_eq!(again, bundle);
    assert_eq!(again.to_spiffe_json().unwrap(), json);
    let empty = TrustBundle::new(example_org(), Vec::new());
    let json = empty.to_spiffe_json().unwrap();
    assert_eq!(json, r#"{"keys":[]}"#);
    assert_eq!(
        TrustBundle::from_spiffe_json(example_org(), json.as_bytes()).unwrap(),
        empty
    );
}

#[test]
fn spiffe_json_ignores_members_it_does_not_write() {
    let bundle = two_root_bundle();
    let mut value: serde_json::Value =
        serde_json::from_str(&bundle.to_spiffe_json().unwrap()).unwrap();
    value["spiffe_sequence"] = 7.into();
    value["spiffe_refresh_hint"] = 300.into();
    value["keys"][0]["kid"] = "root-1".into();
    let read = TrustBundle::from_spiffe_json(example_org(), value.to_string().as_bytes()).unwrap();
    assert_eq!(read, bundle);
}

#[test]
fn spiffe_json_refuses_what_is_not_a_jwk_set() {
    assert!(refusal(b"").starts_with("SPIFFE bundle is not JSON: "));
    assert!(refusal(b"{\"keys\": [").starts_with("SPIFFE bundle is not JSON: "));
    assert_eq!(
        refusal(b"[]"),
        "SPIFFE bundle is not a JWK set: the top level is not an object"
    );
    assert_eq!(
        refusal(b"{}"),
        "SPIFFE bundle is not a JWK set: it has no \"keys\" member"
    );
    assert_eq!(
        refusal(br#"{"keys": {}}"#),
        "SPIFFE bundle is not a JWK set: its \"keys\" member is not an array"
    );
    assert_eq!(
        refusal(br#"{"keys": [1]}"#),
        "SPIFFE bundle key 0: is not an object"
    );
}

#[test]
fn spiffe_json_refuses_keys_that_are_not_x509_svid_authorities() {
    let jwt = edited(|key| {
        key.insert("use".into(), "jwt-svid".into());
    });
    assert_eq!(
        refusal(&jwt),
        "SPIFFE bundle key 0: \"use\" is \"jwt-svid\"; only \"x509-svid\" keys are read"
    );
    let no_use = edited(|key| {
        key.remove("use");
    });
    assert_eq!(
        refusal(&no_use),
        "SPIFFE bundle key 0: \"use\" is missing or not a string"
    );
    let chain = edited(|key| {
        let cert = key["x5c"][0].clone();
        key["x5c"].as_array_mut().unwrap().push(cert);
    });
    assert_eq!(
        refusal(&chain),
        "SPIFFE bundle key 0: \"x5c\" holds 2 certificates; an X509-SVID authority has exactly one"
    );
    let no_x5c = edited(|key| {
        key.remove("x5c");
    });
    assert_eq!(
        refusal(&no_x5c),
        "SPIFFE bundle key 0: \"x5c\" is missing or not an array"
    );
    let url_safe = edited(|key| {
        let der = STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
        key["x5c"][0] = URL_SAFE_NO_PAD.encode(der).into();
    });
    assert!(
        refusal(&url_safe).starts_with("SPIFFE bundle key 0: \"x5c\" entry is not standard base64"),
        "{}",
        refusal(&url_safe)
    );
    let junk = edited(|key| {
        key["x5c"][0] = STANDARD.encode(b"junk").into();
    });
    assert!(
        refusal(&junk).starts_with("root 0 is not a DER certificate"),
        "{}",
        refusal(&junk)
    );
}

#[test]
fn spiffe_json_refuses_a_jwk_that_does_not_describe_its_certificate() {
    let other = root(&rcgen::PKCS_ECDSA_P256_SHA256);
    let swapped = edited(|key| {
        key["x5c"][0] = STANDARD.encode(&other).into();
    });
    let err = refusal(&swapped);
    assert!(
        err.starts_with("SPIFFE bundle key 0: \"x\" is \"")
            && err.contains("but its certificate's key has"),
        "{err}"
    );
    let no_crv = edited(|key| {
        key.remove("crv");
    });
    assert_eq!(refusal(&no_crv), "SPIFFE bundle key 0: \"crv\" is missing");
    let rsa_kty = edited(|key| {
        key.insert("kty".into(), "RSA".into());
    });
    assert_eq!(
        refusal(&rsa_kty),
        "SPIFFE bundle key 0: \"kty\" is \"RSA\", but its certificate's key has \"EC\""
    );
}

#[test]
fn refuses_bytes_after_a_root_both_ways() {
    let mut der = root(&rcgen::PKCS_ECDSA_P256_SHA256);
    der.push(0);
    let err = TrustBundle::new(example_org(), vec![der.clone()])
        .to_spiffe_json()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "root 0 is not a DER certificate: 1 bytes follow the certificate"
    );
    let trailing = edited(|key| {
        key["x5c"][0] = STANDARD.encode(&der).into();
    });
    assert_eq!(
        refusal(&trailing),
        "root 0 is not a DER certificate: 1 bytes follow the certificate"
    );
}
