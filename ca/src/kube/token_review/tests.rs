use std::time::UNIX_EPOCH;

use super::*;
use crate::kube::mock::{MockApi, reviewer, sa_token, token_review_api};

const WEB: &str = "system:serviceaccount:apps:web";
const AGENT: &str = "system:serviceaccount:halyard:halyard-agent";
const REVIEWS: &str = "/tokenreviews";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn reviews(api: &MockApi) -> usize {
    api.calls_to("POST", REVIEWS).len()
}

#[tokio::test]
async fn one_token_review_serves_many_requests_until_the_token_expires() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    let token = sa_token(
        WEB,
        &["istio-ca"],
        None,
        Some(now + Duration::from_secs(120)),
    );

    for _ in 0..10 {
        let account = tokens.review(&token, "istio-ca", now).await.unwrap();
        assert_eq!(
            account.spiffe_id.as_str(),
            "spiffe://cluster.local/ns/apps/sa/web"
        );
    }
    assert_eq!(reviews(&api), 1, "ten requests, one TokenReview");

    // The review asked for exactly the token and the audience.
    let call = &api.calls_to("POST", REVIEWS)[0];
    assert_eq!(
        call.body["spec"]["audiences"],
        serde_json::json!(["istio-ca"])
    );
    assert_eq!(call.body["spec"]["token"], token.expose_secret());

    tokens
        .review(&token, "istio-ca", now + Duration::from_secs(119))
        .await
        .unwrap();
    assert_eq!(reviews(&api), 1);
    // The token has expired by its own clock: ask again (here the mock still vouches for it).
    tokens
        .review(&token, "istio-ca", now + Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(reviews(&api), 2);
}

#[tokio::test]
async fn a_long_lived_token_is_reviewed_again_after_the_cache_cap() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    let day = Duration::from_secs(86_400);
    for token in [
        sa_token(WEB, &["istio-ca"], None, Some(now + day)),
        // A legacy secret-based token has no exp at all.
        sa_token(WEB, &["istio-ca"], None, None),
    ] {
        let before = reviews(&api);
        tokens.review(&token, "istio-ca", now).await.unwrap();
        tokens
            .review(
                &token,
                "istio-ca",
                now + MAX_CACHE_LIFETIME - Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(reviews(&api), before + 1);
        tokens
            .review(&token, "istio-ca", now + MAX_CACHE_LIFETIME)
            .await
            .unwrap();
        assert_eq!(reviews(&api), before + 2);
    }
}

#[tokio::test]
async fn another_audience_is_another_review() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    let token = sa_token(
        AGENT,
        &["istio-ca", "halyard-ca"],
        Some("node-1"),
        Some(now + Duration::from_secs(600)),
    );
    tokens.review(&token, "istio-ca", now).await.unwrap();
    tokens.review(&token, "halyard-ca", now).await.unwrap();
    tokens.review(&token, "istio-ca", now).await.unwrap();
    tokens.review(&token, "halyard-ca", now).await.unwrap();
    assert_eq!(reviews(&api), 2);
}

#[tokio::test]
async fn concurrent_requests_for_one_token_share_one_review() {
    let api = token_review_api();
    let tokens = Arc::new(reviewer(&api));
    let now = at(1_800_000_000);
    let token = sa_token(
        WEB,
        &["istio-ca"],
        None,
        Some(now + Duration::from_secs(600)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (tokens, token) = (tokens.clone(), token.clone());
        tasks.spawn(async move { tokens.review(&token, "istio-ca", now).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(reviews(&api), 1);
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_and_asked_about_again() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    // The mock API server knows no user for an empty subject.
    let forged = sa_token(
        "",
        &["istio-ca"],
        None,
        Some(now + Duration::from_secs(600)),
    );
    for expected_calls in [1, 2] {
        let err = tokens.review(&forged, "istio-ca", now).await.unwrap_err();
        assert!(matches!(err, TokenError::NotAuthenticated(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "service-account token not authenticated by the Kubernetes API server: [invalid \
             bearer token, square/go-jose: error in cryptographic primitive]"
        );
        assert_eq!(reviews(&api), expected_calls, "refusals are not cached");
    }
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    let token = sa_token(WEB, &["vault"], None, Some(now + Duration::from_secs(600)));
    let err = tokens.review(&token, "istio-ca", now).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::WrongAudience { audience, .. } if audience == "istio-ca"),
        "{err:?}"
    );
    assert!(!err.to_string().contains(token.expose_secret()));
}

#[tokio::test]
async fn an_answer_without_the_audience_is_refused() {
    // An API server that is not audience-aware authenticates without saying for which audience.
    let api = MockApi::new(|call| {
        (
            201,
            serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "metadata": {},
                "spec": call.body["spec"],
                "status": {"authenticated": true, "user": {"username": WEB}},
            }),
        )
    });
    let tokens = reviewer(&api);
    let now = at(1_800_000_000);
    let token = sa_token(WEB, &["istio-ca"], None, None);
    let err = tokens.review(&token, "istio-ca", now).await.unwrap_err();
    assert!(matches!(err, TokenError::WrongAudience { .. }), "{err:?}");
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let token = sa_token("alice@example.com", &["istio-ca"], None, None);
    let err = tokens
        .review(&token, "istio-ca", at(1_800_000_000))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "token authenticates \"alice@example.com\", which is not a service account \
         (system:serviceaccount:<ns>:<name>)"
    );
}

#[tokio::test]
async fn garbage_is_refused_without_asking_the_api_server() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    for garbage in ["", "abc", "a.b", "a.b.c.d", "a.!!!.c", &"a".repeat(20_000)] {
        let err = tokens
            .review(&garbage.to_owned().into(), "istio-ca", at(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed(_)),
            "{garbage}: {err:?}"
        );
    }
    assert_eq!(reviews(&api), 0);
}

