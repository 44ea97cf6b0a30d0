//! The pod index: from watch events applied directly, and from a real `kube` watcher over a mock
//! API server that lists pods and then streams events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::kube::mock::{MockApi, WatchEvents, not_found};

mod grpc;

/// A pod `namespace/name` of service account `sa` (none: the field left out), on `node` (none:
/// not scheduled), in `phase`, as the API server sends it.
fn pod_json(
    namespace: &str,
    name: &str,
    sa: Option<&str>,
    node: Option<&str>,
    phase: &str,
) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("uid-{namespace}-{name}"),
            "resourceVersion": "1",
        },
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": phase},
    });
    if let Some(sa) = sa {
        pod["spec"]["serviceAccountName"] = json!(sa);
    }
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn pod(namespace: &str, name: &str, sa: &str, node: &str) -> Pod {
    serde_json::from_value(pod_json(namespace, name, Some(sa), Some(node), "Running")).unwrap()
}

fn with_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status.get_or_insert_default().phase = Some(phase.to_owned());
    pod
}

/// An index that has listed `pods`.
fn listed(pods: Vec<Pod>) -> PodIndex {
    let index = PodIndex::new();
    index.apply(Event::Init);
    for pod in pods {
        index.apply(Event::InitApply(pod));
    }
    index.apply(Event::InitDone);
    index
}

#[test]
fn nothing_is_answered_before_the_first_full_list() {
    let index = PodIndex::new();
    assert!(!index.is_ready());
    assert_eq!(
        index.may_hold("node-1", "apps", "web"),
        Err(PodIndexError::NotReady)
    );
    index.apply(Event::Init);
    index.apply(Event::InitApply(pod("apps", "web-1", "web", "node-1")));
    // Half a list proves nothing about the pods not yet listed.
    assert_eq!(
        index.may_hold("node-1", "apps", "web"),
        Err(PodIndexError::NotReady)
    );
    assert_eq!(
        index.node_of_pod("apps", "web-1", None),
        Err(PodIndexError::NotReady)
    );
    index.apply(Event::InitDone);
    assert!(index.is_ready());
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(true));
    assert_eq!(index.may_hold("node-2", "apps", "web"), Ok(false));
    // An empty cluster is a full list too.
    assert_eq!(listed(vec![]).may_hold("node-1", "apps", "web"), Ok(false));
}

#[test]
fn only_scheduled_unfinished_pods_count() {
    let unscheduled: Pod =
        serde_json::from_value(pod_json("apps", "queued", Some("queued"), None, "Pending"))
            .unwrap();
    // Being deleted, but still running through its grace period.
    let mut deleting = pod_json(
        "apps",
        "leaving-1",
        Some("leaving"),
        Some("node-1"),
        "Running",
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    let deleting: Pod = serde_json::from_value(deleting).unwrap();
    let index = listed(vec![
        pod("apps", "web-1", "web", "node-1"),
        with_phase(pod("apps", "starting-1", "starting", "node-1"), "Pending"),
        with_phase(pod("apps", "job-1", "job", "node-1"), "Succeeded"),
        with_phase(pod("apps", "crashed-1", "crashed", "node-1"), "Failed"),
        unscheduled,
        deleting,
        // No service account named: the API server's default.
        serde_json::from_value(pod_json("apps", "plain-1", None, Some("node-1"), "Running"))
            .unwrap(),
    ]);
    for (sa, expected) in [
        ("web", true),
        ("starting", true),
        ("leaving", true),
        ("default", true),
        ("job", false),
        ("crashed", false),
        ("queued", false),
        ("nobody", false),
    ] {
        assert_eq!(index.may_hold("node-1", "apps", sa), Ok(expected), "{sa}");
    }
    // The same service account name in another namespace is another account.
    assert_eq!(index.may_hold("node-1", "other", "web"), Ok(false));
    assert_eq!(
        index.node_of_pod("apps", "job-1", None),
        Ok(None),
        "finished"
    );
}

#[test]
fn events_keep_the_index_current() {
    let index = listed(vec![
        pod("apps", "web-1", "web", "node-1"),
        pod("apps", "web-2", "web", "node-1"),
    ]);
    // Two pods of one account: deleting one leaves the other.
    index.apply(Event::Delete(pod("apps", "web-1", "web", "node-1")));
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(true));
    // A pod that finishes no longer counts.
    index.apply(Event::Apply(with_phase(
        pod("apps", "web-2", "web", "node-1"),
        "Succeeded",
    )));
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(false));
    // A pod never moves: a new one of the same name is deleted and re-created elsewhere.
    index.apply(Event::Apply(pod("apps", "db-0", "db", "node-1")));
    assert_eq!(index.may_hold("node-1", "apps", "db"), Ok(true));
    index.apply(Event::Delete(pod("apps", "db-0", "db", "node-1")));
    let mut moved = pod("apps", "db-0", "db", "node-2");
    moved.metadata.uid = Some("uid-second".into());
    index.apply(Event::Apply(moved));
    assert_eq!(index.may_hold("node-1", "apps", "db"), Ok(false));
    assert_eq!(index.may_hold("node-2", "apps", "db"), Ok(true));
    assert_eq!(
        index.node_of_pod("apps", "db-0", Some("uid-second")),
        Ok(Some("node-2".to_owned()))
    );
    // A token of the first db-0 names the first pod's uid: that pod is gone.
    assert_eq!(
        index.node_of_pod("apps", "db-0", Some("uid-apps-db-0")),
        Ok(None)
    );
    // Deleting a pod the index never had is harmless.
    index.apply(Event::Delete(pod("apps", "ghost", "ghost", "node-1")));
    assert_eq!(index.may_hold("node-2", "apps", "db"), Ok(true));
}

