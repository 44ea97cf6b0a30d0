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
