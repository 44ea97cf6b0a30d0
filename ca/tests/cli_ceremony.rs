//! The offline ceremony from a fresh directory, through the `halyard-ca` binary:
//! `root init` → `intermediate csr` → `root sign-intermediate` → `intermediate import` → `sign`,
//! and the issued chain checked by webpki, OpenSSL and the profile checker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use halyard_ca::authority::certs_from_pem;
use halyard_ca::testing::{
    CsrSpec, check_intermediate_profile, check_leaf_profile, openssl_verify, webpki_verify,
};

const ID: &str = "spiffe://example.org/ns/default/sa/web";

fn halyard_ca(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "halyard-ca {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the whole ceremony in `dir` and returns (root PEM path, intermediate PEM path, chain PEM path).
fn ceremony(dir: &Path, root_key_type: &str) -> (String, String, String) {
    let p = |name: &str| dir.join(name).display().to_string();
    halyard_ca(&[
        "root",
        "init",
        "--trust-domain",
        "example.org",
        "--dir",
        &p("root"),
        "--key-type",
        root_key_type,
        "--ttl",
        "5y",
    ]);
    halyard_ca(&[
        "intermediate",
        "csr",
        "--data-dir",
        &p("data"),
        "--trust-domain",
        "example.org",
        "--out",
        &p("int.csr"),
    ]);
    halyard_ca(&[
        "root",
        "sign-intermediate",
        "--dir",
        &p("root"),
        "--csr",
        &p("int.csr"),
        "--out",
        &p("int.crt"),
        "--ttl",
        "30d",
    ]);
    halyard_ca(&[
        "intermediate",
        "import",
        "--data-dir",
        &p("data"),
        "--cert",
        &p("int.crt"),
        "--root",
        &p("root/root.crt"),
    ]);
    fs::write(
        dir.join("w.csr"),
        CsrSpec::for_id(ID).dns(&["web.default.svc"]).pem(),
    )
    .unwrap();
    let printed = halyard_ca(&[
        "sign",
        "--data-dir",
        &p("data"),
        "--csr",
        &p("w.csr"),
        "--spiffe-id",
        ID,
        "--dns-name",
        "web.default.svc",
        "--ttl",
        "2h",
        "--out",
        &p("w.pem"),
    ]);
    assert!(
        printed.starts_with(&format!("issued {ID} serial ")),
        "{printed}"
    );
    (p("root/root.crt"), p("data/intermediate.crt"), p("w.pem"))
}

#[test]
fn the_ceremony_issues_a_chain_webpki_and_the_profile_accept() {
    for root_key_type in ["ec-p256", "ec-p384", "rsa-3072"] {
        let dir = tempfile::tempdir().unwrap();
        let (root, intermediate, chain) = ceremony(dir.path(), root_key_type);

        assert_eq!(mode(&dir.path().join("root/root.key")), 0o600);
        assert_eq!(mode(&dir.path().join("data/intermediate.key")), 0o600);
        assert_eq!(mode(dir.path().join("root").as_path()), 0o700);

        let root = certs_from_pem(&fs::read(root).unwrap()).unwrap().remove(0);
        let intermediate = certs_from_pem(&fs::read(intermediate).unwrap()).unwrap();
        let chain = certs_from_pem(&fs::read(chain).unwrap()).unwrap();
        assert_eq!(chain.len(), 2, "leaf and intermediate");
        assert_eq!(chain[1], intermediate[0]);
        assert_eq!(
            fs::read(dir.path().join("data/bundle.pem")).unwrap(),
            fs::read(dir.path().join("root/root.crt")).unwrap()
        );

        let now = SystemTime::now();
        check_intermediate_profile(&intermediate[0], &root, "example.org");
        check_leaf_profile(&chain[0], &intermediate[0], ID, now);
        for server in [true, false] {
            webpki_verify(&chain[0], &chain[1..], &root, now, server)
                .unwrap_or_else(|e| panic!("{root_key_type} server={server}: {e}"));
        }
        let svid = halyard_proto::validate_leaf(&chain[0]).unwrap();
        assert_eq!(svid.dns_names(), ["web.default.svc"]);
        let lifetime = svid.not_after().duration_since(now).unwrap().as_secs();
        assert!(
            (7190..=7200).contains(&lifetime),
            "2h TTL granted, got {lifetime}s"
        );
    }
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn the_ceremony_issues_a_chain_openssl_accepts_strictly_as_client_and_server() {
    for root_key_type in ["ec-p256", "rsa-3072"] {
        let dir = tempfile::tempdir().unwrap();
        let (root, intermediate, chain) = ceremony(dir.path(), root_key_type);
        for purpose in ["sslclient", "sslserver"] {
            openssl_verify(
                purpose,
                Path::new(&root),
                Path::new(&intermediate),
                Path::new(&chain),
            )
            .unwrap_or_else(|e| panic!("{root_key_type} {purpose}: {e}"));
        }
    }
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn openssl_refuses_the_chain_under_another_root() {
    let dir = tempfile::tempdir().unwrap();
    let (_, intermediate, chain) = ceremony(dir.path(), "ec-p256");
    let other = tempfile::tempdir().unwrap();
    let (other_root, _, _) = ceremony(other.path(), "ec-p256");
    let err = openssl_verify(
        "sslserver",
        Path::new(&other_root),
        Path::new(&intermediate),
        Path::new(&chain),
    )
    .unwrap_err();
    assert!(
        err.contains("unable to get") || err.contains("signature failure"),
        "{err}"
    );
}
