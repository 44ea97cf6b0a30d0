//! `kubectl kustomize deploy/<dir>`, and every object of its output parsed into its k8s-openapi
//! type, losing no field.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `deploy/` in this checkout.
pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every object of one rendering, by kind.
#[derive(Debug, Default)]
pub(crate) struct Rendered {
    /// The directory under deploy/.
    pub(crate) dir: String,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    pub(crate) config_maps: Vec<ConfigMap>,
    pub(crate) services: Vec<Service>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) daemon_sets: Vec<DaemonSet>,
    pub(crate) disruption_budgets: Vec<PodDisruptionBudget>,
    pub(crate) cluster_roles: Vec<ClusterRole>,
    pub(crate) cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub(crate) roles: Vec<Role>,
    pub(crate) role_bindings: Vec<RoleBinding>,
    pub(crate) crds: Vec<CustomResourceDefinition>,
}

/// Renders `deploy/<dir>` with `$HALYARD_KUBECTL` (default `kubectl`) and parses every object.
pub(crate) fn render(dir: &str) -> Rendered {
    let kubectl = std::env::var("HALYARD_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let path = deploy_dir().join(dir);
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {kubectl:?} ({e}): this test needs kubectl; ./tests/run.sh installs \
                 Debian's kubernetes-client, or set HALYARD_KUBECTL"
            )
        });
    assert!(
        output.status.success(),
        "{kubectl} kustomize {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    parse(dir, &text)
}

/// Parses a rendered YAML stream: an unknown kind, a parse error, or a field the type does not
/// know (a typo that `kubectl apply` would drop or refuse) fails.
pub(crate) fn parse(dir: &str, text: &str) -> Rendered {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("deploy/{dir}: the rendered YAML does not parse: {e}"));
    let mut rendered = Rendered {
        dir: dir.to_owned(),
        ..Rendered::default()
    };
    for doc in documents.into_iter().filter(|doc| !doc.is_null()) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let what = format!("deploy/{dir}: {api_version} {kind} {name}");
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => rendered.namespaces.push(typed(&what, doc)),
            ("v1", "ServiceAccount") => rendered.service_accounts.push(typed(&what, doc)),
            ("v1", "ConfigMap") => rendered.config_maps.push(typed(&what, doc)),
            ("v1", "Service") => rendered.services.push(typed(&what, doc)),
            ("apps/v1", "Deployment") => rendered.deployments.push(typed(&what, doc)),
            ("apps/v1", "DaemonSet") => rendered.daemon_sets.push(typed(&what, doc)),
            ("policy/v1", "PodDisruptionBudget") => {
                rendered.disruption_budgets.push(typed(&what, doc));
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                rendered.cluster_roles.push(typed(&what, doc));
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                rendered.cluster_role_bindings.push(typed(&what, doc));
            }
            ("rbac.authorization.k8s.io/v1", "Role") => rendered.roles.push(typed(&what, doc)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                rendered.role_bindings.push(typed(&what, doc));
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                rendered.crds.push(typed(&what, doc));
            }
            _ => panic!("{what}: a kind this test does not know; add it to render.rs"),
        }
    }
    rendered
}

/// `doc` as a `T`, which must serialize back to the same document.
fn typed<T: DeserializeOwned + serde::Serialize>(what: &str, mut doc: Value) -> T {
    let object: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&object).unwrap();
    strip_nulls(&mut doc);
    let lost = differences("", &doc, &back);
    assert!(
        lost.is_empty(),
        "{what}: fields its type does not carry (misspelt or misplaced?): {lost:#?}"
    );
    object
}

/// Removes `null` members (`creationTimestamp: null`), which the types leave out.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The paths at which `written` and `parsed` differ.
fn differences(path: &str, written: &Value, parsed: &Value) -> Vec<String> {
    match (written, parsed) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Vec::new();
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => out.extend(differences(&here, value, other)),
                    None => out.push(format!("{here} is dropped")),
                }
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                out.push(format!("{path}.{key} appears"));
            }
            out
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (x, y))| differences(&format!("{path}[{i}]"), x, y))
            .collect(),
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("{path}: {a} became {b}")],
    }
}

#[test]
fn a_misspelt_field_and_an_unknown_kind_are_caught() {
    let misspelt = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  prots: []\n";
    let caught = std::panic::catch_unwind(|| parse("test", misspelt)).unwrap_err();
    let message = caught.downcast_ref::<String>().unwrap();
    assert!(message.contains(".spec.prots is dropped"), "{message}");

    let unknown = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";
    let caught = std::panic::catch_unwind(|| parse("test", unknown)).unwrap_err();
    let message = caught.downcast_ref::<String>().unwrap();
    assert!(message.contains("v1 Pod p"), "{message}");

    let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  creationTimestamp: null\n";
    assert_eq!(parse("test", good).services.len(), 1);
}
