//! `deploy/`: the kustomize base and every overlay rendered with `kubectl kustomize` (Debian's
//! kubernetes-client, whose kustomize is v2.0.3, or any newer one: `$HALYARD_KUBECTL`), every
//! object parsed into its k8s-openapi type, and checked:
//!
//! - the CRDs are the ones `halyard-ca kube crds` generates from the Rust types;
//! - the RBAC bound to the CA's and the agent's service accounts grants exactly their entries of
//!   `halyard_ca::kube::API_CALLS`, nothing missing and nothing beyond;
//! - both command lines are accepted by the real CLIs, and the CA's configuration (ConfigMap and
//!   flags) resolves; the agent's token audience, service account and CA address are the ones
//!   that configuration accepts and serves;
//! - the CA runs 2 replicas under a PodDisruptionBudget behind a Service on its real ports and
//!   probes; the agent's socket is on a hostPath mounted at /run/halyard and at Istio's
//!   /var/run/secrets/workload-spiffe-uds; every container is non-root on a read-only root
//!   filesystem (one init container excepted, which can only chown);
//! - each overlay changes what it claims and nothing the others claim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "deploy/rbac.rs"]
mod rbac;
#[path = "deploy/render.rs"]
mod render;
#[path = "deploy/workloads.rs"]
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use halyard_ca::config::Upstream;
use halyard_ca::kube::Component;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use render::{Rendered, deploy_dir, render};
use workloads::{CaView, assert_hardened, container_port, flag, mounted};

/// Istio's path for the workload socket (istio-agent and Envoy look there).
const ISTIO_SOCKET_DIR: &str = "/var/run/secrets/workload-spiffe-uds";

