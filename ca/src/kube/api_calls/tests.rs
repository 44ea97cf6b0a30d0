#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use super::*;
use crate::kube::mock::{MockApi, not_found};

fn info(method: &str, path: &str, query: &str) -> RequestInfo {
    RequestInfo::parse(method, path, query).unwrap()
}

#[test]
fn paths_are_read_as_the_api_server_reads_them() {
    let list = info(
        "GET",
        "/apis/cert-manager.io/v1/certificaterequests",
        "limit=500",
    );
    assert_eq!(
        (list.verb, list.group.as_str(), list.resource.as_str()),
        ("list", "cert-manager.io", "certificaterequests")
    );
    assert_eq!(
        (list.namespace, list.name, list.subresource),
        (None, None, None)
    );

    let watch = info(
        "GET",
        "/apis/cert-manager.io/v1/certificaterequests",
        "allowWatchBookmarks=true&resourceVersion=1&timeoutSeconds=290&watch=true",
    );
    assert_eq!(watch.verb, "watch");

    let patch = info(
        "PATCH",
        "/apis/cert-manager.io/v1/namespaces/apps/certificaterequests/web/status",
        "fieldManager=halyard-ca&force=true",
    );
    assert_eq!(patch.verb, "patch");
    assert_eq!(patch.namespace.as_deref(), Some("apps"));
    assert_eq!(patch.name.as_deref(), Some("web"));
    assert_eq!(patch.subresource.as_deref(), Some("status"));

    let get = info("GET", "/api/v1/namespaces/apps/pods/web-0", "");
    assert_eq!(
        (get.verb, get.group.as_str(), get.resource.as_str()),
        ("get", "", "pods")
    );

    // The namespace object itself, not something in it.
    let namespace = info("GET", "/api/v1/namespaces/apps", "");
    assert_eq!(
        (namespace.verb, namespace.resource.as_str(), namespace.name),
        ("get", "namespaces", Some("apps".to_owned()))
    );
    assert_eq!(namespace.namespace, None);

    assert_eq!(
        info("POST", "/apis/authentication.k8s.io/v1/tokenreviews", "").verb,
        "create"
    );
    assert_eq!(
        info(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/halyard/leases/l",
            ""
        )
        .verb,
        "update"
    );
    assert_eq!(
        info("DELETE", "/api/v1/namespaces/a/pods/p", "").verb,
        "delete"
    );
    assert_eq!(
        info("DELETE", "/api/v1/namespaces/a/pods", "").verb,
        "deletecollection"
    );
}

#[test]
fn what_is_not_a_resource_request_is_refused_with_the_reason() {
    for (method, path) in [
        ("GET", "/apis"),
        ("GET", "/version"),
        ("GET", "/apis/cert-manager.io/v1"),
        ("GET", "/api/v1/namespaces/a/pods/p/log/extra"),
        ("GET", "/healthz"),
    ] {
        let err = RequestInfo::parse(method, path, "").unwrap_err();
        assert!(err.contains("resource path"), "{path}: {err}");
    }
    let err = RequestInfo::parse("HEAD", "/api/v1/pods", "").unwrap_err();
    assert!(err.contains("HEAD"), "{err}");
}

#[test]
fn the_calls_the_ca_makes_today_are_covered() {
    for (method, path, query) in [
        ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", ""),
        ("GET", "/apis/cert-manager.io/v1/certificaterequests", ""),
        (
            "GET",
            "/apis/cert-manager.io/v1/certificaterequests",
            "watch=true",
        ),
        (
            "PATCH",
            "/apis/cert-manager.io/v1/namespaces/a/certificaterequests/r/status",
            "",
        ),
        (
            "GET",
            "/apis/halyard.dev/v1alpha1/namespaces/a/halyardissuers/i",
            "",
        ),
        (
            "GET",
            "/apis/halyard.dev/v1alpha1/halyardclusterissuers/i",
            "",
        ),
        (
            "PATCH",
            "/apis/halyard.dev/v1alpha1/namespaces/a/halyardissuers/i/status",
            "",
        ),
        (
            "PATCH",
            "/apis/halyard.dev/v1alpha1/halyardclusterissuers/i/status",
            "",
        ),
        ("GET", "/api/v1/pods", "limit=500"),
        ("GET", "/api/v1/pods", "watch=true&resourceVersion=7"),
    ] {
        let request = info(method, path, query);
        assert!(
            covering(Component::Ca, &request).is_some(),
            "{method} {path}?{query} ({request}) is not covered"
        );
    }
}

