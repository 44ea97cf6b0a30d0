use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{bundle_json_round_trip, spiffe_id_round_trip};
use crate::{TrustBundle, TrustDomain};

/// Replays every file of the checked-in seed corpus `fuzz/corpus/<target>` through `property`.
/// A missing or gutted corpus is a failure, not a skip.
fn replay_corpus(target: &str, at_least: usize, property: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    let mut replayed = 0;
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => panic!("cannot list corpus {}: {e}", dir.display()),
        };
        if !path.is_file() {
            continue;
        }
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        if std::panic::catch_unwind(|| property(&data)).is_err() {
            panic!("property violated by corpus file {}", path.display());
        }
        replayed += 1;
    }
    assert!(
        replayed >= at_least,
        "only {replayed} files in {}; the seed corpus should have at least {at_least}",
        dir.display()
    );
}

#[test]
fn spiffe_id_corpus_replays() {
    replay_corpus("spiffe_id", 20, spiffe_id_round_trip);
}

#[test]
fn bundle_json_corpus_replays() {
    replay_corpus("bundle_json", 10, bundle_json_round_trip);
}

#[test]
fn rejects_non_utf8_quietly() {
    spiffe_id_round_trip(b"spiffe://example.org/\xff");
    spiffe_id_round_trip(&[0xc3]);
}

#[test]
fn accepts_valid_and_invalid_ids() {
    spiffe_id_round_trip(b"spiffe://example.org/ns/default/sa/web");
    spiffe_id_round_trip(b"spiffe://example.org");
    spiffe_id_round_trip(b"spiffe://example.org/");
    spiffe_id_round_trip(b"SPIFFE://example.org");
    spiffe_id_round_trip(b"");
}

/// Seeds named `valid-…` must be accepted and `bad-…` refused (other names, such as inputs a
/// fuzzer found, only replay).
#[test]
fn bundle_json_seeds_mean_what_their_names_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/bundle_json");
    for (name, data) in corpus_files(&dir) {
        let td = TrustDomain::new("example.org").unwrap();
        let read = TrustBundle::from_spiffe_json(td, &data);
        if name.starts_with("valid-") {
            assert!(read.is_ok(), "{name} is refused: {read:?}");
        } else if name.starts_with("bad-") {
            assert!(read.is_err(), "{name} is accepted");
        }
    }
}

fn corpus_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The bundle_json seeds are all committed; `HALYARD_WRITE_SEEDS=1` writes them instead:
/// `HALYARD_WRITE_SEEDS=1 cargo test -p halyard-proto --lib fuzzing::tests::bundle_json_seeds -- --ignored`
#[test]
#[ignore = "needs openssl (the RSA root): run via the README test command"]
fn bundle_json_seeds_are_committed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/bundle_json");
    super::write_or_check_seeds(&dir, &bundle_json_seeds());
}

fn bundle_json_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let td = TrustDomain::new("example.org").unwrap();
    let p256 = root(&rcgen::PKCS_ECDSA_P256_SHA256);
    let p384 = root(&rcgen::PKCS_ECDSA_P384_SHA384);
    let json = |roots: Vec<Vec<u8>>| {
        TrustBundle::new(td.clone(), roots)
            .to_spiffe_json()
            .unwrap()
            .into_bytes()
    };
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut value: serde_json::Value =
            serde_json::from_slice(&json(vec![p256.clone()])).unwrap();
        edit(&mut value);
        value.to_string().into_bytes()
    };
    let mut trailing = p256.clone();
    trailing.extend_from_slice(b"tail");
    let mut seeds = vec![
        ("valid-ec-p256-root", json(vec![p256.clone()])),
        ("valid-ec-p384-root", json(vec![p384.clone()])),
        ("valid-two-roots", json(vec![p256.clone(), p384.clone()])),
        ("valid-no-keys", json(Vec::new())),
        (
            "valid-sequence-refresh-hint-and-kid",
            edited(&|v| {
                v["spiffe_sequence"] = 12.into();
                v["spiffe_refresh_hint"] = 300.into();
                v["keys"][0]["kid"] = "root-2024".into();
            }),
        ),
        ("bad-not-json", b"keys: []".to_vec()),
        (
            "bad-truncated-json",
            json(vec![p256.clone()])[..200].to_vec(),
        ),
        ("bad-top-level-array", b"[{\"keys\": []}]".to_vec()),
        ("bad-no-keys-member", b"{\"spiffe_sequence\": 1}".to_vec()),
        (
            "bad-keys-not-array",
            b"{\"keys\": {\"use\": \"x509-svid\"}}".to_vec(),
        ),
        (
            "bad-key-not-object",
            b"{\"keys\": [\"x509-svid\"]}".to_vec(),
        ),
        (
            "bad-use-jwt-svid",
            edited(&|v| v["keys"][0]["use"] = "jwt-svid".into()),
        ),
        (
            "bad-use-missing",
            edited(&|v| {
                v["keys"][0].as_object_mut().unwrap().remove("use");
            }),
        ),
        (
            "bad-x5c-two-certs",
            edited(&|v| {
                let cert = v["keys"][0]["x5c"][0].clone();
                v["keys"][0]["x5c"].as_array_mut().unwrap().push(cert);
            }),
        ),
        (
            "bad-x5c-empty",
            edited(&|v| v["keys"][0]["x5c"] = serde_json::json!([])),
        ),
        (
            "bad-x5c-url-safe-base64",
            edited(&|v| {
                v["keys"][0]["x5c"][0] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(&p256)
                    .into();
            }),
        ),
        (
            "bad-x5c-not-a-certificate",
            edited(&|v| v["keys"][0]["x5c"][0] = STANDARD.encode(b"not DER").into()),
        ),
        (
            "bad-x5c-bytes-after-certificate",
            edited(&|v| v["keys"][0]["x5c"][0] = STANDARD.encode(&trailing).into()),
        ),
        (
            "bad-x-of-another-key",
            edited(&|v| v["keys"][0]["x5c"][0] = STANDARD.encode(&p384).into()),
        ),
        (
            "bad-kty-rsa-for-ec-key",
            edited(&|v| v["keys"][0]["kty"] = "RSA".into()),
        ),
        (
            "bad-ed25519-root",
            edited(&|v| {
                v["keys"][0]["x5c"][0] = STANDARD.encode(root(&rcgen::PKCS_ED25519)).into();
            }),
        ),
    ];
    if let Some(rsa) = openssl_rsa_root() {
        seeds.push(("valid-rsa-2048-root", json(vec![rsa])));
    }
    seeds
}

fn root(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().to_vec()
}

/// An RSA root from `openssl` (rcgen cannot make RSA keys), or `None` without it.
fn openssl_rsa_root() -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rsa.der");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=rsa root",
        ])
        .args(["-days", "3650", "-outform", "DER", "-keyout"])
        .arg(dir.path().join("rsa.key"))
        .arg("-out")
        .arg(&out)
        .status()
        .ok()?;
    status.success().then(|| std::fs::read(out).unwrap())
}

#[test]
#[should_panic(expected = "seeds missing from /nonexistent/halyard-seeds: [\"valid-one\"]")]
fn a_seed_missing_from_the_corpus_fails_the_check() {
    super::write_or_check_seeds(
        Path::new("/nonexistent/halyard-seeds"),
        &[("valid-one", b"x".to_vec())],
    );
}
