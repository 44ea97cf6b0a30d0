//! PostgreSQL restarted under load: a real CA on a real PostgreSQL (a private cluster, so that
//! the other tests' shared one is left alone), four clients signing steadily through
//! `SignX509Svids`, and the database stopped (`pg_ctl stop -m fast`, which cuts every
//! connection), kept down, and started again, while the CA keeps running. Every answer is a certificate or `UNAVAILABLE`; the CA recovers by itself; every
//! certificate handed out has its journal row; the journal's hash chain is intact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_ca::testing::{TestServer, key_and_csr};
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{SignX509SvidsRequest, SvidRequest};
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const CLIENTS: usize = 4;
/// Each client's pause between requests: steady load, not a flood.
const PACE: Duration = Duration::from_millis(20);
/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(8);
/// Certificates each client must get after PostgreSQL is back.
const OK_AFTER: usize = 20;
/// A CA that has not served that many by then has not recovered.
const GIVE_UP: Duration = Duration::from_secs(120);

/// A private PostgreSQL cluster, on a free port, removed when dropped. Private because stopping
/// the shared one (`tests/postgres.sh`) would fail the other tests running beside this one.
struct Cluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    /// The server runs as `postgres` when we are root (it refuses to run as root).
    as_postgres: bool,
}

impl Cluster {
    /// initdb, start, and a password for the `postgres` role; fails (never skips) without
    /// PostgreSQL's programs.
    fn start_new() -> Cluster {
        let bindir = postgres_bindir();
        let dir = tempfile::tempdir().unwrap();
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let as_postgres = me == 0;
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let cluster = Cluster {
            dir,
            bindir,
            port: halyard_ca::testing::free_port(),
            as_postgres,
        };
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, "restart-test\n").unwrap();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&pwfile));
        }
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["--encoding=UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display())));
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres:restart-test@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// PostgreSQL's program `name`, as the user that owns the cluster, in its directory.
    fn command(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path());
        command
    }

    fn pg_ctl(&self, args: &[&str]) {
        run(self.command("pg_ctl").arg("-D").arg(self.data()).args(args));
    }

    fn start(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &options, "start"]);
    }

    /// Stops it as an operator's restart does: `-m fast` cuts every connection.
    fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// The newest PostgreSQL under /usr/lib/postgresql (what `tests/postgres.sh` installs).
