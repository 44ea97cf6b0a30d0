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

use std::path::Path;
use std::time::{Duration, Instant};

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::{TestServer, key_id};
use halyard_proto::SpiffeId;
use halyard_tests::binaries;
use halyard_tests::envoy::Envoy;
use halyard_tests::mesh::{
    active_authority, bare_serial, envoy_issuer, envoy_pair, journal_issuers, start_ca_and_agent,
};
use halyard_tests::traffic;
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

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
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
        let (server, client) = envoy_pair(
            &agent,
            (&id(SERVER), SERVER_UID),
            (&id(CLIENT), CLIENT_UID),
            FIRST_CERT,
        );
        Mesh {
            ca,
            agent,
            server,
            client,
        }
    }

    /// The authority that issued the certificate each Envoy shows now: (server's, client's).
    fn envoy_issuers(&self) -> (Option<String>, Option<String>) {
        let issuers = journal_issuers(&self.ca);
        (
            envoy_issuer(&self.server, &id(SERVER), &issuers),
            envoy_issuer(&self.client, &id(CLIENT), &issuers),
        )
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
        active_authority(&self.ca)
    }

    /// The serials of the roots each Envoy trusts: (server's, client's), sorted.
    fn trusted(&self) -> (Vec<String>, Vec<String>) {
        let of = |envoy: &Envoy| {
            let mut serials: Vec<String> = envoy
                .ca_certs()
                .into_iter()
                .map(|c| bare_serial(&c.serial_number))
                .collect();
            serials.sort();
            serials.dedup();
            serials
        };
        (of(&self.server), of(&self.client))
    }
}

/// Runs `steps` while requests flow through the client Envoy; asserts none failed and that the
/// client opened a new connection for each.
fn under_traffic(mesh: &Mesh, steps: impl FnOnce()) {
    let logs = || {
        format!(
            "client log:\n{}\nserver log:\n{}\nagent log:\n{}",
            mesh.client.log(),
            mesh.server.log(),
            mesh.agent.log()
        )
    };
    traffic::under_traffic(&mesh.client, CLIENT, logs, steps);
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
