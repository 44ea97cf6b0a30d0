//! `halyard-ca serve --dev` as a real process: node attestation with join tokens, batched
//! signing authorized by registration entries, Istio's API, WatchTrust pushes, and a kill -9
//! that loses no journal row of a certificate a client received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use halyard_ca::authority::{certs_from_pem, certs_to_pem};
use halyard_ca::testing::{
    TestServer, check_leaf_profile, key_and_csr, openssl_verify, webpki_verify,
};
use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::trust_service_client::TrustServiceClient;
use halyard_proto::api::ca::{
    AttestRequest, SignX509SvidsRequest, SvidRequest, WatchTrustRequest, attest_request::Credential,
};
use halyard_proto::api::istio_auth::IstioCertificateRequest;
use halyard_proto::api::istio_auth::istio_certificate_service_client::IstioCertificateServiceClient;
use tonic::Code;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const DB: &str = "spiffe://cluster.local/ns/default/sa/db";

fn server() -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_halyard-ca")), &[])
}

/// Verifies a DER chain (leaf first) with webpki and strict OpenSSL against the server's bundle.
fn verify_everywhere(server: &TestServer, chain: &[Vec<u8>], id: &str) {
    let root = certs_from_pem(server.bundle_pem().as_bytes())
        .unwrap()
        .remove(0);
    let now = SystemTime::now();
    for as_server in [true, false] {
        webpki_verify(&chain[0], &chain[1..], &root, now, as_server).unwrap();
    }
    check_leaf_profile(&chain[0], &chain[1], id, now);
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    let intermediates = dir.path().join("intermediates.pem");
    std::fs::write(&leaf, certs_to_pem([chain[0].as_slice()])).unwrap();
    std::fs::write(
        &intermediates,
        certs_to_pem(chain[1..].iter().map(Vec::as_slice)),
    )
    .unwrap();
    for purpose in ["sslclient", "sslserver"] {
        openssl_verify(
            purpose,
            &server.data_dir().join("bundle.pem"),
            &intermediates,
            &leaf,
        )
        .unwrap_or_else(|e| panic!("{purpose}: {e}"));
    }
}

