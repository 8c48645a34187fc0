//! Per-sandbox resources: what `create_sandbox.resources` may ask for (within the operator's
//! maxima) and the limits every operation on the sandbox then carries to the driver.

use serde_json::Value;

use super::InvalidInput;
use super::args::Resources;
use crate::drivers::SandboxLimits;

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// The operator's defaults and maxima.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourcePolicy {
    pub default_memory_bytes: u64,
    pub default_cpus: f64,
    /// `None`: sandboxes have no disk quota unless they ask for one.
    pub default_disk_bytes: Option<u64>,
    pub max_memory_bytes: u64,
    pub max_cpus: f64,
    pub max_disk_bytes: u64,
}

impl Default for ResourcePolicy {
    fn default() -> ResourcePolicy {
        ResourcePolicy {
            default_memory_bytes: 2 << 30,
            default_cpus: 1.0,
            default_disk_bytes: Some(10 << 30),
            max_memory_bytes: 8 << 30,
            max_cpus: 4.0,
            max_disk_bytes: 100 << 30,
        }
    }
}

fn human(bytes: f64) -> String {
    if bytes >= GIB {
        format!("{:.2} GiB", bytes / GIB)
    } else {
        format!("{:.0} MiB", bytes / MIB)
    }
}

impl ResourcePolicy {
    /// Refuses a request that is not positive or exceeds a maximum, naming the field.
    pub fn check(&self, r: &Resources) -> Result<(), InvalidInput> {
        let over = |field: &str, asked: String, max: String, key: &str| {
            Err(InvalidInput::field(
                field,
                format!("{field} asks for {asked}, above this server's maximum of {max} ({key})"),
            ))
        };
        if let Some(cpu) = r.cpu {
            if cpu.is_nan() || cpu <= 0.0 {
                return Err(InvalidInput::field(
                    "resources.cpu",
                    "resources.cpu must be positive",
                ));
            }
            if cpu > self.max_cpus {
                return over(
                    "resources.cpu",
                    format!("{cpu} cores"),
                    format!("{} cores", self.max_cpus),
                    "sandbox.max_cpus",
                );
            }
        }
        if let Some(mb) = r.memory_mb {
            if mb == 0 {
                return Err(InvalidInput::field(
                    "resources.memory_mb",
                    "resources.memory_mb must be positive",
                ));
            }
            if mb as f64 * MIB > self.max_memory_bytes as f64 {
                return over(
                    "resources.memory_mb",
                    format!("{mb} MiB"),
                    human(self.max_memory_bytes as f64),
                    "sandbox.max_memory",
                );
            }
        }
        if let Some(gb) = r.disk_gb {
            if gb.is_nan() || gb <= 0.0 {
                return Err(InvalidInput::field(
                    "resources.disk_gb",
                    "resources.disk_gb must be positive",
                ));
            }
            if gb * GIB > self.max_disk_bytes as f64 {
                return over(
                    "resources.disk_gb",
                    format!("{gb} GiB"),
                    human(self.max_disk_bytes as f64),
                    "sandbox.max_disk",
                );
            }
        }
        Ok(())
    }

    /// The limits of a sandbox whose stored request is `requested`: the request, or the
    /// default, never above today's maxima (they may have been lowered since creation).
    pub fn limits(&self, requested: &Value) -> SandboxLimits {
        let r: Resources = serde_json::from_value(requested.clone()).unwrap_or_default();
        let memory = r
            .memory_mb
            .map_or(self.default_memory_bytes, |mb| (mb as f64 * MIB) as u64);
        let cpus = r.cpu.unwrap_or(self.default_cpus);
        let disk = r
            .disk_gb
            .map(|gb| (gb * GIB) as u64)
            .or(self.default_disk_bytes);
        SandboxLimits {
            memory_bytes: memory.min(self.max_memory_bytes),
            cpus: cpus.min(self.max_cpus),
            disk_bytes: disk.map(|d| d.min(self.max_disk_bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_within_maxima_become_limits() {
        let p = ResourcePolicy::default();
        let limits = p.limits(&json!({"cpu": 0.5, "memory_mb": 256, "disk_gb": 1.5}));
        assert_eq!(limits.memory_bytes, 256 << 20);
        assert_eq!(limits.cpus, 0.5);
        assert_eq!(limits.disk_bytes, Some(3 << 29));
        let defaults = p.limits(&json!({}));
        assert_eq!(defaults.memory_bytes, 2 << 30);
        assert_eq!(defaults.disk_bytes, Some(10 << 30));
        // A maximum lowered after creation wins.
        let lowered = ResourcePolicy {
            max_cpus: 0.25,
            ..ResourcePolicy::default()
        };
        assert_eq!(lowered.limits(&json!({"cpu": 2.0})).cpus, 0.25);
    }

    #[test]
    fn requests_over_maxima_are_refused_naming_the_field() {
        let p = ResourcePolicy::default();
        let cases = [
            (
                Resources {
                    cpu: Some(64.0),
                    ..Default::default()
                },
                "resources.cpu",
            ),
            (
                Resources {
                    cpu: Some(0.0),
                    ..Default::default()
                },
                "resources.cpu",
            ),
            (
                Resources {
                    memory_mb: Some(1 << 20),
                    ..Default::default()
                },
                "resources.memory_mb",
            ),
            (
                Resources {
                    memory_mb: Some(0),
                    ..Default::default()
                },
                "resources.memory_mb",
            ),
            (
                Resources {
                    disk_gb: Some(1e6),
                    ..Default::default()
                },
                "resources.disk_gb",
            ),
            (
                Resources {
                    disk_gb: Some(-1.0),
                    ..Default::default()
                },
                "resources.disk_gb",
            ),
        ];
        for (r, field) in cases {
            let err = p.check(&r).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{r:?}");
        }
        assert!(
            p.check(&Resources {
                cpu: Some(4.0),
                memory_mb: Some(8192),
                disk_gb: Some(100.0)
            })
            .is_ok()
        );
    }
}