#[tokio::test]
async fn the_api_server_unreachable_is_an_api_error() {
    let api = MockApi::new(|_| (503, serde_json::json!({"kind": "Status", "code": 503})));
    let tokens = reviewer(&api);
    let token = sa_token(WEB, &["istio-ca"], None, None);
    let err = tokens.review(&token, "istio-ca", at(1)).await.unwrap_err();
    assert!(matches!(err, TokenError::Api(_)), "{err:?}");
}

#[tokio::test]
async fn an_agent_token_names_its_pods_node() {
    let api = token_review_api();
    let tokens = reviewer(&api);
    let token = sa_token(AGENT, &["halyard-ca"], Some("node-1"), None);
    assert_eq!(tokens.agent_node(&token).await.unwrap(), "node-1");

    // A workload's token, though of the right audience, may not attest its node.
    let workload = sa_token(WEB, &["halyard-ca"], Some("node-1"), None);
    let err = tokens.agent_node(&workload).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "service account apps/web may not attest nodes: only kubernetes.agent_service_accounts may"
    );

    let unbound = sa_token(AGENT, &["halyard-ca"], None, None);
    let err = tokens.agent_node(&unbound).await.unwrap_err();
    assert!(matches!(err, TokenError::NoNodeName(_)), "{err:?}");

    // Istio's audience does not attest nodes.
    let istio = sa_token(AGENT, &["istio-ca"], Some("node-1"), None);
    let err = tokens.agent_node(&istio).await.unwrap_err();
    assert!(matches!(err, TokenError::WrongAudience { .. }), "{err:?}");
}

#[test]
fn usernames_map_to_spiffe_ids() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let account = service_account("system:serviceaccount:istio-system:ztunnel", &td).unwrap();
    assert_eq!(account.namespace, "istio-system");
    assert_eq!(account.name, "ztunnel");
    assert_eq!(
        account.spiffe_id.as_str(),
        "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
    );
    for bad in [
        "system:serviceaccount:ns",
        "system:serviceaccount::sa",
        "system:serviceaccount:ns:",
        "system:serviceaccount:ns:sa:extra",
        "system:node:node-1",
        "admin",
    ] {
        assert!(
            matches!(
                service_account(bad, &td),
                Err(TokenError::NotServiceAccount(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn the_expiry_is_read_from_the_payload() {
    let exp = at(1_800_000_123);
    let token = sa_token(WEB, &["istio-ca"], None, Some(exp));
    assert_eq!(unverified_expiry(token.expose_secret()).unwrap(), Some(exp));
    let token = sa_token(WEB, &["istio-ca"], None, None);
    assert_eq!(unverified_expiry(token.expose_secret()).unwrap(), None);

    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    let with = |engine: &GeneralPurpose, claims: &str| {
        format!("e30.{}.sig", engine.encode(claims.as_bytes()))
    };
    // Padded base64url and fractional seconds are read too.
    assert_eq!(
        unverified_expiry(&with(&URL_SAFE, r#"{"exp":1800000000.5,"a":"bc"}"#)).unwrap(),
        Some(at(1_800_000_000) + Duration::from_millis(500))
    );
    assert_eq!(
        unverified_expiry(&with(&URL_SAFE_NO_PAD, r#"{"exp":null}"#)).unwrap(),
        None
    );
    for bad in [r#"{"exp":"soon"}"#, r#"{"exp":-1}"#, "[1]", "not json"] {
        assert!(
            matches!(
                unverified_expiry(&with(&URL_SAFE_NO_PAD, bad)),
                Err(TokenError::Malformed(_))
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let api = token_review_api();
    let tokens = reviewer(&api);
    let good = sa_token(AGENT, &["halyard-ca"], Some("node-1"), None);
    let forged = sa_token("", &["istio-ca"], None, None);
    let elsewhere = sa_token(WEB, &["vault"], None, None);
    tokens.agent_node(&good).await.unwrap();
    tokens.istio_caller(&forged).await.unwrap_err();
    tokens.istio_caller(&elsewhere).await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("TokenReview"),
        "trace logging was captured: {logs}"
    );
    for token in [&good, &forged, &elsewhere] {
        // Not the token, nor its payload or signature on their own.
        for part in token.expose_secret().split('.').skip(1) {
            assert!(!logs.contains(part), "{part} logged:\n{logs}");
        }
    }
}
