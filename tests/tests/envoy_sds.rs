//! The node agent serving Envoy over SDS, end to end: a real `halyard-ca serve --dev`, a real
//! `halyard-agent run` joined to it with a join token, and real Envoys running as their own
//! uids that take their certificates from the agent's socket (state of the world and delta).
//! mTLS with SPIFFE ID checks, rotation before 60 % of a certificate's life with no failed
//! request, a CA outage, and a workload the agent refuses.
//!
//! Needs `$HALYARD_ENVOY` (`source tests/envoy.sh`) and built binaries
//! (`cargo build -p halyard-ca -p halyard-agent`); `tests/run.sh` does both. Run with
//! `--no-capture` to see the measured rotation times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::TestServer;
use halyard_proto::SpiffeId;
use halyard_tests::envoy::{Credentials, Envoy, EnvoyConfig, SdsApi};
use halyard_tests::mesh::start_ca_and_agent;
use halyard_tests::wait::wait_until;

const NODE: &str = "node-1";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const INTRUDER: &str = "spiffe://cluster.local/ns/default/sa/intruder";

/// The unix users the Envoys run as: the agent tells them apart by their kernel credentials.
const SERVER_UID: u32 = 1001;
const CLIENT_UID: u32 = 1002;
const INTRUDER_UID: u32 = 1003;
/// A user no entry names.
const STRANGER_UID: u32 = 1004;

/// Short enough that certificates rotate within a test. The CA backdates notBefore by a tenth
/// of the TTL, so such a certificate lives 33 s from notBefore to notAfter.
const SHORT_TTL: &str = "30s";

/// How long an Envoy may take to show its first certificate.
const FIRST_CERT: Duration = Duration::from_secs(30);

/// The pace of the requests sent through the client while watching certificates.
const REQUEST_EVERY: Duration = Duration::from_millis(200);

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

/// A CA and an agent joined to it as [`NODE`].
struct Mesh {
    ca: TestServer,
    agent: TestAgent,
}

impl Mesh {
    /// Starts the CA with `ca_flags`, registers each (SPIFFE ID, uid) on [`NODE`] (before the
    /// agent joins, so its first trust snapshot has them), then starts the agent with
    /// `agent_flags`.
    fn start(ca_flags: &[&str], agent_flags: &[&str], entries: &[(&str, u32)]) -> Mesh {
        let (ca, agent) = start_ca_and_agent(NODE, entries, ca_flags, agent_flags);
        Mesh { ca, agent }
    }

    fn sds(&self, api: SdsApi) -> Credentials {
        Credentials::sds(&self.agent.socket(), api)
    }

    /// The server Envoy, as [`SERVER_UID`], accepting only [`CLIENT`].
    fn server(&self, api: SdsApi) -> Envoy {
        Envoy::start(
            &EnvoyConfig::server("server", &[id(CLIENT)], self.sds(api))
                .run_as(SERVER_UID, SERVER_UID),
        )
    }

    /// A client Envoy named `name`, as `uid`, proxying to `server`, which must be [`SERVER`].
    fn client(&self, name: &str, uid: u32, server: &Envoy, api: SdsApi) -> Envoy {
        Envoy::start(
            &EnvoyConfig::client(name, server.listen_addr(), &id(SERVER), self.sds(api))
                .run_as(uid, uid),
        )
    }

    /// The issuance journal, oldest first, read from the CA's store.
    fn journal(&self) -> Vec<JournalRow> {
        let export = self
            .ca
            .cli(&["audit", "export", "--format", "jsonl"])
            .unwrap_or_else(|e| panic!("audit export: {e}"));
        export
            .lines()
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                let text = |field: &str| row[field].as_str().unwrap_or_default().to_owned();
                JournalRow {
                    serial: text("serial"),
                    spiffe_id: text("spiffe_id"),
                    caller: text("caller"),
                }
            })
            .collect()
    }

    /// Panics unless the CA's journal has a row for `serial` (as Envoy shows it), issued for
    /// `spiffe_id` to this node.
    fn assert_journaled(&self, serial: &str, spiffe_id: &str) {
        let journal = self.journal();
        let row = journal
            .iter()
            .find(|row| same_serial(&row.serial, serial))
            .unwrap_or_else(|| panic!("serial {serial} is not in the CA's journal: {journal:?}"));
        assert_eq!(row.spiffe_id, spiffe_id, "{row:?}");
        assert_eq!(row.caller, format!("node:{NODE}"), "{row:?}");
    }
}

