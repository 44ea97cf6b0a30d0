//! A mock Kubernetes API server at the `kube::Client` seam (tower-test, as kube-rs documents): a
//! handler answers every request from its method and path, and every request is recorded so
//! that a test can say which calls were made. Also a CA in a temporary directory to sign with.
//!
//! The mock is an API server whose RBAC is exactly [`crate::kube::API_CALLS`]: a request that no
//! entry of the table covers is answered `403 Forbidden`, and the test fails when the mock is
//! dropped, naming the call. So code that makes a new kind of call cannot pass its tests until
//! the call is in the table, and through it in `deploy/`'s RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use crate::server::Ca;

/// One request the client made.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// `GET`, `POST`, `PATCH`, …
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query, if any.
    pub(crate) query: String,
    /// The body as JSON (`Null` when empty).
    pub(crate) body: Value,
}

/// What the mock answers: a status code and a JSON body.
pub(crate) type Answer = (u16, Value);

/// A watch the mock answers as it goes: each value received is one event line of the response
/// (`{"type": "ADDED", "object": {…}}`), which ends when the sender is dropped.
pub(crate) type WatchEvents = tokio::sync::mpsc::UnboundedReceiver<Value>;

/// A mock API server and a client connected to it.
pub(crate) struct MockApi {
    client: kube::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls that no entry of `API_CALLS` covers, described.
    unlisted: Arc<Mutex<Vec<String>>>,
}

impl MockApi {
    /// A mock server answering each call with `handler`.
    pub(crate) fn new(handler: impl Fn(&Call) -> Answer + Send + 'static) -> MockApi {
        MockApi::with_watches(handler, |_| None)
    }

    /// A mock server answering each call for which `watches` gives events with a streamed
    /// watch response of those events, and every other call with `handler`.
    pub(crate) fn with_watches(
        handler: impl Fn(&Call) -> Answer + Send + 'static,
        watches: impl Fn(&Call) -> Option<WatchEvents> + Send + 'static,
    ) -> MockApi {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<Body>, Response<axum::body::Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let unlisted = Arc::new(Mutex::new(Vec::new()));
        let refused = unlisted.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or("").to_owned(),
                    body: if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap()
                    },
                };
                let not_in_table = unlisted_call(&call);
                if let Some(why) = &not_in_table {
                    refused.lock().unwrap().push(why.clone());
                }
                let watch = not_in_table.is_none().then(|| watches(&call)).flatten();
                let (status, body) = match watch {
                    Some(events) => (200, watch_body(events)),
                    None => {
                        let (status, answer) = match &not_in_table {
                            Some(why) => forbidden(why),
                            None => handler(&call),
                        };
                        let json = serde_json::to_vec(&answer).unwrap();
                        (status, axum::body::Body::from(json))
                    }
                };
                recorded.lock().unwrap().push(call);
                respond.send_response(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap(),
                );
            }
        });
        MockApi {
            client: kube::Client::new(service, "default"),
            calls,
            unlisted,
        }
    }

    /// The client, talking to this server.
    pub(crate) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Every call so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls so far with this method whose path ends with `suffix`.
    pub(crate) fn calls_to(&self, method: &str, suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|call| call.method == method && call.path.ends_with(suffix))
            .collect()
    }
}

/// A watch response body: one JSON line per event, ending when the sender is dropped.
fn watch_body(events: WatchEvents) -> axum::body::Body {
    use tokio_stream::StreamExt;
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(events).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(line))
    });
    axum::body::Body::from_stream(lines)
}

impl Drop for MockApi {
    fn drop(&mut self) {
        let unlisted = self
            .unlisted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !unlisted.is_empty() && !std::thread::panicking() {
            panic!(
                "the code under test made Kubernetes API calls that no entry of \
                 halyard_ca::kube::API_CALLS covers (add one, and deploy/'s RBAC follows): \
                 {unlisted:#?}"
            );
        }
    }
}

/// Why `call` is not one the table allows, or `None` when it is (or is discovery, which every
/// authenticated client may read).
fn unlisted_call(call: &Call) -> Option<String> {
    use crate::kube::api_calls::{Component, RequestInfo, covering};
    let segments: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    // `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`.
    let discovery = match segments.as_slice() {
        ["version"] => true,
        ["api", rest @ ..] => rest.len() <= 1,
        ["apis", rest @ ..] => rest.len() <= 2,
        _ => false,
    };
    if call.method == "GET" && discovery {
        return None;
    }
    match RequestInfo::parse(&call.method, &call.path, &call.query) {
        Ok(request) if covering(Component::Ca, &request).is_some() => None,
        Ok(request) => Some(format!("{} {}: {request}", call.method, call.path)),
        Err(why) => Some(format!("{} {}: {why}", call.method, call.path)),
    }
}

