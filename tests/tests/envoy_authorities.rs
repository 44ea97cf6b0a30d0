//! Forced rotation seen by Envoy, end to end: a real `halyard-ca serve --dev`, a real
//! `halyard-agent run` and two Envoys taking their certificates from it over SDS, with requests
//! flowing through the client Envoy all along, each over a new TLS handshake.
//!
//! - Tainting the active intermediate: the next one takes over, the agent replaces every
//!   certificate the tainted one signed, and both Envoys end up on certificates from the new
//!   intermediate (their serials in `/certs`, looked up in the CA's journal) with no failed
//!   request.
//! - The root rotation runbook: add root 2 to the bundle, issue an intermediate under root 2,
//!   activate it and taint the old one, remove root 1. No request fails, and both Envoys end up
//!   trusting root 2 alone.
//!
//! Needs root (the Envoys run as other uids), `$HALYARD_ENVOY` (`source tests/envoy.sh`) and
//! built binaries; `tests/run.sh` does all that. `--no-capture` shows the measured times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::{TestServer, key_id};
use halyard_proto::SpiffeId;
use halyard_tests::binaries;
use halyard_tests::envoy::{Credentials, Envoy, EnvoyConfig, SdsApi};
use halyard_tests::mesh::start_ca_and_agent;
use halyard_tests::wait::wait_until;

const NODE: &str = "node-1";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_UID: u32 = 1001;
const CLIENT_UID: u32 = 1002;
/// The agent replaces what a tainted authority signed within this window.
const TAINT_SPREAD: &str = "2s";
/// How long an Envoy may take to show its first certificate.
const FIRST_CERT: Duration = Duration::from_secs(30);
/// How long a whole switch (taint → both Envoys on the new intermediate) may take.
const SWITCH_WITHIN: Duration = Duration::from_secs(30);
/// The pace of the requests through the client Envoy.
const TRAFFIC_EVERY: Duration = Duration::from_millis(20);
/// How long the traffic runs before the first step and after the last.
const TRAFFIC_AROUND: Duration = Duration::from_millis(500);

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

/// A serial without leading zeros, however it is spelled.
fn bare(serial: &str) -> String {
    serial.trim_start_matches('0').to_owned()
}

struct Mesh {
    ca: TestServer,
    agent: TestAgent,
    server: Envoy,
    client: Envoy,
}

impl Mesh {
    /// The CA, an agent replacing tainted certificates within [`TAINT_SPREAD`], a server Envoy
    /// (state of the world SDS) and a client Envoy (delta SDS, a new handshake per request),
    /// both with their first certificates.
    fn start() -> Mesh {
        let (ca, agent) = start_ca_and_agent(
            NODE,
            &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)],
            &[],
            &["--taint-spread", TAINT_SPREAD],
        );
        let sds = |api| Credentials::sds(&agent.socket(), api);
        let server = Envoy::start(
            &EnvoyConfig::server("server", &[id(CLIENT)], sds(SdsApi::Grpc))
                .run_as(SERVER_UID, SERVER_UID),
        );
        let client = Envoy::start(
            &EnvoyConfig::client(
                "client",
                server.listen_addr(),
                &id(SERVER),
                sds(SdsApi::DeltaGrpc),
            )
            .run_as(CLIENT_UID, CLIENT_UID)
            .handshake_per_request(),
        );
        for (envoy, spiffe_id) in [(&server, SERVER), (&client, CLIENT)] {
            envoy.wait_for_cert("its SVID", FIRST_CERT, |c| {
                c.spiffe_id == Some(id(spiffe_id))
            });
        }
        Mesh {
            ca,
            agent,
            server,
            client,
        }
    }

    /// The authority that issued each journaled serial (without leading zeros).
    fn issuers(&self) -> HashMap<String, String> {
        let export = self
            .ca
            .cli(&["audit", "export", "--format", "jsonl"])
            .unwrap();
        export
            .lines()
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    bare(row["serial"].as_str().unwrap()),
                    row["authority"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The authority that issued the certificate each Envoy shows now: (server's, client's).
    fn envoy_issuers(&self) -> (Option<String>, Option<String>) {
        let issuers = self.issuers();
        let of = |envoy: &Envoy, spiffe_id: &str| {
            envoy
                .certs()
                .into_iter()
                .find(|c| c.spiffe_id == Some(id(spiffe_id)))
                .and_then(|c| issuers.get(&bare(&c.serial_number)).cloned())
        };
        (of(&self.server, SERVER), of(&self.client, CLIENT))
    }

    /// Waits until both Envoys show certificates issued by `authority`; returns how long it took
    /// from `since`.
    fn wait_for_issuer(&self, authority: &str, since: Instant) -> Duration {
        wait_until(
            &format!("both Envoys on certificates from {authority}"),
            SWITCH_WITHIN,
            || match self.envoy_issuers() {
                (Some(s), Some(c)) if s == authority && c == authority => Ok(since.elapsed()),
                other => Err(format!("issuers now: {other:?}")),
            },
        )
    }

    /// The active authority's id.
    fn active(&self) -> String {
        self.ca
            .cli(&["authority", "list"])
            .unwrap()
            .lines()
            .find(|l| l.split('\t').nth(1) == Some("active"))
            .unwrap()
            .split('\t')
            .next()
            .unwrap()
            .to_owned()
    }

    /// The serials of the roots each Envoy trusts: (server's, client's), sorted.
    fn trusted(&self) -> (Vec<String>, Vec<String>) {
        let of = |envoy: &Envoy| {
            let mut serials: Vec<String> = envoy
                .ca_certs()
                .into_iter()
                .map(|c| bare(&c.serial_number))
                .collect();
            serials.sort();
            serials.dedup();
            serials
        };
        (of(&self.server), of(&self.client))
    }
}

/// One request through the client Envoy that did not get its 200.
struct Failure {
    after: Duration,
    what: String,
}

/// Requests through `client` every [`TRAFFIC_EVERY`] until `stop`: how many, and the failures.
fn send_until(client: &Envoy, stop: &AtomicBool, start: Instant) -> (usize, Vec<Failure>) {
    let mut sent = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let at = start.elapsed();
        match client.get("/") {
            Ok(r) if r.status == 200 && r.header("x-peer-spiffe-id") == Some(CLIENT) => {}
            Ok(r) => failures.push(Failure {
                after: at,
                what: format!("{} {:?}", r.status, r.body),
            }),
            Err(e) => failures.push(Failure {
                after: at,
                what: e.to_string(),
            }),
        }
        sent += 1;
        std::thread::sleep(TRAFFIC_EVERY);
    }
    (sent, failures)
}