#[test]
fn a_relist_replaces_the_index_when_it_completes() {
    let index = listed(vec![
        pod("apps", "web-1", "web", "node-1"),
        pod("apps", "db-0", "db", "node-1"),
    ]);
    // The watch broke; while it re-lists, the last full picture still answers.
    index.apply(Event::Init);
    index.apply(Event::InitApply(pod("apps", "web-1", "web", "node-1")));
    assert_eq!(index.may_hold("node-1", "apps", "db"), Ok(true));
    index.apply(Event::InitApply(pod("apps", "api-1", "api", "node-2")));
    index.apply(Event::InitDone);
    // db-0 was deleted while the watch was down: the new list no longer has it.
    assert_eq!(index.may_hold("node-1", "apps", "db"), Ok(false));
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(true));
    assert_eq!(index.may_hold("node-2", "apps", "api"), Ok(true));
}

#[test]
fn workload_identities_name_their_service_account() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let id = |text: &str| SpiffeId::new(text).unwrap();
    let web = id("spiffe://cluster.local/ns/apps/sa/web");
    assert_eq!(workload_account(&web, &td), Some(("apps", "web")));
    for other in [
        "spiffe://example.org/ns/apps/sa/web",
        "spiffe://cluster.local/ns/apps/sa/web/extra",
        "spiffe://cluster.local/ns/apps/web",
        "spiffe://cluster.local/halyard/node/node-1",
        "spiffe://cluster.local/sa/web/ns/apps",
    ] {
        assert_eq!(workload_account(&id(other), &td), None, "{other}");
    }
}

#[test]
fn a_tokens_node_is_the_reviews_else_its_pods() {
    let index = listed(vec![pod("halyard", "agent-x", "halyard-agent", "node-3")]);
    let td = TrustDomain::new("cluster.local").unwrap();
    let mut account = crate::kube::token_review::service_account(
        "system:serviceaccount:halyard:halyard-agent",
        &td,
    )
    .unwrap();
    assert_eq!(
        index.node_of(&account),
        Err(PodIndexError::Unbound {
            account: "halyard/halyard-agent".into()
        })
    );
    account.pod_name = Some("agent-x".into());
    assert_eq!(index.node_of(&account), Ok("node-3".into()));
    account.pod_uid = Some("uid-of-a-deleted-pod".into());
    let err = index.node_of(&account).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod halyard/agent-x, to which the service-account token is bound, runs on no node the \
         pod index knows"
    );
    account.node_name = Some("node-9".into());
    assert_eq!(
        index.node_of(&account),
        Ok("node-9".into()),
        "the review wins"
    );
}

