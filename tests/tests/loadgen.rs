//! A short run of the load generator against a real `halyard-ca serve --dev`, both APIs, so it
//! keeps working (its real runs are benchmarks: `tests/bench.sh`, BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use halyard_ca::testing::TestServer;
use halyard_tests::binaries;

fn loadgen(ca: &TestServer, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-loadgen"))
        .args(["--ca-address", &format!("https://{}", ca.grpc)])
        .arg("--data-dir")
        .arg(ca.data_dir())
        .args(["--duration", "2s", "--concurrency", "2", "--pool", "8"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "halyard-loadgen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_load_generator_drives_both_apis_without_errors() {
    // Each run signs hundreds a second for one workload identity: far over its per-identity
    // rate (60 a minute) and, on a faster machine, over its burst too. Batches of 16 from its
    // one node pass the node's rate (500 a second) as well. Lift both.
    let ca = TestServer::start(
        &binaries::halyard_ca(),
        &[
            "--identity-rate-limit",
            "4000000000",
            "--node-rate-limit",
            "1000000",
        ],
    );
    for args in [
        &["--api", "svids", "--batch", "1"][..],
        &["--api", "svids", "--batch", "16"],
        &["--api", "istio"],
    ] {
        let report = loadgen(&ca, args);
        eprintln!("{report}");
        assert!(report["issued"].as_u64().unwrap() > 0, "{args:?}: {report}");
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "{args:?}: {report}"
        );
        let latency = &report["latency_ms"];
        assert!(
            latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap()
                && latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap(),
            "{report}"
        );
    }
    // Every certificate it was given is in the journal, which is intact.
    let verify = ca.cli(&["audit", "verify"]).unwrap();
    assert!(verify.contains("journal intact"), "{verify}");
}

#[test]
fn bad_flags_are_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-loadgen"))
        .args(["--data-dir", "/nonexistent", "--batch", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--batch"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-loadgen"))
        .args(["--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("/nonexistent/admin.sock"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_halyard-loadgen"))
        .args(["--api", "cfssl", "--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--cfssl-address"),
        "{stderr}"
    );
}