#[test]
fn calls_beyond_the_table_are_not_covered() {
    for (component, method, path) in [
        // Secrets: never.
        (Component::Ca, "GET", "/api/v1/namespaces/halyard/secrets/x"),
        // The object itself, where only its status is written.
        (
            Component::Ca,
            "PATCH",
            "/apis/cert-manager.io/v1/namespaces/a/certificaterequests/r",
        ),
        // A verb the issuer does not use.
        (
            Component::Ca,
            "DELETE",
            "/apis/cert-manager.io/v1/namespaces/a/certificaterequests/r",
        ),
        // Leases only in the CA's namespace: not cluster-wide.
        (Component::Ca, "GET", "/apis/coordination.k8s.io/v1/leases"),
        // The agent reviews no tokens.
        (
            Component::Agent,
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ),
        // Pods are watched, never read one by one.
        (Component::Ca, "GET", "/api/v1/namespaces/a/pods/p"),
    ] {
        let request = info(method, path, "");
        assert_eq!(
            covering(component, &request),
            None,
            "{component:?} {method} {path}"
        );
    }
}

#[test]
fn the_table_is_well_formed() {
    let mut seen = HashSet::new();
    for call in API_CALLS {
        assert!(seen.insert(*call), "{call:?} is listed twice");
        assert!(
            ["get", "list", "watch", "create", "update", "patch", "sign"].contains(&call.verb),
            "{call:?}"
        );
        assert!(
            matches!(call.subresource, None | Some("status")),
            "{call:?}"
        );
        // Only a signer grant names its object: everything else is by kind.
        assert_eq!(
            call.resource_name.is_some(),
            call.verb == "sign",
            "{call:?}"
        );
        assert!(!call.purpose.is_empty());
        assert!(
            call.resource.chars().all(|c| c.is_ascii_lowercase()),
            "{call:?}"
        );
    }
    assert_eq!(
        API_CALLS
            .iter()
            .find(|c| c.verb == "sign")
            .unwrap()
            .rbac_resource(),
        "signers"
    );
    assert_eq!(
        API_CALLS
            .iter()
            .find(|c| c.subresource.is_some())
            .unwrap()
            .rbac_resource(),
        "certificaterequests/status"
    );
}

#[tokio::test]
async fn the_mock_refuses_a_call_beyond_the_table_and_fails_the_test() {
    let api = MockApi::new(|call| not_found(&call.path));
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(api.client(), "halyard");
    let err = secrets.get("intermediate").await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("get core secrets in namespace halyard"),
        "{}",
        status.message
    );
    // Dropping the mock fails the test that made the call.
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(api)));
    let message = dropped.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("API_CALLS"), "{message}");
    assert!(
        message.contains("/api/v1/namespaces/halyard/secrets/intermediate"),
        "{message}"
    );
}

#[tokio::test]
async fn the_mock_answers_a_listed_call_with_the_handler() {
    let api = MockApi::new(|call| not_found(&call.path));
    let issuers: kube::Api<crate::kube::issuer::HalyardClusterIssuer> =
        kube::Api::all(api.client());
    assert!(issuers.get_opt("mesh").await.unwrap().is_none());
    assert_eq!(api.calls().len(), 1);
    // Dropping it passes: the call was in the table.
    drop(api);
}
