//! The node agent's rows of the bad-input table (issue 9): every input its surfaces must refuse
//! (SDS in both protocols and `FetchSecrets`, the SPIFFE Workload API, the command line, its
//! config file, its data directory), each with its precise status or exit and message; then
//! that nothing was lost: the same agent still serves, its data directory is as it was, and no
//! temporary file is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bad_inputs/cli.rs"]
mod cli;
#[path = "bad_inputs/socket.rs"]
mod socket;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::{TestServer, ca_binary};

const ROOT_ID: &str = "spiffe://cluster.local/ns/default/sa/root";
/// Longer than any answer may take: reaching it means the agent hangs.
const HANG: Duration = Duration::from_secs(30);

fn agent_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_halyard-agent"))
}

/// An agent joined to `ca` as `node`.
fn join(ca: &TestServer, node: &str, extra: &[&str]) -> TestAgent {
    let token = ca.cli(&["token", "create", "--node", node]).unwrap();
    TestAgent::start(
        agent_binary(),
        &format!("https://{}", ca.grpc),
        &ca.data_dir().join("bundle.pem"),
        token.trim(),
        extra,
    )
}

/// A CA whose only entry gives uid 0 `ROOT_ID` on node `node-a`.
fn ca_with_entry() -> TestServer {
    let ca = TestServer::start(&ca_binary(), &[]);
    ca.cli(&[
        "entry",
        "create",
        "--node",
        "node-a",
        "--spiffe-id",
        ROOT_ID,
        "--selector",
        "unix:uid:0",
    ])
    .unwrap();
    ca
}

/// Every file under `dir`: (path, mode, contents), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else if !meta.file_type().is_socket() {
                let contents = std::fs::read(&path).unwrap();
                out.push((path, meta.permissions().mode() & 0o7777, contents));
            }
        }
    }
    out.sort();
    out
}

/// Fails on any temporary file a write left behind (`files::write_*` name theirs `.halyard-*`).
fn assert_no_temporary_files(dir: &Path, row: &str) {
    for (path, _, _) in files(dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".halyard-") && !name.ends_with(".tmp"),
            "{row}: stray {}",
            path.display()
        );
    }
}

/// Fails with every row that went wrong, not just the first.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
