//! A short run of the SDS load tool against a real CA and agent, so it keeps working (its real
//! runs are benchmarks: `tests/bench-agent.sh`, BENCHMARKS.md). Correctness only: every stream
//! gets its secrets (the tool checks each is an X509-SVID for the name asked, with a key), the
//! bundle push reaches every stream, and a taint re-issues every identity under the new
//! authority. No timing is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use halyard_ca::testing::TestServer;
use halyard_tests::binaries;
use halyard_tests::mesh::{active_authority, authorities, join_agent};

const IDENTITIES: usize = 50;

fn sds_load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-sds-load"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "halyard-sds-load {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_stream_gets_its_secrets_the_bundle_push_and_the_reissue() {
    let ca = TestServer::start(&binaries::halyard_ca(), &[]);
    let data_dir = ca.data_dir();
    let data_dir = data_dir.to_str().unwrap();
    let count = IDENTITIES.to_string();
    let created = sds_load(&[
        "entries",
        "--data-dir",
        data_dir,
        "--node",
        "load-node",
        "--count",
        &count,
    ]);
    assert_eq!(created["created"], IDENTITIES, "{created}");
    // Again: every entry is there already.
    let again = sds_load(&[
        "entries",
        "--data-dir",
        data_dir,
        "--node",
        "load-node",
        "--count",
        &count,
    ]);
    assert_eq!(
        (&again["created"], &again["existing"]),
        (&serde_json::json!(0), &serde_json::json!(IDENTITIES)),
        "{again}"
    );
    let listed = ca.cli(&["entry", "list"]).unwrap();
    assert_eq!(
        listed.lines().filter(|l| l.contains("/sds-load/")).count(),
        IDENTITIES,
        "{listed}"
    );
    let (ca, agent) = join_agent(ca, "load-node", &[], &["--taint-spread", "2s"]);
    let root2 = ca.dir.path().join("root2");
    let out = Command::new(binaries::halyard_ca())
        .args(["root", "init", "--trust-domain", "cluster.local", "--dir"])
        .arg(&root2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tainted = active_authority(&ca);
    let socket = agent.socket();

    // One identity and ROOTCA per stream, both protocols, over a few connections.
    let report = sds_load(&[
        "run",
        "--socket",
        socket.to_str().unwrap(),
        "--identities",
        &count,
        "--streams",
        &count,
        "--connections",
        "4",
        "--protocol",
        "mixed",
        "--ca-data-dir",
        data_dir,
        "--new-root",
        root2.join("root.crt").to_str().unwrap(),
        "--storm",
        "--timeout",
        "60s",
    ]);
    eprintln!("{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["first_response"]["count"], IDENTITIES, "{report}");
    assert_eq!(report["bundle_push"]["count"], IDENTITIES, "{report}");
    assert_eq!(report["bundle_push"]["roots"], 2, "{report}");
    assert_eq!(report["storm"]["count"], IDENTITIES, "{report}");
    assert_eq!(report["storm"]["tainted"], tainted.as_str(), "{report}");
    let counts = report["storm"]["histogram"]["counts"].as_array().unwrap();
    assert_eq!(
        counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
        IDENTITIES as u64,
        "{report}"
    );
    // The CA agrees: the tainted authority is tainted, and the bundle has both roots.
    assert!(
        authorities(&ca).contains(&(tainted.clone(), "tainted".to_owned())),
        "{:?}",
        authorities(&ca)
    );
    assert_eq!(ca.bundle_pem().matches("BEGIN CERTIFICATE").count(), 2);

    // Several identities per stream (uneven), delta only; the agent serves from its cache.
    let report = sds_load(&[
        "run",
        "--socket",
        socket.to_str().unwrap(),
        "--identities",
        &count,
        "--streams",
        "7",
        "--protocol",
        "delta",
        "--ca-data-dir",
        data_dir,
        "--timeout",
        "60s",
    ]);
    eprintln!("{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["first_response"]["count"], 7, "{report}");
    assert_eq!(report["names_per_stream"], 9, "{report}");
}

#[test]
fn bad_flags_and_a_missing_agent_are_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-sds-load"))
        .args([
            "run",
            "--socket",
            "/nonexistent/agent.sock",
            "--streams",
            "0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--streams"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-sds-load"))
        .args(["run", "--socket", "/nonexistent/agent.sock", "--storm"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--ca-data-dir"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-sds-load"))
        .args(["run", "--socket", "/nonexistent/agent.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/nonexistent/agent.sock"),
        "{stderr}"
    );
}
