//! AWS Private CA as the root, end to end: the moto emulator (with the test shim
//! `tests/moto_shim.py`) holding a PCA root CA, `halyard-ca serve --config` with
//! `upstream = "aws-pca"` pointing `endpoint_url` at it, a real `halyard-agent run`, and two
//! Envoys taking their certificates from the agent over SDS.
//!
//! - Every SVID (both Envoys', the node's) chains through the intermediate PCA issued to the PCA
//!   root, checked with `openssl verify -x509_strict` against the root as the emulator hands it
//!   out (not Halyard's bundle), and that root is all the Envoys trust.
//! - With intermediates valid for 90 s, the CA prepares the next one at half of that and
//!   activates it at five sixths on its own, while requests flow through the client Envoy, each
//!   over a new TLS handshake: none fails, and both Envoys end up on certificates from the new
//!   intermediate. PCA is asked once per intermediate.
//!
//! Needs root (the Envoys run as other uids), `$HALYARD_ENVOY` (`source tests/envoy.sh`),
//! `$HALYARD_MOTO_SERVER` (`source tests/moto.sh`) and built binaries; `tests/run.sh` does all
//! that. `--no-capture` shows the measured times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use halyard_agent::testing::TestAgent;
use halyard_ca::authority::{certs_from_pem, certs_to_pem};
use halyard_ca::testing::{
    EmulatedCa, Moto, MotoCounts, TestServer, key_id, moto_with_root_ca, openssl_verify,
};
use halyard_proto::SpiffeId;
use halyard_tests::binaries;
use halyard_tests::envoy::{Envoy, SDS_CERTIFICATE};
use halyard_tests::mesh::{
    active_authority, authorities, bare_serial, envoy_issuer, envoy_pair, join_agent,
    journal_issuers,
};
use halyard_tests::traffic::under_traffic;
use halyard_tests::wait::wait_until;

const TD: &str = "cluster.local";
const NODE: &str = "node-1";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_UID: u32 = 1001;
const CLIENT_UID: u32 = 1002;
/// How long an Envoy may take to show its first certificate.
const FIRST_CERT: Duration = Duration::from_secs(30);
/// The short intermediate lifetime of the rotation test: prepared at 45 s, activated at 75 s.
const SHORT_TTL: &str = "90s";
/// How long after the start the rotation test waits for each step (a little over the TTL).
const STEP_WITHIN: Duration = Duration::from_secs(120);
/// How long both Envoys may take to move to the new intermediate once it is active.
const SWITCH_WITHIN: Duration = Duration::from_secs(60);

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

struct Mesh {
    moto: Moto,
    root: EmulatedCa,
    ca: TestServer,
    agent: TestAgent,
    server: Envoy,
    client: Envoy,
    /// When the CA was started.
    started: Instant,
    /// The emulator's counters before (making the root CA took an IssueCertificate call).
    before: MotoCounts,
}

impl Mesh {
    /// The emulator with a PCA root CA, the CA (`upstream = "aws-pca"`, intermediates valid
    /// for `intermediate_ttl`), an agent, a server Envoy (state of the world SDS) and a client
    /// Envoy (delta SDS, a new handshake per request), both with their first certificates.
    fn start(intermediate_ttl: &str) -> Mesh {
        let (moto, root) = moto_with_root_ca();
        let before = moto.counts();
        let started = Instant::now();
        let ca = TestServer::start_with_config(
            &binaries::halyard_ca(),
            &moto.serve_config(TD, &root.arn, intermediate_ttl),
            &Moto::child_env(),
            &[],
        );
        let (ca, agent) = join_agent(ca, NODE, &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)], &[]);
        let (server, client) = envoy_pair(
            &agent,
            (&id(SERVER), SERVER_UID),
            (&id(CLIENT), CLIENT_UID),
            FIRST_CERT,
        );
        Mesh {
            moto,
            root,
            ca,
            agent,
            server,
            client,
            started,
            before,
        }
    }

    /// Every process's log, for failure messages.
    fn logs(&self) -> String {
        format!(
            "CA log:\n{}\nagent log:\n{}\nclient log:\n{}\nserver log:\n{}",
            self.ca.log(),
            self.agent.log(),
            self.client.log(),
            self.server.log()
        )
    }

    /// The authority that issued the certificate each Envoy shows now: (server's, client's).
    fn envoy_issuers(&self) -> (Option<String>, Option<String>) {
        let issuers = journal_issuers(&self.ca);
        (
            envoy_issuer(&self.server, &id(SERVER), &issuers),
            envoy_issuer(&self.client, &id(CLIENT), &issuers),
        )
    }

    /// IssueCertificate calls that reached the emulator since the CA started, and certificates
    /// it made.
    fn issue_counts(&self) -> (u64, u64) {
        let counts = self.moto.counts();
        (
            counts.calls - self.before.calls,
            counts.issued - self.before.issued,
        )
    }
}