/// The agent's log (plain text: it writes colours only to a terminal).
fn agent_log(agent: &TestAgent) -> String {
    agent.log()
}

/// One row of `halyard-ca audit export`.
#[derive(Debug)]
struct JournalRow {
    serial: String,
    spiffe_id: String,
    caller: String,
}

/// Whether two hex serials are the same number: the journal writes every byte of the DER
/// serial, Envoy drops leading zero bytes.
fn same_serial(a: &str, b: &str) -> bool {
    a.trim_start_matches('0')
        .eq_ignore_ascii_case(b.trim_start_matches('0'))
}

/// A time as Envoy's `/certs` writes it (RFC 3339, UTC).
fn rfc3339(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("time {text:?}: {e}"))
}

/// Seconds from `from` to `to`, negative when `to` is earlier.
fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// One certificate an Envoy showed, and when the test first saw it.
#[derive(Clone, Debug)]
struct Seen {
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
    /// When the `/certs` answer that first showed it had arrived: it appeared at or before.
    seen_at: SystemTime,
}

impl Seen {
    fn lifetime(&self) -> f64 {
        secs_between(self.not_before, self.not_after)
    }

    /// How far into its life (0 at notBefore, 1 at notAfter) this certificate was at `at`.
    fn life_fraction(&self, at: SystemTime) -> f64 {
        secs_between(self.not_before, at) / self.lifetime()
    }
}

/// A certificate replaced by a new one.
#[derive(Debug)]
struct Rotation {
    old: Seen,
    new: Seen,
}

impl Rotation {
    /// How far into the old certificate's life the new one was first seen: an upper bound,
    /// since it arrived at or before the poll that saw it.
    fn fraction(&self) -> f64 {
        self.old.life_fraction(self.new.seen_at)
    }
}

/// Every certificate an Envoy showed for its own SPIFFE ID, in the order they appeared.
struct CertWatch<'a> {
    envoy: &'a Envoy,
    id: SpiffeId,
    seen: Vec<Seen>,
}

impl<'a> CertWatch<'a> {
    /// Waits until `envoy` shows a certificate for `id`, and starts from it.
    fn new(envoy: &'a Envoy, spiffe_id: &str) -> CertWatch<'a> {
        let spiffe_id = id(spiffe_id);
        envoy.wait_for_cert(&format!("a certificate for {spiffe_id}"), FIRST_CERT, |c| {
            c.spiffe_id.as_ref() == Some(&spiffe_id)
        });
        let mut watch = CertWatch {
            envoy,
            id: spiffe_id,
            seen: Vec::new(),
        };
        watch.poll();
        watch
    }

    /// Reads `/certs` and records every serial for the ID not seen before.
    fn poll(&mut self) {
        let certs = self.envoy.certs();
        let seen_at = SystemTime::now();
        for cert in certs {
            if cert.spiffe_id.as_ref() != Some(&self.id)
                || self.seen.iter().any(|s| s.serial == cert.serial_number)
            {
                continue;
            }
            self.seen.push(Seen {
                serial: cert.serial_number.clone(),
                not_before: rfc3339(&cert.valid_from),
                not_after: rfc3339(&cert.expiration_time),
                seen_at,
            });
        }
    }

    /// The newest certificate.
    fn current(&self) -> &Seen {
        self.seen.last().expect("at least the first certificate")
    }

    fn rotations(&self) -> Vec<Rotation> {
        self.seen
            .windows(2)
            .map(|pair| Rotation {
                old: pair[0].clone(),
                new: pair[1].clone(),
            })
            .collect()
    }

    /// Prints every rotation (shown with `--no-capture`).
    fn report(&self, start: SystemTime) {
        for r in self.rotations() {
            eprintln!(
                "{}: {} -> {} seen {:.1} s after the old notBefore ({:.1} % of its {:.0} s \
                 life), {:.1} s into the test",
                self.envoy.name(),
                r.old.serial,
                r.new.serial,
                secs_between(r.old.not_before, r.new.seen_at),
                100.0 * r.fraction(),
                r.old.lifetime(),
                secs_between(start, r.new.seen_at),
            );
        }
    }
}

/// Requests through a client Envoy, and the ones that failed.
struct Traffic<'a> {
    client: &'a Envoy,
    next: Instant,
    sent: usize,
    failures: Vec<String>,
}

