//! The agent as a real process joined to a real CA: the Workload API (with the `spiffe` crate
//! as an independent client), SDS with its own client, refusals, restarts and a CA outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use halyard_agent::testing::{TestAgent, uds_channel, x509_request};
use halyard_ca::authority::certs_from_pem;
use halyard_ca::testing::{TestServer, ca_binary, webpki_verify};
use prost::Message;
use tonic::Code;

const ROOT_ID: &str = "spiffe://cluster.local/ns/default/sa/root";

fn agent_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_halyard-agent"))
}

/// A CA with an entry giving uid 0 (these tests run as root) `ROOT_ID` on node `node-a`, and an
/// agent joined as that node.
fn ca_and_agent(ca_flags: &[&str], agent_flags: &[&str]) -> (TestServer, TestAgent) {
    let ca = TestServer::start(&ca_binary(), ca_flags);
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
    let token = ca.cli(&["token", "create", "--node", "node-a"]).unwrap();
    let agent = TestAgent::start(
        agent_binary(),
        &format!("https://{}", ca.grpc),
        &ca.data_dir().join("bundle.pem"),
        token.trim(),
        agent_flags,
    );
    (ca, agent)
}

fn root_of(ca: &TestServer) -> Vec<u8> {
    certs_from_pem(ca.bundle_pem().as_bytes())
        .unwrap()
        .remove(0)
}

/// The serial (hex, no colons) of the SVID uid 0 gets from the agent now.
fn fetched_serial(agent: &TestAgent) -> String {
    let (ok, output) = agent.fetch_as(0);
    assert!(ok, "{output}\n{}", agent.log());
    output
        .split("serial ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_spiffe_crate_fetches_an_svid_that_validates() {
    let (ca, agent) = ca_and_agent(&[], &[]);
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix:{}", agent.socket().display()))
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", agent.log()));
    let svid = source.svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ROOT_ID);
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let root = root_of(&ca);
    for server in [true, false] {
        webpki_verify(&chain[0], &chain[1..], &root, SystemTime::now(), server).unwrap();
    }
    let td = spiffe::TrustDomain::new("cluster.local").unwrap();
    let bundle = source.bundle_set().unwrap();
    let bundle = bundle.get(&td).expect("a bundle for cluster.local");
    assert_eq!(bundle.authorities()[0].as_ref(), root.as_slice());
    source.shutdown().await;
}

#[tokio::test]
async fn the_workload_api_refuses_requests_without_the_security_header() {
    let (_ca, agent) = ca_and_agent(&[], &[]);
    let mut client = agent.workload_client().await;
    let err = client
        .fetch_x509svid(halyard_proto::api::workload::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "security header missing from request: workload.spiffe.io: true"
    );
    // With the header it answers.
    let mut stream = client
        .fetch_x509svid(x509_request())
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert_eq!(response.svids[0].spiffe_id, ROOT_ID);
}

#[tokio::test]
async fn a_workload_without_an_entry_is_refused_and_costs_no_csr() {
    let (ca, agent) = ca_and_agent(&[], &[]);
    let journal_before = ca.cli(&["audit", "list"]).unwrap().lines().count();
    let (ok, output) = agent.fetch_as(4321);
    assert!(!ok, "{output}");
    assert!(output.contains("PermissionDenied"), "{output}");
    assert!(output.contains("workload uid 4321 gid 4321"), "{output}");
    assert!(
        output.contains(
            "no registration entry of this node matches its selectors [unix:uid:4321, unix:gid:4321"
        ),
        "{output}"
    );
    // A name the caller may not hold is refused over SDS too.
    let mut sds = SecretDiscoveryServiceClient::new(uds_channel(agent.socket()).await);
    let request = DiscoveryRequest {
        resource_names: vec!["spiffe://cluster.local/ns/default/sa/other".into()],
        ..DiscoveryRequest::default()
    };
    let mut stream = sds
        .stream_secrets(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("may not hold spiffe://cluster.local/ns/default/sa/other"),
        "{}",
        err.message()
    );
    let unknown = DiscoveryRequest {
        resource_names: vec!["some-cert".into()],
        ..DiscoveryRequest::default()
    };
    let err = sds.fetch_secrets(unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Nothing was asked of the CA for them.
    let journal_after = ca.cli(&["audit", "list"]).unwrap().lines().count();
    assert_eq!(journal_before, journal_after);
}

fn decode(any: &envoy_types::pb::google::protobuf::Any) -> Secret {
    assert_eq!(any.type_url, halyard_agent::sds::SECRET_TYPE_URL);
    Secret::decode(any.value.as_slice()).unwrap()
}

fn leaf_id(secret: &Secret) -> String {
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("not a TLS certificate: {secret:?}")
    };
    let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(pem)) =
        tls.certificate_chain
            .as_ref()
            .and_then(|d| d.specifier.clone())
    else {
        panic!("no inline chain")
    };
    let leaf = certs_from_pem(&pem).unwrap().remove(0);
    halyard_proto::validate_leaf(&leaf)
        .unwrap()
        .spiffe_id()
        .to_string()
}

