//! What the rendered RBAC grants each service account, one permission at a time, against what
//! `halyard_ca::kube::API_CALLS` says the component calls.

use std::collections::{BTreeMap, BTreeSet};

use halyard_ca::kube::{API_CALLS, ApiCall, Component, Scope, When};
use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use super::render::Rendered;

/// One permission: a verb on a resource (or subresource), cluster-wide or in one namespace,
/// on any object or on one by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Permission {
    /// `cluster` or `namespace <ns>`.
    pub(crate) scope: String,
    pub(crate) group: String,
    /// `resource` or `resource/subresource`.
    pub(crate) resource: String,
    pub(crate) verb: String,
    pub(crate) name: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {group} {} ({})",
            self.verb, self.resource, self.scope
        )?;
        if let Some(name) = &self.name {
            write!(f, " named {name}")?;
        }
        Ok(())
    }
}

/// A service account, `namespace/name`.
pub(crate) type Account = String;

/// Every permission the rendering grants, by the service account it is bound to.
pub(crate) fn grants(rendered: &Rendered) -> BTreeMap<Account, BTreeSet<Permission>> {
    let dir = &rendered.dir;
    let cluster_role = |name: &str| {
        rendered
            .cluster_roles
            .iter()
            .find(|role| role.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| {
                panic!("deploy/{dir}: a binding names ClusterRole {name}, which is not there")
            })
            .rules
            .clone()
            .unwrap_or_default()
    };
    let mut out: BTreeMap<Account, BTreeSet<Permission>> = BTreeMap::new();
    let mut bind = |subjects: &[Subject],
                    binding_ns: Option<&str>,
                    scope: &str,
                    rules: &[PolicyRule],
                    binding: &str| {
        for subject in subjects {
            assert_eq!(
                subject.kind, "ServiceAccount",
                "deploy/{dir}: {binding} binds {} {}: only service accounts are bound",
                subject.kind, subject.name
            );
            let namespace = subject
                .namespace
                .as_deref()
                .or(binding_ns)
                .unwrap_or_else(|| {
                    panic!("deploy/{dir}: {binding}: a subject without a namespace")
                });
            let account = format!("{namespace}/{}", subject.name);
            out.entry(account)
                .or_default()
                .extend(expand(dir, binding, scope, rules));
        }
    };
    for binding in &rendered.cluster_role_bindings {
        let what = format!(
            "ClusterRoleBinding {}",
            binding.metadata.name.as_deref().unwrap_or("")
        );
        assert_eq!(binding.role_ref.kind, "ClusterRole", "deploy/{dir}: {what}");
        let rules = cluster_role(&binding.role_ref.name);
        bind(
            binding.subjects.as_deref().unwrap_or_default(),
            None,
            "cluster",
            &rules,
            &what,
        );
    }
    for binding in &rendered.role_bindings {
        let namespace = binding.metadata.namespace.clone().unwrap_or_default();
        let what = format!(
            "RoleBinding {namespace}/{}",
            binding.metadata.name.as_deref().unwrap_or("")
        );
        let rules = match binding.role_ref.kind.as_str() {
            "Role" => rendered
                .roles
                .iter()
                .find(|role| {
                    role.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
                        && role.metadata.namespace.as_deref() == Some(namespace.as_str())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "deploy/{dir}: {what} names Role {}, which is not in {namespace}",
                        binding.role_ref.name
                    )
                })
                .rules
                .clone()
                .unwrap_or_default(),
            _ => cluster_role(&binding.role_ref.name),
        };
        let scope = format!("namespace {namespace}");
        bind(
            binding.subjects.as_deref().unwrap_or_default(),
            Some(&namespace),
            &scope,
            &rules,
            &what,
        );
    }
    out
}

/// The rules as single permissions; a wildcard fails (least privilege names everything).
fn expand(dir: &str, binding: &str, scope: &str, rules: &[PolicyRule]) -> Vec<Permission> {
    let mut out = Vec::new();
    for rule in rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        assert!(
            rule.non_resource_urls.is_none(),
            "deploy/{dir}: {binding}: non-resource URLs are granted"
        );
        let names: Vec<Option<String>> = match &rule.resource_names {
            Some(names) if !names.is_empty() => names.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for value in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(
                value != "*",
                "deploy/{dir}: {binding} grants a wildcard: {rule:?}"
            );
        }
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    for name in &names {
                        out.push(Permission {
                            scope: scope.to_owned(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The permissions `component`'s calls need when it runs in `namespace` with the cert-manager
/// issuer and the CSR signer on or off.
pub(crate) fn needed(
    component: Component,
    namespace: &str,
    cert_manager_issuer: bool,
    csr_signer: bool,
) -> BTreeSet<Permission> {
    API_CALLS
        .iter()
        .filter(|call| call.component == component)
        .filter(|call| match call.when {
            When::Always => true,
            When::CertManagerIssuer => cert_manager_issuer,
            When::CsrSigner => csr_signer,
        })
        .map(|call: &ApiCall| Permission {
            scope: match call.scope {
                Scope::Cluster => "cluster".to_owned(),
                Scope::OwnNamespace => format!("namespace {namespace}"),
            },
            group: call.group.to_owned(),
            resource: call.rbac_resource(),
            verb: call.verb.to_owned(),
            name: call.resource_name.map(str::to_owned),
        })
        .collect()
}

/// Fails unless `account` is granted exactly `needed`: naming what is missing and what is
/// beyond the table.
pub(crate) fn assert_exactly(
    dir: &str,
    account: &str,
    granted: &BTreeSet<Permission>,
    needed: &BTreeSet<Permission>,
) {
    let missing: Vec<String> = needed
        .difference(granted)
        .map(ToString::to_string)
        .collect();
    let extra: Vec<String> = granted
        .difference(needed)
        .map(ToString::to_string)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/{dir}: service account {account}:\n  missing (in API_CALLS, not granted): \
         {missing:#?}\n  beyond API_CALLS (granted, never called): {extra:#?}"
    );
}

#[test]
fn a_missing_and_an_extra_grant_are_both_named() {
    let needed = needed(Component::Agent, "halyard", false, false);
    let mut granted = needed.clone();
    let dropped = granted.pop_first().unwrap();
    granted.insert(Permission {
        scope: "cluster".into(),
        group: String::new(),
        resource: "secrets".into(),
        verb: "get".into(),
        name: None,
    });
    let caught = std::panic::catch_unwind(|| {
        assert_exactly("test", "halyard/halyard-agent", &granted, &needed);
    })
    .unwrap_err();
    let message = caught.downcast_ref::<String>().unwrap();
    assert!(message.contains(&dropped.to_string()), "{message}");
    assert!(message.contains("get core secrets (cluster)"), "{message}");
}
