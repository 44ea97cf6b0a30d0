//! Revocation through the running CA: the admin command and its refusals, the CRL on HTTP (checked
//! by OpenSSL), the push on WatchTrust, and revocations surviving a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use halyard_ca::authority::{certs_from_pem, certs_to_pem};
use halyard_ca::testing::{TestServer, key_id};
use halyard_proto::api::ca::trust_service_client::TrustServiceClient;
use halyard_proto::api::ca::{TrustSnapshot, WatchTrustRequest};

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn server(extra: &[&str]) -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_halyard-ca")), extra)
}

/// A node with an entry for WEB and `n` certificates for it: (node identity, serials, chains).
async fn issued(server: &TestServer, n: usize) -> ((String, String), Vec<String>, Vec<String>) {
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let mut serials = Vec::new();
    let mut chains = Vec::new();
    for _ in 0..n {
        let (chain, _) = server.workload_svid((&node.0, &node.1), WEB).await;
        let leaf = certs_from_pem(chain.as_bytes()).unwrap().remove(0);
        let serial = halyard_proto::validate_leaf(&leaf)
            .unwrap()
            .serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        serials.push(serial);
        chains.push(chain);
    }
    (node, serials, chains)
}

/// The next snapshot on `stream` for which `wanted` holds.
async fn snapshot_where(
    stream: &mut tonic::Streaming<TrustSnapshot>,
    wanted: impl Fn(&TrustSnapshot) -> bool,
) -> TrustSnapshot {
    loop {
        let snapshot = stream.message().await.unwrap().unwrap();
        if wanted(&snapshot) {
            return snapshot;
        }
    }
}

#[tokio::test]
async fn revoke_answers_precisely() {
    let server = server(&[]);
    let (_, serials, _) = issued(&server, 3).await;
    let out = server
        .cli(&[
            "revoke",
            "--serial",
            &serials[0],
            "--reason",
            "keyCompromise",
        ])
        .unwrap();
    assert_eq!(out.trim(), format!("revoked {}", serials[0]));

    let again = server
        .cli(&["revoke", "--serial", &serials[0]])
        .unwrap_err();
    assert!(
        again.contains("AlreadyExists")
            && again.contains("was already revoked at")
            && again.contains("(keyCompromise)"),
        "{again}"
    );
    let unknown = server.cli(&["revoke", "--serial", "0abc"]).unwrap_err();
    assert!(
        unknown.contains("NotFound: no certificate with serial 0abc was issued by this CA"),
        "{unknown}"
    );
    let bad_serial = server.cli(&["revoke", "--serial", "xyz"]).unwrap_err();
    assert!(
        bad_serial.contains("InvalidArgument: serial: serial \"xyz\" is not hexadecimal"),
        "{bad_serial}"
    );
    let bad_reason = server
        .cli(&["revoke", "--serial", &serials[1], "--reason", "stolen"])
        .unwrap_err();
    assert!(
        bad_reason.contains("InvalidArgument: unknown revocation reason \"stolen\""),
        "{bad_reason}"
    );

    // By identity: the two left (and the first is not revoked twice).
    let out = server
        .cli(&["revoke", "--spiffe-id", WEB, "--reason", "superseded"])
        .unwrap();
    let revoked: Vec<&str> = out
        .lines()
        .map(|l| l.trim_start_matches("revoked "))
        .collect();
    assert_eq!(revoked.len(), 2, "{out}");
    assert!(revoked.contains(&serials[1].as_str()) && revoked.contains(&serials[2].as_str()));
    let none = server.cli(&["revoke", "--spiffe-id", WEB]).unwrap();
    assert!(none.starts_with("nothing to revoke"), "{none}");
}

#[tokio::test]
async fn an_expired_certificate_is_not_revoked() {
    let server = server(&["--max-ttl", "2s", "--default-ttl", "2s"]);
    let (_, serials, _) = issued(&server, 1).await;
    std::thread::sleep(Duration::from_millis(2500));
    let err = server
        .cli(&["revoke", "--serial", &serials[0]])
        .unwrap_err();
    assert!(
        err.contains("FailedPrecondition") && err.contains("already expired at"),
        "{err}"
    );
}

#[tokio::test]
async fn watch_trust_pushes_the_revoked_serial_and_the_crl() {
    let server = server(&[]);
    let ((chain, key), serials, _) = issued(&server, 1).await;
    let mut trust = TrustServiceClient::new(server.channel(Some((&chain, &key))).await);
    let mut stream = trust
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.revoked.is_empty());
    assert_eq!(first.crls.len(), 1, "an empty CRL from the start");
    server.cli(&["revoke", "--serial", &serials[0]]).unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        snapshot_where(&mut stream, |s| !s.revoked.is_empty()),
    )
    .await
    .expect("the revocation is pushed");
    assert_eq!(next.revoked[0].serial, serials[0]);
    assert_ne!(next.crls, first.crls);
}