/// A mock API server with `pods` to list (at resourceVersion 10) whose first watch streams what
/// the returned sender sends.
fn pod_api(pods: Vec<Value>) -> (MockApi, mpsc::UnboundedSender<Value>) {
    let (events, stream) = mpsc::unbounded_channel();
    let stream = Mutex::new(Some(stream));
    // Later watches (after the test ends one) stay open with nothing to say.
    let idle = Mutex::new(Vec::new());
    let api = MockApi::with_watches(
        move |call| {
            if call.method == "GET" && call.path == "/api/v1/pods" {
                (
                    200,
                    json!({
                        "apiVersion": "v1",
                        "kind": "PodList",
                        "metadata": {"resourceVersion": "10"},
                        "items": pods,
                    }),
                )
            } else {
                not_found(&call.path)
            }
        },
        move |call| -> Option<WatchEvents> {
            if call.path != "/api/v1/pods" || !call.query.contains("watch=true") {
                return None;
            }
            Some(stream.lock().unwrap().take().unwrap_or_else(|| {
                let (keep, events) = mpsc::unbounded_channel();
                idle.lock().unwrap().push(keep);
                events
            }))
        },
    );
    (api, events)
}

fn event(kind: &str, pod: Value) -> Value {
    json!({"type": kind, "object": pod})
}

/// Waits until the index has applied `count` events in all.
async fn applied(index: &PodIndex, count: u64) {
    let mut applied = index.subscribe();
    applied.wait_for(|n| *n >= count).await.unwrap();
}

#[tokio::test]
async fn the_watcher_lists_every_pod_then_follows_the_watch() {
    let (api, events) = pod_api(vec![
        pod_json("apps", "web-1", Some("web"), Some("node-1"), "Running"),
        pod_json("apps", "db-0", Some("db"), Some("node-2"), "Running"),
    ]);
    let index = Arc::new(PodIndex::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(index.clone().run(api.client(), shutdown.clone()));

    // Init, two pods, InitDone.
    applied(&index, 4).await;
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(true));
    assert_eq!(index.may_hold("node-1", "apps", "db"), Ok(false));
    assert_eq!(index.may_hold("node-2", "apps", "db"), Ok(true));

    events
        .send(event(
            "ADDED",
            pod_json("apps", "api-1", Some("api"), Some("node-1"), "Pending"),
        ))
        .unwrap();
    applied(&index, 5).await;
    assert_eq!(index.may_hold("node-1", "apps", "api"), Ok(true));

    events
        .send(event(
            "MODIFIED",
            pod_json("apps", "api-1", Some("api"), Some("node-1"), "Succeeded"),
        ))
        .unwrap();
    events
        .send(event(
            "DELETED",
            pod_json("apps", "db-0", Some("db"), Some("node-2"), "Running"),
        ))
        .unwrap();
    applied(&index, 7).await;
    assert_eq!(index.may_hold("node-1", "apps", "api"), Ok(false));
    assert_eq!(index.may_hold("node-2", "apps", "db"), Ok(false));
    assert_eq!(index.may_hold("node-1", "apps", "web"), Ok(true));

    // One cluster-wide list, then a watch from its resourceVersion.
    let calls = api.calls();
    assert_eq!(calls[0].path, "/api/v1/pods");
    assert!(!calls[0].query.contains("watch"), "{}", calls[0].query);
    assert_eq!(calls[1].path, "/api/v1/pods");
    assert!(
        calls[1].query.contains("watch=true") && calls[1].query.contains("resourceVersion=10"),
        "{}",
        calls[1].query
    );

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failing_list_leaves_the_index_not_ready() {
    let api = MockApi::new(|_| {
        (
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                   "reason": "Forbidden", "message": "pods is forbidden"}),
        )
    });
    let index = Arc::new(PodIndex::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(index.clone().run(api.client(), shutdown.clone()));
    // Wait until the refused list has been retried (after the watcher's backoff): the
    // refusal has been handled by then.
    while api.calls().len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        index.may_hold("node-1", "apps", "web"),
        Err(PodIndexError::NotReady)
    );
    shutdown.cancel();
    task.await.unwrap();
}
