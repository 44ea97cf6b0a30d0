use super::*;

#[test]
fn dev_needs_nothing_and_listens_on_loopback() {
    let config = ConfigFile::default().resolve("flags", true).unwrap();
    assert_eq!(config.trust_domain.as_str(), "cluster.local");
    assert_eq!(config.grpc_listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(config.http_listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(config.admin_socket, PathBuf::from("halyard-dev/admin.sock"));
    assert!(config.store_url.starts_with("sqlite://"));
}

#[test]
fn production_requires_trust_domain_and_data_dir() {
    let err = ConfigFile::default().resolve("a.toml", false).unwrap_err();
    assert_eq!(err.to_string(), "a.toml: key trust_domain: is required");
}

#[test]
fn file_errors_name_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halyard-ca.toml");
    std::fs::write(&path, "trust_domain = \"cluster.local\"\nmax_batchh = 3\n").unwrap();
    let err = ConfigFile::read(&path).unwrap_err().to_string();
    assert!(
        err.contains("halyard-ca.toml") && err.contains("max_batchh"),
        "{err}"
    );

    std::fs::write(
        &path,
        "trust_domain = \"Cluster.local\"\ndata_dir = \"/d\"\n",
    )
    .unwrap();
    let err = ConfigFile::read(&path)
        .unwrap()
        .resolve("halyard-ca.toml", false)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("halyard-ca.toml: key trust_domain: "),
        "{err}"
    );

    std::fs::write(
        &path,
        "trust_domain = \"td\"\ndata_dir = \"/d\"\nmax_ttl = \"0s\"\n",
    )
    .unwrap();
    let err = ConfigFile::read(&path)
        .unwrap()
        .resolve("halyard-ca.toml", false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "halyard-ca.toml: key max_ttl: TTL must be positive, got \"0s\""
    );

    let missing = ConfigFile::read(&dir.path().join("nope.toml")).unwrap_err();
    assert!(missing.to_string().contains("nope.toml"));
}

#[test]
fn flags_override_the_file() {
    let file = ConfigFile {
        trust_domain: Some("a.org".into()),
        max_batch: Some(10),
        ..ConfigFile::default()
    };
    let flags = ConfigFile {
        max_batch: Some(20),
        data_dir: Some("/x".into()),
        ..ConfigFile::default()
    };
    let config = file.overlay(flags).resolve("flags", false).unwrap();
    assert_eq!(config.max_batch, 20);
    assert_eq!(config.trust_domain.as_str(), "a.org");
    assert_eq!(config.data_dir, PathBuf::from("/x"));
}

#[test]
fn the_example_config_in_the_repository_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/halyard-ca.toml");
    let config = ConfigFile::read(&path)
        .unwrap()
        .resolve("example", false)
        .unwrap();
    assert_eq!(config.trust_domain.as_str(), "cluster.local");
}

const PCA_ARN: &str = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/0b1e2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d";

fn aws_pca_file(extra: &str) -> ConfigFile {
    toml::from_str(&format!(
        "trust_domain = \"td\"\ndata_dir = \"/d\"\nupstream = \"aws-pca\"\n\n[aws_pca]\n\
         ca_arn = {PCA_ARN:?}\n{extra}"
    ))
    .unwrap()
}

#[test]
fn the_default_upstream_is_offline() {
    let config = ConfigFile {
        trust_domain: Some("td".into()),
        data_dir: Some("/d".into()),
        ..ConfigFile::default()
    }
    .resolve("a.toml", false)
    .unwrap();
    assert_eq!(config.upstream, Upstream::Offline);
    let explicit = ConfigFile {
        upstream: Some("offline".into()),
        ..ConfigFile::default()
    };
    assert_eq!(
        explicit.resolve("flags", true).unwrap().upstream,
        Upstream::Offline
    );
}

#[test]
fn aws_pca_takes_the_table_and_its_defaults() {
    let config =
        aws_pca_file("intermediate_ttl = \"2d\"\nsigning_algorithm = \"SHA384WITHECDSA\"\n")
            .resolve("a.toml", false)
            .unwrap();
    let Upstream::AwsPca(pca) = config.upstream else {
        panic!("{:?}", config.upstream)
    };
    assert_eq!(pca.ca_arn.as_str(), PCA_ARN);
    assert_eq!(pca.region(), "eu-west-1");
    assert_eq!(pca.intermediate_ttl.as_secs(), 2 * 86_400);
    assert_eq!(
        pca.signing_algorithm,
        Some(crate::upstream::SigningAlgorithm::Sha384WithEcdsa)
    );
    assert_eq!(pca.template_arn, crate::upstream::DEFAULT_TEMPLATE_ARN);
    assert_eq!(pca.max_issue_rate.get(), 5);
}