/// Sets the flag when dropped, also while unwinding, so the traffic thread always ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `steps` while requests flow through the client Envoy; asserts none failed and that the
/// client opened a new connection for each.
fn under_traffic(mesh: &Mesh, steps: impl FnOnce()) {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let connections_before = mesh.client.stat("cluster.upstream.upstream_cx_total");
    let (sent, failures) = std::thread::scope(|scope| {
        let stopper = StopOnDrop(&stop);
        let traffic = scope.spawn(|| send_until(&mesh.client, &stop, start));
        std::thread::sleep(TRAFFIC_AROUND);
        steps();
        std::thread::sleep(TRAFFIC_AROUND);
        drop(stopper);
        traffic.join().unwrap()
    });
    let connections = mesh.client.stat("cluster.upstream.upstream_cx_total") - connections_before;
    let failed: Vec<String> = failures
        .iter()
        .map(|f| format!("{:?} after the traffic started: {}", f.after, f.what))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests through the client Envoy failed: {failed:#?}\nclient log:\n{}\n\
         server log:\n{}\nagent log:\n{}",
        failures.len(),
        mesh.client.log(),
        mesh.server.log(),
        mesh.agent.log()
    );
    assert!(
        connections as usize >= sent,
        "each request should have been a new handshake: {connections} connections for {sent} \
         requests"
    );
    eprintln!("{sent} requests through the client Envoy, each a new TLS handshake: all 200");
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn tainting_the_active_intermediate_moves_both_envoys_to_the_next_without_a_failed_request() {
    let mesh = Mesh::start();
    let a = mesh.active();
    assert_eq!(mesh.envoy_issuers(), (Some(a.clone()), Some(a.clone())));
    let prepared = mesh.ca.cli(&["authority", "prepare"]).unwrap();
    let b = prepared.split('\t').next().unwrap().to_owned();

    let mut switched = Duration::ZERO;
    under_traffic(&mesh, || {
        let tainting = Instant::now();
        let out = mesh.ca.cli(&["authority", "taint", &a]).unwrap();
        assert!(out.contains(&format!("{b}\tactive")), "{out}");
        switched = mesh.wait_for_issuer(&b, tainting);
    });
    eprintln!(
        "taint -> both Envoys on certificates from the next intermediate: {} ms (taint spread \
         {TAINT_SPREAD})",
        switched.as_millis()
    );
    assert!(
        mesh.agent
            .log()
            .contains("certificate signed by a tainted authority; replacing it"),
        "{}",
        mesh.agent.log()
    );
    // The node's own SVID moves too.
    wait_until(
        "the node SVID from the new intermediate",
        SWITCH_WITHIN,
        || {
            let pem = std::fs::read(mesh.agent.data_dir().join("node.crt")).unwrap();
            let leaf = halyard_ca::authority::certs_from_pem(&pem)
                .unwrap()
                .remove(0);
            let issuer = key_id(&leaf, true);
            if issuer == b { Ok(()) } else { Err(issuer) }
        },
    );
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn the_root_rotation_runbook_runs_without_a_failed_request() {
    let mesh = Mesh::start();
    let ca = &mesh.ca;
    let dir = tempfile::tempdir().unwrap();
    let root1 = ca.data_dir().join("dev-root/root.crt");
    let root2_dir = dir.path().join("root2");
    let root2 = root2_dir.join("root.crt");
    let offline = |args: &[&str]| {
        let out = std::process::Command::new(binaries::halyard_ca())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "halyard-ca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    offline(&[
        "root",
        "init",
        "--trust-domain",
        "cluster.local",
        "--dir",
        &path(&root2_dir),
    ]);
    // Root 1, as both Envoys trust it from the start.
    let (serial1, client_trusts) = mesh.trusted();
    assert_eq!(serial1.len(), 1, "{serial1:?}");
    assert_eq!(client_trusts, serial1);
    let a = mesh.active();

    under_traffic(&mesh, || {
        let started = Instant::now();
        // 1. Root 2 joins the bundle; both Envoys trust both roots.
        ca.cli(&["bundle", "add", "--cert", &path(&root2)]).unwrap();
        let serial2 = wait_until(
            "both Envoys trusting both roots",
            SWITCH_WITHIN,
            || match mesh.trusted() {
                (server, client) if server.len() == 2 && client == server => {
                    Ok(server.into_iter().find(|s| *s != serial1[0]).unwrap())
                }
                other => Err(format!("{other:?}")),
            },
        );
        let step1 = started.elapsed();

        // 2. An intermediate under root 2 (the offline ceremony), activated; the old one is
        //    tainted so every certificate under root 1 is replaced now rather than at renewal.
        let csr = dir.path().join("i2.csr");
        let crt = dir.path().join("i2.crt");
        ca.cli(&["authority", "prepare", "--csr-out", &path(&csr)])
            .unwrap();
        offline(&[
            "root",
            "sign-intermediate",
            "--dir",
            &path(&root2_dir),
            "--csr",
            &path(&csr),
            "--out",
            &path(&crt),
        ]);
        let prepared = ca
            .cli(&["authority", "prepare", "--cert", &path(&crt)])
            .unwrap();
        let b = prepared.split('\t').next().unwrap().to_owned();
        ca.cli(&["authority", "activate", &b]).unwrap();
        ca.cli(&["authority", "taint", &a]).unwrap();
        mesh.wait_for_issuer(&b, started);
        wait_until("the node SVID under root 2", SWITCH_WITHIN, || {
            let pem = std::fs::read(mesh.agent.data_dir().join("node.crt")).unwrap();
            let leaf = halyard_ca::authority::certs_from_pem(&pem)
                .unwrap()
                .remove(0);
            let issuer = key_id(&leaf, true);
            if issuer == b { Ok(()) } else { Err(issuer) }
        });
        let step2 = started.elapsed();

        // 3. Root 1 leaves the bundle; both Envoys trust root 2 alone.
        let out = ca
            .cli(&["bundle", "remove", "--cert", &path(&root1)])
            .unwrap();
        assert!(out.contains(&a), "the old intermediate is orphaned: {out}");
        wait_until("both Envoys trusting root 2 alone", SWITCH_WITHIN, || {
            let trusted = mesh.trusted();
            if trusted == (vec![serial2.clone()], vec![serial2.clone()]) {
                Ok(())
            } else {
                Err(format!("{trusted:?}"))
            }
        });
        eprintln!(
            "root rotation: both Envoys trusted both roots {} ms after `bundle add`, were on the \
             intermediate under root 2 by {} ms, and trusted root 2 alone by {} ms",
            step1.as_millis(),
            step2.as_millis(),
            started.elapsed().as_millis()
        );
    });

    // The agent keeps the bundle the CA pushed, and after a restart it joins again (with the
    // node SVID it stored, under root 2) and serves the Envoys.
    let der =
        |path: &Path| halyard_ca::authority::certs_from_pem(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(der(&mesh.agent.data_dir().join("bundle.pem")), der(&root2));
    let mut mesh = mesh;
    mesh.agent.restart_without_token();
    let response = mesh.client.get("/").unwrap();
    assert_eq!(response.status, 200, "{response:?}");
}