/// What an overlay may change; each overlay claims exactly its own.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Change {
    IntermediateFromSecret,
    AwsPcaWithIrsa,
    PostgresFromSecret,
    OutsideTheMesh,
    CertManagerIssuer,
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn base() {
    let rendered = render("base");
    check_common(&rendered, &[]);
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn offline_root() {
    let rendered = render("offline-root");
    check_common(&rendered, &[Change::IntermediateFromSecret]);
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn aws_pca() {
    let rendered = render("aws-pca");
    check_common(&rendered, &[Change::AwsPcaWithIrsa]);
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn postgres() {
    let rendered = render("postgres");
    check_common(&rendered, &[Change::PostgresFromSecret]);
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn istio() {
    let rendered = render("istio");
    check_common(&rendered, &[Change::OutsideTheMesh]);
    check_istio_values(&rendered);
}

#[test]
#[ignore = "needs kubectl: run via the README test command"]
fn cert_manager() {
    let rendered = render("cert-manager");
    check_common(&rendered, &[Change::CertManagerIssuer]);
}

/// Every directory under deploy/ with a kustomization is one of the tests above.
#[test]
fn every_kustomization_is_tested() {
    let mut dirs: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("kustomization.yaml").exists())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "aws-pca",
            "base",
            "cert-manager",
            "crds",
            "istio",
            "offline-root",
            "postgres"
        ],
        "a new kustomization in deploy/ needs its test here (crds/ is rendered through base)"
    );
}

fn check_common(rendered: &Rendered, claimed: &[Change]) {
    check_crds(rendered);
    let ca = workloads::ca(rendered);
    check_ca(rendered, &ca);
    check_agent(rendered, &ca);
    check_rbac(rendered, &ca);
    let mut found = changes(rendered, &ca);
    found.sort();
    assert_eq!(
        found, claimed,
        "deploy/{}: the changes found are not the ones this overlay claims",
        rendered.dir
    );
}

fn check_crds(rendered: &Rendered) {
    let by_name = |crds: Vec<Value>| -> Vec<(String, Value)> {
        let mut named: Vec<(String, Value)> = crds
            .into_iter()
            .map(|crd| (crd["metadata"]["name"].as_str().unwrap().to_owned(), crd))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let rendered_crds = by_name(
        rendered
            .crds
            .iter()
            .map(|crd| serde_json::to_value(crd).unwrap())
            .collect(),
    );
    let generated = by_name(
        halyard_ca::kube::issuer::crds()
            .iter()
            .map(|crd| serde_json::to_value(crd).unwrap())
            .collect(),
    );
    assert!(!generated.is_empty());
    assert!(
        rendered_crds == generated,
        "deploy/{}: the CRDs are not the ones the Rust types generate (regenerate \
         deploy/crds/halyard.dev.yaml with `cargo run -p halyard-ca -- kube crds`)",
        rendered.dir
    );
}

fn check_ca(rendered: &Rendered, ca: &CaView<'_>) {
    let dir = &rendered.dir;
    let deployment = rendered
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("halyard-ca"))
        .unwrap();
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "deploy/{dir}: CA replicas");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selects_ca = |selector: Option<&BTreeMap<String, String>>| {
        selector.is_some_and(|wanted| {
            !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    let budget = rendered
        .disruption_budgets
        .iter()
        .find(|pdb| {
            let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
            selects_ca(selector.and_then(|s| s.match_labels.as_ref()))
        })
        .unwrap_or_else(|| panic!("deploy/{dir}: no PodDisruptionBudget selects the CA's pods"));
    assert_eq!(
        budget.spec.as_ref().unwrap().min_available,
        Some(IntOrString::Int(1)),
        "deploy/{dir}: one of the 2 CA replicas stays up during a drain"
    );

    // The Service reaches the ports the configuration listens on, and the probes the health
    // endpoints on the HTTP port.
    let service = rendered
        .services
        .iter()
        .find(|s| selects_ca(s.spec.as_ref().and_then(|s| s.selector.as_ref())))
        .unwrap_or_else(|| panic!("deploy/{dir}: no Service selects the CA's pods"));
    let ports = service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .clone()
        .unwrap_or_default();
    let target = |name: &str| {
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("deploy/{dir}: the CA Service has no port {name}"));
        (
            port.port,
            container_port(ca.container, port.target_port.as_ref().unwrap()),
        )
    };
    let grpc = i32::from(ca.config.grpc_listen.port());
    let http = i32::from(ca.config.http_listen.port());
    assert_eq!(
        target("grpc"),
        (8443, Some(grpc)),
        "deploy/{dir}: gRPC port"
    );
    assert_eq!(
        target("http"),
        (9090, Some(http)),
        "deploy/{dir}: HTTP port"
    );
    for (probe, path) in [
        (&ca.container.readiness_probe, "/readyz"),
        (&ca.container.liveness_probe, "/healthz"),
    ] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap();
        assert_eq!(get.path.as_deref(), Some(path), "deploy/{dir}: probe");
        assert_eq!(
            container_port(ca.container, &get.port),
            Some(http),
            "deploy/{dir}: probe port"
        );
    }

    // The data directory is writable, the configuration is not.
    let (data_mount, _) = mounted(ca.spec, ca.container, &ca.config.data_dir)
        .unwrap_or_else(|| panic!("deploy/{dir}: the data directory is on no volume"));
    assert_ne!(
        data_mount.read_only,
        Some(true),
        "deploy/{dir}: data directory read-only"
    );
    let config = Path::new(flag(&ca.argv, "config").unwrap());
    assert_eq!(
        mounted(ca.spec, ca.container, config).unwrap().0.read_only,
        Some(true)
    );
    assert_hardened(dir, "halyard-ca", ca.spec, None);
}

fn check_agent(rendered: &Rendered, ca: &CaView<'_>) {
    let dir = &rendered.dir;
    let agent = workloads::agent(rendered);
    let kubernetes = ca.config.kubernetes.as_ref().unwrap();

    // The socket: on a hostPath, reached at /run/halyard and at Istio's path, named `socket`.
    let socket = Path::new(flag(&agent.argv, "socket").unwrap());
    assert_eq!(
        socket.file_name().unwrap(),
        "socket",
        "deploy/{dir}: Istio looks for .../socket"
    );
    let (socket_mount, socket_volume) = mounted(agent.spec, agent.container, socket).unwrap();
    let host_path = socket_volume
        .host_path
        .as_ref()
        .unwrap_or_else(|| panic!("deploy/{dir}: the agent's socket is not on a hostPath"));
    let mounts_of_socket_volume: BTreeSet<&str> = agent
        .container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == socket_mount.name)
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        mounts_of_socket_volume,
        BTreeSet::from(["/run/halyard", ISTIO_SOCKET_DIR]),
        "deploy/{dir}: the socket's hostPath {} is mounted at both paths",
        host_path.path
    );

    // The node credential: a projected token for the audience the CA reviews.
    let token_file = Path::new(flag(&agent.argv, "node-token-file").unwrap());
    let (token_mount, token_volume) = mounted(agent.spec, agent.container, token_file).unwrap();
    let projection = token_volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|source| source.service_account_token.as_ref())
        .find(|t| Path::new(&token_mount.mount_path).join(&t.path) == token_file)
        .unwrap_or_else(|| panic!("deploy/{dir}: --node-token-file is not a projected token"));
    assert_eq!(
        projection.audience.as_deref(),
        Some(kubernetes.node_audience.as_str()),
        "deploy/{dir}: the agent's token audience is the one the CA reviews"
    );
    let account = format!("{}/{}", agent.namespace, agent.service_account);
    assert!(
        kubernetes.agent_service_accounts.contains(&account),
        "deploy/{dir}: the CA accepts node tokens of {:?}, not {account}",
        kubernetes.agent_service_accounts
    );

    // The CA address: the CA's Service, a name in the CA's certificate, its gRPC port.
    let address = flag(&agent.argv, "ca-address").unwrap();
    let authority = address.strip_prefix("https://").unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    assert!(
        ca.config.server_dns_names.iter().any(|name| name == host),
        "deploy/{dir}: {host} is not in the CA's server_dns_names {:?}",
        ca.config.server_dns_names
    );
    assert_eq!(
        host,
        format!("halyard-ca.{}.svc", ca.namespace),
        "deploy/{dir}"
    );
    assert_eq!(port, "8443", "deploy/{dir}: the Service's gRPC port");
    let bundle = Path::new(flag(&agent.argv, "trust-bundle").unwrap());
    let (_, bundle_volume) = mounted(agent.spec, agent.container, bundle).unwrap();
    assert_eq!(
        bundle_volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some("halyard-trust-bundle"),
        "deploy/{dir}: the trust bundle"
    );
    assert_eq!(
        agent.spec.host_pid,
        Some(true),
        "deploy/{dir}: attestation by process"
    );
    assert_hardened(dir, "halyard-agent", agent.spec, Some("socket-dir"));
}