fn postgres_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL under /usr/lib/postgresql/*/bin: this test runs a cluster of its \
                 own. Run it through the README test command (`source tests/postgres.sh` \
                 installs PostgreSQL)."
        )
    })
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request's outcome, timed from the test's start.
#[derive(Debug)]
struct Outcome {
    sent: Duration,
    answered: Duration,
    result: Result<String, (Code, String)>,
}

/// One SVID request: the certificate's serial (hex, no leading zeros), or the refusal.
async fn sign(client: &mut SvidServiceClient<Channel>) -> Result<String, (Code, String)> {
    let (_, csr) = key_and_csr(Some(WEB));
    let response = client
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![SvidRequest {
                spiffe_id: WEB.into(),
                csr,
                ttl_seconds: 0,
            }],
        })
        .await
        .map_err(|s| (s.code(), s.message().to_owned()))?
        .into_inner();
    match response.results.into_iter().next().and_then(|r| r.result) {
        Some(ItemResult::Svid(svid)) => {
            let serial = halyard_proto::validate_leaf(&svid.cert_chain[0])
                .unwrap()
                .serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>();
            Ok(serial.trim_start_matches('0').to_owned())
        }
        Some(ItemResult::Error(e)) => Err((Code::from(e.code), e.message)),
        None => panic!("an empty result"),
    }
}

fn audit(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-ca"))
        .arg("audit")
        .args(args)
        .args(["--store-url", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: run via the README test command"]
async fn postgresql_restarted_under_load_loses_no_journal_row_and_the_ca_recovers() {
    let cluster = Arc::new(Cluster::start_new());
    let url = cluster.url();
    // One identity at 4 × 50 a second: lift its rate limit, which is not what is tested here.
    let server = TestServer::start(
        Path::new(env!("CARGO_BIN_EXE_halyard-ca")),
        &["--store-url", &url, "--identity-rate-limit", "4000000000"],
    );
    server.entry("worker-1", WEB);
    let node = server.attest_node("worker-1").await;
    let channel = server.channel(Some((&node.0, &node.1))).await;

    let start = Instant::now();
    // Set to the time PostgreSQL was back (ready), once it is.
    let (back_tx, back_rx) = watch::channel(None::<Duration>);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = SvidServiceClient::new(channel.clone());
            let mut back = back_rx.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut ok_after = 0;
                while ok_after < OK_AFTER && start.elapsed() < GIVE_UP {
                    let sent = start.elapsed();
                    let result = sign(&mut client).await;
                    let answered = start.elapsed();
                    let up = *back.borrow_and_update();
                    if result.is_ok() && up.is_some_and(|up| sent >= up) {
                        ok_after += 1;
                    }
                    outcomes.push(Outcome {
                        sent,
                        answered,
                        result,
                    });
                    tokio::time::sleep(PACE).await;
                }
                outcomes
            })
        })
        .collect();

    // Steady load for 2 s, then PostgreSQL goes away for OUTAGE, then comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = cluster.clone();
    let (down_at, up_at) = tokio::task::spawn_blocking(move || {
        let stopping = start.elapsed();
        pg.stop();
        let down = start.elapsed();
        eprintln!(
            "postgres: stopped at {:.2} s (pg_ctl stop took {} ms)",
            down.as_secs_f64(),
            (down - stopping).as_millis()
        );
        std::thread::sleep(OUTAGE);
        let starting = start.elapsed();
        pg.start();
        let up = start.elapsed();
        eprintln!(
            "postgres: started at {:.2} s, ready at {:.2} s",
            starting.as_secs_f64(),
            up.as_secs_f64()
        );
        back_tx.send_replace(Some(up));
        (stopping, up)
    })
    .await
    .unwrap();

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    outcomes.sort_by_key(|o| o.answered);

    // Every answer is a certificate or UNAVAILABLE, before, during and after the outage.
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let wrong: Vec<&&Outcome> = refused
        .iter()
        .filter(|o| !matches!(o.result, Err((Code::Unavailable, _))))
        .collect();
    assert!(
        wrong.is_empty(),
        "refused other than UNAVAILABLE: {wrong:#?}"
    );
    let before: Vec<&Outcome> = outcomes.iter().filter(|o| o.answered < down_at).collect();
    assert!(
        !before.is_empty() && before.iter().all(|o| o.result.is_ok()),
        "before the outage every request succeeds: {before:#?}"
    );
    // The outage was exercised: requests were in flight while PostgreSQL was down.
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent < up_at && o.answered > down_at)
        .collect();
    assert!(!during.is_empty(), "no request met the outage");

    // The CA recovered by itself: every client got OK_AFTER certificates for requests sent after
    // PostgreSQL was back.
    let after_ok: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent >= up_at && o.result.is_ok())
        .collect();
    assert!(
        after_ok.len() >= CLIENTS * OK_AFTER,
        "the CA did not recover within {GIVE_UP:?}: {} certificates after PostgreSQL was back; \
         last answers: {:#?}\nCA log:\n{}",
        after_ok.len(),
        &outcomes[outcomes.len().saturating_sub(8)..],
        server.log()
    );
    server
        .cli(&["healthcheck"])
        .expect("the same CA process still answers");

    // Every certificate handed out has its journal row, and the chain is intact.
    let journal = audit(&url, &["list", "--limit", "10000000"]);
    let journaled: BTreeSet<&str> = journal
        .split_whitespace()
        .map(|word| word.trim_start_matches('0'))
        .collect();
    let handed_out: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(String::as_str))
        .collect();
    let missing: Vec<&&str> = handed_out
        .iter()
        .filter(|serial| !journaled.contains(**serial))
        .collect();
    assert!(
        missing.is_empty(),
        "handed out without a journal row: {missing:?}"
    );
    let bundle = server.data_dir().join("bundle.pem");
    let verify = audit(&url, &["verify", "--bundle", bundle.to_str().unwrap()]);
    assert!(verify.contains("journal intact"), "{verify}");

    // Figures, reported, not asserted.
    let first_ok_answer = outcomes
        .iter()
        .find(|o| o.answered >= up_at && o.result.is_ok())
        .map(|o| o.answered - up_at);
    let first_ok_sent_after = after_ok.iter().map(|o| o.answered - up_at).min();
    let during_ok = during.iter().filter(|o| o.result.is_ok()).count();
    let slowest = during
        .iter()
        .map(|o| o.answered - o.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "postgres restart under load: {} requests, {} certificates (all journaled), {} refused \
         (all UNAVAILABLE); {} requests met the {:?} outage: {} answered OK once it was back, {} \
         UNAVAILABLE, the slowest took {} ms. Recovery: first OK {} ms after PostgreSQL was \
         ready (first OK for a request sent after it: {} ms). First refusals: {:?}",
        outcomes.len(),
        handed_out.len(),
        refused.len(),
        during.len(),
        OUTAGE,
        during_ok,
        during.len() - during_ok,
        slowest.as_millis(),
        first_ok_answer.map_or(-1, |d| d.as_millis() as i64),
        first_ok_sent_after.map_or(-1, |d| d.as_millis() as i64),
        refused
            .iter()
            .take(3)
            .map(|o| o.result.as_ref().unwrap_err())
            .collect::<Vec<_>>()
    );
}