#[test]
fn aws_pca_flags_fill_in_and_override_the_table() {
    let flags = ConfigFile {
        aws_pca: Some(AwsPcaFile {
            endpoint_url: Some("http://127.0.0.1:5000".into()),
            intermediate_ttl: Some("90s".into()),
            ..AwsPcaFile::default()
        }),
        ..ConfigFile::default()
    };
    let config = aws_pca_file("intermediate_ttl = \"2d\"\nmax_issue_rate = 2\n")
        .overlay(flags)
        .resolve("flags", false)
        .unwrap();
    let Upstream::AwsPca(pca) = config.upstream else {
        panic!("{:?}", config.upstream)
    };
    assert_eq!(pca.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(pca.intermediate_ttl.as_secs(), 90);
    assert_eq!(pca.max_issue_rate.get(), 2, "kept from the file");
    assert_eq!(pca.ca_arn.as_str(), PCA_ARN, "kept from the file");

    // The whole upstream from flags alone.
    let flags = ConfigFile {
        trust_domain: Some("td".into()),
        data_dir: Some("/d".into()),
        upstream: Some("aws-pca".into()),
        aws_pca: Some(AwsPcaFile {
            ca_arn: Some(crate::upstream::CaArn::new(PCA_ARN).unwrap()),
            ..AwsPcaFile::default()
        }),
        ..ConfigFile::default()
    };
    let config = ConfigFile::default()
        .overlay(flags)
        .resolve("flags", false)
        .unwrap();
    assert!(matches!(config.upstream, Upstream::AwsPca(_)));
}

#[test]
fn aws_pca_with_dev_is_refused_naming_both() {
    let err = aws_pca_file("")
        .resolve("a.toml", true)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("a.toml: key upstream: ")
            && err.contains("\"aws-pca\"")
            && err.contains("--dev"),
        "{err}"
    );
}

#[test]
fn bad_aws_pca_settings_name_the_key() {
    let cases = [
        ("region = \"us-east-1\"\n", "aws_pca.region", "differs"),
        (
            "intermediate_ttl = \"30s\"\n",
            "aws_pca.intermediate_ttl",
            "too short",
        ),
        (
            "intermediate_ttl = \"soon\"\n",
            "aws_pca.intermediate_ttl",
            "soon",
        ),
        ("template_arn = \"nope\"\n", "aws_pca.template_arn", "nope"),
        (
            "endpoint_url = \"ftp://x\"\n",
            "aws_pca.endpoint_url",
            "ftp://x",
        ),
    ];
    for (extra, key, why) in cases {
        let err = aws_pca_file(extra)
            .resolve("a.toml", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("a.toml: key {key}: ")) && err.contains(why),
            "{extra}: {err}"
        );
    }

    let no_arn = ConfigFile {
        trust_domain: Some("td".into()),
        data_dir: Some("/d".into()),
        upstream: Some("aws-pca".into()),
        ..ConfigFile::default()
    };
    let err = no_arn.resolve("a.toml", false).unwrap_err().to_string();
    assert!(
        err.starts_with("a.toml: key aws_pca.ca_arn: is required"),
        "{err}"
    );

    let table_alone = ConfigFile {
        upstream: None,
        ..aws_pca_file("")
    };
    let err = table_alone
        .resolve("a.toml", false)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("a.toml: key aws_pca: is set, but"), "{err}");

    let unknown = ConfigFile {
        upstream: Some("vault".into()),
        ..ConfigFile::default()
    };
    let err = unknown.resolve("flags", true).unwrap_err().to_string();
    assert!(
        err.starts_with("flags: key upstream: \"vault\" is not an upstream"),
        "{err}"
    );
}

