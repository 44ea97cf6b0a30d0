//! No private key and no join token reaches a log line, even at trace level: a real CA and agent
//! run with `RUST_LOG=trace` through attestation, issuance, a Workload API fetch, a revocation
//! and a replacement, and their logs are searched for every secret involved, in the encodings a
//! careless log line would use (PEM body lines, hex of the DER, a Rust byte-slice `Debug`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::TestServer;
use halyard_tests::binaries;
use halyard_tests::wait::wait_until;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

/// `halyard-agent api fetch --write DIR` as this process, with trace logging; returns the
/// fetched serial line and the command's own log.
fn fetch(agent: &TestAgent, dir: &Path) -> (String, String) {
    let out = Command::new(binaries::halyard_agent())
        .env("RUST_LOG", "trace")
        .args(["api", "fetch", "--socket"])
        .arg(agent.socket())
        .arg("--write")
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = format!("{stdout}{stderr}")
        .lines()
        .find(|l| l.starts_with("SVID 0: "))
        .unwrap_or_else(|| panic!("no SVID: {stdout}{stderr}"))
        .to_owned();
    (line, stderr)
}

/// Ways a key could show up in a log: each PEM body line, the DER in hex, and the first bytes as
/// Rust prints a byte slice.
fn spellings(key_pem: &str) -> Vec<String> {
    let der = pem::parse(key_pem).unwrap().into_contents();
    let mut out: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    out.push(der.iter().map(|b| format!("{b:02x}")).collect());
    out.push(format!("{:?}", &der[..24]));
    out
}

#[test]
fn no_key_or_token_reaches_the_logs_at_trace_level() {
    let ca = TestServer::start_logging(&binaries::halyard_ca(), &[], Some("trace"));
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    ca.cli(&[
        "entry",
        "create",
        "--node",
        "node-1",
        "--spiffe-id",
        WEB,
        "--selector",
        &format!("unix:uid:{me}"),
    ])
    .unwrap();
    let token = ca
        .cli(&["token", "create", "--node", "node-1"])
        .unwrap()
        .trim()
        .to_owned();
    let agent = TestAgent::start_logging(
        &binaries::halyard_agent(),
        &format!("https://{}", ca.grpc),
        &ca.data_dir().join("bundle.pem"),
        &token,
        &[],
        "trace",
    );

    // Issue, revoke, replace: every path that handles keys runs once.
    let first = tempfile::tempdir().unwrap();
    let (line, mut fetch_logs) = fetch(&agent, first.path());
    let serial: String = line
        .split("(serial ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .replace(':', "");
    ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"])
        .unwrap();
    let second = tempfile::tempdir().unwrap();
    wait_until("the replacement SVID", Duration::from_secs(30), || {
        let (again, logs) = fetch(&agent, second.path());
        fetch_logs.push_str(&logs);
        if again == line { Err(again) } else { Ok(()) }
    });

    let logs = format!("{}\n{}\n{fetch_logs}", ca.log(), agent.log());
    assert!(
        logs.contains("TRACE"),
        "trace logging should be on, or this test proves nothing"
    );
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    let keys = [
        (
            "the intermediate's key",
            read(&ca.data_dir().join("intermediate.key")),
        ),
        (
            "the development root's key",
            read(&ca.data_dir().join("dev-root/root.key")),
        ),
        (
            "the node SVID's key",
            read(&agent.data_dir().join("node.key")),
        ),
        (
            "the first workload key",
            read(&first.path().join("svid.0.key")),
        ),
        (
            "the replacement workload key",
            read(&second.path().join("svid.0.key")),
        ),
    ];
    let mut leaks = Vec::new();
    for (what, pem) in &keys {
        for spelling in spellings(pem) {
            if logs.contains(&spelling) {
                leaks.push(format!("{what}: {spelling}"));
            }
        }
    }
    let token_secret = token.trim_start_matches("hjt_");
    if logs.contains(token_secret) {
        leaks.push("the join token".to_owned());
    }
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:#?}");
    eprintln!(
        "{} log lines at trace level searched for {} keys and the join token: none found",
        logs.lines().count(),
        keys.len()
    );
}
