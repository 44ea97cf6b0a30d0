//! SDS (state of the world, delta, `FetchSecrets`) and the Workload API on the agent's socket.

use std::future::Future;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use halyard_agent::sds::{MAX_RESOURCE_NAMES, SECRET_TYPE_URL};
use halyard_agent::testing::{TestAgent, uds_channel, x509_request};
use halyard_ca::testing::TestServer;
use halyard_proto::api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use halyard_proto::api::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use super::*;

const OTHER_ID: &str = "spiffe://cluster.local/ns/default/sa/other";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const MISSING_HEADER: &str = "security header missing from request: workload.spiffe.io: true";
/// What the agent says of a caller (these tests run as root) that may not hold a name.
const NOT_HELD: &str =
    "no registration entry of this node matches its selectors [unix:uid:0, unix:gid:0";

/// What a refusal's message must be.
enum Msg {
    /// Exactly this.
    Is(String),
    /// This, within a message that also names the caller's pid.
    Has(String),
}

fn is(text: impl Into<String>) -> Msg {
    Msg::Is(text.into())
}

fn has(text: impl Into<String>) -> Msg {
    Msg::Has(text.into())
}

impl Msg {
    /// Why `got` is not the message expected, if it is not.
    fn mismatch(&self, got: &str) -> Option<String> {
        let (ok, want) = match self {
            Msg::Is(want) => (got == want, format!("exactly {want}")),
            Msg::Has(want) => (got.contains(want.as_str()), format!("containing {want}")),
        };
        (!ok).then(|| format!("expected: {want}\n  got:      {got}"))
    }
}

/// Which agent a row calls.
#[derive(Clone, Copy)]
enum On {
    /// The agent of node-a, where the caller holds `ROOT_ID`.
    Entitled,
    /// The agent of node-b, where no entry matches the caller.
    NoEntry,
    /// The agent of node-a, over a connection whose process has exited since it connected:
    /// the agent cannot attest it (see [`departed_channel`]).
    Departed,
}

/// One step of an SDS stream: the request, and whether the agent answers it with a response
/// (the last step's answer is the refusal).
type Step<R> = (R, bool);