#[test]
fn aws_pca_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halyard-ca.toml");
    for (table, expected) in [
        ("ca_arn = \"arn:aws:s3:::bucket\"", "ca_arn"),
        (
            "ca_arn = \"arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x\"\nsigning_algorithm = \"MD5\"",
            "signing_algorithm",
        ),
        (
            "ca_arn = \"arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x\"\nca_ram = 1",
            "ca_ram",
        ),
    ] {
        std::fs::write(
            &path,
            format!("trust_domain = \"td\"\nupstream = \"aws-pca\"\n[aws_pca]\n{table}\n"),
        )
        .unwrap();
        let err = ConfigFile::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("halyard-ca.toml") && err.contains(expected),
            "{err}"
        );
    }
}

#[test]
fn the_commented_aws_pca_example_parses_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/halyard-ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# upstream = \"aws-pca\"").unwrap();
    let uncommented: Vec<&str> = text[start..]
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .or(line.strip_prefix('#'))
                .unwrap_or(line)
        })
        .collect();
    let file: ConfigFile =
        toml::from_str(&format!("{}{}", &text[..start], uncommented.join("\n"))).unwrap();
    let config = file.resolve("example", false).unwrap();
    let Upstream::AwsPca(pca) = config.upstream else {
        panic!("{:?}", config.upstream)
    };
    assert_eq!(pca.intermediate_ttl.as_secs(), 7 * 86_400);
    assert_eq!(pca.extra_roots.len(), 1);
}

#[test]
fn a_crl_base_url_must_be_http_and_loses_its_trailing_slash() {
    let with = |url: &str| ConfigFile {
        crl_base_url: Some(url.to_owned()),
        ..ConfigFile::default()
    };
    assert_eq!(
        ConfigFile::default()
            .resolve("flags", true)
            .unwrap()
            .crl_base_url,
        None
    );
    let config = with("http://halyard-ca.halyard.svc:9090/crl/")
        .resolve("flags", true)
        .unwrap();
    assert_eq!(
        config.crl_base_url.as_deref(),
        Some("http://halyard-ca.halyard.svc:9090/crl")
    );
    for bad in ["ldap://ca/crl", "halyard-ca:9090/crl", "http://ca/my crl"] {
        let err = with(bad).resolve("a.toml", true).unwrap_err().to_string();
        assert!(
            err.starts_with("a.toml: key crl_base_url: ") && err.contains("http://"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn kubernetes_is_off_unless_enabled_and_takes_defaults() {
    let config = ConfigFile::default().resolve("flags", true).unwrap();
    assert_eq!(config.kubernetes, None);

    let flags = ConfigFile {
        kubernetes: Some(KubernetesFile {
            enabled: Some(true),
            ..KubernetesFile::default()
        }),
        ..ConfigFile::default()
    };
    let config = flags.resolve("flags", true).unwrap();
    assert_eq!(
        config.kubernetes,
        Some(KubernetesConfig {
            istio_audience: "istio-ca".into(),
            node_audience: "halyard-ca".into(),
            agent_service_accounts: vec!["halyard/halyard-agent".into()],
            ztunnel_service_accounts: vec!["istio-system/ztunnel".into()],
            kubeconfig: None,
            cert_manager_issuer: true,
            csr_signer: true,
        })
    );
}

#[test]
fn kubernetes_flags_fill_in_the_table() {
    let file: ConfigFile = toml::from_str(
        "trust_domain = \"td\"\ndata_dir = \"/d\"\n\n[kubernetes]\nistio_audience = \"mesh-ca\"\n\
         agent_service_accounts = [\"kube-system/halyard\"]\n",
    )
    .unwrap();
    // Keys without enabled = true would silently do nothing: refused, naming the key.
    let err = file.clone().resolve("a.toml", false).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("a.toml: key kubernetes.enabled: is not set"),
        "{err}"
    );
    let flags = ConfigFile {
        kubernetes: Some(KubernetesFile {
            enabled: Some(true),
            cert_manager_issuer: Some(false),
            csr_signer: Some(false),
            ..KubernetesFile::default()
        }),
        ..ConfigFile::default()
    };
    let kubernetes = file
        .overlay(flags)
        .resolve("a.toml", false)
        .unwrap()
        .kubernetes
        .unwrap();
    assert_eq!(kubernetes.istio_audience, "mesh-ca");
    assert_eq!(kubernetes.agent_service_accounts, ["kube-system/halyard"]);
    assert!(!kubernetes.cert_manager_issuer);
    assert!(!kubernetes.csr_signer);
}

#[test]
fn bad_kubernetes_settings_name_the_key() {
    for (table, key) in [
        (
            "agent_service_accounts = [\"halyard-agent\"]",
            "kubernetes.agent_service_accounts",
        ),
        (
            "agent_service_accounts = [\"Halyard/agent\"]",
            "kubernetes.agent_service_accounts",
        ),
        (
            "ztunnel_service_accounts = [\"istio-system/ztunnel\", \"ztunnel\"]",
            "kubernetes.ztunnel_service_accounts",
        ),
        ("istio_audience = \"\"", "kubernetes.istio_audience"),
        ("node_audience = \"a b\"", "kubernetes.node_audience"),
    ] {
        let file: ConfigFile = toml::from_str(&format!(
            "trust_domain = \"td\"\ndata_dir = \"/d\"\n[kubernetes]\nenabled = true\n{table}\n"
        ))
        .unwrap();
        let err = file.resolve("a.toml", false).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("a.toml: key {key}: ")),
            "{err}"
        );
    }
}

#[test]
fn the_commented_kubernetes_example_parses_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/halyard-ca.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# [kubernetes]").unwrap();
    let uncommented: Vec<&str> = text[start..]
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .collect();
    let file: ConfigFile =
        toml::from_str(&format!("{}{}", &text[..start], uncommented.join("\n"))).unwrap();
    let kubernetes = file.resolve("example", false).unwrap().kubernetes.unwrap();
    assert_eq!(kubernetes.node_audience, "halyard-ca");
    assert_eq!(kubernetes.agent_service_accounts, ["halyard/halyard-agent"]);
    assert_eq!(
        kubernetes.ztunnel_service_accounts,
        ["istio-system/ztunnel"]
    );
}