impl<'a> Traffic<'a> {
    fn new(client: &'a Envoy) -> Traffic<'a> {
        Traffic {
            client,
            next: Instant::now(),
            sent: 0,
            failures: Vec::new(),
        }
    }

    /// Waits for the next slot, sends one request, then polls `watches`.
    fn tick(&mut self, watches: &mut [CertWatch<'_>]) {
        if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        self.next = Instant::now() + REQUEST_EVERY;
        self.sent += 1;
        match self.client.get("/") {
            Ok(r) if r.status == 200 && r.header("x-peer-spiffe-id") == Some(CLIENT) => {}
            Ok(r) => self.failures.push(format!(
                "{:?}: {} {:?}",
                SystemTime::now(),
                r.status,
                r.body
            )),
            Err(e) => self.failures.push(format!("{:?}: {e}", SystemTime::now())),
        }
        for watch in watches {
            watch.poll();
        }
    }

    /// Ticks until `done`, for at most `limit`; returns whether `done` held.
    fn until(
        &mut self,
        watches: &mut [CertWatch<'_>],
        limit: Duration,
        mut done: impl FnMut(&[CertWatch<'_>]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        while !done(watches) {
            if Instant::now() >= deadline {
                return false;
            }
            self.tick(watches);
        }
        true
    }

    fn assert_none_failed(&self, mesh: &Mesh) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed: {:#?}\nclient log:\n{}\nagent log:\n{}",
            self.failures.len(),
            self.sent,
            self.failures,
            self.client.log(),
            agent_log(&mesh.agent)
        );
        eprintln!("{} requests, none failed", self.sent);
    }
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn two_envoys_do_mtls_with_sds_certificates() {
    let mesh = Mesh::start(
        &[],
        &[],
        &[
            (SERVER, SERVER_UID),
            (CLIENT, CLIENT_UID),
            (INTRUDER, INTRUDER_UID),
        ],
    );
    let server = mesh.server(SdsApi::Grpc);
    let client = mesh.client("client", CLIENT_UID, &server, SdsApi::DeltaGrpc);
    let td_root = id("spiffe://cluster.local");
    for (envoy, spiffe_id) in [(&server, SERVER), (&client, CLIENT)] {
        let cert = envoy.wait_for_cert("its SVID", FIRST_CERT, |c| {
            c.spiffe_id == Some(id(spiffe_id))
        });
        // Issued by this CA, to this node, for this ID.
        mesh.assert_journaled(&cert.serial_number, spiffe_id);
        // Its own certificate and nothing else; the roots came over SDS (ROOTCA).
        let own = envoy.certs();
        assert_eq!(own.len(), 1, "{}: {own:?}", envoy.name());
        let roots = envoy.ca_certs();
        assert!(
            roots.iter().any(|r| r.spiffe_id.as_ref() == Some(&td_root)),
            "{}: the trust domain's root: {roots:?}",
            envoy.name()
        );
    }

    let response = client.get("/hello").unwrap();
    assert_eq!(response.status, 200, "{response:?}\n{}", client.log());
    assert_eq!(response.body, "hello from server\n");
    assert_eq!(response.header("x-peer-spiffe-id"), Some(CLIENT));
    assert_eq!(server.stat("listener.server.ssl.handshake"), 1);
    assert_eq!(client.stat("cluster.upstream.ssl.handshake"), 1);

    // Another workload of the same node, with a valid certificate of its own, is refused by
    // the server's SAN check.
    let intruder = mesh.client("intruder", INTRUDER_UID, &server, SdsApi::Grpc);
    let cert = intruder.wait_for_cert("its SVID", FIRST_CERT, |c| {
        c.spiffe_id == Some(id(INTRUDER))
    });
    mesh.assert_journaled(&cert.serial_number, INTRUDER);
    let refused_before = server.stat("listener.server.ssl.fail_verify_san");
    match intruder.get("/") {
        Ok(response) => assert_ne!(response.status, 200, "{response:?}"),
        Err(e) => eprintln!("refused without a response: {e}"),
    }
    wait_until(
        "the server counts a client certificate with the wrong SAN",
        Duration::from_secs(10),
        || match server.stat("listener.server.ssl.fail_verify_san") {
            n if n > refused_before => Ok(n),
            _ => Err(format!("{:?}", server.stats("listener.server.ssl."))),
        },
    );
    assert_eq!(server.stat("listener.server.ssl.handshake"), 1);
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn certificates_rotate_before_sixty_percent_of_their_life_without_failed_requests() {
    let mesh = Mesh::start(
        &["--max-ttl", SHORT_TTL, "--default-ttl", SHORT_TTL],
        &["--ttl", SHORT_TTL],
        &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)],
    );
    let server = mesh.server(SdsApi::Grpc);
    let client = mesh.client("client", CLIENT_UID, &server, SdsApi::DeltaGrpc);
    let start = SystemTime::now();
    let mut watches = [
        CertWatch::new(&server, SERVER),
        CertWatch::new(&client, CLIENT),
    ];
    let mut traffic = Traffic::new(&client);

    // Two rotations of each side take about 2 x 16.5 s from the first notBefore.
    let rotated_twice = traffic.until(&mut watches, Duration::from_secs(60), |watches| {
        watches.iter().all(|w| w.rotations().len() >= 2)
    });
    eprintln!("renewal is due at 45-55 % of a certificate's life; required: seen before 60 %");
    for watch in &watches {
        watch.report(start);
    }
    assert!(
        rotated_twice,
        "not two rotations on each side within 60 s: {:?}\nagent log:\n{}",
        watches.iter().map(|w| &w.seen).collect::<Vec<_>>(),
        agent_log(&mesh.agent)
    );
    for watch in &watches {
        for cert in &watch.seen {
            // 30 s and the tenth backdated: the TTL the agent asked for.
            assert!(
                (30.0..=33.0).contains(&cert.lifetime()),
                "{}: {cert:?} lives {} s",
                watch.envoy.name(),
                cert.lifetime()
            );
        }
        for rotation in watch.rotations() {
            assert!(
                rotation.fraction() < 0.6,
                "{}: {} replaced only at {:.1} % of its life\nagent log:\n{}",
                watch.envoy.name(),
                rotation.old.serial,
                100.0 * rotation.fraction(),
                agent_log(&mesh.agent)
            );
        }
    }
    traffic.assert_none_failed(&mesh);
    for watch in &watches {
        for cert in &watch.seen {
            mesh.assert_journaled(&cert.serial, watch.id.as_str());
        }
    }

    // The running client keeps its first upstream connection: show that new handshakes work
    // with the rotated certificates on both sides, with a fresh client of the same workload.
    let handshakes = server.stat("listener.server.ssl.handshake");
    let fresh = mesh.client("fresh-client", CLIENT_UID, &server, SdsApi::Grpc);
    let cert = fresh.wait_for_cert("the client's SVID", FIRST_CERT, |c| {
        c.spiffe_id == Some(id(CLIENT))
    });
    let client_first = &watches[1].seen[0].serial;
    assert_ne!(&cert.serial_number, client_first, "a rotated certificate");
    let response = fresh.get("/").unwrap();
    assert_eq!(response.status, 200, "{response:?}\n{}", fresh.log());
    assert_eq!(response.header("x-peer-spiffe-id"), Some(CLIENT));
    assert_eq!(server.stat("listener.server.ssl.handshake"), handshakes + 1);
    eprintln!("server handshakes: {handshakes} during the rotations, then 1 with a fresh client");
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn envoy_keeps_working_while_the_ca_is_down_and_rotation_resumes_after() {
    // Workload certificates of 30 s. The node SVID keeps the CA's default maximum TTL (24 h):
    // with `--max-ttl 30s` it would live 33 s too, and its own renewal would race the outage
    // (the agent's retries can step past its expiry, and an expired node SVID cannot reconnect
    // without a new join token), which is not what this test is about.
    let mut mesh = Mesh::start(
        &["--default-ttl", SHORT_TTL],
        &["--ttl", SHORT_TTL],
        &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)],
    );
    let server = mesh.server(SdsApi::Grpc);
    let client = mesh.client("client", CLIENT_UID, &server, SdsApi::DeltaGrpc);
    let start = SystemTime::now();
    let mut watches = [
        CertWatch::new(&server, SERVER),
        CertWatch::new(&client, CLIENT),
    ];
    let mut traffic = Traffic::new(&client);

    // Renewals are due at 45-55 % of 33 s after notBefore, 14.85 s at the earliest: stop the
    // CA 10 s after the first notBefore, so that they all fall in the outage.
    let earliest = watches
        .iter()
        .map(|w| w.current().not_before)
        .min()
        .unwrap();
    let kill_at = earliest + Duration::from_secs(10);
    let first: Vec<String> = watches.iter().map(|w| w.current().serial.clone()).collect();
    traffic.until(&mut watches, Duration::from_secs(15), |_| {
        SystemTime::now() >= kill_at
    });
    assert!(
        SystemTime::now() < earliest + Duration::from_secs(14),
        "the Envoys took too long to get their certificates: no time left before renewal"
    );
    mesh.ca.kill();
    let killed = SystemTime::now();
    // Down: Envoy keeps its certificates, and every request succeeds.
    traffic.until(&mut watches, Duration::from_secs(10), |_| false);
    let now: Vec<String> = watches.iter().map(|w| w.current().serial.clone()).collect();
    assert_eq!(now, first, "a new certificate while the CA was down?");
    let log = agent_log(&mesh.agent);
    assert!(
        log.contains("cannot get a certificate; keeping the current one"),
        "the agent should be backing off:\n{log}"
    );
    let restarting = Instant::now();
    mesh.ca.restart();
    let restarted = SystemTime::now();
    eprintln!("the CA restarted in {:?}", restarting.elapsed());
    eprintln!(
        "CA down from {:.1} s to {:.1} s after the first notBefore",
        secs_between(earliest, killed),
        secs_between(earliest, restarted)
    );

    // Up again: each side gets a new certificate before its old one expires.
    let rotated = traffic.until(&mut watches, Duration::from_secs(30), |watches| {
        watches.iter().all(|w| w.rotations().len() == 1)
    });
    eprintln!("after the outage, required: a new certificate before the old one's notAfter");
    for watch in &watches {
        watch.report(start);
    }
    assert!(
        rotated,
        "no new certificate after the CA came back: {:?}\nagent log:\n{}",
        watches.iter().map(|w| &w.seen).collect::<Vec<_>>(),
        agent_log(&mesh.agent)
    );
    for watch in &watches {
        let rotation = &watch.rotations()[0];
        assert!(
            rotation.new.seen_at > restarted,
            "{}: {rotation:?}",
            watch.envoy.name()
        );
        assert!(
            rotation.new.seen_at < rotation.old.not_after,
            "{}: the new certificate came after the old one expired\nagent log:\n{}",
            watch.envoy.name(),
            agent_log(&mesh.agent)
        );
    }
    // A little more traffic on the new certificates.
    traffic.until(&mut watches, Duration::from_secs(1), |_| false);
    traffic.assert_none_failed(&mesh);
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn a_workload_without_an_entry_gets_a_clear_refusal_over_sds() {
    let mesh = Mesh::start(&[], &[], &[(SERVER, SERVER_UID), (CLIENT, CLIENT_UID)]);
    let server = mesh.server(SdsApi::Grpc);
    let client = mesh.client("client", CLIENT_UID, &server, SdsApi::DeltaGrpc);
    for (envoy, spiffe_id) in [(&server, SERVER), (&client, CLIENT)] {
        envoy.wait_for_cert("its SVID", FIRST_CERT, |c| {
            c.spiffe_id == Some(id(spiffe_id))
        });
    }
    // The CA's own certificate, the node SVID and the two workloads'.
    let journal_before = mesh.journal();
    for issued in [
        format!("spiffe://cluster.local/halyard/node/{NODE}"),
        SERVER.to_owned(),
        CLIENT.to_owned(),
    ] {
        assert!(
            journal_before.iter().any(|row| row.spiffe_id == issued),
            "{issued} in {journal_before:?}"
        );
    }

    // Envoy goes LIVE without its secrets once the initial fetch times out (15 s).
    let stranger = mesh.client("stranger", STRANGER_UID, &server, SdsApi::Grpc);
    wait_until(
        "the stranger's SDS fetch fails",
        Duration::from_secs(10),
        || match stranger.stat("sds.default.update_failure") {
            0 => Err(format!(
                "{:?}\n{:?}",
                stranger.stats("sds."),
                stranger.stats("cluster.sds-grpc.")
            )),
            n => Ok(n),
        },
    );
    assert_eq!(stranger.certs(), Vec::new(), "no certificate for uid 1004");
    let response = stranger.get("/").unwrap();
    assert_ne!(response.status, 200, "{response:?}");
    let log = agent_log(&mesh.agent);
    let refusal = log
        .lines()
        .find(|line| line.contains("refused") && line.contains("uid=1004"))
        .unwrap_or_else(|| panic!("no refusal of uid 1004 in the agent's log:\n{log}"));
    for part in [
        "code=PermissionDenied",
        "workload uid 1004 gid 1004",
        "may not hold any identity",
        "no registration entry of this node matches its selectors [unix:uid:1004, unix:gid:1004",
    ] {
        assert!(refusal.contains(part), "{part:?} in {refusal}");
    }
    // Nothing was asked of the CA for it.
    let journal_after = mesh.journal();
    assert_eq!(
        journal_before.len(),
        journal_after.len(),
        "{journal_after:?}"
    );
    // The others still work.
    let response = client.get("/").unwrap();
    assert_eq!(response.status, 200, "{response:?}");
}
