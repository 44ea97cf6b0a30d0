//! The bootstraps the harness renders: the examples in `deploy/envoy/` are current, and every
//! variant (server and client; static files, SDS and delta SDS) passes `envoy --mode validate`.
//!
//! After changing `tests/src/envoy/bootstrap.rs`, regenerate the examples with
//! `HALYARD_UPDATE_EXAMPLES=1 cargo nextest run -p halyard-tests --test envoy_bootstrap`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use halyard_proto::SpiffeId;
use halyard_tests::envoy::{Credentials, EnvoyConfig, Ports, SdsApi, envoy_binary, render};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";
/// The agent's socket in DESIGN.md.
const AGENT_SOCKET: &str = "/run/halyard/agent.sock";

const SERVER_PORTS: Ports = Ports {
    admin: 15000,
    listen: 15443,
};
const CLIENT_PORTS: Ports = Ports {
    admin: 15001,
    listen: 15080,
};

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

fn server(credentials: Credentials) -> EnvoyConfig {
    EnvoyConfig::server("server", &[id(CLIENT)], credentials)
}

fn client(credentials: Credentials) -> EnvoyConfig {
    let upstream = ([127, 0, 0, 1], SERVER_PORTS.listen).into();
    EnvoyConfig::client("client", upstream, &id(SERVER), credentials)
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/envoy")
}

/// `deploy/envoy/`'s files and what they should hold.
fn examples() -> Vec<(PathBuf, String)> {
    let sds = Credentials::sds(Path::new(AGENT_SOCKET), SdsApi::Grpc);
    let preface = |what: &str| {
        format!(
            "# Example: {what}.\n\
             # Its SVID (SDS secret `default`) and trust bundle (`ROOTCA`) come from the node agent\n\
             # at {AGENT_SOCKET}. Generated; regenerate with\n\
             # HALYARD_UPDATE_EXAMPLES=1 cargo nextest run -p halyard-tests --test envoy_bootstrap\n"
        )
    };
    vec![
        (
            examples_dir().join("server.yaml"),
            preface(&format!(
                "an Envoy serving mTLS on 127.0.0.1:{} to {CLIENT} only",
                SERVER_PORTS.listen
            )) + &render(&server(sds.clone()), SERVER_PORTS),
        ),
        (
            examples_dir().join("client.yaml"),
            preface(&format!(
                "an Envoy proxying HTTP from 127.0.0.1:{} to {SERVER} over mTLS",
                CLIENT_PORTS.listen
            )) + &render(&client(sds), CLIENT_PORTS),
        ),
    ]
}

#[test]
fn deploy_examples_are_current() {
    let update = std::env::var_os("HALYARD_UPDATE_EXAMPLES").is_some_and(|v| v == "1");
    for (path, expected) in examples() {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &expected).unwrap();
            continue;
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{} is not what tests/src/envoy/bootstrap.rs renders; regenerate it with \
             HALYARD_UPDATE_EXAMPLES=1 cargo nextest run -p halyard-tests --test envoy_bootstrap",
            path.display()
        );
    }
}

/// `envoy --mode validate`: the whole configuration is built (every field name and type
/// checked, TLS contexts created) without serving.
fn validate(bootstrap: &Path) -> Result<(), String> {
    let output = Command::new(envoy_binary())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(bootstrap)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            bootstrap.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn sds_bootstraps_pass_envoy_validation() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut failures = Vec::new();
    for api in [SdsApi::Grpc, SdsApi::DeltaGrpc] {
        let sds = Credentials::sds(&socket, api);
        for (config, ports) in [
            (server(sds.clone()), SERVER_PORTS),
            (client(sds.clone()), CLIENT_PORTS),
        ] {
            let path = dir.path().join(format!("{}-{api:?}.yaml", config.name));
            std::fs::write(&path, render(&config, ports)).unwrap();
            failures.extend(validate(&path).err());
        }
    }
    for (path, _) in examples() {
        failures.extend(validate(&path).err());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[ignore = "needs envoy: run via the README test command"]
fn validation_catches_a_bad_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let sds = Credentials::sds(&dir.path().join("agent.sock"), SdsApi::Grpc);
    let text = render(&server(sds), SERVER_PORTS).replace("san_type: URI", "san_type: URL");
    std::fs::write(&path, text).unwrap();
    let err = validate(&path).unwrap_err();
    assert!(err.contains("URL"), "{err}");
}
