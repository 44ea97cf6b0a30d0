//! `/proc/<pid>/cgroup` → the Kubernetes pod and container a process runs in.
//!
//! The file has one line per hierarchy: `hierarchy-ID:controllers:path` under cgroup v1 (several
//! lines, not all of which need carry the container's path), `0::/path` under cgroup v2. The
//! path is built by the kubelet and the container runtime:
//!
//! - the kubelet names a pod's cgroup after its QoS class and UID (`pkg/kubelet/cm` in
//!   Kubernetes): with the cgroupfs driver `/kubepods/[burstable|besteffort/]pod<uid>`, with the
//!   systemd driver `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
//!   where systemd's naming turns the UID's `-` into `_` (a `-` means nesting in a slice name);
//!   guaranteed pods sit right under `kubepods`;
//! - the runtime names the container's cgroup inside it: a bare 64-hex id with cgroupfs
//!   (containerd, docker), `crio-<id>` (CRI-O), or a systemd scope `cri-containerd-<id>.scope`,
//!   `crio-<id>.scope`, `docker-<id>.scope`.
//!
//! Seen from inside a cgroup namespace (an agent in a container), the path is relative to the
//! namespace's root and may start with `/..`, so the pod's part may be missing; the container id
//! alone then names the container.

use std::fmt;

/// The Kubernetes container a process runs in, as its cgroups show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer {
    /// The pod's UID with its dashes (or a static pod's 32-hex config hash); `None` when the
    /// path hides it (a cgroup namespace).
    pub pod_uid: Option<String>,
    /// The container's id: 64 lowercase hex digits, as the pod's status reports it after the
    /// runtime's `<runtime>://` prefix.
    pub container_id: String,
}

/// The lines of one cgroup file name different containers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("its cgroups name two different containers: {first} and {second}")]
pub struct CgroupConflict {
    first: String,
    second: String,
}

impl fmt::Display for PodContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pod_uid {
            Some(uid) => write!(f, "container {} of pod {uid}", self.container_id),
            None => write!(f, "container {}", self.container_id),
        }
    }
}

/// The pod container that the contents of a `/proc/<pid>/cgroup` file place the process in, or
/// `None` for a process outside any pod (a host process, a plain docker container). Lines that
/// are not cgroup lines are skipped; lines that name no container (`0::/`, a systemd service)
/// are ignored; lines that name a container must all name the same one.
pub fn parse(contents: &str) -> Result<Option<PodContainer>, CgroupConflict> {
    let mut found: Option<PodContainer> = None;
    for line in contents.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_hierarchy), Some(_controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(here) = parse_path(path.trim_end()) else {
            continue;
        };
        found = Some(match found {
            None => here,
            Some(seen) => merge(seen, here)?,
        });
    }
    Ok(found)
}

/// One container seen on two lines: the same id, and the same pod where both show one.
fn merge(seen: PodContainer, here: PodContainer) -> Result<PodContainer, CgroupConflict> {
    let conflict = || CgroupConflict {
        first: seen.to_string(),
        second: here.to_string(),
    };
    if seen.container_id != here.container_id {
        return Err(conflict());
    }
    let pod_uid = match (&seen.pod_uid, &here.pod_uid) {
        (Some(a), Some(b)) if a != b => return Err(conflict()),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    Ok(PodContainer {
        pod_uid,
        container_id: seen.container_id,
    })
}

/// The container one cgroup path names, if any.
fn parse_path(path: &str) -> Option<PodContainer> {
    let segments: Vec<&str> = path.split('/').collect();
    // The innermost pod cgroup: in kind (Kubernetes in docker) the node's own container comes
    // first (`/docker/<node id>/kubepods/…`), so a 64-hex segment before the pod is no workload.
    if let Some(at) = segments.iter().rposition(|s| pod_uid(s).is_some()) {
        let uid = pod_uid(segments[at])?;
        // The container is the pod's child; anything below it (a v2 leaf the container made
        // itself) is still that container.
        let container_id = segments.get(at + 1).and_then(|s| container_id(s))?;
        return Some(PodContainer {
            pod_uid: Some(uid),
            container_id,
        });
    }
    // No pod in sight. Under the kubelet's hierarchy the pod level is always in view (it sits
    // right below), so only a path relative to a cgroup namespace whose root hides it can still
    // name a pod's container — and only by a runtime's named scope, since such paths also reach
    // host services.
    if segments.iter().any(|s| is_kubepods(s)) || !path.starts_with("/..") {
        return None;
    }
    let leaf = segments.last()?;
    Some(PodContainer {
        pod_uid: None,
        container_id: runtime_scope_id(leaf)?,
    })
}

/// `kubepods`, `kubepods.slice`, a QoS slice such as `kubepods-burstable.slice`, or one of them
/// under another cgroup root (`kubelet-kubepods.slice` in kind).
fn is_kubepods(segment: &str) -> bool {
    segment == "kubepods"
        || segment
            .strip_suffix(".slice")
            .is_some_and(|slice| slice.split('-').any(|part| part == "kubepods"))
}

/// The pod UID a pod cgroup's name carries: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd driver; kind prefixes its cgroup
/// root: `kubelet-kubepods-besteffort-pod<uid>.slice`).
fn pod_uid(segment: &str) -> Option<String> {
    let raw = match segment.strip_suffix(".slice") {
        Some(slice) => {
            // Hex digits hold no `p`: the last `-pod` starts the UID even in the old,
            // unescaped form with dashes.
            let at = slice.rfind("-pod")?;
            let (parent, uid) = (slice.get(..at)?, slice.get(at + 4..)?);
            if !parent.split('-').any(|part| part == "kubepods") {
                return None;
            }
            uid
        }
        None => segment.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (`8-4-4-4-12` hex digits: API-server pods) or 32 hex digits (the config hash the
/// kubelet uses as a static pod's UID).
fn is_pod_uid(uid: &str) -> bool {
    let groups: Vec<&str> = uid.split('-').collect();
    let lengths: &[usize] = if groups.len() == 1 {
        &[32]
    } else {
        &[8, 4, 4, 4, 12]
    };
    groups.len() == lengths.len()
        && groups
            .iter()
            .zip(lengths)
            .all(|(group, len)| group.len() == *len && is_hex(group))
}

/// The container id in a container cgroup's name: a runtime's scope, CRI-O's cgroupfs name
/// `crio-<id>`, or the bare id.
fn container_id(segment: &str) -> Option<String> {
    runtime_scope_id(segment).or_else(|| {
        let id = segment.strip_prefix("crio-").unwrap_or(segment);
        is_container_id(id).then(|| id.to_owned())
    })
}

/// The id in `cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope`. CRI-O's
/// `crio-conmon-<id>.scope` holds the runtime's monitor, not the workload, and is no match.
fn runtime_scope_id(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".scope")?;
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))?;
    is_container_id(id).then(|| id.to_owned())
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
