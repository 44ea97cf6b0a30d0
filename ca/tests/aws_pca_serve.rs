//! `halyard-ca serve` with `upstream = "aws-pca"`, against the moto emulator (with the test shim
//! `tests/moto_shim.py`): the first intermediate issued at startup and reused after a restart,
//! automatic rotation (prepare at ½ of the intermediate's life, activate at ⅚), exactly one
//! IssueCertificate call per intermediate across restarts and throttling, and the refusals.
//!
//! The ignored tests need `$HALYARD_MOTO_SERVER` (`source tests/moto.sh`; tests/run.sh does) and
//! fail, saying so, without it. `--no-capture` shows the measured times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use halyard_ca::authority::{certs_from_pem, certs_to_pem, verify_chain};
use halyard_ca::testing::{
    EmulatedCa, Moto, TestServer, check_intermediate_profile, fresh_postgres_database, key_id,
    openssl_verify, root_ca,
};

const TD: &str = "cluster.local";
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const ARN: &str = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/0b1e2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_halyard-ca"))
}

fn serve(moto: &Moto, root: &EmulatedCa, intermediate_ttl: &str) -> TestServer {
    TestServer::start_with_config(
        binary(),
        &moto.serve_config(TD, &root.arn, intermediate_ttl),
        &Moto::child_env(),
        &[],
    )
}

fn der(pem: &str) -> Vec<u8> {
    certs_from_pem(pem.as_bytes()).unwrap().remove(0)
}

/// `authority list` as (id, state) rows, oldest first.
fn authorities(server: &TestServer) -> Vec<(String, String)> {
    server
        .cli(&["authority", "list"])
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0].to_owned(), fields[1].to_owned())
        })
        .collect()
}

/// Polls `check` every 100 ms until it holds; panics after `timeout` with its last answer.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: not after {timeout:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A workload SVID for WEB from a freshly attested node: its chain, DER, leaf first.
async fn web_svid(server: &TestServer, node: &str) -> Vec<Vec<u8>> {
    server.entry(node, WEB);
    let node_identity = server.attest_node(node).await;
    let (chain, _) = server
        .workload_svid((&node_identity.0, &node_identity.1), WEB)
        .await;
    certs_from_pem(chain.as_bytes()).unwrap()
}

/// `openssl verify -x509_strict` of `chain` (leaf first) against `root_pem` alone, as TLS client
/// and server.
fn openssl_check(chain: &[Vec<u8>], root_pem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let root = write("root.pem", root_pem.to_owned());
    let upper = write(
        "intermediates.pem",
        certs_to_pem(chain[1..].iter().map(Vec::as_slice)),
    );
    let leaf = write("leaf.pem", certs_to_pem([chain[0].as_slice()]));
    for purpose in ["sslclient", "sslserver"] {
        openssl_verify(purpose, &root, &upper, &leaf).unwrap_or_else(|e| {
            panic!("an SVID under the PCA-issued intermediate ({purpose}): {e}")
        });
    }
}

