//! Unix peer credentials: `unix:uid:N`, `unix:gid:N` (primary and supplementary groups) and
//! `unix:path:P` (the executable), read from the kernel and `/proc`.

use std::path::{Path, PathBuf};

use super::{AttestError, Attestor, Workload};

/// Attests callers by their uid, gids and executable path.
#[derive(Clone, Debug)]
pub struct UnixAttestor {
    proc_root: PathBuf,
}

impl Default for UnixAttestor {
    fn default() -> Self {
        UnixAttestor {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl UnixAttestor {
    /// An attestor reading process details under `proc_root` instead of `/proc` (for tests).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> UnixAttestor {
        UnixAttestor {
            proc_root: proc_root.into(),
        }
    }
}

#[tonic::async_trait]
impl Attestor for UnixAttestor {
    async fn selectors(&self, workload: &Workload) -> Result<Vec<String>, AttestError> {
        let mut selectors = vec![
            format!("unix:uid:{}", workload.uid),
            format!("unix:gid:{}", workload.gid),
        ];
        let Some(pid) = workload.pid else {
            return Ok(selectors);
        };
        let dir = self.proc_root.join(pid.to_string());
        // A pid can be reused between reading its start time and its details: read the start
        // time before and after, and refuse the caller if it changed.
        let before = start_time(&dir).map_err(|reason| changed(pid, reason))?;
        let exe = std::fs::read_link(dir.join("exe"));
        let groups = supplementary_groups(&dir);
        let after = start_time(&dir).map_err(|reason| changed(pid, reason))?;
        if before != after {
            return Err(changed(
                pid,
                "its start time changed: the pid was reused".into(),
            ));
        }
        if let Ok(exe) = exe {
            selectors.push(format!("unix:path:{}", exe.display()));
        }
        for gid in groups {
            let selector = format!("unix:gid:{gid}");
            if !selectors.contains(&selector) {
                selectors.push(selector);
            }
        }
        Ok(selectors)
    }
}

fn changed(pid: i32, reason: String) -> AttestError {
    AttestError::ProcessChanged { pid, reason }
}

/// Field 22 of `/proc/PID/stat`: the process's start time in clock ticks since boot.
pub(super) fn start_time(dir: &Path) -> Result<u64, String> {
    let stat = std::fs::read_to_string(dir.join("stat"))
        .map_err(|e| format!("cannot read its stat: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("its stat has no command name")?;
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| "its stat has no start time".to_owned())
}

fn supplementary_groups(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Groups:"))
                .map(|groups| {
                    groups
                        .split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .collect()
                })
        })
        .unwrap_or_default()
}
