//! Leader election against a mock API server that keeps one Lease: the holder runs the
//! controllers, a replica that is not the holder does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::kube::mock::{Answer, Call, MockApi, not_found};

const NAMESPACE: &str = "halyard";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/halyard/leases";

/// An API server holding at most one Lease, `halyard/halyard-ca-controllers`: read, created,
/// and patched (each key of the patch's `spec` set, or removed when null).
fn lease_server(initial: Option<Value>) -> (MockApi, Arc<Mutex<Option<Value>>>) {
    let stored = Arc::new(Mutex::new(initial));
    let lease = stored.clone();
    let path = format!("{LEASES}/{LEASE_NAME}");
    let api = MockApi::new(move |call: &Call| -> Answer {
        let mut lease = lease.lock().unwrap();
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", p) if p == path => match lease.as_ref() {
                Some(object) => (200, object.clone()),
                None => not_found(&format!("leases.coordination.k8s.io \"{LEASE_NAME}\"")),
            },
            ("POST", LEASES) => {
                let mut object = call.body.clone();
                object["metadata"]["namespace"] = json!(NAMESPACE);
                object["metadata"]["resourceVersion"] = json!("1");
                *lease = Some(object.clone());
                (201, object)
            }
            ("PATCH", p) if p == path => {
                let Some(object) = lease.as_mut() else {
                    return not_found(LEASE_NAME);
                };
                if !object["spec"].is_object() {
                    object["spec"] = json!({});
                }
                let spec: &mut Map<String, Value> = object["spec"].as_object_mut().unwrap();
                for (key, value) in call.body["spec"].as_object().unwrap() {
                    if value.is_null() {
                        spec.remove(key);
                    } else {
                        spec.insert(key.clone(), value.clone());
                    }
                }
                (200, object.clone())
            }
            _ => not_found(&call.path),
        }
    });
    (api, stored)
}

fn holder(stored: &Mutex<Option<Value>>) -> Option<String> {
    stored.lock().unwrap().as_ref()?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// Controllers that report when they start and when they are stopped.
fn reporting_controllers(
    events: mpsc::UnboundedSender<&'static str>,
) -> impl Fn(CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |stop: CancellationToken| {
        let events = events.clone();
        Box::pin(async move {
            events.send("started").unwrap();
            stop.cancelled().await;
            events.send("stopped").unwrap();
        })
    }
}

/// Replica `halyard-ca-0` standing for election: its task, what its controllers report, and the
/// token that shuts it down.
fn candidate(
    api: &MockApi,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<&'static str>,
    CancellationToken,
) {
    let (events, reported) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let election = tokio::spawn(run_while_leader(
        api.client(),
        NAMESPACE.into(),
        "halyard-ca-0".into(),
        shutdown.clone(),
        reporting_controllers(events),
    ));
    (election, reported, shutdown)
}

#[tokio::test]
async fn the_holder_of_the_lease_runs_the_controllers_and_releases_it_on_shutdown() {
    let (api, stored) = lease_server(None);
    let (election, mut reported, shutdown) = candidate(&api);

    let first = tokio::time::timeout(Duration::from_secs(60), reported.recv())
        .await
        .expect("the only candidate is elected");
    assert_eq!(first, Some("started"));
    assert_eq!(holder(&stored).as_deref(), Some("halyard-ca-0"));
    assert!(
        !api.calls_to("POST", "/leases").is_empty(),
        "the missing Lease was created"
    );

    shutdown.cancel();
    election.await.unwrap();
    assert_eq!(reported.recv().await, Some("stopped"));
    assert_eq!(holder(&stored), None, "released for the next replica");
}

#[tokio::test]
async fn a_replica_that_does_not_hold_the_lease_runs_no_controllers() {
    let now = crate::authority::rfc3339(SystemTime::now());
    let held = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NAMESPACE, "resourceVersion": "9"},
        "spec": {
            "holderIdentity": "halyard-ca-1",
            "acquireTime": now,
            "renewTime": now,
            "leaseDurationSeconds": 3600,
            "leaseTransitions": 3,
        },
    });
    let (api, stored) = lease_server(Some(held));
    let (election, mut reported, shutdown) = candidate(&api);

    // It has read the Lease, seen it held, and waits for it to run out; an election that did not
    // respect the holder would have started the controllers by now.
    while api.calls_to("GET", LEASE_NAME).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        reported.try_recv().is_err(),
        "no controllers while another replica leads"
    );
    assert!(
        api.calls_to("PATCH", LEASE_NAME).is_empty(),
        "the Lease was not taken"
    );

    shutdown.cancel();
    election.await.unwrap();
    assert!(reported.try_recv().is_err());
    assert_eq!(
        holder(&stored).as_deref(),
        Some("halyard-ca-1"),
        "left to its holder"
    );
}
