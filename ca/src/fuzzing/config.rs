//! `config`: arbitrary text as `halyard-ca serve`'s TOML configuration file.

use std::io::Write;

use halyard_proto::TrustDomain;

use crate::config::{Config, ConfigError, ConfigFile};

/// Asserts the configuration properties on arbitrary file contents.
///
/// The bytes are written to a file and read with [`ConfigFile::read`], then resolved with
/// [`ConfigFile::resolve`] with and without `--dev`, as `halyard-ca serve` does. Nothing may
/// panic, and:
/// - every error names the file (reading, parsing and resolving alike), and a refused value
///   names its key;
/// - a file overlaid with an empty one, or overlaid on one, is unchanged;
/// - resolving is deterministic;
/// - a resolved configuration keeps the values the file set (trust domain, data directory,
///   batch and concurrency limits), has every required key (outside `--dev`), limits of at
///   least one, a default TTL within the maximum and a SQLite or PostgreSQL store.
///
/// # Panics
///
/// When any of those properties fails; never otherwise (or when no temporary file can be
/// written).
pub fn config(data: &[u8]) {
    let mut file = match tempfile::Builder::new()
        .prefix("halyard-fuzz-config-")
        .suffix(".toml")
        .tempfile()
    {
        Ok(file) => file,
        Err(e) => panic!("cannot make a temporary config file: {e}"),
    };
    if let Err(e) = file.write_all(data).and_then(|()| file.flush()) {
        panic!("cannot write the temporary config file: {e}");
    }
    let name = file.path().display().to_string();

    let parsed = match ConfigFile::read(file.path()) {
        Ok(parsed) => parsed,
        Err(e) => return names_the_file(&e, &name),
    };
    assert_eq!(parsed.clone().overlay(ConfigFile::default()), parsed);
    assert_eq!(ConfigFile::default().overlay(parsed.clone()), parsed);

    for dev in [false, true] {
        let resolved = parsed.clone().resolve(&name, dev);
        let again = parsed.clone().resolve(&name, dev);
        match (resolved, again) {
            (Ok(config), Ok(again)) => {
                assert_eq!(config, again, "resolving is not deterministic");
                check_resolved(&parsed, &config, dev);
            }
            (Err(e), Err(again)) => {
                assert_eq!(
                    e.to_string(),
                    again.to_string(),
                    "resolving is not deterministic"
                );
                names_the_file(&e, &name);
            }
            (first, second) => panic!("resolving is not deterministic: {first:?} then {second:?}"),
        }
    }
}

/// The error names the file, and a refused value its key.
fn names_the_file(error: &ConfigError, name: &str) {
    let text = error.to_string();
    assert!(
        text.contains(name),
        "error does not name the file {name}: {text}"
    );
    if let ConfigError::Invalid { key, message, .. } = error {
        assert!(!key.is_empty(), "error names an empty key: {text}");
        assert!(
            text.contains(&format!("key {key}")),
            "error does not name its key: {text}"
        );
        assert!(
            !message.is_empty(),
            "error says nothing about {key}: {text}"
        );
    }
}

fn check_resolved(file: &ConfigFile, config: &Config, dev: bool) {
    assert_eq!(config.dev, dev);
    match &file.trust_domain {
        // Given bare or as its SPIFFE ID (`spiffe://example.org`).
        Some(td) => assert_eq!(Ok(&config.trust_domain), TrustDomain::new(td).as_ref()),
        None => assert!(dev, "resolved without a trust domain outside --dev"),
    }
    match &file.data_dir {
        Some(dir) => assert_eq!(&config.data_dir, dir),
        None => assert!(dev, "resolved without a data directory outside --dev"),
    }
    if let Some(n) = file.max_batch {
        assert_eq!(config.max_batch, n);
    }
    if let Some(n) = file.max_in_flight {
        assert_eq!(config.max_in_flight, n);
    }
    assert!(config.max_batch >= 1 && config.max_in_flight >= 1 && config.node_rate_limit >= 1);
    assert!(config.identity_rate_limit >= 1 && config.identity_rate_burst >= 1);
    assert!(
        config.default_ttl <= config.max_ttl,
        "default TTL {} exceeds the maximum {}",
        config.default_ttl,
        config.max_ttl
    );
    assert!(
        ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| config.store_url.starts_with(scheme)),
        "store URL {:?}",
        config.store_url
    );
}
