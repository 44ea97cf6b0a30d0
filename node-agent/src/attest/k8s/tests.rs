use std::sync::Mutex;

use serde_json::json;

use super::*;

const NODE: &str = "node-1";
const UID: &str = "3f1e7c2a-9b4d-4e8a-a1c5-6d2f0b7e9a13";
const CID: &str = "451132b560487f8c91e58101aebe00a881ade009a28fd6ee79216f4ddd6b7562";
const PID: i32 = 4242;

/// Pods a test sets, standing in for the API server.
#[derive(Default)]
struct FakePods {
    pods: Mutex<Vec<Arc<Pod>>>,
    changes: Mutex<Option<watch::Sender<()>>>,
}

impl FakePods {
    fn with(pods: Vec<Pod>) -> Arc<FakePods> {
        let fake = Arc::new(FakePods::default());
        for pod in pods {
            fake.add(pod);
        }
        fake
    }

    fn add(&self, pod: Pod) {
        self.pods.lock().unwrap().push(Arc::new(pod));
        if let Some(tx) = self.changes.lock().unwrap().as_ref() {
            tx.send_replace(());
        }
    }
}

impl PodSource for FakePods {
    fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.lock().unwrap().clone()
    }

    fn changes(&self) -> watch::Receiver<()> {
        self.changes
            .lock()
            .unwrap()
            .get_or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }
}

/// A pod as the API server returns it, with app container `web` (`CID` unless told) and init
/// container `setup`.
fn pod(name: &str, uid: &str, container_id: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "uid": uid,
            "labels": {"app": "web", "app.kubernetes.io/version": "1.2"},
        },
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "web-sa",
            "containers": [{"name": "web", "image": "nginx"}],
            "initContainers": [{"name": "setup", "image": "busybox"}],
        },
        "status": {
            "phase": "Running",
            "initContainerStatuses": [{
                "name": "setup", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0,
                "containerID": "containerd://1111111111111111111111111111111111111111111111111111111111111111",
            }],
            "containerStatuses": [{
                "name": "web", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{container_id}"),
            }],
        },
    }))
    .unwrap()
}

/// A `/proc` with process `PID` whose cgroup file is `cgroup`.
fn proc_root(cgroup: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let process = dir.path().join(PID.to_string());
    std::fs::create_dir(&process).unwrap();
    std::fs::write(
        process.join("stat"),
        "4242 (web) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 0 0\n",
    )
    .unwrap();
    std::fs::write(process.join("cgroup"), cgroup).unwrap();
    dir
}

fn systemd_v2(uid: &str, cid: &str) -> String {
    format!(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope\n",
        uid.replace('-', "_")
    )
}

fn attestor(pods: Arc<FakePods>, root: &tempfile::TempDir) -> KubernetesAttestor {
    KubernetesAttestor::new(pods, NODE, TrustDomain::new("cluster.local").unwrap())
        .with_proc_root(root.path())
}

fn caller() -> Workload {
    Workload {
        pid: Some(PID),
        uid: 1000,
        gid: 3000,
    }
}

#[tokio::test]
async fn a_caller_in_a_pod_gets_unix_and_pod_selectors() {
    let root = proc_root(&systemd_v2(UID, CID));
    let pods = FakePods::with(vec![
        pod(
            "other",
            "0a9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c",
            &"e".repeat(64),
        ),
        pod("web-7d4b9c-x2x5q", UID, CID),
    ]);
    let attestor = attestor(pods, &root);
    let selectors = attestor.selectors(&caller()).await.unwrap();
    assert_eq!(
        selectors,
        [
            "unix:uid:1000",
            "unix:gid:3000",
            "k8s:ns:apps",
            "k8s:sa:web-sa",
            "k8s:pod-name:web-7d4b9c-x2x5q",
            "k8s:pod-uid:3f1e7c2a-9b4d-4e8a-a1c5-6d2f0b7e9a13",
            "k8s:pod-label:app=web",
            "k8s:pod-label:app.kubernetes.io/version=1.2",
            "k8s:container-name:web",
            "k8s:node-name:node-1",
        ]
    );
    let ids: Vec<String> = attestor
        .implied_identities(&selectors)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ids, ["spiffe://cluster.local/ns/apps/sa/web-sa"]);
}

#[tokio::test]
async fn a_hidden_pod_level_is_searched_by_container_id_and_init_containers_count() {
    let pods = FakePods::with(vec![
        pod(
            "other",
            "0a9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c",
            &"e".repeat(64),
        ),
        pod("web", UID, CID),
    ]);
    // Seen from a cgroup namespace: no pod UID in the path, so every pod is searched.
    let root = proc_root(&format!("0::/../cri-containerd-{CID}.scope\n"));
    let selectors = attestor(pods.clone(), &root)
        .selectors(&caller())
        .await
        .unwrap();
    assert!(
        selectors.contains(&"k8s:pod-name:web".to_owned()),
        "{selectors:?}"
    );
    assert!(
        selectors.contains(&"k8s:container-name:web".to_owned()),
        "{selectors:?}"
    );
    // An init container is named by its own status.
    let root = proc_root(&systemd_v2(UID, &"1".repeat(64)));
    let selectors = attestor(pods, &root).selectors(&caller()).await.unwrap();
    assert!(
        selectors.contains(&"k8s:pod-name:web".to_owned()),
        "{selectors:?}"
    );
    assert!(
        selectors.contains(&"k8s:container-name:setup".to_owned()),
        "{selectors:?}"
    );
}