/// What a row sends.
enum Call {
    Sotw(Vec<Step<DiscoveryRequest>>),
    Delta(Vec<Step<DeltaDiscoveryRequest>>),
    Fetch(Box<DiscoveryRequest>),
    X509Svid(Option<&'static str>),
    X509Bundles(Option<&'static str>),
    JwtSvid(Option<&'static str>),
    JwtBundles(Option<&'static str>),
    ValidateJwt(Option<&'static str>),
}

struct Row {
    name: &'static str,
    on: On,
    call: Call,
    code: Code,
    message: Msg,
}

fn row(name: &'static str, on: On, call: Call, code: Code, message: Msg) -> Row {
    Row {
        name,
        on,
        call,
        code,
        message,
    }
}

fn sotw(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.into(),
        ..DiscoveryRequest::default()
    }
}

fn delta(names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        resource_names_subscribe: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.into(),
        ..DeltaDiscoveryRequest::default()
    }
}

fn owned(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

fn nack() -> Option<RpcStatus> {
    Some(RpcStatus {
        code: Code::InvalidArgument as i32,
        message: "Envoy could not load the secret".into(),
        ..RpcStatus::default()
    })
}

fn with_header<T>(message: T, header: Option<&'static str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = header {
        request.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static(value),
        );
    }
    request
}

fn not_a_spiffe_id(name: &str) -> Msg {
    is(format!(
        "resource name {name:?} is neither \"default\", \"ROOTCA\" nor a SPIFFE ID"
    ))
}

fn invalid_id(name: &str, why: &str) -> Msg {
    is(format!(
        "resource name {name:?} is not a valid SPIFFE ID: {why}"
    ))
}

fn may_not_hold(what: &str) -> Msg {
    has(format!("may not hold {what}: {NOT_HELD}"))
}

fn wrong_type() -> Msg {
    is(format!(
        "type_url \"{CLUSTER_TYPE}\" is not served here: the Secret Discovery Service serves {SECRET_TYPE_URL} only"
    ))
}

fn too_many(n: usize) -> Msg {
    is(format!(
        "{n} resource names requested; the limit is {MAX_RESOURCE_NAMES}"
    ))
}

fn socket_rows() -> Vec<Row> {
    use Call::*;
    use Code::{InvalidArgument, PermissionDenied, Unimplemented};
    use On::*;
    // An ID one byte over the spec's 2048, and a name of a megabyte: refusals quote 128 bytes.
    let long_id = format!("spiffe://cluster.local/{}", "a".repeat(2049 - 23));
    let long_id_msg = format!(
        "resource name {:?}… (2049 bytes) is not a valid SPIFFE ID: SPIFFE ID is 2049 bytes; the limit is 2048",
        &long_id[..128]
    );
    let huge = "x".repeat(1 << 20);
    let huge_msg = format!(
        "resource name {:?}… (1048576 bytes) is neither \"default\", \"ROOTCA\" nor a SPIFFE ID",
        &huge[..128]
    );
    let rootca_over_limit = vec!["ROOTCA".to_owned(); MAX_RESOURCE_NAMES + 1];
    let distinct_over_limit: Vec<String> =
        (0..=MAX_RESOURCE_NAMES).map(|i| format!("n{i}")).collect();
    let typed = |mut r: DiscoveryRequest, t: &str| {
        r.type_url = t.into();
        r
    };
    let typed_delta = |mut r: DeltaDiscoveryRequest, t: &str| {
        r.type_url = t.into();
        r
    };
    vec![
        // --- SDS, state of the world ---
        row(
            "sotw: a name that is no SPIFFE ID",
            Entitled,
            Sotw(vec![(sotw(&["some-cert"]), false)]),
            InvalidArgument,
            not_a_spiffe_id("some-cert"),
        ),
        row(
            "sotw: an empty name",
            Entitled,
            Sotw(vec![(sotw(&[""]), false)]),
            InvalidArgument,
            not_a_spiffe_id(""),
        ),
        row(
            "sotw: a path, not a name",
            Entitled,
            Sotw(vec![(sotw(&["../etc/passwd"]), false)]),
            InvalidArgument,
            not_a_spiffe_id("../etc/passwd"),
        ),
        row(
            "sotw: an identity the caller may not hold",
            Entitled,
            Sotw(vec![(sotw(&[OTHER_ID]), false)]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "sotw: an ID of another trust domain",
            Entitled,
            Sotw(vec![(
                sotw(&["spiffe://other.org/ns/default/sa/root"]),
                false,
            )]),
            PermissionDenied,
            may_not_hold("spiffe://other.org/ns/default/sa/root"),
        ),
        row(
            "sotw: an upper-case trust domain",
            Entitled,
            Sotw(vec![(
                sotw(&["spiffe://Cluster.local/ns/default/sa/root"]),
                false,
            )]),
            InvalidArgument,
            invalid_id(
                "spiffe://Cluster.local/ns/default/sa/root",
                "trust domain character 'C' at byte 9 is not allowed: trust domains are lowercase letters, digits, '.', '-' and '_'",
            ),
        ),
        row(
            "sotw: a trailing slash",
            Entitled,
            Sotw(vec![(
                sotw(&["spiffe://cluster.local/ns/default/sa/root/"]),
                false,
            )]),
            InvalidArgument,
            invalid_id(
                "spiffe://cluster.local/ns/default/sa/root/",
                "path has a trailing slash",
            ),
        ),
        row(
            "sotw: a dot segment",
            Entitled,
            Sotw(vec![(
                sotw(&["spiffe://cluster.local/ns/../sa/root"]),
                false,
            )]),
            InvalidArgument,
            invalid_id(
                "spiffe://cluster.local/ns/../sa/root",
                "path has a dot segment '..'",
            ),
        ),
        row(
            "sotw: a query",
            Entitled,
            Sotw(vec![(
                sotw(&["spiffe://cluster.local/ns/default?sa=root"]),
                false,
            )]),
            InvalidArgument,
            invalid_id(
                "spiffe://cluster.local/ns/default?sa=root",
                "SPIFFE IDs cannot have a query",
            ),
        ),
        row(
            "sotw: the trust domain's own ID (a SPIFFE ID no workload holds)",
            Entitled,
            Sotw(vec![(sotw(&["spiffe://cluster.local"]), false)]),
            PermissionDenied,
            may_not_hold("spiffe://cluster.local"),
        ),
        row(
            "sotw: an ID over 2048 bytes",
            Entitled,
            Sotw(vec![(sotw(&[&long_id]), false)]),
            InvalidArgument,
            is(long_id_msg.clone()),
        ),
        row(
            "sotw: a name of a megabyte",
            Entitled,
            Sotw(vec![(sotw(&[&huge]), false)]),
            InvalidArgument,
            is(huge_msg),
        ),
        row(
            "sotw: more names than the limit",
            Entitled,
            Sotw(vec![(sotw(&owned(&rootca_over_limit)), false)]),
            InvalidArgument,
            too_many(MAX_RESOURCE_NAMES + 1),
        ),
        row(
            "sotw: another resource type",
            Entitled,
            Sotw(vec![(typed(sotw(&["default"]), CLUSTER_TYPE), false)]),
            InvalidArgument,
            wrong_type(),
        ),
        row(
            "sotw: served, then another resource type",
            Entitled,
            Sotw(vec![
                (sotw(&["default"]), true),
                (typed(sotw(&["default"]), CLUSTER_TYPE), false),
            ]),
            InvalidArgument,
            wrong_type(),
        ),
        row(
            "sotw: a NACK of a version never sent, as the first request",
            Entitled,
            Sotw(vec![(
                DiscoveryRequest {
                    version_info: "7".into(),
                    response_nonce: "7".into(),
                    error_detail: nack(),
                    ..sotw(&["default"])
                },
                false,
            )]),
            InvalidArgument,
            is(
                "response_nonce \"7\" answers no response: this stream has sent none, so its first request must carry no nonce",
            ),
        ),
        row(
            "sotw: a NACK of a version never sent, mid-stream, is ignored as stale; the next change is judged",
            Entitled,
            Sotw(vec![
                (sotw(&["default"]), true),
                (
                    DiscoveryRequest {
                        version_info: "99".into(),
                        response_nonce: "99".into(),
                        error_detail: nack(),
                        ..sotw(&["ROOTCA"])
                    },
                    false,
                ),
                (sotw(&["default", OTHER_ID]), false),
            ]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "sotw: served, then a name the caller may not hold",
            Entitled,
            Sotw(vec![
                (sotw(&["default", "ROOTCA"]), true),
                (sotw(&["default", "ROOTCA", OTHER_ID]), false),
            ]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "sotw: \"default\" for a caller without entries",
            NoEntry,
            Sotw(vec![(sotw(&["default"]), false)]),
            PermissionDenied,
            may_not_hold("any identity (resource \"default\")"),
        ),
        // --- SDS, delta ---
        row(
            "delta: a name that is no SPIFFE ID",
            Entitled,
            Delta(vec![(delta(&["some-cert"]), false)]),
            InvalidArgument,
            not_a_spiffe_id("some-cert"),
        ),
        row(
            "delta: an identity the caller may not hold",
            Entitled,
            Delta(vec![(delta(&[OTHER_ID]), false)]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "delta: an ID over 2048 bytes",
            Entitled,
            Delta(vec![(delta(&[&long_id]), false)]),
            InvalidArgument,
            is(long_id_msg.clone()),
        ),
        row(
            "delta: more names than the limit",
            Entitled,
            Delta(vec![(delta(&owned(&distinct_over_limit)), false)]),
            InvalidArgument,
            too_many(MAX_RESOURCE_NAMES + 1),
        ),
        row(
            "delta: another resource type",
            Entitled,
            Delta(vec![(
                typed_delta(delta(&["default"]), CLUSTER_TYPE),
                false,
            )]),
            InvalidArgument,
            wrong_type(),
        ),
        row(
            "delta: a NACK of a nonce never sent is logged; its subscription is judged",
            Entitled,
            Delta(vec![(
                DeltaDiscoveryRequest {
                    response_nonce: "5".into(),
                    error_detail: nack(),
                    ..delta(&[OTHER_ID])
                },
                false,
            )]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "delta: served, then a name the caller may not hold",
            Entitled,
            Delta(vec![
                (delta(&["default"]), true),
                (delta(&[OTHER_ID]), false),
            ]),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "delta: \"default\" for a caller without entries",
            NoEntry,
            Delta(vec![(delta(&["default"]), false)]),
            PermissionDenied,
            may_not_hold("any identity (resource \"default\")"),
        ),
        // --- SDS, FetchSecrets ---
        row(
            "fetch: a name that is no SPIFFE ID",
            Entitled,
            Fetch(Box::new(sotw(&["ROOTCA", "some-cert"]))),
            InvalidArgument,
            not_a_spiffe_id("some-cert"),
        ),
        row(
            "fetch: an identity the caller may not hold",
            Entitled,
            Fetch(Box::new(sotw(&["default", OTHER_ID]))),
            PermissionDenied,
            may_not_hold(OTHER_ID),
        ),
        row(
            "fetch: an ID with a port",
            Entitled,
            Fetch(Box::new(sotw(&[
                "spiffe://cluster.local:8443/ns/default/sa/root",
            ]))),
            InvalidArgument,
            invalid_id(
                "spiffe://cluster.local:8443/ns/default/sa/root",
                "SPIFFE IDs cannot have a port",
            ),
        ),
        row(
            "fetch: more names than the limit",
            Entitled,
            Fetch(Box::new(sotw(&owned(&rootca_over_limit)))),
            InvalidArgument,
            too_many(MAX_RESOURCE_NAMES + 1),
        ),
        row(
            "fetch: another resource type",
            Entitled,
            Fetch(Box::new(typed(sotw(&["ROOTCA"]), CLUSTER_TYPE))),
            InvalidArgument,
            wrong_type(),
        ),
        row(
            "fetch: \"default\" for a caller without entries",
            NoEntry,
            Fetch(Box::new(sotw(&["default"]))),
            PermissionDenied,
            may_not_hold("any identity (resource \"default\")"),
        ),
        // --- Workload API ---
        row(
            "FetchX509SVID without the security header",
            Entitled,
            X509Svid(None),
            InvalidArgument,
            is(MISSING_HEADER),
        ),
        row(
            "FetchX509SVID with the header \"false\"",
            Entitled,
            X509Svid(Some("false")),
            InvalidArgument,
            is("security header workload.spiffe.io is \"false\": it must be \"true\""),
        ),
        row(
            "FetchX509SVID with the header \"True\"",
            Entitled,
            X509Svid(Some("True")),
            InvalidArgument,
            is("security header workload.spiffe.io is \"True\": it must be \"true\""),
        ),
        row(
            "FetchX509SVID with an empty header",
            Entitled,
            X509Svid(Some("")),
            InvalidArgument,
            is("security header workload.spiffe.io is \"\": it must be \"true\""),
        ),
        row(
            "FetchX509Bundles without the security header",
            Entitled,
            X509Bundles(None),
            InvalidArgument,
            is(MISSING_HEADER),
        ),
        row(
            "FetchJWTSVID without the security header",
            Entitled,
            JwtSvid(None),
            InvalidArgument,
            is(MISSING_HEADER),
        ),
        row(
            "FetchJWTSVID (JWT-SVIDs are not implemented)",
            Entitled,
            JwtSvid(Some("true")),
            Unimplemented,
            is("JWT-SVIDs are not issued yet"),
        ),
        row(
            "FetchJWTBundles (not implemented)",
            Entitled,
            JwtBundles(Some("true")),
            Unimplemented,
            is("JWT bundles are not served yet"),
        ),
        row(
            "ValidateJWTSVID (not implemented)",
            Entitled,
            ValidateJwt(Some("true")),
            Unimplemented,
            is("JWT-SVIDs are not validated yet"),
        ),
        row(
            "ValidateJWTSVID without the security header",
            Entitled,
            ValidateJwt(None),
            InvalidArgument,
            is(MISSING_HEADER),
        ),
        row(
            "FetchX509SVID for a caller without entries",
            NoEntry,
            X509Svid(Some("true")),
            PermissionDenied,
            may_not_hold("any identity"),
        ),
        row(
            "FetchX509Bundles for a caller without entries",
            NoEntry,
            X509Bundles(Some("true")),
            PermissionDenied,
            may_not_hold("any identity"),
        ),
        // --- a caller the agent cannot attest: its process is gone ---
        row(
            "sotw: a caller whose process has exited",
            Departed,
            Sotw(vec![(sotw(&["default"]), false)]),
            PermissionDenied,
            has(DEPARTED),
        ),
        row(
            "delta: a caller whose process has exited",
            Departed,
            Delta(vec![(delta(&["ROOTCA"]), false)]),
            PermissionDenied,
            has(DEPARTED),
        ),
        row(
            "FetchSecrets: a caller whose process has exited",
            Departed,
            Fetch(Box::new(sotw(&["default"]))),
            PermissionDenied,
            has(DEPARTED),
        ),
        row(
            "FetchX509SVID: a caller whose process has exited",
            Departed,
            X509Svid(Some("true")),
            PermissionDenied,
            has(DEPARTED),
        ),
        row(
            "FetchX509Bundles: a caller whose process has exited",
            Departed,
            X509Bundles(Some("true")),
            PermissionDenied,
            has(DEPARTED),
        ),
    ]
}

/// What the agent says of a caller whose process is gone (after `process <pid> `).
const DEPARTED: &str = "changed while it was being attested: cannot read its stat: No such file or directory (os error 2)";

/// A channel to the agent at `socket` over a connection another process made and handed over
/// (SCM_RIGHTS) before it exited, and that process's pid: the agent holds the credentials of a
/// pid that no longer exists, so it cannot attest the caller. Needs python3.
async fn departed_channel(socket: &Path) -> (Channel, u32) {
    use std::io::IoSliceMut;
    use std::mem::MaybeUninit;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

    const HAND_OVER: &str = "import socket, sys
agent = socket.socket(socket.AF_UNIX)
agent.connect(sys.argv[1])
test = socket.socket(socket.AF_UNIX)
test.connect(sys.argv[2])
socket.send_fds(test, [b'x'], [agent.fileno()])
";
    let dir = tempfile::tempdir().unwrap();
    let handover = dir.path().join("handover.sock");
    let listener = std::os::unix::net::UnixListener::bind(&handover).unwrap();
    let mut helper = std::process::Command::new("python3")
        .args(["-c", HAND_OVER])
        .arg(socket)
        .arg(&handover)
        .spawn()
        .expect("python3 runs");
    let (from_helper, _) = listener.accept().unwrap();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0_u8; 1];
    recvmsg(
        &from_helper,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::empty(),
    )
    .unwrap();
    let fd = control
        .drain()
        .find_map(|message| match message {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .expect("the helper sent its connection");
    // Reaped, so its /proc entry is gone too.
    assert!(helper.wait().unwrap().success());
    let pid = helper.id();
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true).unwrap();
    let stream = std::sync::Mutex::new(Some(tokio::net::UnixStream::from_std(stream).unwrap()));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = stream.lock().unwrap().take();
            async move {
                stream
                    .map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the handed-over connection is used"))
            }
        }))
        .await
        .unwrap();
    (channel, pid)
}

/// Runs `future`, failing the row if it does not finish within [`HANG`].
async fn bounded<T>(row: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{row}: no answer within {HANG:?}: the agent hangs"))
}

/// Sends the steps of a stream; returns the status the stream ends with.
async fn stream_refusal<Req, Resp, F, Fut>(
    row: &str,
    steps: Vec<Step<Req>>,
    nonce_of: fn(&Resp) -> String,
    answer: fn(&mut Req, &str),
    open: F,
) -> tonic::Status
where
    Req: Send + 'static,
    F: FnOnce(ReceiverStream<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
{
    let (tx, rx) = mpsc::channel(steps.len());
    let mut steps = steps.into_iter();
    let (first, mut answered) = steps.next().unwrap();
    tx.send(first).await.unwrap();
    let mut stream = match bounded(row, open(ReceiverStream::new(rx))).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    let mut last_nonce = String::new();
    for (mut request, next_answered) in steps {
        if answered {
            match bounded(row, stream.message()).await {
                Ok(Some(response)) => last_nonce = nonce_of(&response),
                Ok(None) => panic!("{row}: the stream ended before the refusal"),
                Err(status) => return status,
            }
        }
        answer(&mut request, &last_nonce);
        tx.send(request).await.unwrap();
        answered = next_answered;
    }
    match bounded(row, stream.message()).await {
        Ok(Some(_)) => panic!("{row}: served instead of refused"),
        Ok(None) => panic!("{row}: the stream ended without a status"),
        Err(status) => status,
    }
}

/// Sends `call` on `channel`; returns the status it is refused with.
async fn refusal(row: &str, channel: Channel, call: Call) -> tonic::Status {
    let mut sds = SecretDiscoveryServiceClient::new(channel.clone());
    let mut workload = SpiffeWorkloadApiClient::new(channel);
    fn served<T>(row: &str, result: Result<T, tonic::Status>) -> tonic::Status {
        match result {
            Ok(_) => panic!("{row}: served instead of refused"),
            Err(status) => status,
        }
    }
    match call {
        Call::Sotw(steps) => {
            stream_refusal(
                row,
                steps,
                |r: &DiscoveryResponse| r.nonce.clone(),
                |r: &mut DiscoveryRequest, nonce| {
                    if r.response_nonce.is_empty() {
                        r.response_nonce = nonce.to_owned();
                        r.version_info = nonce.to_owned();
                    }
                },
                |s| sds.stream_secrets(s),
            )
            .await
        }
        Call::Delta(steps) => {
            stream_refusal(
                row,
                steps,
                |r: &DeltaDiscoveryResponse| r.nonce.clone(),
                |r: &mut DeltaDiscoveryRequest, nonce| {
                    if r.response_nonce.is_empty() {
                        r.response_nonce = nonce.to_owned();
                    }
                },
                |s| sds.delta_secrets(s),
            )
            .await
        }
        Call::Fetch(request) => served(row, bounded(row, sds.fetch_secrets(*request)).await),
        Call::X509Svid(header) => {
            match bounded(
                row,
                workload.fetch_x509svid(with_header(X509svidRequest {}, header)),
            )
            .await
            {
                Err(status) => status,
                Ok(stream) => served(row, bounded(row, stream.into_inner().message()).await),
            }
        }
        Call::X509Bundles(header) => {
            match bounded(
                row,
                workload.fetch_x509_bundles(with_header(X509BundlesRequest {}, header)),
            )
            .await
            {
                Err(status) => status,
                Ok(stream) => served(row, bounded(row, stream.into_inner().message()).await),
            }
        }
        Call::JwtSvid(header) => {
            let request = JwtsvidRequest {
                audience: vec!["spire-server".into()],
                spiffe_id: ROOT_ID.into(),
            };
            served(
                row,
                bounded(row, workload.fetch_jwtsvid(with_header(request, header))).await,
            )
        }
        Call::JwtBundles(header) => served(
            row,
            bounded(
                row,
                workload.fetch_jwt_bundles(with_header(JwtBundlesRequest {}, header)),
            )
            .await,
        ),
        Call::ValidateJwt(header) => {
            let request = ValidateJwtsvidRequest {
                audience: "spire-server".into(),
                svid: "eyJhbGciOiJub25lIn0.e30.".into(),
            };
            served(
                row,
                bounded(row, workload.validate_jwtsvid(with_header(request, header))).await,
            )
        }
    }
}

/// What the good requests get: the names of the secrets served over each SDS protocol, and the
/// SPIFFE ID the Workload API serves.
async fn serve_good_requests(agent: &TestAgent) -> (Vec<String>, Vec<String>, String) {
    let mut sds = SecretDiscoveryServiceClient::new(uds_channel(agent.socket()).await);
    let (tx, rx) = mpsc::channel(1);
    // No node and no type: the agent judges callers by their credentials, and the service
    // implies the type.
    tx.send(DiscoveryRequest {
        resource_names: vec!["default".into(), "ROOTCA".into()],
        ..DiscoveryRequest::default()
    })
    .await
    .unwrap();
    let mut stream = sds
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = bounded("good sotw", stream.message())
        .await
        .unwrap()
        .unwrap();
    let sotw = response.resources.iter().map(secret_name).collect();

    let (tx, rx) = mpsc::channel(1);
    tx.send(delta(&[ROOT_ID])).await.unwrap();
    let mut stream = sds
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = bounded("good delta", stream.message())
        .await
        .unwrap()
        .unwrap();
    let delta = response.resources.iter().map(|r| r.name.clone()).collect();

    let mut workload = agent.workload_client().await;
    let mut stream = workload
        .fetch_x509svid(x509_request())
        .await
        .unwrap()
        .into_inner();
    let response = bounded("good Workload API", stream.message())
        .await
        .unwrap()
        .unwrap();
    (sotw, delta, response.svids[0].spiffe_id.clone())
}

fn secret_name(any: &envoy_types::pb::google::protobuf::Any) -> String {
    use prost::Message;
    assert_eq!(any.type_url, SECRET_TYPE_URL);
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
        any.value.as_slice(),
    )
    .unwrap()
    .name
}

fn journal_rows(ca: &TestServer) -> usize {
    ca.cli(&["audit", "list"]).unwrap().lines().count()
}

#[tokio::test]
#[ignore = "needs python3 (a caller that hands its connection over, then exits): run via the README test command"]
async fn the_socket_refuses_bad_requests_precisely_and_loses_nothing() {
    let ca = ca_with_entry();
    let entitled = join(&ca, "node-a", &[]);
    let no_entry = join(&ca, "node-b", &[]);
    // The good requests work, and issue the one SVID they need, before the table.
    let good = serve_good_requests(&entitled).await;
    assert_eq!(
        good,
        (
            vec!["default".to_owned(), "ROOTCA".to_owned()],
            vec![ROOT_ID.to_owned()],
            ROOT_ID.to_owned()
        )
    );
    let journal = journal_rows(&ca);
    let before = [files(&entitled.data_dir()), files(&no_entry.data_dir())];
    assert!(
        before[0].iter().any(|(p, _, _)| p.ends_with("node.key")),
        "{before:?}"
    );

    let rows = socket_rows();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let mut failures = Vec::new();
    for Row {
        name,
        on,
        call,
        code,
        message,
    } in rows
    {
        let (channel, departed) = match on {
            On::Entitled => (uds_channel(entitled.socket()).await, None),
            On::NoEntry => (uds_channel(no_entry.socket()).await, None),
            On::Departed => {
                let (channel, pid) = departed_channel(&entitled.socket()).await;
                (channel, Some(pid))
            }
        };
        let status = refusal(name, channel, call).await;
        let names_pid = departed.is_none_or(|pid| {
            status
                .message()
                .starts_with(&format!("process {pid} changed"))
        });
        if status.code() != code {
            failures.push(format!(
                "{name}: {:?}, not {code:?}: {}",
                status.code(),
                status.message()
            ));
        } else if let Some(mismatch) = message.mismatch(status.message()) {
            failures.push(format!("{name}:\n  {mismatch}"));
        } else if !names_pid {
            failures.push(format!(
                "{name}: does not name the departed pid {departed:?}: {}",
                status.message()
            ));
        }
    }
    assert_no_failures(&failures);

    // Nothing was lost: the same agents serve the good requests as before, their data
    // directories hold the same files with the same modes and contents, no temporary file is
    // left anywhere in theirs, and the refusals cost no CSR.
    assert_eq!(serve_good_requests(&entitled).await, good);
    assert_eq!(
        [files(&entitled.data_dir()), files(&no_entry.data_dir())],
        before,
        "a refusal changed an agent's files"
    );
    for agent in [&entitled, &no_entry] {
        assert_no_temporary_files(agent.dir.path(), "after the table");
    }
    assert_eq!(journal_rows(&ca), journal, "a refusal reached the CA");
}