/// The certificate chain (DER, leaf first) of the `default` secret `envoy` took over SDS, from
/// its config dump (Envoy redacts the key, not the chain).
fn sds_chain(envoy: &Envoy) -> Vec<Vec<u8>> {
    let dump = envoy
        .admin_get("/config_dump?resource=dynamic_active_secrets")
        .body;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let secret = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == SDS_CERTIFICATE)
        .unwrap_or_else(|| {
            panic!(
                "no {SDS_CERTIFICATE} among {}'s secrets: {dump}",
                envoy.name()
            )
        });
    // Protobuf's JSON mapping writes bytes in base64; these are PEM.
    let b64 = secret["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
        .as_str()
        .unwrap_or_else(|| panic!("no inline certificate chain in {secret}"));
    certs_from_pem(&openssl(&["base64", "-d", "-A"], b64.as_bytes())).unwrap()
}

/// Runs `openssl ARGS` with `input` on stdin; its stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (the README test command installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `openssl verify -x509_strict -purpose PURPOSE` of `chain` (DER, leaf first) against the PCA
/// root alone.
fn verify_to_pca_root(what: &str, purpose: &str, chain: &[Vec<u8>], root_pem: &str) {
    assert!(
        chain.len() >= 2,
        "{what}: a leaf and the intermediate, got {}",
        chain.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let root = write("root.pem", root_pem.to_owned());
    let intermediates = write(
        "intermediates.pem",
        certs_to_pem(chain[1..].iter().map(Vec::as_slice)),
    );
    let leaf = write("leaf.pem", certs_to_pem([chain[0].as_slice()]));
    openssl_verify(purpose, &root, &intermediates, &leaf)
        .unwrap_or_else(|e| panic!("{what} does not chain to the PCA root: {e}"));
}

/// The data directory's intermediate: the one PCA issued at the first start.
fn data_dir_intermediate(ca: &TestServer) -> Vec<u8> {
    let pem = std::fs::read(ca.data_dir().join("intermediate.crt")).unwrap();
    certs_from_pem(&pem).unwrap().remove(0)
}

#[test]
#[ignore = "needs envoy and moto: run via the README test command"]
fn envoys_and_the_node_get_svids_that_chain_through_the_pca_intermediate_to_the_pca_root() {
    let mesh = Mesh::start("1d");
    assert_eq!(mesh.issue_counts(), (1, 1), "one IssueCertificate call");
    let response = mesh.client.get("/").unwrap();
    assert_eq!(response.status, 200, "{response:?}\n{}", mesh.logs());
    assert_eq!(response.header("x-peer-spiffe-id"), Some(CLIENT));

    let pca_root = certs_from_pem(mesh.root.cert_pem.as_bytes())
        .unwrap()
        .remove(0);
    let intermediate = data_dir_intermediate(&mesh.ca);
    assert_eq!(
        key_id(&intermediate, true),
        key_id(&pca_root, false),
        "the intermediate is signed by the PCA root"
    );
    for (envoy, purpose) in [(&mesh.server, "sslserver"), (&mesh.client, "sslclient")] {
        let chain = sds_chain(envoy);
        assert_eq!(chain.len(), 2, "{}: leaf and intermediate", envoy.name());
        assert_eq!(
            chain[1],
            intermediate,
            "{}: the PCA-issued intermediate",
            envoy.name()
        );
        verify_to_pca_root(
            &format!("{}'s SVID", envoy.name()),
            purpose,
            &chain,
            &mesh.root.cert_pem,
        );
    }
    let node_chain =
        certs_from_pem(&std::fs::read(mesh.agent.data_dir().join("node.crt")).unwrap()).unwrap();
    assert_eq!(node_chain[1..], [intermediate]);
    verify_to_pca_root(
        "the node SVID",
        "sslclient",
        &node_chain,
        &mesh.root.cert_pem,
    );

    // The PCA root is all either Envoy trusts.
    let serial = String::from_utf8(openssl(
        &["x509", "-noout", "-serial"],
        mesh.root.cert_pem.as_bytes(),
    ))
    .unwrap();
    let serial = bare_serial(
        &serial
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase(),
    );
    for envoy in [&mesh.server, &mesh.client] {
        let trusted: Vec<String> = envoy
            .ca_certs()
            .iter()
            .map(|c| bare_serial(&c.serial_number))
            .collect();
        assert!(
            !trusted.is_empty() && trusted.iter().all(|s| *s == serial),
            "{} trusts {trusted:?}, not only the PCA root {serial}",
            envoy.name()
        );
    }
}

#[test]
#[ignore = "needs envoy and moto: run via the README test command"]
fn automatic_rotation_moves_both_envoys_to_the_next_intermediate_without_a_failed_request() {
    let mesh = Mesh::start(SHORT_TTL);
    let a = active_authority(&mesh.ca);
    assert_eq!(mesh.issue_counts(), (1, 1));
    assert_eq!(mesh.envoy_issuers(), (Some(a.clone()), Some(a.clone())));

    let (b, prepared, activated, switched) = under_traffic(
        &mesh.client,
        CLIENT,
        || mesh.logs(),
        || {
            let b = wait_until("the next intermediate prepared", STEP_WITHIN, || {
                let list = authorities(&mesh.ca);
                list.iter()
                    .find(|(_, state)| state == "prepared")
                    .map(|(id, _)| id.clone())
                    .ok_or_else(|| format!("{list:?}"))
            });
            let prepared = mesh.started.elapsed();
            wait_until("the next intermediate active", STEP_WITHIN, || {
                let list = authorities(&mesh.ca);
                if list == [(a.clone(), "old".into()), (b.clone(), "active".into())] {
                    Ok(())
                } else {
                    Err(format!("{list:?}"))
                }
            });
            let activated = mesh.started.elapsed();
            wait_until(
                "both Envoys on certificates from the next intermediate",
                SWITCH_WITHIN,
                || match mesh.envoy_issuers() {
                    (Some(s), Some(c)) if s == b && c == b => Ok(()),
                    other => Err(format!("issuers now: {other:?}")),
                },
            );
            (b, prepared, activated, mesh.started.elapsed())
        },
    );
    eprintln!(
        "intermediates valid {SHORT_TTL}: the next one prepared {} ms after the CA started, \
         activated at {} ms, both Envoys on it at {} ms",
        prepared.as_millis(),
        activated.as_millis(),
        switched.as_millis()
    );
    // Exactly one IssueCertificate call per intermediate (a third may have been prepared by
    // now, at half of the second one's life).
    let known = authorities(&mesh.ca).len() as u64;
    assert!(known >= 2);
    assert_eq!(
        mesh.issue_counts(),
        (known, known),
        "one IssueCertificate call per intermediate: {:?}",
        authorities(&mesh.ca)
    );
    let log = mesh.ca.log();
    assert!(
        log.contains("prepared the next intermediate")
            && log.contains("activated the next intermediate"),
        "{log}"
    );
    // The new intermediate is PCA's too, and the Envoys' chains go through it to the PCA root.
    for (envoy, purpose) in [(&mesh.server, "sslserver"), (&mesh.client, "sslclient")] {
        let chain = sds_chain(envoy);
        assert_eq!(key_id(&chain[1], false), b);
        verify_to_pca_root(
            &format!("{}'s SVID after the rotation", envoy.name()),
            purpose,
            &chain,
            &mesh.root.cert_pem,
        );
    }
}
