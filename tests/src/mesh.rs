//! A CA and a node agent joined to it, as real processes: what every end-to-end test with
//! Envoy starts from.

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::TestServer;

use crate::binaries;

/// Starts `halyard-ca serve --dev` with `ca_flags`, registers each (SPIFFE ID, uid) for `node`
/// (before the agent joins, so its first trust snapshot has them), then starts an agent joined as
/// `node` with `agent_flags`.
pub fn start_ca_and_agent(
    node: &str,
    entries: &[(&str, u32)],
    ca_flags: &[&str],
    agent_flags: &[&str],
) -> (TestServer, TestAgent) {
    let ca = TestServer::start(&binaries::halyard_ca(), ca_flags);
    for (spiffe_id, uid) in entries {
        let selector = format!("unix:uid:{uid}");
        ca.cli(&[
            "entry",
            "create",
            "--node",
            node,
            "--spiffe-id",
            spiffe_id,
            "--selector",
            &selector,
        ])
        .unwrap_or_else(|e| panic!("entry for {spiffe_id}: {e}"));
    }
    let token = ca
        .cli(&["token", "create", "--node", node])
        .unwrap_or_else(|e| panic!("join token for {node}: {e}"));
    let agent = TestAgent::start(
        &binaries::halyard_agent(),
        &format!("https://{}", ca.grpc),
        &ca.data_dir().join("bundle.pem"),
        token.trim(),
        agent_flags,
    );
    (ca, agent)
}
