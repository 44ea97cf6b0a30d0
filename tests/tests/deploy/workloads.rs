//! The CA's and the agent's pods as rendered: their command lines parsed by the real CLIs, the
//! CA's configuration resolved as `halyard-ca serve` would resolve it, and the invariants every
//! overlay keeps.

use std::path::Path;

use clap::Parser;
use halyard_ca::config::{AwsPcaFile, Config, ConfigFile, KubernetesFile};
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::render::Rendered;

/// Stand-ins for the Secret values the manifests read (the operator creates the Secrets), so that
/// the command line can be expanded as the kubelet would and resolved.
const SECRET_STAND_INS: &[(&str, &str, &str)] = &[(
    "halyard-ca-store",
    "url",
    "postgres://halyard:stand-in@postgres.example.internal/halyard",
)];

/// The CA as rendered.
pub(crate) struct CaView<'a> {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) spec: &'a PodSpec,
    pub(crate) container: &'a Container,
    /// The command line after `$(VAR)` expansion.
    pub(crate) argv: Vec<String>,
    /// The configuration `serve` resolves from its ConfigMap and flags.
    pub(crate) config: Config,
    /// The environment variables the command line takes from Secrets.
    pub(crate) from_secrets: Vec<String>,
}

/// The agent as rendered.
pub(crate) struct AgentView<'a> {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) spec: &'a PodSpec,
    pub(crate) container: &'a Container,
    pub(crate) argv: Vec<String>,
}

/// The `halyard-ca` Deployment, its command line parsed by `halyard-ca`'s own CLI and its
/// configuration resolved.
pub(crate) fn ca(rendered: &Rendered) -> CaView<'_> {
    let dir = &rendered.dir;
    let deployment = rendered
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("halyard-ca"))
        .unwrap_or_else(|| panic!("deploy/{dir}: no Deployment halyard-ca"));
    let spec = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    let container = container(spec, "halyard-ca");
    let (argv, from_secrets) = expanded(dir, container);
    if let Err(e) = halyard_ca::cli::Cli::try_parse_from(&argv) {
        panic!("deploy/{dir}: halyard-ca refuses its command line {argv:?}: {e}");
    }
    assert_eq!(
        argv.get(1).map(String::as_str),
        Some("serve"),
        "deploy/{dir}: {argv:?}"
    );
    let config = resolve(rendered, spec, container, &argv[2..]);
    CaView {
        namespace: deployment.metadata.namespace.clone().unwrap_or_default(),
        service_account: spec.service_account_name.clone().unwrap_or_default(),
        spec,
        container,
        argv,
        config,
        from_secrets,
    }
}

/// The `halyard-agent` DaemonSet, its command line parsed by `halyard-agent`'s own CLI.
pub(crate) fn agent(rendered: &Rendered) -> AgentView<'_> {
    let dir = &rendered.dir;
    let daemon_set = rendered
        .daemon_sets
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("halyard-agent"))
        .unwrap_or_else(|| panic!("deploy/{dir}: no DaemonSet halyard-agent"));
    let spec = daemon_set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    let container = container(spec, "halyard-agent");
    let (argv, _) = expanded(dir, container);
    if let Err(e) = halyard_agent::cli::Cli::try_parse_from(&argv) {
        panic!("deploy/{dir}: halyard-agent refuses its command line {argv:?}: {e}");
    }
    AgentView {
        namespace: daemon_set.metadata.namespace.clone().unwrap_or_default(),
        service_account: spec.service_account_name.clone().unwrap_or_default(),
        spec,
        container,
        argv,
    }
}