#[tokio::test]
#[ignore = "needs openssl: run via the README test command"]
async fn the_crl_is_served_signed_and_survives_a_restart() {
    let mut server = server(&[]);
    let (_, serials, chains) = issued(&server, 2).await;
    server
        .cli(&[
            "revoke",
            "--serial",
            &serials[0],
            "--reason",
            "keyCompromise",
        ])
        .unwrap();

    let check = |server: &TestServer| {
        let dir = tempfile::tempdir().unwrap();
        let intermediate = certs_from_pem(
            std::fs::read(server.data_dir().join("intermediate.crt"))
                .unwrap()
                .as_slice(),
        )
        .unwrap()
        .remove(0);
        let ski = key_id(&intermediate, false);
        let (status, crl) = server.http_get(&format!("/crl/{ski}.crl"));
        assert!(status.contains("200"), "{status}");
        let crl_pem = dir.path().join("crl.pem");
        std::fs::write(&crl_pem, pem::encode(&pem::Pem::new("X509 CRL", crl))).unwrap();
        let cafile = dir.path().join("ca.pem");
        std::fs::write(
            &cafile,
            format!(
                "{}{}",
                certs_to_pem([intermediate.as_slice()]),
                server.bundle_pem()
            ),
        )
        .unwrap();
        // The CRL verifies with the intermediate.
        let out = std::process::Command::new("openssl")
            .args(["crl", "-noout", "-verify", "-CAfile"])
            .arg(&cafile)
            .arg("-in")
            .arg(&crl_pem)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("verify OK"));
        // The revoked leaf fails a strict CRL check; the other passes.
        for (chain, revoked) in [(&chains[0], true), (&chains[1], false)] {
            let leaf = dir.path().join("leaf.pem");
            std::fs::write(&leaf, chain).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["verify", "-x509_strict", "-crl_check", "-CAfile"])
                .arg(&cafile)
                .arg("-CRLfile")
                .arg(&crl_pem)
                .arg(&leaf)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if revoked {
                assert!(
                    !out.status.success() && text.contains("certificate revoked"),
                    "{text}"
                );
            } else {
                assert!(out.status.success(), "{text}");
            }
        }
    };
    check(&server);
    // After a restart the revocation is still there, still in the CRL.
    server.restart();
    check(&server);
    let again = server
        .cli(&["revoke", "--serial", &serials[0]])
        .unwrap_err();
    assert!(again.contains("already revoked"), "{again}");
    let (status, _) = server.http_get("/crl/nope.crl");
    assert!(status.contains("404"), "{status}");
}

#[tokio::test]
#[ignore = "needs postgres: run via the README test command"]
async fn replicas_on_one_postgresql_see_each_others_revocations_and_entries_at_once() {
    let url = halyard_ca::testing::fresh_postgres_database().await;
    let a = server(&["--store-url", &url]);
    let b = TestServer::start_replica(&a, &["--store-url", &url]);
    // Issued through replica B, watched through replica B.
    let ((chain, key), serials, _) = issued(&b, 1).await;
    let mut trust = TrustServiceClient::new(b.channel(Some((&chain, &key))).await);
    let mut stream = trust
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.revoked.is_empty());
    assert_eq!(first.entries.len(), 1);

    // Revoked through replica A.
    let started = std::time::Instant::now();
    a.cli(&["revoke", "--serial", &serials[0]]).unwrap();
    let revoked = tokio::time::timeout(
        Duration::from_secs(10),
        snapshot_where(&mut stream, |s| !s.revoked.is_empty()),
    )
    .await
    .expect("replica B pushes replica A's revocation");
    eprintln!(
        "a revocation through replica A reached a watcher of replica B after {:?}",
        started.elapsed()
    );
    assert_eq!(revoked.revoked[0].serial, serials[0]);

    // An entry created through replica A reaches the same watcher.
    a.cli(&[
        "entry",
        "create",
        "--any-node",
        "--spiffe-id",
        "spiffe://cluster.local/ns/default/sa/db",
        "--selector",
        "unix:uid:7",
    ])
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        snapshot_where(&mut stream, |s| s.entries.len() == 2),
    )
    .await
    .expect("replica B pushes replica A's entry");
}