#[test]
fn identity_rate_limit_has_defaults_a_file_key_and_refuses_zero() {
    let config = ConfigFile::default().resolve("flags", true).unwrap();
    assert_eq!(
        (config.identity_rate_limit, config.identity_rate_burst),
        (DEFAULT_IDENTITY_RATE_LIMIT, DEFAULT_IDENTITY_RATE_BURST)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("halyard-ca.toml");
    std::fs::write(
        &path,
        "trust_domain = \"td\"\ndata_dir = \"/d\"\nidentity_rate_limit = 5\nidentity_rate_burst = 200\n",
    )
    .unwrap();
    let file = ConfigFile::read(&path).unwrap();
    let config = file.clone().resolve("halyard-ca.toml", false).unwrap();
    assert_eq!(
        (config.identity_rate_limit, config.identity_rate_burst),
        (5, 200)
    );
    let flags = ConfigFile {
        identity_rate_limit: Some(7),
        ..ConfigFile::default()
    };
    let config = file.overlay(flags).resolve("flags", false).unwrap();
    assert_eq!(
        (config.identity_rate_limit, config.identity_rate_burst),
        (7, 200)
    );

    for key in ["identity_rate_limit", "identity_rate_burst"] {
        std::fs::write(
            &path,
            format!("trust_domain = \"td\"\ndata_dir = \"/d\"\n{key} = 0\n"),
        )
        .unwrap();
        let err = ConfigFile::read(&path)
            .unwrap()
            .resolve("halyard-ca.toml", false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("halyard-ca.toml: key {key}: must be at least 1")
        );
        std::fs::write(
            &path,
            format!("trust_domain = \"td\"\ndata_dir = \"/d\"\n{key} = -1\n"),
        )
        .unwrap();
        let err = ConfigFile::read(&path).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn ztunnel_accounts_come_from_the_file_or_flags_and_may_be_none() {
    let file: ConfigFile = toml::from_str(
        "trust_domain = \"td\"\ndata_dir = \"/d\"\n[kubernetes]\nenabled = true\n\
         ztunnel_service_accounts = []\n",
    )
    .unwrap();
    let kubernetes = file.clone().resolve("a.toml", false).unwrap().kubernetes;
    assert_eq!(
        kubernetes.unwrap().ztunnel_service_accounts,
        Vec::<String>::new(),
        "[] turns impersonation off"
    );
    let flags = ConfigFile {
        kubernetes: Some(KubernetesFile {
            ztunnel_service_accounts: Some(vec!["mesh/ztunnel".into()]),
            ..KubernetesFile::default()
        }),
        ..ConfigFile::default()
    };
    let kubernetes = file.overlay(flags).resolve("a.toml", false).unwrap();
    assert_eq!(
        kubernetes.kubernetes.unwrap().ztunnel_service_accounts,
        ["mesh/ztunnel"]
    );
}
