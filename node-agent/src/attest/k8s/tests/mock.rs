//! A mock API server for the pod watch, at the `kube::Client` seam (tower-test): it answers the
//! watcher's first list with the given pods and holds every watch open without events.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use serde_json::json;

pub(super) struct PodApi {
    client: kube::Client,
    queries: Arc<Mutex<Vec<String>>>,
}

impl PodApi {
    pub(super) fn new(pods: Vec<Pod>) -> PodApi {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let recorded = queries.clone();
        tokio::spawn(async move {
            // Watches are answered never: their responders are kept, not dropped (a dropped one
            // would fail the watch and make the watcher retry in a loop).
            let mut open_watches = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                assert_eq!(request.uri().path(), "/api/v1/pods");
                let query = request.uri().query().unwrap_or("").to_owned();
                recorded.lock().unwrap().push(query.clone());
                if query.contains("watch=true") {
                    open_watches.push(respond);
                    continue;
                }
                let list = json!({
                    "apiVersion": "v1",
                    "kind": "PodList",
                    "metadata": {"resourceVersion": "100"},
                    "items": pods,
                });
                respond.send_response(
                    Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            }
        });
        PodApi {
            client: kube::Client::new(service, "default"),
            queries,
        }
    }

    pub(super) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The query string of every request so far.
    pub(super) fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}