/// What is left in `DATA/pca/` besides nothing: pending requests and ledger entries.
fn pca_leftovers(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir().join("pca"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn serve_has_pca_issue_its_intermediate_once_and_a_restart_asks_for_nothing() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let before = moto.counts();
    let mut server = serve(&moto, &root, "1d");
    let counts = moto.counts();
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (1, 1),
        "one IssueCertificate call"
    );

    // The data directory as after an import: the intermediate, its key 0600, the PCA root as
    // the bundle; nothing pending.
    let data = server.data_dir();
    let chain = certs_from_pem(&std::fs::read(data.join("intermediate.crt")).unwrap()).unwrap();
    let root_der = der(&root.cert_pem);
    assert_eq!(
        chain.len(),
        1,
        "under a root PCA CA the chain is the intermediate"
    );
    assert_eq!(
        verify_chain(&chain, std::slice::from_ref(&root_der), SystemTime::now()),
        Ok(0)
    );
    check_intermediate_profile(&chain[0], &root_der, TD);
    assert_eq!(
        certs_from_pem(server.bundle_pem().as_bytes()).unwrap(),
        vec![root_der.clone()]
    );
    let mode = std::fs::metadata(data.join("intermediate.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(pca_leftovers(&server), Vec::<String>::new());
    let a = key_id(&chain[0], false);
    assert_eq!(authorities(&server), [(a.clone(), "active".into())]);
    let (status, _) = server.http_get("/readyz");
    assert!(status.contains(" 200 "), "{status}");

    // Its SVIDs chain through the PCA-issued intermediate to the PCA root.
    let svid = web_svid(&server, "node-1").await;
    assert_eq!(svid[1..], chain[..]);
    openssl_check(&svid, &root.cert_pem);

    // A restart finds the intermediate in the data directory and asks PCA for nothing.
    server.restart();
    assert_eq!(moto.counts(), counts, "no call after a restart");
    assert_eq!(authorities(&server), [(a, "active".into())]);
    assert!(
        server
            .log()
            .contains("using the data directory's intermediate; AWS Private CA is not asked"),
        "{}",
        server.log()
    );
    let svid = web_svid(&server, "node-2").await;
    assert_eq!(svid[1..], chain[..]);
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn rotation_prepares_then_activates_with_one_issue_call_per_intermediate() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let before = moto.counts();
    let started = Instant::now();
    let mut server = serve(&moto, &root, "90s");
    let a = authorities(&server).remove(0).0;
    assert_eq!(moto.counts().issued - before.issued, 1);
    // The next IssueCertificate (the rotation's) is throttled twice before it goes through.
    moto.throttle(2);

    let b = wait_for("a prepared intermediate", Duration::from_secs(120), || {
        let list = authorities(&server);
        match list.as_slice() {
            [(first, s1), (next, s2)] if *first == a && s1 == "active" && s2 == "prepared" => {
                Ok(next.clone())
            }
            _ => Err(format!("{list:?}")),
        }
    });
    let prepared = started.elapsed();
    let counts = moto.counts();
    assert_eq!(counts.throttled - before.throttled, 2, "{counts:?}");
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (4, 2),
        "two throttled calls, then one that went through: {counts:?}"
    );
    assert!(
        server.log().contains("ThrottlingException"),
        "{}",
        server.log()
    );
    assert_eq!(pca_leftovers(&server), Vec::<String>::new());
    let key = server.data_dir().join(format!("authorities/{b}.key"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A restart between preparation and activation asks PCA for nothing.
    server.restart();
    assert_eq!(moto.counts(), counts, "no call after a restart");
    assert_eq!(
        authorities(&server),
        [(a.clone(), "active".into()), (b.clone(), "prepared".into())]
    );

    wait_for(
        "the prepared intermediate active",
        Duration::from_secs(120),
        || {
            let list = authorities(&server);
            if list == [(a.clone(), "old".into()), (b.clone(), "active".into())] {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
    );
    let activated = started.elapsed();
    assert_eq!(moto.counts(), counts, "activating asks PCA for nothing");
    eprintln!(
        "intermediates valid 90s: the next one prepared {} ms after the CA started (2 throttled \
         calls retried), activated at {} ms",
        prepared.as_millis(),
        activated.as_millis()
    );

    // New SVIDs come from the new intermediate and chain to the PCA root.
    let svid = web_svid(&server, "node-1").await;
    assert_eq!(key_id(&svid[0], true), b);
    openssl_check(&svid, &root.cert_pem);
    let (status, _) = server.http_get("/readyz");
    assert!(status.contains(" 200 "), "{status}");
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn a_ca_pca_does_not_know_stops_serve_with_the_aws_error_and_what_to_check() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("halyard-ca.toml");
    std::fs::write(&config, moto.serve_config(TD, ARN, "1d")).unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .envs(Moto::child_env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("halyard-ca: error: upstream = \"aws-pca\": AWS Private CA DescribeCertificateAuthority failed with ResourceNotFoundException")
            && stderr.contains("check ca_arn and region"),
        "{stderr}"
    );
    assert!(!dir.path().join("data/intermediate.crt").exists());
}

/// `--dev` with `upstream = "aws-pca"` is refused before anything starts (no emulator needed).
#[test]
fn dev_and_aws_pca_together_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args([
            "serve",
            "--dev",
            "--upstream",
            "aws-pca",
            "--aws-pca-ca-arn",
            ARN,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("flags: key upstream: \"aws-pca\" cannot be combined with --dev"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

/// The ignored tests fail, loudly, without the emulator: no silent skip.
#[test]
#[ignore = "needs moto: run via the README test command"]
fn the_emulator_is_configured() {
    let launcher = std::env::var(halyard_ca::testing::MOTO_VAR).unwrap_or_else(|_| {
        panic!(
            "{} is not set: `source tests/moto.sh` (tests/run.sh does)",
            halyard_ca::testing::MOTO_VAR
        )
    });
    assert!(Path::new(&launcher).exists(), "{launcher} does not exist");
}

#[tokio::test]
#[ignore = "needs moto: run via the README test command"]
async fn a_data_directory_lost_while_the_store_kept_its_authorities_gets_a_new_active_intermediate()
{
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let store_dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", store_dir.path().join("halyard.db").display());
    let before = moto.counts();
    let mut server = TestServer::start_with_config(
        binary(),
        &moto.serve_config(TD, &root.arn, "1d"),
        &Moto::child_env(),
        &["--store-url", &store_url],
    );
    let a = authorities(&server).remove(0).0;

    server.kill();
    std::fs::remove_dir_all(server.data_dir()).unwrap();
    server.restart();
    // Both were recorded within a second or so: `authority list` orders them by id then.
    let list = authorities(&server);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.contains(&(a.clone(), "old".into())), "{list:?}");
    let b = list
        .iter()
        .find(|(id, state)| *id != a && state == "active")
        .unwrap_or_else(|| panic!("no new active authority: {list:?}"))
        .0
        .clone();
    let counts = moto.counts();
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (2, 2),
        "one more intermediate for the new data directory"
    );
    let svid = web_svid(&server, "node-1").await;
    assert_eq!(key_id(&svid[0], true), b);
    openssl_check(&svid, &root.cert_pem);
}

#[tokio::test]
#[ignore = "needs moto and postgres: run via the README test command"]
async fn of_two_replicas_on_postgresql_sharing_the_data_directory_one_prepares() {
    let moto = Moto::start();
    let root = root_ca(&moto.client()).await;
    let url = fresh_postgres_database().await;
    let before = moto.counts();
    let config = moto.serve_config(TD, &root.arn, "90s");
    let first = TestServer::start_with_config(
        binary(),
        &config,
        &Moto::child_env(),
        &["--store-url", &url],
    );
    let shared = first.data_dir();
    std::fs::create_dir(shared.join("authorities")).unwrap();
    std::fs::set_permissions(
        shared.join("authorities"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // The second replica shares the first one's keys, certificates and PCA requests; its admin
    // socket and log are its own.
    let second = TestServer::start_with_config_and_data(
        binary(),
        &config,
        &Moto::child_env(),
        &["--store-url", &url],
        |data| {
            for name in [
                "intermediate.key",
                "intermediate.crt",
                "bundle.pem",
                "authorities",
                "pca",
            ] {
                std::os::unix::fs::symlink(shared.join(name), data.join(name)).unwrap();
            }
        },
    );
    let a = authorities(&first).remove(0).0;
    assert_eq!(authorities(&second), [(a.clone(), "active".into())]);

    // Both replicas reach half of the intermediate's life at the same moment.
    let b = wait_for("a prepared intermediate", Duration::from_secs(120), || {
        let list = authorities(&first);
        list.iter()
            .find(|(_, state)| state == "prepared")
            .map(|(id, _)| id.clone())
            .ok_or_else(|| format!("{list:?}"))
    });
    // Time for a second preparation, were there to be one.
    std::thread::sleep(Duration::from_secs(5));
    let counts = moto.counts();
    assert_eq!(
        (counts.calls - before.calls, counts.issued - before.issued),
        (2, 2),
        "one IssueCertificate for the first intermediate, one for the next: {counts:?}"
    );
    assert_eq!(
        authorities(&second),
        [(a.clone(), "active".into()), (b.clone(), "prepared".into())]
    );
    let preparers = [&first, &second]
        .iter()
        .filter(|s| s.log().contains("prepared the next intermediate"))
        .count();
    assert_eq!(preparers, 1, "{}\n{}", first.log(), second.log());

    wait_for(
        "the next intermediate active",
        Duration::from_secs(120),
        || {
            let list = authorities(&second);
            if list == [(a.clone(), "old".into()), (b.clone(), "active".into())] {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
    );
    assert_eq!(moto.counts(), counts, "activating asks PCA for nothing");
    // Both replicas sign with it. The one that did not activate it hears of it by
    // LISTEN/NOTIFY and reloads: moments later, longer on a loaded machine.
    for (server, node) in [(&first, "node-1"), (&second, "node-2")] {
        server.entry(node, WEB);
        let (cert, key) = server.attest_node(node).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (chain, _) = server.workload_svid((&cert, &key), WEB).await;
            let signer = key_id(&certs_from_pem(chain.as_bytes()).unwrap()[0], true);
            if signer == b {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}'s replica still signs with {signer}, not {b}, 30 s after the activation"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for server in [&first, &second] {
        assert!(
            !server.log().contains("intermediate rotation failed"),
            "{}",
            server.log()
        );
    }
}
