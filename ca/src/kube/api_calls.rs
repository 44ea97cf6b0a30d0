//! Every Kubernetes API call Halyard makes, in one table: [`API_CALLS`].
//!
//! The table is the single source of truth for Halyard's RBAC. It is kept honest from both ends:
//!
//! - the mock API server of the CA's tests (`kube/mock.rs`) answers `403 Forbidden`, and fails the
//!   test, for any request that no entry of the table covers, as an API server with exactly this
//!   RBAC would; so a new call without an entry fails the tests that exercise it;
//! - the deploy test (`tests/tests/deploy.rs`) renders `deploy/` and checks that the Roles and
//!   ClusterRoles bound to the CA's and the agent's service accounts grant every entry and nothing
//!   beyond the table.
//!
//! The agent's entries are checked only by the deploy test: its tests swap the pod source behind
//! a trait, not at the `kube::Client` seam.

/// The component whose service account makes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// `halyard-ca` (ServiceAccount `halyard-ca`).
    Ca,
    /// `halyard-agent` (ServiceAccount `halyard-agent`).
    Agent,
}

/// Where a call reaches, which decides the kind of RBAC grant it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A cluster-scoped resource, or a namespaced one in every namespace: a ClusterRole bound by
    /// a ClusterRoleBinding.
    Cluster,
    /// Only the component's own namespace: a Role bound by a RoleBinding there.
    OwnNamespace,
}

/// When a component makes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum When {
    /// Whenever it runs in Kubernetes mode.
    Always,
    /// Only while the cert-manager issuer runs (`[kubernetes] cert_manager_issuer`).
    CertManagerIssuer,
    /// Only while the CSR signer runs (`[kubernetes] csr_signer`).
    CsrSigner,
}

/// One kind of request to the API server, as RBAC sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiCall {
    /// Who makes it.
    pub component: Component,
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, or `sign` (which the
    /// API server checks when a signer writes a CertificateSigningRequest's certificate).
    pub verb: &'static str,
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// The resource, plural (`pods`).
    pub resource: &'static str,
    /// The subresource (`status`), if any.
    pub subresource: Option<&'static str>,
    /// The one object name the grant is limited to, if any (signers).
    pub resource_name: Option<&'static str>,
    /// Where it reaches.
    pub scope: Scope,
    /// When it is made.
    pub when: When,
    /// What it is for.
    pub purpose: &'static str,
}

impl ApiCall {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_owned(),
        }
    }

    /// Whether this entry covers `request` (made by this entry's component).
    pub fn covers(&self, request: &RequestInfo) -> bool {
        self.verb == request.verb
            && self.group == request.group
            && self.resource == request.resource
            && self.subresource == request.subresource.as_deref()
            && self
                .resource_name
                .is_none_or(|name| request.name.as_deref() == Some(name))
            && match self.scope {
                Scope::Cluster => true,
                Scope::OwnNamespace => request.namespace.is_some(),
            }
    }
}

const fn call(
    component: Component,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    scope: Scope,
    purpose: &'static str,
) -> ApiCall {
    ApiCall {
        component,
        verb,
        group,
        resource,
        subresource: None,
        resource_name: None,
        scope,
        when: When::Always,
        purpose,
    }
}

const fn status(call: ApiCall) -> ApiCall {
    ApiCall {
        subresource: Some("status"),
        ..call
    }
}

const fn cert_manager(call: ApiCall) -> ApiCall {
    ApiCall {
        when: When::CertManagerIssuer,
        ..call
    }
}

const fn csr_signer(call: ApiCall) -> ApiCall {
    ApiCall {
        when: When::CsrSigner,
        ..call
    }
}

use Component::{Agent, Ca};
use Scope::{Cluster, OwnNamespace};

const CERT_MANAGER: &str = "cert-manager.io";
const HALYARD: &str = "halyard.dev";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";

