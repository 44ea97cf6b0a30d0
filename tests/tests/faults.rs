//! Faults under load, end to end: a real CA, agent and two Envoys with requests flowing through
//! the client Envoy (a new TLS handshake each), while a process is killed with SIGKILL.
//!
//! - The CA is killed and stays down for longer than half the workload certificates' lifetime,
//!   so renewals fail and are retried; it is restarted on the same data directory. No request
//!   fails, no Envoy holds a certificate the journal does not have, the journal is intact, and
//!   the time from the restart to both Envoys on certificates issued after it is measured.
//! - The agent is killed and restarted without a join token: it re-authenticates with its
//!   stored node SVID and serves the Envoys again; no request fails; the recovery is measured.
//!
//! Needs root (the Envoys run as other uids) and `$HALYARD_ENVOY` (`source tests/envoy.sh`);
//! `tests/run.sh` does both. `--no-capture` shows the measured times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::TestServer;
use halyard_proto::SpiffeId;
use halyard_tests::envoy::Envoy;
use halyard_tests::mesh::{bare_serial, envoy_pair, journal_issuers, start_ca_and_agent};
use halyard_tests::traffic::under_traffic;
use halyard_tests::wait::wait_until;

const NODE: &str = "node-1";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_UID: u32 = 1001;
const CLIENT_UID: u32 = 1002;
/// Workload certificates live this long (renewed at about half); node SVIDs keep the CA's
/// maximum (1 h), so only workload renewals meet the outage.
const WORKLOAD_TTL: Duration = Duration::from_secs(16);
/// Longer than half the workload lifetime: every certificate comes due while the CA is down.
const CA_OUTAGE: Duration = Duration::from_secs(10);
const FIRST_CERT: Duration = Duration::from_secs(30);
const RECOVERY_WITHIN: Duration = Duration::from_secs(60);

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
    fn start() -> Mesh {
        let ttl = format!("{}s", WORKLOAD_TTL.as_secs());
        let (ca, agent) = start_ca_and_agent(
            NODE,
            &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)],
            &["--default-ttl", &ttl, "--max-ttl", "1h"],
            &[],
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
}

/// The serials the server and the client Envoy show now.
fn serials(server: &Envoy, client: &Envoy) -> [String; 2] {
    let of = |envoy: &Envoy, spiffe_id: &str| {
        envoy
            .certs()
            .into_iter()
            .find(|c| c.spiffe_id == Some(id(spiffe_id)))
            .map(|c| bare_serial(&c.serial_number))
            .unwrap_or_default()
    };
    [of(server, SERVER), of(client, CLIENT)]
}

/// Waits until both Envoys show certificates other than those in `before` and returns how long
/// that took from `since`; every serial seen goes into `seen`.
fn wait_for_new_certs(
    server: &Envoy,
    client: &Envoy,
    before: &BTreeSet<String>,
    seen: &Mutex<BTreeSet<String>>,
    since: Instant,
) -> Duration {
    wait_until("both Envoys on new certificates", RECOVERY_WITHIN, || {
        let now = serials(server, client);
        seen.lock().unwrap().extend(now.iter().cloned());
        if now.iter().all(|s| !s.is_empty() && !before.contains(s)) {
            Ok(since.elapsed())
        } else {
            Err(format!("serials now {now:?}"))
        }
    })
}

/// Every serial an Envoy showed is in the journal, and the journal is intact.
fn check_journal(ca: &TestServer, seen: &BTreeSet<String>) {
    let journal = journal_issuers(ca);
    let missing: Vec<&String> = seen.iter().filter(|s| !journal.contains_key(*s)).collect();
    assert!(
        missing.is_empty(),
        "certificates Envoy held without a journal row: {missing:?}"
    );
    let verify = ca.cli(&["audit", "verify"]).unwrap();
    assert!(verify.contains("journal intact"), "{verify}");
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn the_ca_killed_for_longer_than_half_the_ttl_loses_nothing() {
    let mut mesh = Mesh::start();
    let Mesh {
        ca,
        agent,
        server,
        client,
    } = &mut mesh;
    let (agent, server, client) = (&*agent, &*server, &*client);
    let seen = Mutex::new(BTreeSet::new());
    let logs = || {
        format!(
            "agent log:\n{}\nclient log:\n{}\nserver log:\n{}",
            agent.log(),
            client.log(),
            server.log()
        )
    };
    let recovered = under_traffic(client, CLIENT, logs, || {
        seen.lock().unwrap().extend(serials(server, client));
        let killed = Instant::now();
        ca.kill();
        while killed.elapsed() < CA_OUTAGE {
            seen.lock().unwrap().extend(serials(server, client));
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = seen.lock().unwrap().clone();
        let restarted = Instant::now();
        ca.restart();
        wait_for_new_certs(server, client, &before, &seen, restarted)
    });
    assert!(
        agent
            .log()
            .contains("cannot get a certificate; keeping the current one"),
        "renewals should have come due during the outage:\n{}",
        agent.log()
    );
    let seen = seen.into_inner().unwrap();
    check_journal(ca, &seen);
    eprintln!(
        "CA down {CA_OUTAGE:?} (workload certificates live {WORKLOAD_TTL:?}): no request failed; \
         both Envoys on certificates issued after the restart {} ms after it; {} certificates \
         seen, all journaled",
        recovered.as_millis(),
        seen.len()
    );
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn the_agent_killed_and_restarted_serves_the_envoys_again() {
    let mut mesh = Mesh::start();
    let Mesh {
        ca,
        agent,
        server,
        client,
    } = &mut mesh;
    let (ca, server, client) = (&*ca, &*server, &*client);
    let seen = Mutex::new(BTreeSet::new());
    let logs = || {
        format!(
            "CA log:\n{}\nclient log:\n{}\nserver log:\n{}",
            ca.log(),
            client.log(),
            server.log()
        )
    };
    let recovered = under_traffic(client, CLIENT, logs, || {
        let before: BTreeSet<String> = serials(server, client).into_iter().collect();
        seen.lock().unwrap().extend(before.iter().cloned());
        agent.kill();
        std::thread::sleep(Duration::from_secs(2));
        let restarted = Instant::now();
        agent.restart_without_token();
        wait_for_new_certs(server, client, &before, &seen, restarted)
    });
    assert!(
        agent.log().contains("using the stored node SVID"),
        "the agent should rejoin with its stored node SVID:\n{}",
        agent.log()
    );
    let seen = seen.into_inner().unwrap();
    check_journal(ca, &seen);
    eprintln!(
        "agent killed for 2 s and restarted without a token: no request failed; both Envoys on \
         certificates from the new agent {} ms after its restart",
        recovered.as_millis()
    );
}