/// The API server's answer to a call its RBAC does not allow.
fn forbidden(why: &str) -> Answer {
    (
        403,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("forbidden: not in halyard_ca::kube::API_CALLS: {why}"),
            "reason": "Forbidden",
            "code": 403,
        }),
    )
}

/// The API server's answer for an object that does not exist.
pub(crate) fn not_found(what: &str) -> Answer {
    (
        404,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("{what} not found"),
            "reason": "NotFound",
            "code": 404,
        }),
    )
}

/// A `--dev` CA (root and intermediate made in a temporary directory, SQLite journal) for
/// `cluster.local`; keep the directory alive as long as the CA.
pub(crate) async fn dev_ca() -> (Arc<Ca>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::config::ConfigFile {
        data_dir: Some(dir.path().join("data")),
        ..crate::config::ConfigFile::default()
    };
    let config = file.resolve("test", true).unwrap();
    (Ca::open(config).await.unwrap(), dir)
}

/// An unsigned JWT-shaped service-account token for `username` (`system:serviceaccount:ns:sa`)
/// with audiences `aud`, bound to a pod on `node` when given, expiring at `exp` when given.
/// [`review_token`] plays the API server that vouches for it.
pub(crate) fn sa_token(
    username: &str,
    aud: &[&str],
    node: Option<&str>,
    exp: Option<std::time::SystemTime>,
) -> secrecy::SecretString {
    use base64::Engine;
    let b64 = |value: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    };
    let mut claims = json!({
        "sub": username,
        "aud": aud,
        // Tokens that differ only in their nonce are different tokens.
        "jti": format!("{:x}", rand_u64()),
    });
    if let Some(node) = node {
        claims["node"] = json!(node);
    }
    if let Some(exp) = exp {
        let secs = exp.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        claims["exp"] = json!(secs);
    }
    let header = json!({"alg": "RS256", "kid": "test"});
    format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(&claims)).into()
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// The API server's answer to a TokenReview of a token made by [`sa_token`]: authenticated for
/// the requested audience when the token has it, with the node as the pod's node; a token whose
/// username is empty is one the API server does not know.
pub(crate) fn review_token(call: &Call) -> Answer {
    use base64::Engine;
    let token = call.body["spec"]["token"].as_str().unwrap();
    let wanted: Vec<String> =
        serde_json::from_value(call.body["spec"]["audiences"].clone()).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let username = claims["sub"].as_str().unwrap();
    let has: Vec<String> = serde_json::from_value(claims["aud"].clone()).unwrap();
    let granted: Vec<&String> = wanted.iter().filter(|a| has.contains(a)).collect();
    let status = if username.is_empty() {
        json!({"authenticated": false, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
    } else if granted.is_empty() {
        json!({
            "authenticated": false,
            "error": format!("[invalid bearer token, token audiences {has:?} is invalid for the target audiences {wanted:?}]"),
        })
    } else {
        let mut user =
            json!({"username": username, "uid": "u-1", "groups": ["system:serviceaccounts"]});
        if let Some(node) = claims["node"].as_str() {
            user["extra"] = json!({
                "authentication.kubernetes.io/node-name": [node],
                "authentication.kubernetes.io/pod-name": ["pod-1"],
            });
        }
        json!({"authenticated": true, "audiences": granted, "user": user})
    };
    (
        201,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": call.body["spec"],
            "status": status,
        }),
    )
}

/// A mock API server that answers TokenReviews only.
pub(crate) fn token_review_api() -> MockApi {
    MockApi::new(|call| {
        if call.method == "POST" && call.path == "/apis/authentication.k8s.io/v1/tokenreviews" {
            review_token(call)
        } else {
            not_found(&call.path)
        }
    })
}

/// A token reviewer for `cluster.local` over `api`, with the default audiences and agent.
pub(crate) fn reviewer(api: &MockApi) -> crate::kube::TokenReviewer {
    crate::kube::TokenReviewer::new(
        api.client(),
        halyard_proto::TrustDomain::new("cluster.local").unwrap(),
        crate::kube::TokenPolicy {
            istio_audience: "istio-ca".into(),
            node_audience: "halyard-ca".into(),
            agent_service_accounts: vec!["halyard/halyard-agent".into()],
        },
    )
}