#[tokio::test]
async fn sds_serves_default_and_rootca_in_both_protocols() {
    let (ca, agent) = ca_and_agent(&[], &[]);
    let mut sds = SecretDiscoveryServiceClient::new(uds_channel(agent.socket()).await);

    // State of the world.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        resource_names: vec!["default".into(), "ROOTCA".into()],
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut stream = sds
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert_eq!(response.resources.len(), 2);
    let default = decode(&response.resources[0]);
    assert_eq!(default.name, "default");
    assert_eq!(leaf_id(&default), ROOT_ID);
    let rootca = decode(&response.resources[1]);
    assert_eq!(rootca.name, "ROOTCA");
    let Some(secret::Type::ValidationContext(context)) = rootca.r#type else {
        panic!()
    };
    assert!(context.trusted_ca.is_some());
    // An ACK gets no new response.
    tx.send(DiscoveryRequest {
        version_info: response.version_info.clone(),
        resource_names: vec!["default".into(), "ROOTCA".into()],
        response_nonce: response.nonce.clone(),
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.message())
            .await
            .is_err()
    );

    // Delta.
    let (dtx, drx) = tokio::sync::mpsc::channel(4);
    dtx.send(DeltaDiscoveryRequest {
        resource_names_subscribe: vec![ROOT_ID.into()],
        ..DeltaDiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut delta = sds
        .delta_secrets(tokio_stream::wrappers::ReceiverStream::new(drx))
        .await
        .unwrap()
        .into_inner();
    let response = delta.message().await.unwrap().unwrap();
    assert_eq!(response.resources.len(), 1);
    let resource = &response.resources[0];
    assert_eq!(resource.name, ROOT_ID);
    assert_eq!(
        leaf_id(&decode(resource.resource.as_ref().unwrap())),
        ROOT_ID
    );
    assert!(!resource.version.is_empty());

    // Deleting the entry withdraws the identity: Delta removes it.
    let list = ca.cli(&["entry", "list"]).unwrap();
    let id = list.split('\t').next().unwrap().to_owned();
    ca.cli(&["entry", "delete", "--id", &id]).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), delta.message())
        .await
        .expect("a removal is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(response.removed_resources, [ROOT_ID]);
}

#[tokio::test]
async fn a_restarted_agent_rejoins_with_its_stored_node_svid() {
    let (_ca, mut agent) = ca_and_agent(&[], &[]);
    let mode = std::fs::metadata(agent.data_dir().join("node.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    agent.restart_without_token();
    let (ok, output) = agent.fetch_as(0);
    assert!(ok, "{output}\n{}", agent.log());
    assert!(agent.log().contains("using the stored node SVID"));
}

#[tokio::test]
async fn the_agent_serves_its_cache_while_the_ca_is_down_and_resumes_after() {
    let (mut ca, agent) = ca_and_agent(
        &["--max-ttl", "8s", "--default-ttl", "8s"],
        &["--ttl", "8s"],
    );
    let first = fetched_serial(&agent);
    ca.kill();
    // Down: the cached certificate is still served.
    assert_eq!(fetched_serial(&agent), first);
    std::thread::sleep(Duration::from_secs(5));
    let log = agent.log();
    assert!(
        log.contains("cannot get a certificate; keeping the current one"),
        "{log}"
    );
    ca.restart();
    // Up again: renewal resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = fetched_serial(&agent);
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal after the CA came back: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test]
async fn the_node_svid_is_renewed_over_mtls_before_it_expires() {
    let (_ca, agent) = ca_and_agent(&["--max-ttl", "6s", "--default-ttl", "6s"], &[]);
    let node_crt = agent.data_dir().join("node.crt");
    let first = std::fs::read(&node_crt).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read(&node_crt).unwrap() == first {
        assert!(
            Instant::now() < deadline,
            "the node SVID was not renewed: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent writes node.crt, connects with it, then logs the renewal.
    while !agent.log().contains("renewed the node SVID") {
        assert!(
            Instant::now() < deadline,
            "node.crt changed but no renewal was logged: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the first node SVID's end, the agent still gets workload certificates.
    std::thread::sleep(Duration::from_secs(4));
    let (ok, output) = agent.fetch_as(0);
    assert!(ok, "{output}\n{}", agent.log());
}

#[tokio::test]
async fn a_revoked_certificate_is_replaced_at_once_and_rootca_carries_the_crl() {
    let (ca, agent) = ca_and_agent(&[], &[]);
    let first = fetched_serial(&agent);
    let revoked_at = Instant::now();
    ca.cli(&["revoke", "--serial", &first, "--reason", "keyCompromise"])
        .unwrap();
    let replaced = loop {
        let now = fetched_serial(&agent);
        if now != first {
            break revoked_at.elapsed();
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "not replaced: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("revoked certificate replaced {replaced:?} after `halyard-ca revoke` started");
    assert!(
        agent
            .log()
            .contains("certificate revoked; replacing it now")
    );

    // ROOTCA now holds the CRL, checked on leaves only.
    let mut sds = SecretDiscoveryServiceClient::new(uds_channel(agent.socket()).await);
    let response = sds
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec!["ROOTCA".into()],
            ..DiscoveryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(secret::Type::ValidationContext(context)) = decode(&response.resources[0]).r#type
    else {
        panic!("not a validation context")
    };
    assert!(context.crl.is_some(), "no CRL in ROOTCA");
    assert!(context.only_verify_leaf_cert_crl);
}