fn check_rbac(rendered: &Rendered, ca: &CaView<'_>) {
    let dir = &rendered.dir;
    let grants = rbac::grants(rendered);
    let agent = workloads::agent(rendered);
    let kubernetes = ca.config.kubernetes.as_ref();
    let issuer = kubernetes.is_some_and(|k| k.cert_manager_issuer);
    let signer = kubernetes.is_some_and(|k| k.csr_signer);
    let ca_account = format!("{}/{}", ca.namespace, ca.service_account);
    let agent_account = format!("{}/{}", agent.namespace, agent.service_account);
    let none = BTreeSet::new();
    rbac::assert_exactly(
        dir,
        &ca_account,
        grants.get(&ca_account).unwrap_or(&none),
        &rbac::needed(Component::Ca, &ca.namespace, issuer, signer),
    );
    rbac::assert_exactly(
        dir,
        &agent_account,
        grants.get(&agent_account).unwrap_or(&none),
        &rbac::needed(Component::Agent, &agent.namespace, issuer, signer),
    );
    for (account, permissions) in &grants {
        if *account == ca_account || *account == agent_account {
            continue;
        }
        // Only cert-manager's approver, allowed to approve requests for Halyard's issuers.
        assert_eq!(
            account, "cert-manager/cert-manager",
            "deploy/{dir}: RBAC for {account}"
        );
        let expected: BTreeSet<rbac::Permission> = halyard_ca::kube::issuer::crds()
            .iter()
            .map(|crd| rbac::Permission {
                scope: "cluster".into(),
                group: "cert-manager.io".into(),
                resource: "signers".into(),
                verb: "approve".into(),
                name: Some(format!("{}.{}/*", crd.spec.names.plural, crd.spec.group)),
            })
            .collect();
        rbac::assert_exactly(dir, account, permissions, &expected);
    }
}

