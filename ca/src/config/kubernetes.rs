//! The `[kubernetes]` table: service-account token authentication, the pod index (node
//! authorization, ztunnel impersonation) and the cert-manager issuer.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The `[kubernetes]` table as written: every key optional, so that flags can fill it in.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    /// Talk to Kubernetes (default false).
    pub enabled: Option<bool>,
    /// The audience of service-account tokens on Istio's CSR API; default `istio-ca`.
    pub istio_audience: Option<String>,
    /// The audience of node agents' projected tokens; default `halyard-ca`.
    pub node_audience: Option<String>,
    /// The service accounts of node agents, `namespace/name`; default `halyard/halyard-agent`.
    /// Only these may attest nodes with a token: any pod can mint a token of any audience.
    pub agent_service_accounts: Option<Vec<String>>,
    /// The service accounts of ztunnel, `namespace/name`; default `istio-system/ztunnel` (what
    /// Istio trusts, `CA_TRUSTED_NODE_ACCOUNTS`). Only these may ask Istio's CSR API for another
    /// identity (`ImpersonatedIdentity`), and only for pods of their own node; `[]` allows none.
    pub ztunnel_service_accounts: Option<Vec<String>>,
    /// A kubeconfig file; default: in-cluster, else the usual kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Run the cert-manager external issuer (default true).
    pub cert_manager_issuer: Option<bool>,
    /// Run the Kubernetes CSR signer `halyard.dev/spiffe` (default true).
    pub csr_signer: Option<bool>,
}

/// A checked `[kubernetes]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The audience of tokens on Istio's CSR API.
    pub istio_audience: String,
    /// The audience of node agents' tokens.
    pub node_audience: String,
    /// The node agents' service accounts, `namespace/name`.
    pub agent_service_accounts: Vec<String>,
    /// ztunnel's service accounts, `namespace/name`: they may impersonate their node's pods.
    pub ztunnel_service_accounts: Vec<String>,
    /// A kubeconfig file, if not in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Whether the cert-manager issuer runs.
    pub cert_manager_issuer: bool,
    /// Whether the Kubernetes CSR signer `halyard.dev/spiffe` runs.
    pub csr_signer: bool,
}

impl KubernetesFile {
    /// Whether no key is set (flags that name none).
    pub fn is_empty(&self) -> bool {
        *self == KubernetesFile::default()
    }

    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn overlay(self, over: KubernetesFile) -> KubernetesFile {
        macro_rules! pick {
            ($($field:ident),*) => { KubernetesFile { $($field: over.$field.or(self.$field)),* } };
        }
        pick!(
            enabled,
            istio_audience,
            node_audience,
            agent_service_accounts,
            ztunnel_service_accounts,
            kubeconfig,
            cert_manager_issuer,
            csr_signer
        )
    }
}

/// Resolves the `[kubernetes]` table: `None` when Kubernetes is off.
pub(super) fn resolve(
    table: Option<KubernetesFile>,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<Option<KubernetesConfig>, ConfigError> {
    let Some(table) = table else {
        return Ok(None);
    };
    match table.enabled {
        Some(true) => {}
        Some(false) => return Ok(None),
        None => {
            return Err(invalid(
                "kubernetes.enabled",
                "is not set, but other [kubernetes] keys are: set enabled = true (or --kubernetes) \
                 to use them, or enabled = false"
                    .into(),
            ));
        }
    }
    let audience = |key: &'static str, value: Option<String>, default: &str| match value {
        Some(text) if text.is_empty() || text.contains(char::is_whitespace) => Err(invalid(
            key,
            format!("{text:?} is not an audience: a non-empty word without spaces"),
        )),
        Some(text) => Ok(text),
        None => Ok(default.to_owned()),
    };
    let accounts = |key: &'static str, value: Option<Vec<String>>, default: &str| {
        let accounts = value.unwrap_or_else(|| vec![default.to_owned()]);
        match accounts.iter().find(|account| !is_service_account(account)) {
            Some(bad) => Err(invalid(
                key,
                format!("{bad:?} is not namespace/name, e.g. {default}"),
            )),
            None => Ok(accounts),
        }
    };
    let agent_service_accounts = accounts(
        "kubernetes.agent_service_accounts",
        table.agent_service_accounts,
        "halyard/halyard-agent",
    )?;
    let ztunnel_service_accounts = accounts(
        "kubernetes.ztunnel_service_accounts",
        table.ztunnel_service_accounts,
        "istio-system/ztunnel",
    )?;
    Ok(Some(KubernetesConfig {
        istio_audience: audience(
            "kubernetes.istio_audience",
            table.istio_audience,
            "istio-ca",
        )?,
        node_audience: audience(
            "kubernetes.node_audience",
            table.node_audience,
            "halyard-ca",
        )?,
        agent_service_accounts,
        ztunnel_service_accounts,
        kubeconfig: table.kubeconfig,
        cert_manager_issuer: table.cert_manager_issuer.unwrap_or(true),
        csr_signer: table.csr_signer.unwrap_or(true),
    }))
}

/// `namespace/name` of a service account.
fn is_service_account(account: &str) -> bool {
    account.split_once('/').is_some_and(|(ns, name)| {
        is_dns_label(ns)
            && !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(is_dns_label)
    })
}

/// A Kubernetes namespace or name segment: an RFC 1123 label.
fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}
