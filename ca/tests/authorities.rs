//! Authorities and root rotation through the running CA: `authority list|prepare|activate|taint`
//! and `bundle add|remove` over the admin socket, what WatchTrust and new certificates show after
//! each step, the refusals, a restart, and OpenSSL's view of every chain and CRL involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use halyard_ca::authority::{certs_from_pem, certs_to_pem};
use halyard_ca::testing::{TestServer, key_id};
use halyard_proto::api::ca::trust_service_client::TrustServiceClient;
use halyard_proto::api::ca::{TrustSnapshot, WatchTrustRequest};

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn server() -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_halyard-ca")), &[])
}

/// `authority list` as (id, state, usable) rows, oldest first.
fn authorities(server: &TestServer) -> Vec<(String, String, bool)> {
    server
        .cli(&["authority", "list"])
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[3] == "usable",
            )
        })
        .collect()
}

/// The id (first field) of the one authority line `out` prints.
fn printed_id(out: &str) -> String {
    out.lines()
        .next()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned()
}

/// An authority's id: its certificate's subject key identifier.
fn ski(der: &[u8]) -> String {
    key_id(der, false)
}

/// The id of the authority that signed a certificate.
fn aki(der: &[u8]) -> String {
    key_id(der, true)
}

/// A fresh workload certificate for WEB from `node`: its chain, DER, leaf first.
async fn leaf_chain(server: &TestServer, node: &(String, String)) -> Vec<Vec<u8>> {
    let (chain, _) = server.workload_svid((&node.0, &node.1), WEB).await;
    certs_from_pem(chain.as_bytes()).unwrap()
}

async fn first_snapshot(server: &TestServer, node: &(String, String)) -> TrustSnapshot {
    TrustServiceClient::new(server.channel(Some((&node.0, &node.1))).await)
        .watch_trust(WatchTrustRequest {})
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn authorities_are_prepared_activated_tainted_and_survive_a_restart() {
    let mut server = server();
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;

    let first = authorities(&server);
    assert_eq!(first.len(), 1, "{first:?}");
    let a = first[0].0.clone();
    assert_eq!((first[0].1.as_str(), first[0].2), ("active", true));
    assert_eq!(aki(&leaf_chain(&server, &node).await[0]), a);

    // Prepare B (the development root signs it): known and published, not yet signing.
    let b = printed_id(&server.cli(&["authority", "prepare"]).unwrap());
    assert_ne!(b, a);
    let snapshot = first_snapshot(&server, &node).await;
    let mut states: Vec<(String, String)> = snapshot
        .authorities
        .iter()
        .map(|x| (x.state.clone(), x.id.clone()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("active".to_owned(), a.clone()),
            ("prepared".to_owned(), b.clone())
        ]
    );
    assert_eq!(snapshot.crls.len(), 2, "one CRL per authority");
    assert!(snapshot.tainted_authorities.is_empty());
    assert_eq!(aki(&leaf_chain(&server, &node).await[0]), a);

    // Activate B: new certificates come from B; A is old but keeps its CRL.
    server.cli(&["authority", "activate", &b]).unwrap();
    let chain = leaf_chain(&server, &node).await;
    assert_eq!((aki(&chain[0]), ski(&chain[1])), (b.clone(), b.clone()));
    let mut states: Vec<(String, String)> = authorities(&server)
        .into_iter()
        .map(|(id, state, _)| (state, id))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("active".to_owned(), b.clone()),
            ("old".to_owned(), a.clone())
        ]
    );
    for id in [&a, &b] {
        let (status, _) = server.http_get(&format!("/crl/{id}.crl"));
        assert!(status.contains("200"), "{id}: {status}");
    }

    // Taint B with C prepared: C takes over in the same step, and B is pushed as tainted.
    let c = printed_id(&server.cli(&["authority", "prepare"]).unwrap());
    let out = server.cli(&["authority", "taint", &b]).unwrap();
    assert!(out.contains(&format!("{b}\ttainted")), "{out}");
    assert!(out.contains(&format!("{c}\tactive")), "{out}");
    assert_eq!(aki(&leaf_chain(&server, &node).await[0]), c);
    let snapshot = first_snapshot(&server, &node).await;
    assert_eq!(snapshot.tainted_authorities, std::slice::from_ref(&b));
    assert_eq!(
        snapshot.crls.len(),
        3,
        "the tainted one's too: its leaves are still out there"
    );

    // Refusals, each saying why, changing nothing.
    let twice = server.cli(&["authority", "taint", &b]).unwrap_err();
    assert!(
        twice.contains("FailedPrecondition") && twice.contains("already tainted"),
        "{twice}"
    );
    let back = server.cli(&["authority", "activate", &b]).unwrap_err();
    assert!(
        back.contains("FailedPrecondition") && back.contains("tainted"),
        "{back}"
    );
    let unknown = server.cli(&["authority", "activate", "abcd"]).unwrap_err();
    assert!(
        unknown.contains("NotFound") && unknown.contains("authority list"),
        "{unknown}"
    );
    let alone = server.cli(&["authority", "taint", &c]).unwrap_err();
    assert!(
        alone.contains("FailedPrecondition") && alone.contains("authority prepare"),
        "{alone}"
    );
    let before = authorities(&server);

    // A restart keeps every authority and state, and C still signs.
    server.restart();
    assert_eq!(authorities(&server), before);
    let node = server.attest_node("worker-1").await;
    assert_eq!(aki(&leaf_chain(&server, &node).await[0]), c);
    assert_eq!(
        first_snapshot(&server, &node).await.tainted_authorities,
        std::slice::from_ref(&b)
    );
}

