use super::*;

const ARN: &str = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555";

fn parse(toml_text: &str) -> Result<AwsPcaConfig, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

#[test]
fn minimal_config_takes_the_defaults() {
    let config = parse(&format!("ca_arn = {ARN:?}")).unwrap();
    assert_eq!(config, AwsPcaConfig::new(CaArn::new(ARN).unwrap()));
    assert_eq!(config.region(), "eu-west-1");
    assert_eq!(config.template_arn, DEFAULT_TEMPLATE_ARN);
    assert_eq!(config.intermediate_ttl.as_secs(), 7 * 24 * 3600);
    assert_eq!(config.max_issue_rate.get(), 5);
    assert_eq!(config.signing_algorithm, None);
    config.check().unwrap();
}

#[test]
fn every_key_parses() {
    let config = parse(&format!(
        r#"
        ca_arn = {ARN:?}
        region = "eu-west-1"
        signing_algorithm = "SHA384WITHECDSA"
        template_arn = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
        endpoint_url = "http://127.0.0.1:5000"
        intermediate_ttl = "2d"
        max_issue_rate = 2
        extra_roots = ["/etc/halyard/old-root.pem"]
        "#
    ))
    .unwrap();
    assert_eq!(
        config.signing_algorithm,
        Some(SigningAlgorithm::Sha384WithEcdsa)
    );
    assert_eq!(
        config.endpoint_url.as_deref(),
        Some("http://127.0.0.1:5000")
    );
    assert_eq!(config.intermediate_ttl.as_secs(), 2 * 24 * 3600);
    assert_eq!(config.max_issue_rate.get(), 2);
    assert_eq!(config.extra_roots.len(), 1);
    config.check().unwrap();
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (text, needle) in [
        ("region = \"eu-west-1\"", "missing field `ca_arn`"),
        (
            &format!("ca_arn = {ARN:?}\nbogus = 1") as &str,
            "unknown field `bogus`",
        ),
        (&format!("ca_arn = {ARN:?}\nmax_issue_rate = 0"), "nonzero"),
        (
            &format!("ca_arn = {ARN:?}\nintermediate_ttl = \"soon\""),
            "soon",
        ),
        (
            &format!("ca_arn = {ARN:?}\nsigning_algorithm = \"MD5WITHRSA\""),
            "MD5WITHRSA",
        ),
        (
            "ca_arn = \"arn:aws:acm:eu-west-1:123456789012:certificate/x\"",
            "not an AWS Private CA ARN",
        ),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn arns_are_parsed() {
    let arn = CaArn::new(ARN).unwrap();
    assert_eq!(arn.region(), "eu-west-1");
    assert_eq!(arn.to_string(), ARN);
    assert!(arn.issued(&format!("{ARN}/certificate/0123abcd")));
    assert!(!arn.issued(&format!("{ARN}/certificate/")));
    assert!(!arn.issued(&format!("{ARN}x/certificate/0123")));
    assert!(!arn.issued(
        "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/other/certificate/1"
    ));
    let china =
        CaArn::new("arn:aws-cn:acm-pca:cn-north-1:123456789012:certificate-authority/x").unwrap();
    assert_eq!(china.region(), "cn-north-1");

    for (bad, why) in [
        ("", "is not an ARN"),
        (
            "nope:aws:acm-pca:r:123456789012:certificate-authority/x",
            "is not an ARN",
        ),
        (
            "arn:aws:acm-pca::123456789012:certificate-authority/x",
            "names no region",
        ),
        (
            "arn:aws:acm-pca:r:12345:certificate-authority/x",
            "12-digit account",
        ),
        (
            "arn:aws:acm-pca:r:123456789012:certificate-authority/",
            "names no certificate authority",
        ),
        (
            "arn:aws:acm-pca:r:123456789012:certificate-authority/x/certificate/y",
            "names no certificate authority",
        ),
    ] {
        let err = CaArn::new(bad).unwrap_err().to_string();
        assert!(
            err.contains(why) && err.starts_with("aws_pca: key ca_arn:"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn inconsistent_values_are_refused_by_check() {
    let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
    config.region = Some("us-east-1".into());
    let err = config.check().unwrap_err().to_string();
    assert!(
        err.contains("key region") && err.contains("eu-west-1"),
        "{err}"
    );

    let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
    config.template_arn = "SubordinateCACertificate_PathLen0".into();
    assert!(
        config
            .check()
            .unwrap_err()
            .to_string()
            .contains("key template_arn")
    );

    let mut config = AwsPcaConfig::new(CaArn::new(ARN).unwrap());
    config.endpoint_url = Some("acm-pca.eu-west-1.amazonaws.com".into());
    assert!(
        config
            .check()
            .unwrap_err()
            .to_string()
            .contains("key endpoint_url")
    );
}

#[test]
fn the_default_signing_algorithm_fits_the_key() {
    let cases = [
        (
            KeyAlgorithm::EcPrime256v1,
            SigningAlgorithm::Sha256WithEcdsa,
        ),
        (KeyAlgorithm::EcSecp384r1, SigningAlgorithm::Sha384WithEcdsa),
        (KeyAlgorithm::Rsa2048, SigningAlgorithm::Sha256WithRsa),
        (KeyAlgorithm::Rsa3072, SigningAlgorithm::Sha256WithRsa),
        (KeyAlgorithm::Rsa4096, SigningAlgorithm::Sha256WithRsa),
    ];
    for (sdk, signing) in cases {
        let key = CaKeyAlgorithm::from_sdk(&sdk).unwrap();
        assert_eq!(key.as_str(), sdk.as_str());
        assert_eq!(key.default_signing_algorithm(), signing);
        assert!(signing.fits(key));
        assert_eq!(signing.to_sdk().as_str(), signing.as_str());
    }
    assert!(!SigningAlgorithm::Sha256WithRsa.fits(CaKeyAlgorithm::EcP256));
    assert!(!SigningAlgorithm::Sha384WithEcdsa.fits(CaKeyAlgorithm::Rsa2048));
    for unsupported in [
        KeyAlgorithm::EcSecp521r1,
        KeyAlgorithm::Sm2,
        KeyAlgorithm::MlDsa65,
    ] {
        let err = CaKeyAlgorithm::from_sdk(&unsupported).unwrap_err();
        assert!(err.contains(unsupported.as_str()), "{err}");
    }
}

#[test]
fn signing_algorithms_parse_from_aws_names_as_flags_give_them() {
    for algorithm in SigningAlgorithm::ALL {
        assert_eq!(algorithm.as_str().parse(), Ok(algorithm));
    }
    let err = "SHA1WITHRSA".parse::<SigningAlgorithm>().unwrap_err();
    assert!(
        err.contains("SHA1WITHRSA") && err.contains("SHA256WITHECDSA"),
        "{err}"
    );
    assert!("sha256withecdsa".parse::<SigningAlgorithm>().is_err());
}