pub(crate) fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag V` or `--flag=V` in `argv`.
pub(crate) fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    argv.iter().enumerate().find_map(|(i, arg)| {
        if *arg == long {
            argv.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(&format!("{long}="))
        }
    })
}

/// Command and args with `$(VAR)` replaced from the container's environment, as the kubelet
/// does; and the names of the variables that come from Secrets.
fn expanded(dir: &str, container: &Container) -> (Vec<String>, Vec<String>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut from_secrets = Vec::new();
    for env in container.env.as_deref().unwrap_or_default() {
        let value = match (&env.value, &env.value_from) {
            (Some(value), None) => value.clone(),
            (None, Some(source)) if source.field_ref.is_some() => "node-1".to_owned(),
            (None, Some(source)) => {
                let secret = source.secret_key_ref.as_ref().unwrap_or_else(|| {
                    panic!(
                        "deploy/{dir}: env {} comes from neither a value, a field nor a Secret",
                        env.name
                    )
                });
                from_secrets.push(env.name.clone());
                SECRET_STAND_INS
                    .iter()
                    .find(|(name, key, _)| *name == secret.name && *key == secret.key)
                    .unwrap_or_else(|| {
                        panic!(
                            "deploy/{dir}: env {} reads Secret {} key {}: give the test a stand-in",
                            env.name, secret.name, secret.key
                        )
                    })
                    .2
                    .to_owned()
            }
            _ => panic!("deploy/{dir}: env {} has no single source", env.name),
        };
        vars.push((env.name.clone(), value));
    }
    let argv = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|arg| {
            vars.iter().fold(arg.clone(), |arg, (name, value)| {
                arg.replace(&format!("$({name})"), value)
            })
        })
        .collect();
    (argv, from_secrets)
}

/// What `serve` resolves from `--config` (read from the ConfigMap mounted there) and the flags
/// the manifests use.
fn resolve(rendered: &Rendered, spec: &PodSpec, container: &Container, args: &[String]) -> Config {
    let dir = &rendered.dir;
    let config_path = flag(args, "config").unwrap_or_else(|| panic!("deploy/{dir}: no --config"));
    let (mount, volume) = mounted(spec, container, Path::new(config_path))
        .unwrap_or_else(|| panic!("deploy/{dir}: --config {config_path} is on no volume"));
    let map_name = &volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("deploy/{dir}: --config is not from a ConfigMap"))
        .name;
    let key = Path::new(config_path)
        .strip_prefix(&mount.mount_path)
        .unwrap()
        .to_str()
        .unwrap();
    let text = rendered
        .config_maps
        .iter()
        .find(|map| map.metadata.name.as_deref() == Some(map_name.as_str()))
        .and_then(|map| map.data.as_ref()?.get(key).cloned())
        .unwrap_or_else(|| panic!("deploy/{dir}: ConfigMap {map_name} has no key {key}"));
    let file_dir = tempfile::tempdir().unwrap();
    let file = file_dir.path().join(key);
    std::fs::write(&file, text).unwrap();
    let from_file = ConfigFile::read(&file)
        .unwrap_or_else(|e| panic!("deploy/{dir}: ConfigMap {map_name}: {e}"));
    // The flags the manifests use; a new one must be taught here.
    let mut flags = ConfigFile::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| rest.next().cloned()).unwrap();
        match name {
            "--config" => {
                value();
            }
            "--store-url" => flags.store_url = Some(value()),
            "--upstream" => flags.upstream = Some(value()),
            "--aws-pca-ca-arn" => {
                flags.aws_pca = Some(AwsPcaFile {
                    ca_arn: Some(value().parse().unwrap()),
                    ..AwsPcaFile::default()
                });
            }
            "--kubernetes-cert-manager-issuer" => {
                flags.kubernetes = Some(KubernetesFile {
                    cert_manager_issuer: Some(value().parse().unwrap()),
                    ..KubernetesFile::default()
                });
            }
            other => {
                panic!("deploy/{dir}: halyard-ca flag {other}: teach workloads.rs what it sets")
            }
        }
    }
    from_file
        .overlay(flags)
        .resolve(
            &format!("deploy/{dir} ConfigMap {map_name} and flags"),
            false,
        )
        .unwrap_or_else(|e| panic!("deploy/{dir}: halyard-ca would not start: {e}"))
}

/// The mount of `container` under which `path` lies (the deepest), with its volume.
pub(crate) fn mounted<'a>(
    spec: &'a PodSpec,
    container: &'a Container,
    path: &Path,
) -> Option<(&'a VolumeMount, &'a Volume)> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    Some((mount, volume))
}

/// The number of the container port named or numbered `port`.
pub(crate) fn container_port(container: &Container, port: &IntOrString) -> Option<i32> {
    let ports = container.ports.as_deref().unwrap_or_default();
    match port {
        IntOrString::Int(n) => ports.iter().find(|p| p.container_port == *n),
        IntOrString::String(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
    }
    .map(|p| p.container_port)
}

/// Every container of `spec` runs as non-root, on a read-only root filesystem, without privilege
/// escalation and with every capability dropped, except the one init container that `exception`
/// names, which may run as root with CHOWN alone.
pub(crate) fn assert_hardened(dir: &str, workload: &str, spec: &PodSpec, exception: Option<&str>) {
    let pod = spec.security_context.clone().unwrap_or_default();
    assert!(
        spec.host_network != Some(true),
        "deploy/{dir}: {workload} uses the host network"
    );
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)));
    for (c, init) in containers {
        let what = format!("deploy/{dir}: {workload} container {}", c.name);
        let context = c.security_context.clone().unwrap_or_default();
        assert!(context.privileged != Some(true), "{what} is privileged");
        assert_eq!(
            context.read_only_root_filesystem,
            Some(true),
            "{what}: root filesystem not read-only"
        );
        assert_eq!(
            context.allow_privilege_escalation,
            Some(false),
            "{what}: privilege escalation not off"
        );
        let capabilities = context.capabilities.clone().unwrap_or_default();
        assert!(
            capabilities.drop.iter().flatten().any(|c| c == "ALL"),
            "{what}: capabilities not dropped"
        );
        let added: Vec<String> = capabilities.add.unwrap_or_default();
        let run_as_user = context.run_as_user.or(pod.run_as_user);
        let non_root = context.run_as_non_root.or(pod.run_as_non_root) == Some(true)
            && run_as_user.is_some_and(|uid| uid != 0);
        if init && exception == Some(c.name.as_str()) {
            assert_eq!(
                added,
                ["CHOWN"],
                "{what}: the root init container may only chown"
            );
        } else {
            assert!(non_root, "{what} may run as root");
            assert!(added.is_empty(), "{what} adds capabilities {added:?}");
        }
    }
}
