//! The Envoy harness itself, with static credential files: SVIDs issued by a real
//! `halyard-ca serve --dev`, a server Envoy and client Envoys running as their own uids, mTLS
//! between them with SPIFFE ID checks on both sides.
//!
//! Needs `$HALYARD_ENVOY` (`source tests/envoy.sh`) and a built `halyard-ca`
//! (`cargo build -p halyard-ca`); `tests/run.sh` does both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use halyard_ca::testing::TestServer;
use halyard_proto::SpiffeId;
use halyard_tests::binaries;
use halyard_tests::envoy::{Credentials, Envoy, EnvoyConfig, write_credentials};
use halyard_tests::wait::wait_until;

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const INTRUDER: &str = "spiffe://cluster.local/ns/default/sa/intruder";

/// The unix users the Envoys run as, as a node agent would tell workloads apart.
const SERVER_USER: (u32, u32) = (1001, 1001);
const CLIENT_USER: (u32, u32) = (1002, 1002);

/// An SVID as issued: chain PEM (leaf first), key PEM.
struct Svid {
    chain: String,
    key: String,
}

impl Svid {
    /// The leaf's serial, big-endian.
    fn serial(&self) -> Vec<u8> {
        let leaf = pem::parse_many(&self.chain).unwrap().remove(0);
        halyard_proto::validate_leaf(leaf.contents())
            .unwrap()
            .serial()
            .to_vec()
    }

    /// Its files in `dir`, for an Envoy running as `user`.
    fn credentials(&self, dir: &Path, roots: &str, user: (u32, u32)) -> Credentials {
        write_credentials(dir, &self.chain, &self.key, roots, Some(user))
    }
}

/// The trust bundle and one SVID per ID, from a real CA (stopped afterwards: files need no CA).
fn issue(ids: &[&str]) -> (String, Vec<Svid>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ca = TestServer::start(&binaries::halyard_ca(), &[]);
        let (node_chain, node_key) = ca.attest_node("node-1").await;
        let mut svids = Vec::new();
        for id in ids {
            ca.entry("node-1", id);
            let (chain, key) = ca.workload_svid((&node_chain, &node_key), id).await;
            svids.push(Svid { chain, key });
        }
        (ca.bundle_pem(), svids)
    })
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

/// The uid a process runs as, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn client_reaches_server_over_mtls_and_each_shows_its_svid() {
    let (roots, svids) = issue(&[CLIENT, SERVER]);
    let [client_svid, server_svid] = svids.try_into().ok().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let server = Envoy::start(
        &EnvoyConfig::server(
            "server",
            &[id(CLIENT)],
            server_svid.credentials(&dir.path().join("server"), &roots, SERVER_USER),
        )
        .run_as(SERVER_USER.0, SERVER_USER.1),
    );
    let client = Envoy::start(
        &EnvoyConfig::client(
            "client",
            server.listen_addr(),
            &id(SERVER),
            client_svid.credentials(&dir.path().join("client"), &roots, CLIENT_USER),
        )
        .run_as(CLIENT_USER.0, CLIENT_USER.1),
    );
    assert_eq!(uid_of(server.pid()), SERVER_USER.0);
    assert_eq!(uid_of(client.pid()), CLIENT_USER.0);

    let response = client.get("/hello").unwrap();
    assert_eq!(response.status, 200, "{response:?}\n{}", client.log());
    assert_eq!(response.body, "hello from server\n");
    assert_eq!(response.header("x-peer-spiffe-id"), Some(CLIENT));

    for (envoy, svid, spiffe_id) in [
        (&server, &server_svid, SERVER),
        (&client, &client_svid, CLIENT),
    ] {
        let serial = svid.serial();
        let leaf = envoy.wait_for_cert("its SVID", Duration::from_secs(5), |c| {
            c.has_serial(&serial)
        });
        assert_eq!(leaf.spiffe_id, Some(id(spiffe_id)), "{leaf:?}");
        // A one-hour SVID: today.
        assert_eq!(leaf.days_until_expiration, 0, "{leaf:?}");
        assert!(leaf.valid_from < leaf.expiration_time, "{leaf:?}");
        let roots = envoy.ca_certs();
        assert!(
            roots
                .iter()
                .any(|r| r.spiffe_id == Some(id("spiffe://cluster.local"))),
            "{}: the trust domain's root is trusted: {roots:?}",
            envoy.name()
        );
    }
    assert_eq!(server.stat("listener.server.ssl.handshake"), 1);
    assert_eq!(client.stat("cluster.upstream.ssl.handshake"), 1);
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn server_refuses_a_client_not_on_its_list() {
    let (roots, svids) = issue(&[SERVER, INTRUDER]);
    let [server_svid, intruder_svid] = svids.try_into().ok().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let server = Envoy::start(
        &EnvoyConfig::server(
            "server",
            &[id(CLIENT)],
            server_svid.credentials(&dir.path().join("server"), &roots, SERVER_USER),
        )
        .run_as(SERVER_USER.0, SERVER_USER.1),
    );
    let intruder = Envoy::start(
        &EnvoyConfig::client(
            "intruder",
            server.listen_addr(),
            &id(SERVER),
            intruder_svid.credentials(&dir.path().join("intruder"), &roots, CLIENT_USER),
        )
        .run_as(CLIENT_USER.0, CLIENT_USER.1),
    );

    match intruder.get("/") {
        Ok(response) => assert_ne!(response.status, 200, "{response:?}"),
        Err(e) => eprintln!("refused without a response: {e}"),
    }
    wait_until(
        "the server counts a client certificate with the wrong SAN",
        Duration::from_secs(10),
        || match server.stat("listener.server.ssl.fail_verify_san") {
            0 => Err(format!("{:?}", server.stats("listener.server.ssl."))),
            n => Ok(n),
        },
    );
    assert_eq!(server.stat("listener.server.ssl.handshake"), 0);
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn client_refuses_a_server_with_another_id() {
    let (roots, svids) = issue(&[CLIENT, SERVER]);
    let [client_svid, server_svid] = svids.try_into().ok().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let server = Envoy::start(
        &EnvoyConfig::server(
            "server",
            &[id(CLIENT)],
            server_svid.credentials(&dir.path().join("server"), &roots, SERVER_USER),
        )
        .run_as(SERVER_USER.0, SERVER_USER.1),
    );
    // The client expects someone else behind that address.
    let client = Envoy::start(
        &EnvoyConfig::client(
            "client",
            server.listen_addr(),
            &id("spiffe://cluster.local/ns/default/sa/elsewhere"),
            client_svid.credentials(&dir.path().join("client"), &roots, CLIENT_USER),
        )
        .run_as(CLIENT_USER.0, CLIENT_USER.1),
    );

    let response = client.get("/").unwrap();
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        client.stat("cluster.upstream.ssl.fail_verify_san") >= 1,
        "{:?}",
        client.stats("cluster.upstream.ssl.")
    );
}
