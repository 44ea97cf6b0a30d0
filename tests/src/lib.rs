//! End-to-end tests of Halyard across real processes (Envoy, PostgreSQL, the AWS API emulator),
//! the load generator and benchmarks. The script that runs every test is `tests/run.sh`.
//!
//! The offline ceremony's end-to-end tests live beside its binary, in `ca/tests/`, because Cargo
//! hands a binary's path only to its own package's tests.
