//! What the running CA refuses, and how: admin commands with bad input, and gRPC callers over
//! their limits or without the right credential. Each refusal has its own precise message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use halyard_ca::testing::{TestServer, key_and_csr};
use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{
    AttestRequest, SignX509SvidsRequest, SvidRequest, attest_request::Credential,
};
use tonic::Code;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn server(extra: &[&str]) -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_halyard-ca")), extra)
}

/// What a refusal must not change: the authorities, the bundle, the data directory's files
/// (name and contents, but the database and its logs), and the journal's integrity.
fn state(server: &TestServer) -> (String, String, Vec<(String, Vec<u8>)>) {
    let mut files = Vec::new();
    let mut dirs = vec![server.data_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.display().to_string();
            if path.is_dir() {
                dirs.push(path);
            } else if !name.contains("halyard.db") && !name.ends_with(".sock") {
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    let verify = server.cli(&["audit", "verify"]).unwrap();
    assert!(verify.contains("journal intact"), "{verify}");
    (
        server.cli(&["authority", "list"]).unwrap(),
        server.cli(&["bundle", "show"]).unwrap(),
        files,
    )
}

#[test]
fn admin_commands_refuse_bad_input_precisely() {
    let server = server(&[]);
    let create = |id: &str, selector: &str| {
        server.cli(&[
            "entry",
            "create",
            "--node",
            "worker-1",
            "--spiffe-id",
            id,
            "--selector",
            selector,
        ])
    };
    create(WEB, "unix:uid:1000").unwrap();
    let files = tempfile::tempdir().unwrap();
    let own_root = server
        .data_dir()
        .join("dev-root/root.crt")
        .display()
        .to_string();
    let leaf_file = files.path().join("leaf.pem").display().to_string();
    std::fs::write(
        &leaf_file,
        halyard_ca::authority::certs_to_pem(
            [halyard_ca::testing::self_signed_leaf(WEB).as_slice()],
        ),
    )
    .unwrap();
    let other_root = files.path().join("other").display().to_string();
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args([
            "root",
            "init",
            "--trust-domain",
            "cluster.local",
            "--dir",
            &other_root,
        ])
        .output()
        .unwrap();
    assert!(init.status.success());
    let other_root = format!("{other_root}/root.crt");
    let before = state(&server);
    let cases: Vec<(&str, Result<String, String>, &str)> = vec![
        (
            "bad node name",
            server.cli(&["token", "create", "--node", "bad/name"]),
            "InvalidArgument: node name \"bad/name\"",
        ),
        (
            "ID of another trust domain",
            create("spiffe://other.org/x", "unix:uid:1"),
            "InvalidArgument: spiffe://other.org/x is not in trust domain cluster.local",
        ),
        (
            "trust domain ID",
            create("spiffe://cluster.local", "unix:uid:1"),
            "has no path: it names the trust domain",
        ),
        (
            "not a SPIFFE ID",
            create("https://x", "unix:uid:1"),
            "InvalidArgument: spiffe_id \"https://x\"",
        ),
        (
            "unknown selector kind",
            create(WEB, "docker:label:x"),
            "selector kind \"docker\" is unknown",
        ),
        (
            "unknown selector key",
            create(WEB, "unix:name:x"),
            "selector unix:name is unknown: expected one of unix:uid, unix:gid, unix:path",
        ),
        (
            "non-numeric uid",
            create(WEB, "unix:uid:abc"),
            "selector unix:uid:abc: uid must be a number",
        ),
        (
            "selector without parts",
            create(WEB, "nocolon"),
            "--selector \"nocolon\": expected KIND:KEY:VALUE",
        ),
        (
            "duplicate entry",
            create(WEB, "unix:uid:1000"),
            "AlreadyExists: ",
        ),
        (
            "unknown entry id",
            server.cli(&["entry", "delete", "--id", "nope"]),
            "NotFound: no entry with id \"nope\"",
        ),
        (
            "serial not hex",
            server.cli(&["revoke", "--serial", "xyz"]),
            "InvalidArgument: serial: ",
        ),
        (
            "serial never issued",
            server.cli(&["revoke", "--serial", "0a0b0c"]),
            "NotFound: no certificate with serial 0a0b0c was issued by this CA",
        ),
        (
            "unknown revocation reason",
            server.cli(&["revoke", "--spiffe-id", WEB, "--reason", "boredom"]),
            "InvalidArgument: ",
        ),
        (
            "revoke a non-SPIFFE ID",
            server.cli(&["revoke", "--spiffe-id", "web"]),
            "InvalidArgument: spiffe_id \"web\"",
        ),
        (
            "activate an unknown authority",
            server.cli(&["authority", "activate", "abcdef"]),
            "NotFound: no authority with id abcdef",
        ),
        (
            "taint an unknown authority",
            server.cli(&["authority", "taint", "abcdef"]),
            "NotFound: no authority with id abcdef",
        ),
        (
            "prepare with a file that holds no certificate",
            server.cli(&["authority", "prepare", "--cert", "/etc/hostname"]),
            "InvalidArgument: certificate: ",
        ),
        (
            "prepare with a missing file",
            server.cli(&["authority", "prepare", "--cert", "/nonexistent.crt"]),
            "/nonexistent.crt",
        ),
        (
            "add a root that is no CA",
            server.cli(&["bundle", "add", "--cert", &leaf_file]),
            "InvalidArgument: not a usable root: ",
        ),
        (
            "remove a root not in the bundle",
            server.cli(&["bundle", "remove", "--cert", &other_root]),
            "NotFound: this root is not in the bundle",
        ),
        (
            "remove the only root",
            server.cli(&["bundle", "remove", "--cert", &own_root]),
            "FailedPrecondition: this is the bundle's only root",
        ),
        (
            "add the root already there",
            server.cli(&["bundle", "add", "--cert", &own_root]),
            "AlreadyExists: this root is already in the bundle",
        ),
        (
            "ban an unknown node",
            server.cli(&["node", "ban", "nobody"]),
            "NotFound: no node named \"nobody\" has attested",
        ),
    ];
    for (name, result, expected) in cases {
        let err = result.expect_err(name);
        assert!(
            err.contains(expected),
            "{name}:\n  expected: {expected}\n  got: {err}"
        );
    }
    // The refusals changed nothing: still the one entry, the same authorities, roots, files.
    let list = server.cli(&["entry", "list"]).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert_eq!(state(&server), before);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args([
            "token",
            "create",
            "--node",
            "n",
            "--admin-socket",
            "/nonexistent/admin.sock",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the CA's admin socket /nonexistent/admin.sock"),
        "{err}"
    );
}

#[tokio::test]
async fn attestation_refuses_missing_credentials_and_keeps_the_token_on_a_bad_csr() {
    let server = server(&[]);
    let mut nodes = NodeServiceClient::new(server.channel(None).await);
    let (_, csr) = key_and_csr(None);
    let err = nodes
        .attest(AttestRequest {
            credential: None,
            csr: csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("present a join token"),
        "{}",
        err.message()
    );

    let err = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken("made-up".into())),
            csr: csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A bad CSR is refused before the token is spent: the same token works afterwards.
    let token = server
        .cli(&["token", "create", "--node", "worker-1"])
        .unwrap()
        .trim()
        .to_owned();
    let err = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token.clone())),
            csr: b"junk".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let ok = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token)),
            csr,
        })
        .await
        .unwrap();
    assert!(ok.into_inner().svid.is_some());

    // A CSR naming another node's ID is refused.
    let token = server
        .cli(&["token", "create", "--node", "worker-2"])
        .unwrap()
        .trim()
        .to_owned();
    let (_, csr) = key_and_csr(Some("spiffe://cluster.local/halyard/node/worker-9"));
    let err = nodes
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token)),
            csr,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn signing_refuses_big_batches_fast_nodes_and_non_nodes() {
    let server = server(&["--max-batch", "4", "--node-rate-limit", "2"]);
    server
        .cli(&[
            "entry",
            "create",
            "--node",
            "worker-1",
            "--spiffe-id",
            WEB,
            "--selector",
            "unix:uid:1",
        ])
        .unwrap();
    let (chain, key) = server.attest_node("worker-1").await;
    let mut svids = SvidServiceClient::new(server.channel(Some((&chain, &key))).await);
    let item = || SvidRequest {
        spiffe_id: WEB.into(),
        csr: key_and_csr(Some(WEB)).1,
        ttl_seconds: 0,
    };

    let err = svids
        .sign_x509_svids(SignX509SvidsRequest {
            requests: (0..5).map(|_| item()).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "batch of 5 CSRs; the limit is 4");

    // A budget of 2/s with a burst of 4: the fifth certificate in a row is refused.
    let mut codes = Vec::new();
    for _ in 0..2 {
        let results = svids
            .sign_x509_svids(SignX509SvidsRequest {
                requests: (0..3).map(|_| item()).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        for result in results {
            codes.push(match result.result.unwrap() {
                ItemResult::Svid(_) => Code::Ok,
                ItemResult::Error(e) => {
                    assert!(
                        e.message
                            .contains("over its rate limit of 2 certificates per second"),
                        "{}",
                        e.message
                    );
                    Code::from(e.code)
                }
            });
        }
    }
    assert_eq!(&codes[..4], [Code::Ok; 4]);
    assert!(
        codes[4..].iter().all(|c| *c == Code::ResourceExhausted),
        "{codes:?}"
    );
}

#[tokio::test]
async fn an_identity_over_its_rate_is_refused_on_every_node_and_api_while_others_are_served() {
    use halyard_proto::api::ca::SvidResult;
    use halyard_proto::api::istio_auth::IstioCertificateRequest;
    use halyard_proto::api::istio_auth::istio_certificate_service_client::IstioCertificateServiceClient;
    use tonic::transport::Channel;

    const API: &str = "spiffe://cluster.local/ns/default/sa/api";
    // One a minute, three at once: nothing refills during the test.
    let server = server(&["--identity-rate-limit", "1", "--identity-rate-burst", "3"]);
    server.entry("worker-1", WEB);
    server.entry("worker-1", API);
    server.entry("worker-2", WEB);
    let worker_1 = server.attest_node("worker-1").await;
    let worker_2 = server.attest_node("worker-2").await;
    let svids_1 = SvidServiceClient::new(server.channel(Some((&worker_1.0, &worker_1.1))).await);
    let svids_2 = SvidServiceClient::new(server.channel(Some((&worker_2.0, &worker_2.1))).await);
    let refusal = |id: &str| {
        format!(
            "{id} is over its per-identity rate limit of 1 certificates per minute (burst 3); \
             retry with backoff"
        )
    };
    let exhausted = |id: &str| Err((Code::ResourceExhausted, refusal(id)));
    let sign = |client: &SvidServiceClient<Channel>, ids: &[&str]| {
        let requests = ids
            .iter()
            .map(|id| SvidRequest {
                spiffe_id: (*id).into(),
                csr: key_and_csr(Some(id)).1,
                ttl_seconds: 0,
            })
            .collect();
        let mut client = client.clone();
        async move {
            let results: Vec<SvidResult> = client
                .sign_x509_svids(SignX509SvidsRequest { requests })
                .await
                .unwrap()
                .into_inner()
                .results;
            results
                .into_iter()
                .map(|r| match r.result.unwrap() {
                    ItemResult::Svid(_) => Ok(()),
                    ItemResult::Error(e) => Err((Code::from(e.code), e.message)),
                })
                .collect::<Vec<_>>()
        }
    };

    // web's burst of three (one kept, to call the Istio API with)...
    let web = server.workload_svid((&worker_1.0, &worker_1.1), WEB).await;
    assert_eq!(sign(&svids_1, &[WEB, WEB]).await, [Ok(()), Ok(())]);
    // ...then web is refused beside api served, in one batch;
    assert_eq!(sign(&svids_1, &[WEB, API]).await, [exhausted(WEB), Ok(())]);
    // the budget is web's, whichever node asks (worker-2's own is untouched)...
    assert_eq!(sign(&svids_2, &[WEB]).await, [exhausted(WEB)]);
    // ...and whichever API: web renewing itself through Istio's is refused too.
    let (_, csr) = key_and_csr(Some(WEB));
    let err = IstioCertificateServiceClient::new(server.channel(Some((&web.0, &web.1))).await)
        .create_certificate(IstioCertificateRequest {
            csr: pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr)),
            subject_id: String::new(),
            validity_duration: 0,
            metadata: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::ResourceExhausted, refusal(WEB).as_str())
    );
    // api still gets its own three, then it too is refused.
    assert_eq!(sign(&svids_1, &[API, API]).await, [Ok(()), Ok(())]);
    assert_eq!(sign(&svids_1, &[API]).await, [exhausted(API)]);

    // Refusals write nothing: each has exactly its three journal rows.
    let rows = |id: &str| {
        server
            .cli(&["audit", "list", "--spiffe-id", id])
            .unwrap()
            .lines()
            .filter(|line| line.contains(id))
            .count()
    };
    assert_eq!((rows(WEB), rows(API)), (3, 3));
    let verify = server.cli(&["audit", "verify"]).unwrap();
    assert!(verify.contains("journal intact"), "{verify}");
}

#[tokio::test]
async fn a_workload_svid_cannot_act_as_a_node() {
    let server = server(&[]);
    server.entry("worker-1", WEB);
    let (chain, key) = server.attest_node("worker-1").await;
    let (web_chain, web_key) = server.workload_svid((&chain, &key), WEB).await;
    let mut as_workload =
        SvidServiceClient::new(server.channel(Some((&web_chain, &web_key))).await);
    let err = as_workload
        .sign_x509_svids(SignX509SvidsRequest { requests: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("{WEB} is not a node identity"));
}

#[tokio::test]
async fn a_connection_that_outlives_its_node_svid_is_refused() {
    let server = server(&["--max-ttl", "3s", "--default-ttl", "3s"]);
    server.entry("worker-1", WEB);
    let (chain, key) = server.attest_node("worker-1").await;
    let mut svids = SvidServiceClient::new(server.channel(Some((&chain, &key))).await);
    let item = || SvidRequest {
        spiffe_id: WEB.into(),
        csr: key_and_csr(Some(WEB)).1,
        ttl_seconds: 0,
    };
    // While the node SVID is valid the connection works…
    svids
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![item()],
        })
        .await
        .unwrap();
    // …and on the same connection, after it expired, it does not.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let err = svids
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![item()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("client certificate expired at"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_banned_node_can_neither_renew_nor_sign_nor_watch_nor_attest_again() {
    use halyard_proto::api::ca::WatchTrustRequest;
    use halyard_proto::api::ca::trust_service_client::TrustServiceClient;

    let server = server(&[]);
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let identity = Some((node.0.as_str(), node.1.as_str()));
    let mut watch = TrustServiceClient::new(server.channel(identity).await)
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    let listed = server.cli(&["node", "list"]).unwrap();
    assert!(listed.starts_with("worker-1\tok\tserial="), "{listed}");

    let unknown = server.cli(&["node", "ban", "nobody"]).unwrap_err();
    assert!(
        unknown.contains("NotFound") && unknown.contains("node list"),
        "{unknown}"
    );
    assert_eq!(
        server.cli(&["node", "ban", "worker-1"]).unwrap().trim(),
        "banned node worker-1"
    );
    assert!(
        server
            .cli(&["node", "list"])
            .unwrap()
            .starts_with("worker-1\tbanned\t")
    );

    // The open stream ends at once.
    let ended = loop {
        match watch.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("banned"), "{status:?}");

    // Its node SVID, replayed, opens nothing.
    let channel = server.channel(identity).await;
    let (_, csr) = key_and_csr(Some(WEB));
    let signed = SvidServiceClient::new(channel.clone())
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                spiffe_id: WEB.into(),
                csr,
                ttl_seconds: 0,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(signed.code(), Code::PermissionDenied, "{signed:?}");
    let (_, csr) = key_and_csr(None);
    let renewed = NodeServiceClient::new(channel.clone())
        .attest(AttestRequest {
            credential: None,
            csr,
        })
        .await
        .unwrap_err();
    assert_eq!(renewed.code(), Code::PermissionDenied, "{renewed:?}");
    let watched = TrustServiceClient::new(channel)
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap_err();
    assert_eq!(watched.code(), Code::PermissionDenied, "{watched:?}");

    // Nor does a new join token.
    let token = server
        .cli(&["token", "create", "--node", "worker-1"])
        .unwrap();
    let (_, csr) = key_and_csr(None);
    let again = NodeServiceClient::new(server.channel(None).await)
        .attest(AttestRequest {
            credential: Some(Credential::JoinToken(token.trim().to_owned())),
            csr,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again:?}");
    assert!(again.message().contains("banned"), "{again:?}");
}

/// One item of a batch: its name, the SPIFFE ID asked for, the CSR, and the refusal expected
/// (code, text in the message), `None` for a certificate.
type BatchItem = (
    &'static str,
    &'static str,
    Vec<u8>,
    Option<(Code, &'static str)>,
);

/// Every item of a `SignX509Svids` batch is judged on its own: each bad item gets its own
/// precise status, the good item in the same batch is signed, and nothing else changes.
#[tokio::test]
async fn each_bad_item_of_a_batch_gets_its_own_status_and_changes_nothing() {
    let server = server(&[]);
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let before = state(&server);
    let journal_before = server.cli(&["audit", "list"]).unwrap().lines().count();
    let csr = |id: Option<&str>| key_and_csr(id).1;
    let ca_csr = halyard_ca::testing::CsrSpec::for_id(WEB).ca().der();
    let two_uris = halyard_ca::testing::CsrSpec::for_id(WEB)
        .uris(&[WEB, "spiffe://cluster.local/ns/default/sa/db"])
        .der();
    let dns = halyard_ca::testing::CsrSpec::for_id(WEB)
        .dns(&["evil.example.com"])
        .der();
    let items: Vec<BatchItem> = vec![
        ("good", WEB, csr(Some(WEB)), None),
        (
            "not a SPIFFE ID",
            "web",
            csr(Some(WEB)),
            Some((Code::InvalidArgument, "web")),
        ),
        (
            "an ID with no entry for this node",
            "spiffe://cluster.local/ns/default/sa/db",
            csr(Some("spiffe://cluster.local/ns/default/sa/db")),
            Some((Code::PermissionDenied, "sa/db")),
        ),
        (
            "another trust domain",
            "spiffe://other.org/ns/default/sa/web",
            csr(Some("spiffe://other.org/ns/default/sa/web")),
            Some((Code::PermissionDenied, "other.org")),
        ),
        (
            "empty CSR",
            WEB,
            Vec::new(),
            Some((Code::InvalidArgument, "CSR")),
        ),
        (
            "garbage CSR",
            WEB,
            b"not a csr".to_vec(),
            Some((Code::InvalidArgument, "CSR")),
        ),
        (
            "truncated CSR",
            WEB,
            csr(Some(WEB))[..40].to_vec(),
            Some((Code::InvalidArgument, "CSR")),
        ),
        (
            "CSR for another ID than requested",
            WEB,
            csr(Some("spiffe://cluster.local/ns/default/sa/db")),
            Some((Code::PermissionDenied, "")),
        ),
        (
            "CSR without a URI SAN",
            WEB,
            csr(None),
            Some((Code::InvalidArgument, "URI SAN")),
        ),
        (
            "CSR asking for a CA",
            WEB,
            ca_csr,
            Some((Code::InvalidArgument, "CA")),
        ),
        (
            "CSR with two URI SANs",
            WEB,
            two_uris,
            Some((Code::InvalidArgument, "URI")),
        ),
        (
            "CSR with a DNS name outside the entry",
            WEB,
            dns,
            Some((Code::PermissionDenied, "evil.example.com")),
        ),
    ];
    let results = SvidServiceClient::new(server.channel(Some((&node.0, &node.1))).await)
        .sign_x509_svids(SignX509SvidsRequest {
            requests: items
                .iter()
                .map(|(_, id, csr, _)| SvidRequest {
                    spiffe_id: (*id).to_owned(),
                    csr: csr.clone(),
                    ttl_seconds: 0,
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), items.len());
    let mut wrong = Vec::new();
    for ((name, _, _, expected), result) in items.iter().zip(&results) {
        match (expected, &result.result) {
            (None, Some(ItemResult::Svid(_))) => {}
            (Some((code, text)), Some(ItemResult::Error(e)))
                if Code::from(e.code) == *code && e.message.contains(text) => {}
            (_, got) => wrong.push(format!("{name}: expected {expected:?}, got {got:?}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Exactly the one good certificate was journaled; nothing else changed.
    let journal_after = server.cli(&["audit", "list"]).unwrap().lines().count();
    assert_eq!(journal_after, journal_before + 1);
    assert_eq!(state(&server), before);
}
