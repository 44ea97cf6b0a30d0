//! The custom resources: Halyard's issuers (ours: the CRDs are generated from these types) and
//! cert-manager's `CertificateRequest` (cert-manager's: only the fields read here).

use k8s_openapi::ByteString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Halyard's resources.
pub const GROUP: &str = "halyard.dev";

/// What an issuer may sign, shared by [`HalyardIssuer`] and [`HalyardClusterIssuer`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerPolicySpec {
    /// SPIFFE IDs this issuer signs, as patterns: `*` stands for one path segment, `{namespace}`
    /// for the CertificateRequest's namespace, e.g. `spiffe://cluster.local/ns/{namespace}/sa/*`.
    /// A HalyardIssuer signs only IDs under `spiffe://<trust domain>/ns/<its namespace>/`
    /// whatever its patterns say.
    pub allowed_spiffe_ids: Vec<String>,
    /// DNS names certificates may carry besides the SPIFFE ID, as patterns: `*` stands for one
    /// label, `{namespace}` for the CertificateRequest's namespace, e.g. `*.{namespace}.svc`.
    /// None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_dns_names: Vec<String>,
    /// The longest certificate lifetime granted, as a Go duration (`24h`, `90m`); longer
    /// requests are shortened to it. Default and upper bound: the CA's `max_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// Usages a CertificateRequest may ask for; default: all four. X509-SVIDs always carry
    /// digital signature (and key encipherment with RSA keys), server auth and client auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_usages: Option<Vec<Usage>>,
}

/// A key usage an X509-SVID can have, named as cert-manager names it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Usage {
    /// KeyUsage digitalSignature.
    #[serde(rename = "digital signature")]
    DigitalSignature,
    /// KeyUsage keyEncipherment (set on RSA leaves only).
    #[serde(rename = "key encipherment")]
    KeyEncipherment,
    /// ExtendedKeyUsage serverAuth.
    #[serde(rename = "server auth")]
    ServerAuth,
    /// ExtendedKeyUsage clientAuth.
    #[serde(rename = "client auth")]
    ClientAuth,
}

impl Usage {
    /// Every usage, in the order cert-manager lists them.
    pub const ALL: [Usage; 4] = [
        Usage::DigitalSignature,
        Usage::KeyEncipherment,
        Usage::ServerAuth,
        Usage::ClientAuth,
    ];

    /// cert-manager's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Usage::DigitalSignature => "digital signature",
            Usage::KeyEncipherment => "key encipherment",
            Usage::ServerAuth => "server auth",
            Usage::ClientAuth => "client auth",
        }
    }
}

/// A namespaced issuer of X509-SVIDs for cert-manager.
// Each printcolumn repeats `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[kube(
    group = "halyard.dev",
    version = "v1alpha1",
    kind = "HalyardIssuer",
    namespaced,
    status = "IssuerStatus",
    category = "halyard",
    doc = "Signs cert-manager CertificateRequests in its namespace with Halyard's CA: X509-SVIDs \
           for SPIFFE IDs under spiffe://<trust domain>/ns/<its namespace>/.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct HalyardIssuerSpec {
    /// What it signs.
    #[serde(flatten)]
    pub policy: IssuerPolicySpec,
}

/// A cluster-wide issuer of X509-SVIDs for cert-manager.
// Each printcolumn repeats `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[kube(
    group = "halyard.dev",
    version = "v1alpha1",
    kind = "HalyardClusterIssuer",
    status = "IssuerStatus",
    category = "halyard",
    doc = "Signs cert-manager CertificateRequests of every namespace with Halyard's CA: X509-SVIDs \
           for the SPIFFE IDs its patterns allow.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct HalyardClusterIssuerSpec {
    /// What it signs.
    #[serde(flatten)]
    pub policy: IssuerPolicySpec,
}

/// An issuer's observed state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct IssuerStatus {
    /// `Ready`: whether the issuer can sign.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<IssuerCondition>,
}

/// A condition of an issuer (the shape of Kubernetes' `metav1.Condition`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerCondition {
    /// The condition: `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// cert-manager's `CertificateRequest` (`cert-manager.io/v1`), reduced to what the issuer reads.
///
/// Typed rather than a `DynamicObject` so that the reconciler reads fields, not JSON paths; every
/// field is optional or defaulted so that no CertificateRequest of another issuer can fail to
/// deserialize and stall the watch. It is never written whole: status changes are server-side
/// apply patches of exactly the fields the issuer owns.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    namespaced,
    status = "CertificateRequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// The PEM CSR.
    #[serde(default)]
    pub request: ByteString,
    /// Which issuer is asked.
    #[serde(default)]
    pub issuer_ref: IssuerReference,
    /// The lifetime asked for, a Go duration (`2160h0m0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Key usages asked for; cert-manager's default is digital signature + key encipherment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    /// Whether a CA certificate is asked for.
    #[serde(default, rename = "isCA")]
    pub is_ca: bool,
}

/// `spec.issuerRef`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct IssuerReference {
    /// The issuer's name.
    #[serde(default)]
    pub name: String,
    /// Its kind (cert-manager's default: `Issuer`).
    #[serde(default)]
    pub kind: String,
    /// Its API group (cert-manager's default: `cert-manager.io`).
    #[serde(default)]
    pub group: String,
}

/// `status` of a CertificateRequest.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// `Approved`, `Denied` (the approver's), `Ready` (the issuer's), …
    #[serde(default)]
    pub conditions: Vec<RequestCondition>,
    /// The issued chain, PEM, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ByteString>,
    /// The CA, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ByteString>,
    /// When the request failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<String>,
}

/// A condition of a CertificateRequest.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestCondition {
    /// `Ready`, `Approved`, `Denied`, `InvalidRequest`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The CRDs of Halyard's resources, generated from the types above.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![HalyardIssuer::crd(), HalyardClusterIssuer::crd()]
}

/// [`crds`] as one YAML stream, as `halyard-ca kube crds` prints it and `deploy/crds/` holds it.
pub fn crds_yaml() -> Result<String, String> {
    let mut out = String::from(
        "# Generated from ca/src/kube/issuer/crd.rs by `halyard-ca kube crds`: do not edit.\n",
    );
    for crd in crds() {
        let yaml = serde_saphyr::to_string(&crd).map_err(|e| format!("CRD to YAML: {e}"))?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
