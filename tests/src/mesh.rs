//! A CA and a node agent joined to it, as real processes: what every end-to-end test with
//! Envoy starts from; and what the CA says about its authorities and whose certificates the
//! Envoys hold.

use std::collections::HashMap;

use halyard_agent::testing::TestAgent;
use halyard_ca::testing::TestServer;
use halyard_proto::SpiffeId;

use crate::binaries;
use crate::envoy::{Credentials, Envoy, EnvoyConfig, SdsApi};

/// Two Envoys taking their certificates from `agent`: a server (state-of-the-world SDS,
/// accepting only the client's ID) and a client proxying to it (delta SDS, a new TLS handshake
/// for every request), each running as its uid; returned once both show their first SVID
/// (within `first_cert`).
pub fn envoy_pair(
    agent: &TestAgent,
    (server_id, server_uid): (&SpiffeId, u32),
    (client_id, client_uid): (&SpiffeId, u32),
    first_cert: std::time::Duration,
) -> (Envoy, Envoy) {
    let sds = |api| Credentials::sds(&agent.socket(), api);
    let server = Envoy::start(
        &EnvoyConfig::server("server", std::slice::from_ref(client_id), sds(SdsApi::Grpc))
            .run_as(server_uid, server_uid),
    );
    let client = Envoy::start(
        &EnvoyConfig::client(
            "client",
            server.listen_addr(),
            server_id,
            sds(SdsApi::DeltaGrpc),
        )
        .run_as(client_uid, client_uid)
        .handshake_per_request(),
    );
    for (envoy, spiffe_id) in [(&server, server_id), (&client, client_id)] {
        envoy.wait_for_cert("its SVID", first_cert, |c| {
            c.spiffe_id.as_ref() == Some(spiffe_id)
        });
    }
    (server, client)
}

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
    join_agent(ca, node, entries, agent_flags)
}

/// The same with a CA already started (from a configuration file, say): registers each
/// (SPIFFE ID, uid) for `node`, then starts an agent joined to `ca` as `node` with
/// `agent_flags`.
pub fn join_agent(
    ca: TestServer,
    node: &str,
    entries: &[(&str, u32)],
    agent_flags: &[&str],
) -> (TestServer, TestAgent) {
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

/// A serial without leading zeros, however it is spelled (Envoy's `/certs`, the journal).
pub fn bare_serial(serial: &str) -> String {
    serial.trim_start_matches('0').to_owned()
}

/// `authority list` as (id, state) rows, oldest first.
pub fn authorities(ca: &TestServer) -> Vec<(String, String)> {
    ca.cli(&["authority", "list"])
        .unwrap_or_else(|e| panic!("authority list: {e}"))
        .lines()
        .map(|line| {
            let mut fields = line.split('\t');
            let id = fields.next().unwrap_or_default().to_owned();
            let state = fields.next().unwrap_or_default().to_owned();
            (id, state)
        })
        .collect()
}

/// The active authority's id.
pub fn active_authority(ca: &TestServer) -> String {
    authorities(ca)
        .into_iter()
        .find(|(_, state)| state == "active")
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no active authority: {:?}", authorities(ca)))
}

/// The authority that issued each journaled serial (without leading zeros).
pub fn journal_issuers(ca: &TestServer) -> HashMap<String, String> {
    let export = ca
        .cli(&["audit", "export", "--format", "jsonl"])
        .unwrap_or_else(|e| panic!("audit export: {e}"));
    export
        .lines()
        .filter_map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((
                bare_serial(row["serial"].as_str()?),
                row["authority"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The authority that issued the certificate for `spiffe_id` that `envoy` shows now, looked up
/// in `issuers` ([`journal_issuers`]).
pub fn envoy_issuer(
    envoy: &Envoy,
    spiffe_id: &SpiffeId,
    issuers: &HashMap<String, String>,
) -> Option<String> {
    envoy
        .certs()
        .into_iter()
        .find(|c| c.spiffe_id.as_ref() == Some(spiffe_id))
        .and_then(|c| issuers.get(&bare_serial(&c.serial_number)).cloned())
}