#[tokio::test]
async fn a_static_pod_is_found_through_its_mirror() {
    let hash = "6f1a2b3c4d5e6f708192a3b4c5d6e7f8";
    let root = proc_root(&systemd_v2(hash, CID));
    let mut mirror = pod("kube-apiserver-node-1", UID, CID);
    mirror.metadata.annotations = Some([(MIRROR_ANNOTATION.to_owned(), hash.to_owned())].into());
    let selectors = attestor(FakePods::with(vec![mirror]), &root)
        .selectors(&caller())
        .await
        .unwrap();
    assert!(
        selectors.contains(&format!("k8s:pod-uid:{UID}")),
        "{selectors:?}"
    );
}

#[tokio::test]
async fn a_caller_outside_any_pod_gets_unix_selectors_only() {
    let root = proc_root("0::/user.slice/user-1000.slice/session-3.scope\n");
    let attestor = attestor(FakePods::with(vec![pod("web", UID, CID)]), &root);
    let selectors = attestor.selectors(&caller()).await.unwrap();
    assert_eq!(selectors, ["unix:uid:1000", "unix:gid:3000"]);
    assert!(attestor.implied_identities(&selectors).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pod_the_agent_has_not_seen_yet_is_waited_for() {
    let root = proc_root(&systemd_v2(UID, CID));
    let pods = FakePods::with(vec![]);
    let attestor = Arc::new(attestor(pods.clone(), &root));
    let pending = tokio::spawn({
        let attestor = attestor.clone();
        async move { attestor.selectors(&caller()).await }
    });
    // Let the attestation look once and start waiting before the pod arrives.
    tokio::task::yield_now().await;
    assert!(!pending.is_finished());
    pods.add(pod("web", UID, CID));
    let selectors = pending.await.unwrap().unwrap();
    assert!(selectors.contains(&"k8s:pod-name:web".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_never_shows_up_is_refused_after_the_wait() {
    let root = proc_root(&systemd_v2(UID, CID));
    let err = attestor(FakePods::with(vec![]), &root)
        .with_wait(Duration::from_secs(3))
        .selectors(&caller())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::PodUnknown { pid: PID, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "process 4242 runs in container {CID} of pod {UID}, which no pod of node node-1 \
             shows after waiting 3 s: no pod has UID {UID}"
        )
    );
    // The pod is known but its status does not name the container yet.
    let other = "a".repeat(64);
    let err = attestor(FakePods::with(vec![pod("web", UID, &other)]), &root)
        .with_wait(Duration::from_secs(3))
        .selectors(&caller())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("pod apps/web does not list the container in its status"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_or_contradictory_cgroups_are_refused() {
    let root = proc_root(&format!(
        "2:memory:/kubepods/pod{UID}/{CID}\n1:name=systemd:/kubepods/pod{UID}/{}\n",
        "b".repeat(64)
    ));
    let pods = FakePods::with(vec![pod("web", UID, CID)]);
    let err = attestor(pods.clone(), &root)
        .selectors(&caller())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::Cgroup { pid: PID, .. }),
        "{err:?}"
    );
    // A process that has gone: its stat file is missing.
    let empty = tempfile::tempdir().unwrap();
    let err = attestor(pods, &empty)
        .selectors(&caller())
        .await
        .unwrap_err();
    assert!(
        matches!(err, AttestError::ProcessChanged { pid: PID, .. }),
        "{err:?}"
    );
}

#[test]
fn only_one_namespace_and_account_imply_an_identity() {
    let root = proc_root("");
    let attestor = attestor(FakePods::with(vec![]), &root);
    let implied = |selectors: &[&str]| {
        let selectors: Vec<String> = selectors.iter().map(|s| (*s).to_owned()).collect();
        attestor.implied_identities(&selectors)
    };
    assert!(implied(&["unix:uid:0"]).is_empty());
    assert!(implied(&["k8s:ns:apps"]).is_empty());
    assert!(implied(&["k8s:ns:apps", "k8s:sa:a", "k8s:sa:b"]).is_empty());
    // Not a valid path segment: no identity rather than a malformed one.
    assert!(implied(&["k8s:ns:apps", "k8s:sa:a/b"]).is_empty());
    assert_eq!(
        implied(&["k8s:sa:a", "k8s:ns:apps"])[0].as_str(),
        "spiffe://cluster.local/ns/apps/sa/a"
    );
}

#[tokio::test]
async fn the_api_server_watch_asks_for_this_nodes_pods_and_signals_changes() {
    let api = mock::PodApi::new(vec![pod("web", UID, CID)]);
    let shutdown = CancellationToken::new();
    let pods = ApiServerPods::spawn(api.client(), NODE, shutdown.clone());
    let mut changes = pods.changes();
    changes.wait_for(|_| !pods.pods().is_empty()).await.unwrap();
    assert_eq!(pods.pods()[0].metadata.uid.as_deref(), Some(UID));
    let lists = api.queries();
    assert!(
        lists[0].contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "{lists:?}"
    );
    shutdown.cancel();
}

mod mock;