/// Which overlay changes the rendering shows.
fn changes(rendered: &Rendered, ca: &CaView<'_>) -> Vec<Change> {
    let mut found = Vec::new();
    let intermediate_secret = ca.spec.volumes.iter().flatten().find(|v| {
        v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("halyard-ca-intermediate")
    });
    if let Some(volume) = intermediate_secret {
        // Copied into the data directory by an init container that mounts both.
        let copier = ca
            .spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == volume.name)
            })
            .unwrap_or_else(|| {
                panic!(
                    "deploy/{}: the intermediate Secret is mounted by no init container",
                    rendered.dir
                )
            });
        let (_, data) = mounted(
            ca.spec,
            copier,
            &ca.config.data_dir.join("intermediate.key"),
        )
        .unwrap_or_else(|| {
            panic!(
                "deploy/{}: the copier does not mount the data directory",
                rendered.dir
            )
        });
        let (_, ca_data) = mounted(ca.spec, ca.container, &ca.config.data_dir).unwrap();
        assert_eq!(data.name, ca_data.name);
        let script = copier
            .command
            .iter()
            .flatten()
            .chain(copier.args.iter().flatten());
        let script: String = script.cloned().collect::<Vec<_>>().join(" ");
        for file in ["intermediate.key", "intermediate.crt", "bundle.pem"] {
            assert!(
                script.contains(file),
                "deploy/{}: {file} is not copied",
                rendered.dir
            );
        }
        assert!(
            script.contains("-m 0600 /intermediate/intermediate.key"),
            "{script}"
        );
        assert!(matches!(ca.config.upstream, Upstream::Offline));
        found.push(Change::IntermediateFromSecret);
    }
    let irsa = rendered
        .service_accounts
        .iter()
        .find(|sa| sa.metadata.name.as_deref() == Some(ca.service_account.as_str()))
        .and_then(|sa| {
            sa.metadata
                .annotations
                .as_ref()?
                .get("eks.amazonaws.com/role-arn")
                .cloned()
        });
    match (&ca.config.upstream, irsa) {
        (Upstream::AwsPca(_), Some(role)) => {
            assert!(
                role.starts_with("arn:aws:iam::"),
                "deploy/{}: {role}",
                rendered.dir
            );
            found.push(Change::AwsPcaWithIrsa);
        }
        (Upstream::Offline, None) => {}
        (upstream, role) => panic!(
            "deploy/{}: upstream {upstream:?} with IRSA role {role:?}: AWS PCA needs the role, \
             and only it",
            rendered.dir
        ),
    }
    if ca.config.store_url.starts_with("postgres") {
        // Written as $(VAR), VAR from a Secret: never the URL (and its password) itself.
        let raw: Vec<String> = ca.container.args.clone().unwrap_or_default();
        let written = flag(&raw, "store-url").unwrap_or_default();
        assert!(
            ca.from_secrets
                .iter()
                .any(|var| written == format!("$({var})")),
            "deploy/{}: --store-url {written} does not come from a Secret",
            rendered.dir
        );
        found.push(Change::PostgresFromSecret);
    } else {
        assert!(
            ca.config.store_url.starts_with("sqlite://"),
            "{}",
            ca.config.store_url
        );
    }
    let namespace_labels = rendered
        .namespaces
        .iter()
        .find(|ns| ns.metadata.name.as_deref() == Some(ca.namespace.as_str()))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    if namespace_labels.get("istio-injection").map(String::as_str) == Some("disabled") {
        let templates = rendered
            .deployments
            .iter()
            .map(|d| &d.spec.as_ref().unwrap().template)
            .chain(
                rendered
                    .daemon_sets
                    .iter()
                    .map(|d| &d.spec.as_ref().unwrap().template),
            );
        for template in templates {
            let labels = template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap_or_default();
            assert_eq!(
                labels.get("sidecar.istio.io/inject").map(String::as_str),
                Some("false")
            );
        }
        assert_eq!(
            namespace_labels
                .get("istio.io/dataplane-mode")
                .map(String::as_str),
            Some("none")
        );
        found.push(Change::OutsideTheMesh);
    }
    if ca
        .config
        .kubernetes
        .as_ref()
        .is_some_and(|k| k.cert_manager_issuer)
    {
        found.push(Change::CertManagerIssuer);
    }
    found
}

/// Istio's Helm values beside the istio overlay: they parse, and they point Istio at what the
/// manifests and the code provide.
fn check_istio_values(rendered: &Rendered) {
    let read = |file: &str| -> Value {
        let path = deploy_dir().join("istio").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let istiod = read("istiod-values.yaml");
    let signer = halyard_ca::kube::API_CALLS
        .iter()
        .find(|call| call.verb == "sign")
        .and_then(|call| call.resource_name)
        .unwrap();
    assert_eq!(
        istiod["pilot"]["env"]["EXTERNAL_CA"],
        "ISTIOD_RA_KUBERNETES_API"
    );
    assert_eq!(istiod["pilot"]["env"]["K8S_SIGNER"], signer);
    assert!(
        istiod["global"]["certSigners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == signer)
    );
    let ca = workloads::ca(rendered);
    assert_eq!(
        istiod["meshConfig"]["trustDomain"],
        ca.config.trust_domain.to_string()
    );
    // The injected workload-socket volume is the agent's socket directory.
    let template: Value = serde_saphyr::from_str(
        istiod["sidecarInjectorWebhook"]["templates"]["halyard"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let volume = &template["spec"]["volumes"][0];
    assert_eq!(volume["name"], "workload-socket");
    let agent = workloads::agent(rendered);
    let socket = Path::new(flag(&agent.argv, "socket").unwrap());
    let (_, socket_volume) = mounted(agent.spec, agent.container, socket).unwrap();
    assert_eq!(
        volume["hostPath"]["path"].as_str(),
        Some(socket_volume.host_path.as_ref().unwrap().path.as_str())
    );
    assert!(
        istiod["sidecarInjectorWebhook"]["defaultTemplates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "halyard")
    );
    let ztunnel = read("ztunnel-values.yaml");
    assert_eq!(
        ztunnel["caAddress"],
        format!("halyard-ca.{}.svc:8443", ca.namespace)
    );
}
