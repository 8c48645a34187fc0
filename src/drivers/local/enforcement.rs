//! What the local driver enforces and how: the summary shown by `/readyz` and
//! `get_sandbox_info` (`resources.enforcement`), and the per-limit report
//! (`resources.limits`) for one sandbox.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Limits;
use super::cgroup::CgroupManager;
use super::isolation::Isolation;
use crate::drivers::{LimitReport, SandboxLimits};

/// What the Landlock level restricts on this kernel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LandlockReport {
    pub abi: i32,
    /// TCP bind and connect are refused unless the sandbox has network access (ABI 4+).
    pub tcp_restricted: bool,
    /// Signals and abstract UNIX sockets cannot reach outside the sandbox (ABI 6+).
    pub signals_scoped: bool,
    /// Capabilities are dropped (the server runs as root).
    pub capabilities_dropped: bool,
}

/// What the driver enforces and how, for `/readyz` and `get_sandbox_info`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enforcement {
    pub isolation: &'static str,
    /// Details of the Landlock level, when it is the one in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockReport>,
    pub cgroup: Option<&'static str>,
    pub cgroup_controllers: Vec<&'static str>,
    pub rlimits: Vec<&'static str>,
}

/// How limits are enforced on this machine.
pub fn summary(isolation: &Isolation, cgroups: &CgroupManager) -> Enforcement {
    let controllers = cgroups.controllers();
    let mut rlimits = vec!["cpu_time", "file_size", "open_files"];
    if !controllers.contains(&"memory") {
        rlimits.push("address_space");
    }
    if !controllers.contains(&"pids") {
        rlimits.push("processes");
    }
    Enforcement {
        isolation: isolation.name(),
        landlock: match isolation {
            Isolation::Landlock(p) => Some(LandlockReport {
                abi: p.abi(),
                tcp_restricted: p.restricts_tcp(),
                signals_scoped: p.scopes_signals(),
                capabilities_dropped: p.drop_capabilities,
            }),
            _ => None,
        },
        cgroup: cgroups.version(),
        cgroup_controllers: controllers,
        rlimits,
    }
}

/// How each limit of a sandbox with `limits` is enforced on this machine.
pub fn limits_report(
    cgroups: &CgroupManager,
    fixed: &Limits,
    limits: &SandboxLimits,
) -> BTreeMap<&'static str, LimitReport> {
    let controllers = cgroups.controllers();
    let version = cgroups.version().unwrap_or("");
    let by = |controller: &str, with: &str, without: &str| {
        if controllers.contains(&controller) {
            format!("cgroup {version} {with}")
        } else {
            without.to_string()
        }
    };
    let report = |value: Option<f64>, enforced_by: String| LimitReport { value, enforced_by };
    BTreeMap::from([
        (
            "memory_bytes",
            report(
                Some(limits.memory_bytes as f64),
                by(
                    "memory",
                    "memory (the command's whole process tree; the kernel kills it on \
                     excess)",
                    "rlimit address space (per process; no memory cgroup here)",
                ),
            ),
        ),
        (
            "cpus",
            report(
                Some(limits.cpus),
                by(
                    "cpu",
                    "cpu quota",
                    "not enforced (no cpu cgroup here); CPU time per process is bounded by \
                     rlimit",
                ),
            ),
        ),
        (
            "processes",
            report(
                Some(fixed.max_processes as f64),
                by("pids", "pids", "rlimit nproc (per user)"),
            ),
        ),
        (
            "disk_bytes",
            match limits.disk_bytes {
                Some(quota) => report(
                    Some(quota as f64),
                    "check: file_operation writes over the quota are refused; commands get \
                     a file-size rlimit at the remaining quota and are killed when a usage \
                     watchdog sees the sandbox over it"
                        .into(),
                ),
                None => report(None, "none (no quota configured)".into()),
            },
        ),
        (
            "file_size_bytes",
            report(Some(fixed.max_file_size_bytes as f64), "rlimit".into()),
        ),
        (
            "open_files",
            report(Some(fixed.max_open_files as f64), "rlimit".into()),
        ),
        (
            "cpu_seconds",
            report(
                None,
                "rlimit: the call's timeout plus one second of CPU time per process".into(),
            ),
        ),
    ])
}