/// Every Kubernetes API call Halyard makes. See the module documentation.
pub const API_CALLS: &[ApiCall] = &[
    // TokenReview (kube/token_review.rs): Istio's Bearer tokens, the agents' projected tokens.
    call(
        Ca,
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        Cluster,
        "authenticate service-account tokens",
    ),
    // The cert-manager issuer (kube/issuer/): controllers on CertificateRequests and both issuer
    // kinds (list + watch), issuers read by name, status written by server-side apply.
    cert_manager(call(
        Ca,
        "list",
        CERT_MANAGER,
        "certificaterequests",
        Cluster,
        "watch CertificateRequests",
    )),
    cert_manager(call(
        Ca,
        "watch",
        CERT_MANAGER,
        "certificaterequests",
        Cluster,
        "watch CertificateRequests",
    )),
    cert_manager(status(call(
        Ca,
        "patch",
        CERT_MANAGER,
        "certificaterequests",
        Cluster,
        "write a CertificateRequest's certificate and conditions",
    ))),
    cert_manager(call(
        Ca,
        "get",
        HALYARD,
        "halyardissuers",
        Cluster,
        "read a request's issuer",
    )),
    cert_manager(call(
        Ca,
        "list",
        HALYARD,
        "halyardissuers",
        Cluster,
        "watch issuers",
    )),
    cert_manager(call(
        Ca,
        "watch",
        HALYARD,
        "halyardissuers",
        Cluster,
        "watch issuers",
    )),
    cert_manager(status(call(
        Ca,
        "patch",
        HALYARD,
        "halyardissuers",
        Cluster,
        "write an issuer's Ready condition",
    ))),
    cert_manager(call(
        Ca,
        "get",
        HALYARD,
        "halyardclusterissuers",
        Cluster,
        "read a request's issuer",
    )),
    cert_manager(call(
        Ca,
        "list",
        HALYARD,
        "halyardclusterissuers",
        Cluster,
        "watch issuers",
    )),
    cert_manager(call(
        Ca,
        "watch",
        HALYARD,
        "halyardclusterissuers",
        Cluster,
        "watch issuers",
    )),
    cert_manager(status(call(
        Ca,
        "patch",
        HALYARD,
        "halyardclusterissuers",
        Cluster,
        "write an issuer's Ready condition",
    ))),
    // The pod index (kube/pods.rs): one cluster-wide list, then a watch.
    call(
        Ca,
        "list",
        "",
        "pods",
        Cluster,
        "pod index: which service accounts run on which node",
    ),
    call(
        Ca,
        "watch",
        "",
        "pods",
        Cluster,
        "pod index: which service accounts run on which node",
    ),
    // The Kubernetes CSR signer `halyard.dev/spiffe` (kube/csr_signer.rs; Istio's
    // ISTIOD_RA_KUBERNETES_API): a watch of the CSRs of its signer name, and `PUT …/status` with
    // the certificate or a Failed condition. The API server checks `sign` on the signer when a
    // status write sets a certificate.
    csr_signer(call(
        Ca,
        "list",
        CERTIFICATES,
        "certificatesigningrequests",
        Cluster,
        "CSR signer: watch CertificateSigningRequests",
    )),
    csr_signer(call(
        Ca,
        "watch",
        CERTIFICATES,
        "certificatesigningrequests",
        Cluster,
        "CSR signer: watch CertificateSigningRequests",
    )),
    csr_signer(status(call(
        Ca,
        "update",
        CERTIFICATES,
        "certificatesigningrequests",
        Cluster,
        "CSR signer: write the signed certificate or a Failed condition",
    ))),
    csr_signer(ApiCall {
        resource_name: Some("halyard.dev/spiffe"),
        ..call(
            Ca,
            "sign",
            CERTIFICATES,
            "signers",
            Cluster,
            "CSR signer: sign for halyard.dev/spiffe",
        )
    }),
    // Leader election among CA replicas (kube/leader.rs): the holder of the Lease
    // halyard-ca-controllers runs the cert-manager issuer and the CSR signer. kube-lease-manager
    // reads the Lease, creates it when missing, and takes, renews and releases it by patches
    // (server-side apply).
    call(
        Ca,
        "get",
        COORDINATION,
        "leases",
        OwnNamespace,
        "leader election",
    ),
    call(
        Ca,
        "create",
        COORDINATION,
        "leases",
        OwnNamespace,
        "leader election",
    ),
    call(
        Ca,
        "patch",
        COORDINATION,
        "leases",
        OwnNamespace,
        "leader election",
    ),
    // The agent's pod workload attestation (node-agent/src/attest/k8s.rs): a reflector on the
    // pods of its own node (`fieldSelector=spec.nodeName=<node>`: RBAC cannot limit a grant to
    // one node, so the grant is cluster-wide and the field selector is the code's).
    call(
        Agent,
        "list",
        "",
        "pods",
        Cluster,
        "pod attestation: the pods of this node",
    ),
    call(
        Agent,
        "watch",
        "",
        "pods",
        Cluster,
        "pod attestation: the pods of this node",
    ),
];

/// The entry of [`API_CALLS`] for `component` that covers `request`, if any.
pub fn covering(component: Component, request: &RequestInfo) -> Option<&'static ApiCall> {
    API_CALLS
        .iter()
        .find(|call| call.component == component && call.covers(request))
}

/// A request to the API server as RBAC sees it (what the API server's request-info resolver
/// makes of the method and path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: &'static str,
    /// The API group; `""` for the core group.
    pub group: String,
    /// The resource, plural.
    pub resource: String,
    /// The subresource, if any.
    pub subresource: Option<String>,
    /// The namespace, for a request in one.
    pub namespace: Option<String>,
    /// The object's name, for a request on one object.
    pub name: Option<String>,
}

impl RequestInfo {
    /// The resource request that `method` on `path` (with `query`, without `?`) is, or why it is
    /// none (a discovery path such as `/api` or `/version`, an unknown method).
    pub fn parse(method: &str, path: &str, query: &str) -> Result<RequestInfo, String> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return Err(format!("{path} is not a resource path")),
        };
        // `namespaces/<ns>/<resource>…` is in a namespace; `namespaces` or `namespaces/<name>`
        // alone is the namespace object itself.
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return Err(format!("{path} is not a resource path")),
        };
        if resource.is_empty() {
            return Err(format!("{path} names no resource"));
        }
        let watch = query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"));
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return Err(format!("{method} is not a Kubernetes API method")),
        };
        Ok(RequestInfo {
            verb,
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }
}

impl std::fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group} {}", self.verb, self.resource)?;
        if let Some(sub) = &self.subresource {
            write!(f, "/{sub}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

#[cfg(test)]
mod tests;
