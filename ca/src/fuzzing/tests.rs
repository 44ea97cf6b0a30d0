//! The checked-in seed corpora replayed, their names held to what they say, and the generators
//! that wrote them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{config, crl, csr_policy, grpc_requests, pki};
use crate::authority::{Csr, Grant, KeyPolicy};
use crate::config::ConfigFile;

mod seeds;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of `fuzz/corpus/<target>`, by name, sorted. A missing or gutted corpus is a
/// failure, not a skip.
fn corpus(target: &str, at_least: usize) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    assert!(
        files.len() >= at_least,
        "only {} files in {}; the seed corpus should have at least {at_least}",
        files.len(),
        dir.display()
    );
    files
}

/// Replays `fuzz/corpus/<target>` through `property`.
fn replay(target: &str, property: fn(&[u8])) {
    for (name, data) in corpus(target, 10) {
        if std::panic::catch_unwind(|| property(&data)).is_err() {
            panic!("property violated by corpus file {target}/{name}");
        }
    }
}

#[test]
fn csr_policy_corpus_replays() {
    replay("csr_policy", csr_policy);
}

#[test]
fn grpc_requests_corpus_replays() {
    replay("grpc_requests", grpc_requests);
}

#[test]
fn crl_corpus_replays() {
    replay("crl", crl);
}

#[test]
fn config_corpus_replays() {
    replay("config", config);
}

/// `valid-…` CSRs are signed for their own SPIFFE ID, `bad-…` ones refused (at parsing or at
/// signing), `node-…` ones signed only for a node.
#[test]
fn csr_policy_seeds_mean_what_their_names_say() {
    let authority = &pki().authority;
    for (name, data) in corpus("csr_policy", 10) {
        let signed = |grant: &dyn Fn(&Csr) -> Grant| {
            Csr::parse(&data, &KeyPolicy::default())
                .map_err(|e| e.to_string())
                .and_then(|csr| {
                    authority
                        .sign_svid(&csr, &grant(&csr), None, SystemTime::now())
                        .map_err(|e| e.to_string())
                })
        };
        let own = |csr: &Csr| {
            let id = csr
                .uris()
                .first()
                .and_then(|uri| uri.parse().ok())
                .unwrap_or_else(|| "spiffe://example.org/none".parse().unwrap());
            Grant {
                dns_names: csr.dns_names().to_vec(),
                ..Grant::new(id)
            }
        };
        let node = |_: &Csr| Grant {
            id_in_csr: false,
            ..Grant::new("spiffe://example.org/halyard/node/n".parse().unwrap())
        };
        if name.starts_with("valid-") {
            assert!(signed(&own).is_ok(), "{name}: {:?}", signed(&own));
        } else if name.starts_with("bad-") {
            assert!(signed(&own).is_err(), "{name} is signed");
        } else if name.starts_with("node-") {
            assert!(signed(&own).is_err(), "{name} is signed for its own ID");
            assert!(signed(&node).is_ok(), "{name}: {:?}", signed(&node));
        }
    }
}

/// `valid-…` files resolve as they are, `dev-…` ones only with `--dev`, `bad-…` ones never.
#[test]
fn config_seeds_mean_what_their_names_say() {
    let dir = corpus_dir("config");
    for (name, _) in corpus("config", 10) {
        let path = dir.join(&name);
        let resolve = |dev: bool| {
            ConfigFile::read(&path)
                .and_then(|file| file.resolve(&name, dev))
                .map_err(|e| e.to_string())
        };
        if name.starts_with("valid-") {
            assert!(resolve(false).is_ok(), "{name}: {:?}", resolve(false));
        } else if name.starts_with("dev-") {
            assert!(resolve(false).is_err(), "{name} resolves outside --dev");
            assert!(resolve(true).is_ok(), "{name}: {:?}", resolve(true));
        } else if name.starts_with("bad-") {
            assert!(resolve(false).is_err(), "{name} resolves");
            assert!(resolve(true).is_err(), "{name} resolves with --dev");
        }
    }
}

/// The generated seed corpora (`csr_policy`, `grpc_requests`, `crl`; the `config` seeds are
/// written by hand) are all committed; `HALYARD_WRITE_SEEDS=1` writes them instead:
/// `HALYARD_WRITE_SEEDS=1 cargo test -p halyard-ca --lib fuzzing::tests::seed_corpora`
#[test]
fn seed_corpora_are_committed() {
    for (target, files) in [
        ("csr_policy", seeds::csr_policy()),
        ("grpc_requests", seeds::grpc_requests()),
        ("crl", seeds::crl()),
    ] {
        halyard_proto::fuzzing::write_or_check_seeds(&corpus_dir(target), &files);
    }
}
