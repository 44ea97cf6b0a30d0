//! Where the workspace's binaries are, for tests in this crate.
//!
//! Cargo hands `CARGO_BIN_EXE_<name>` only to the tests of the binary's own package, so these
//! tests find `halyard-ca` and `halyard-agent` next to their own executable:
//! `target/<profile>/deps/<test>` → `target/<profile>/halyard-ca`. The test runner
//! (`tests/run.sh`) builds the workspace first; alone, run
//! `cargo build -p halyard-ca -p halyard-agent` before `cargo nextest run -p halyard-tests`.

use std::path::PathBuf;

/// The `halyard-ca` binary built beside this test executable. Panics, saying how to build it,
/// when it is not there.
pub fn halyard_ca() -> PathBuf {
    workspace_binary("halyard-ca", "halyard-ca")
}

/// The `halyard-agent` binary built beside this test executable. Panics, saying how to build
/// it, when it is not there.
pub fn halyard_agent() -> PathBuf {
    workspace_binary("halyard-agent", "halyard-agent")
}

fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test executable: {e}"));
    // deps/ → the profile directory (target/debug).
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("no profile directory above {}", exe.display()));
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build -p {package}` first (tests/run.sh does)",
        binary.display()
    );
    binary
}