fn openssl(args: &[&str], files: &[&Path]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl verify -x509_strict -crl_check` of `chain` (leaf, intermediates) against `root` with
/// the CRL of its issuer, fetched from the CA; and `openssl crl -verify` of that CRL.
fn openssl_checks(server: &TestServer, chain: &[Vec<u8>], root: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let (status, crl) = server.http_get(&format!("/crl/{}.crl", aki(&chain[0])));
    assert!(status.contains("200"), "{status}");
    let crl_pem = dir.path().join("crl.pem");
    std::fs::write(&crl_pem, pem::encode(&pem::Pem::new("X509 CRL", crl))).unwrap();
    let cafile = dir.path().join("ca.pem");
    std::fs::write(
        &cafile,
        format!(
            "{}{root}",
            certs_to_pem(chain[1..].iter().map(Vec::as_slice))
        ),
    )
    .unwrap();
    let (ok, text) = openssl(
        &["crl", "-noout", "-verify", "-CAfile"],
        &[&cafile, Path::new("-in"), &crl_pem],
    );
    if !ok || !text.contains("verify OK") {
        return Err(format!("crl -verify: {text}"));
    }
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, certs_to_pem([chain[0].as_slice()])).unwrap();
    let (ok, text) = openssl(
        &["verify", "-x509_strict", "-crl_check", "-CAfile"],
        &[&cafile, Path::new("-CRLfile"), &crl_pem, &leaf],
    );
    if ok {
        Ok(())
    } else {
        Err(format!("verify: {text}"))
    }
}

#[tokio::test]
#[ignore = "needs openssl: run via the README test command"]
async fn a_root_is_rotated_through_the_admin_socket() {
    let server = server();
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let dir = tempfile::tempdir().unwrap();
    let root1 = server.data_dir().join("dev-root/root.crt");
    let root1_pem = std::fs::read_to_string(&root1).unwrap();
    let a = authorities(&server)[0].0.clone();

    // A new offline root for the same trust domain.
    let root2_dir = dir.path().join("root2");
    server_cli_offline(&[
        "root",
        "init",
        "--trust-domain",
        "cluster.local",
        "--dir",
        root2_dir.to_str().unwrap(),
    ]);
    let root2 = root2_dir.join("root.crt");
    let root2_pem = std::fs::read_to_string(&root2).unwrap();

    // An intermediate under root 2, before root 2 is trusted: refused, naming the fix.
    let csr = dir.path().join("next.csr");
    let out = server
        .cli(&["authority", "prepare", "--csr-out", csr.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("root sign-intermediate"), "{out}");
    let crt = dir.path().join("next.crt");
    server_cli_offline(&[
        "root",
        "sign-intermediate",
        "--dir",
        root2_dir.to_str().unwrap(),
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        crt.to_str().unwrap(),
    ]);
    let early = server
        .cli(&["authority", "prepare", "--cert", crt.to_str().unwrap()])
        .unwrap_err();
    assert!(
        early.contains("FailedPrecondition") && early.contains("bundle add"),
        "{early}"
    );

    // Step 1: root 2 joins the bundle, pushed at once.
    let out = server
        .cli(&["bundle", "add", "--cert", root2.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("2 roots"), "{out}");
    let again = server
        .cli(&["bundle", "add", "--cert", root2.to_str().unwrap()])
        .unwrap_err();
    assert!(again.contains("AlreadyExists"), "{again}");
    assert_eq!(
        first_snapshot(&server, &node)
            .await
            .bundle
            .unwrap()
            .roots
            .len(),
        2
    );

    // Step 2: the intermediate under root 2 is prepared, then activated.
    let b = printed_id(
        &server
            .cli(&["authority", "prepare", "--cert", crt.to_str().unwrap()])
            .unwrap(),
    );
    let busy = server
        .cli(&["bundle", "remove", "--cert", root2.to_str().unwrap()])
        .unwrap_err();
    assert!(
        busy.contains("FailedPrecondition") && busy.contains(&b),
        "{busy}"
    );
    let busy = server
        .cli(&["bundle", "remove", "--cert", root1.to_str().unwrap()])
        .unwrap_err();
    assert!(
        busy.contains("FailedPrecondition") && busy.contains(&a),
        "{busy}"
    );
    let old_chain = leaf_chain(&server, &node).await;
    server.cli(&["authority", "activate", &b]).unwrap();
    let new_chain = leaf_chain(&server, &node).await;
    assert_eq!(aki(&new_chain[0]), b);
    // Both generations pass OpenSSL's strict check with their issuer's CRL, each under its root.
    openssl_checks(&server, &old_chain, &root1_pem).unwrap();
    openssl_checks(&server, &new_chain, &root2_pem).unwrap();
    let wrong = openssl_checks(&server, &new_chain, &root1_pem).unwrap_err();
    assert!(wrong.contains("unable to get"), "{wrong}");

    // Step 3: root 1 leaves. A's certificates are orphaned, and the CA says so.
    let out = server
        .cli(&["bundle", "remove", "--cert", root1.to_str().unwrap()])
        .unwrap();
    assert!(out.contains("1 roots") && out.contains(&a), "{out}");
    let last = server
        .cli(&["bundle", "remove", "--cert", root2.to_str().unwrap()])
        .unwrap_err();
    assert!(last.contains("only root"), "{last}");
    let bundle = certs_from_pem(server.bundle_pem().as_bytes()).unwrap();
    assert_eq!(certs_to_pem(bundle.iter().map(Vec::as_slice)), root2_pem);

    // The CA now serves a certificate under root 2 and accepts only clients under root 2: a node
    // SVID from A no longer opens a channel; a node attested now does, trusting root 2 alone.
    let fresh = server.attest_node("worker-2").await;
    assert_eq!(aki(&certs_from_pem(fresh.0.as_bytes()).unwrap()[0]), b);
    server.entry("worker-2", WEB);
    let chain = leaf_chain(&server, &fresh).await;
    openssl_checks(&server, &chain, &root2_pem).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&root2_pem))
        .domain_name("localhost")
        .identity(tonic::transport::Identity::from_pem(&node.0, &node.1));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    if let Ok(channel) = endpoint.connect().await {
        let refused = TrustServiceClient::new(channel)
            .watch_trust(WatchTrustRequest {})
            .await;
        assert!(
            refused.is_err(),
            "a node SVID under the removed root still works"
        );
    }
}

/// Runs an offline `halyard-ca` command (no data dir).
fn server_cli_offline(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_leaf_points_at_its_issuers_crl_when_configured() {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let base = format!("http://127.0.0.1:{}/crl", halyard_ca::testing::free_port());
    let server = TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_halyard-ca")),
        &["--crl-base-url", &base],
    );
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let chain = leaf_chain(&server, &node).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let uris: Vec<String> = leaf
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(points) => Some(points),
            _ => None,
        })
        .flat_map(|points| points.iter())
        .filter_map(|p| match &p.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names),
            _ => None,
        })
        .flatten()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    let issuer = aki(&chain[0]);
    assert_eq!(uris, [format!("{base}/{issuer}.crl")]);
    // The path it names is where this CA serves the issuer's CRL.
    let (status, crl) = server.http_get(&format!("/crl/{issuer}.crl"));
    assert!(status.contains("200") && !crl.is_empty(), "{status}");
}
