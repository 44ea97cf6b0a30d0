//! End-to-end tests of Halyard across real processes (Envoy, PostgreSQL, the AWS API emulator),
//! the load generator and benchmarks. The script that runs every test is `tests/run.sh`.
//!
//! The offline ceremony's end-to-end tests live beside its binary, in `ca/tests/`, because Cargo
//! hands a binary's path only to its own package's tests.
//!
//! Test support here:
//! - [`envoy`]: real Envoy proxies (server and client roles, static files or SDS credentials),
//!   their admin endpoint (`/certs`, `/stats`); `tests/envoy.sh` installs Envoy.
//! - [`http`]: a tiny blocking HTTP/1.1 GET.
//! - [`mesh`]: a CA and an agent joined to it; the CA's authorities and which one issued what.
//! - [`traffic`]: requests through a client Envoy, none failing, while something changes.
//! - [`binaries`]: where the workspace's binaries are.
//! - [`wait`]: polling another process's state.

pub mod binaries;
pub mod envoy;
pub mod http;
pub mod mesh;
pub mod traffic;
pub mod wait;