#[tokio::test]
#[ignore = "needs openssl: run via the README test command"]
async fn a_node_attests_and_signs_a_batch_authorized_by_its_entries() {
    let server = server();
    server.entry("worker-1", WEB);
    server.entry("worker-2", DB);
    let token = server
        .cli(&["token", "create", "--node", "worker-1"])
        .unwrap();
    let token = token.trim();

    // Attest: the join token and a CSR without a URI SAN give the node SVID.
    let (node_key, node_csr) = key_and_csr(None);
    let mut nodes = NodeServiceClient::new(server.channel(None).await);
    let attested = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token.to_owned())),
            csr: node_csr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let node_svid = attested.svid.unwrap();
    assert_eq!(
        node_svid.spiffe_id,
        "spiffe://cluster.local/halyard/node/worker-1"
    );
    verify_everywhere(&server, &node_svid.cert_chain, &node_svid.spiffe_id);
    assert_eq!(
        attested.bundle.unwrap().roots,
        certs_from_pem(server.bundle_pem().as_bytes()).unwrap()
    );

    // The token is single use.
    let reused = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token.to_owned())),
            csr: node_csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated, "{reused:?}");
    assert!(
        reused.message().contains("already used"),
        "{}",
        reused.message()
    );

    // An expired token is refused too, with its own message.
    let short = server
        .cli(&["token", "create", "--node", "worker-3", "--ttl", "1s"])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(short.trim().to_owned())),
            csr: node_csr,
        })
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    // A batch over mTLS with the node SVID: each item judged on its own.
    let chain_pem = certs_to_pem(node_svid.cert_chain.iter().map(Vec::as_slice));
    let mut svids = SvidServiceClient::new(server.channel(Some((&chain_pem, &node_key))).await);
    let (_, web_csr) = key_and_csr(Some(WEB));
    let (_, db_csr) = key_and_csr(Some(DB));
    let (_, web_csr_2) = key_and_csr(Some(WEB));
    let results = svids
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![
                SvidRequest {
                    spiffe_id: WEB.into(),
                    csr: web_csr,
                    ttl_seconds: 600,
                },
                SvidRequest {
                    spiffe_id: DB.into(),
                    csr: db_csr,
                    ttl_seconds: 0,
                },
                SvidRequest {
                    spiffe_id: WEB.into(),
                    csr: b"not a csr".to_vec(),
                    ttl_seconds: 0,
                },
                SvidRequest {
                    spiffe_id: WEB.into(),
                    csr: web_csr_2,
                    ttl_seconds: 0,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    let mut issued = 0;
    for (index, result) in results.iter().enumerate() {
        match (index, result.result.as_ref().unwrap()) {
            (0 | 3, ItemResult::Svid(svid)) => {
                assert_eq!(svid.spiffe_id, WEB);
                verify_everywhere(&server, &svid.cert_chain, WEB);
                issued += 1;
            }
            (1, ItemResult::Error(e)) => {
                assert_eq!(e.code, Code::PermissionDenied as i32, "{e:?}");
                assert!(
                    e.message.contains("has no registration entry"),
                    "{}",
                    e.message
                );
            }
            (2, ItemResult::Error(e)) => assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}"),
            other => panic!("unexpected result {other:?}"),
        }
    }
    assert_eq!(issued, 2);
    if let Some(ItemResult::Svid(svid)) = &results[0].result {
        let lifetime = svid.expires_at
            - SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
        assert!(
            (590..=600).contains(&lifetime),
            "asked 600 s, got {lifetime}"
        );
    }

    // Without a client certificate the signing API answers UNAUTHENTICATED.
    let mut anonymous = SvidServiceClient::new(server.channel(None).await);
    let err = anonymous
        .sign_x509_svids(SignX509SvidsRequest { requests: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Every issued certificate is in the journal, and the chain is intact.
    let audit = server.cli(&["audit", "verify"]).unwrap();
    assert!(audit.starts_with("journal intact: 4 rows"), "{audit}");
}

#[tokio::test]
#[ignore = "needs openssl: run via the README test command"]
async fn the_istio_api_signs_the_callers_own_identity_leaf_to_root() {
    let server = server();
    server.entry("worker-1", WEB);
    let (node_chain, node_key) = server.attest_node("worker-1").await;
    let (web_chain, web_key) = server.workload_svid((&node_chain, &node_key), WEB).await;

    // As istio-agent does: renew over mTLS with the current certificate, PEM CSR.
    let mut istio =
        IstioCertificateServiceClient::new(server.channel(Some((&web_chain, &web_key))).await);
    let (_, renew_csr) = key_and_csr(Some(WEB));
    let renew_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", renew_csr));
    let response = istio
        .create_certificate(IstioCertificateRequest {
            csr: renew_pem,
            subject_id: String::new(),
            validity_duration: 3600,
            metadata: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.cert_chain.len(), 3, "leaf, intermediate, root");
    let chain: Vec<Vec<u8>> = response
        .cert_chain
        .iter()
        .map(|pem| certs_from_pem(pem.as_bytes()).unwrap().remove(0))
        .collect();
    let root = certs_from_pem(server.bundle_pem().as_bytes())
        .unwrap()
        .remove(0);
    assert_eq!(chain[2], root, "root last");
    verify_everywhere(&server, &chain[..2], WEB);

    // A CSR for another identity is refused.
    let (_, other_csr) = key_and_csr(Some(DB));
    let err = istio
        .create_certificate(IstioCertificateRequest {
            csr: pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", other_csr)),
            subject_id: String::new(),
            validity_duration: 0,
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("the caller may hold only {WEB}")),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn watch_trust_pushes_a_snapshot_when_an_entry_is_created() {
    let server = server();
    server.entry("worker-1", WEB);
    let (chain, key) = server.attest_node("worker-1").await;
    let mut trust = TrustServiceClient::new(server.channel(Some((&chain, &key))).await);
    let mut stream = trust
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.entries[0].spiffe_id, WEB);
    assert!(!first.bundle.unwrap().roots.is_empty());

    // An entry for another node does not concern this one; an any-node entry does.
    server.entry("worker-2", DB);
    let created = Instant::now();
    server
        .cli(&[
            "entry",
            "create",
            "--any-node",
            "--spiffe-id",
            DB,
            "--selector",
            "unix:uid:1001",
        ])
        .unwrap();
    let next = loop {
        let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a snapshot is pushed")
            .unwrap()
            .unwrap();
        if snapshot.entries.len() == 2 {
            break snapshot;
        }
    };
    let delay = created.elapsed();
    eprintln!(
        "WatchTrust delivered the new entry {delay:?} after `entry create` returned (CLI process included)"
    );
    assert!(next.version > first.version);
    assert!(next.entries.iter().any(|e| e.any_node && e.spiffe_id == DB));
}

#[tokio::test]
async fn kill_9_during_signing_loses_no_journal_row_of_a_delivered_certificate() {
    let mut server = server();
    server.entry("worker-1", WEB);
    let (chain, key) = server.attest_node("worker-1").await;
    let channel = server.channel(Some((&chain, &key))).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let signer = tokio::spawn(async move {
        let mut svids = SvidServiceClient::new(channel);
        loop {
            let requests = (0..8)
                .map(|_| SvidRequest {
                    spiffe_id: WEB.into(),
                    csr: key_and_csr(Some(WEB)).1,
                    ttl_seconds: 0,
                })
                .collect();
            let Ok(response) = svids
                .sign_x509_svids(SignX509SvidsRequest { requests })
                .await
            else {
                return;
            };
            for result in response.into_inner().results {
                if let Some(ItemResult::Svid(svid)) = result.result {
                    let _ = tx.send(svid.serial);
                }
            }
        }
    });
    let mut received = Vec::new();
    while received.len() < 200 {
        received.push(rx.recv().await.expect("certificates keep coming"));
    }
    server.kill();
    signer.await.unwrap();
    while let Ok(serial) = rx.try_recv() {
        received.push(serial);
    }
    let journal = server.cli(&["audit", "list", "--limit", "100000"]).unwrap();
    for serial in &received {
        assert!(
            journal.contains(serial.as_str()),
            "serial {serial} was delivered but not journaled"
        );
    }
    let verify = server.cli(&["audit", "verify"]).unwrap();
    assert!(verify.starts_with("journal intact"), "{verify}");
    eprintln!(
        "{} certificates delivered before kill -9; all journaled",
        received.len()
    );

    // The CA comes back on the same data and keeps issuing.
    server.restart();
    let channel = server.channel(Some((&chain, &key))).await;
    let result = SvidServiceClient::new(channel)
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                spiffe_id: WEB.into(),
                csr: key_and_csr(Some(WEB)).1,
                ttl_seconds: 0,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        result.results[0].result,
        Some(ItemResult::Svid(_))
    ));
}

#[tokio::test]
#[ignore = "needs postgres: run via the README test command"]
async fn the_server_journals_to_postgresql_and_audit_reads_it_back() {
    let url = halyard_ca::testing::fresh_postgres_database().await;
    let server = TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_halyard-ca")),
        &["--store-url", &url],
    );
    server.entry("worker-1", WEB);
    let (chain, key) = server.attest_node("worker-1").await;
    let (web_chain, _) = server.workload_svid((&chain, &key), WEB).await;
    let serial = halyard_proto::validate_leaf(&certs_from_pem(web_chain.as_bytes()).unwrap()[0])
        .unwrap()
        .serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(
        !server.data_dir().join("halyard.db").exists(),
        "no SQLite file with a PostgreSQL store"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args(["audit", "list", "--store-url", &url])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(&serial), "{list}");
    assert_eq!(
        list.lines().count(),
        3,
        "server, node and workload certificates: {list}"
    );
}

/// The serial of the certificate the server presents, read with `openssl s_client`.
fn served_serial(server: &TestServer) -> String {
    let connect = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.grpc.to_string(),
            "-alpn",
            "h2",
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin
        .take()
        .unwrap()
        .write_all(&connect.stdout)
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
#[ignore = "needs openssl: run via the README test command"]
fn the_server_replaces_its_own_certificate_at_half_its_life() {
    let server = TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_halyard-ca")),
        &["--max-ttl", "6s", "--default-ttl", "6s"],
    );
    let first = served_serial(&server);
    assert!(first.starts_with("serial="), "{first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next = first.clone();
    while next == first && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        next = served_serial(&server);
    }
    assert_ne!(
        next,
        first,
        "the server kept its certificate: {}",
        server.log()
    );
    assert!(next.starts_with("serial="), "{next}");
}
