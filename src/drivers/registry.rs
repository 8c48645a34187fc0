//! The drivers of one server: built once from the configuration by [`from_config`] (or handed
//! in by a test), looked up by the name stored on each sandbox row.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use super::Driver;
use super::daytona::{DaytonaConfig, DaytonaDriver};
use super::local::{Limits, LocalConfig, LocalDriver};
use crate::config::{Config, parse_size};

/// The drivers a server runs sandboxes on, and the one `create_sandbox` uses by default.
#[derive(Clone, Debug)]
pub struct Drivers {
    by_name: BTreeMap<&'static str, Arc<dyn Driver>>,
    default: &'static str,
}

impl Drivers {
    /// One driver, the default.
    pub fn single(driver: Arc<dyn Driver>) -> Drivers {
        Drivers::new(vec![driver], None).expect("one driver is a valid set")
    }

    /// Several drivers; the default is `default` (else the first).
    pub fn new(drivers: Vec<Arc<dyn Driver>>, default: Option<&str>) -> anyhow::Result<Drivers> {
        let first = drivers.first().context("no driver is configured")?.name();
        let mut by_name = BTreeMap::new();
        for driver in drivers {
            if by_name.insert(driver.name(), driver.clone()).is_some() {
                anyhow::bail!("driver `{}` is configured twice", driver.name());
            }
        }
        let default = match default {
            None => first,
            Some(name) => by_name
                .keys()
                .copied()
                .find(|n| *n == name)
                .with_context(|| format!("the default driver `{name}` is not among the drivers"))?,
        };
        Ok(Drivers { by_name, default })
    }

    /// The driver named `name`, if this server runs it.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Driver>> {
        self.by_name.get(name)
    }

    /// The driver `create_sandbox` uses when the call names none.
    pub fn default_driver(&self) -> &Arc<dyn Driver> {
        &self.by_name[self.default]
    }

    pub fn default_name(&self) -> &'static str {
        self.default
    }

    /// Every driver, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Driver>> {
        self.by_name.values()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

/// Builds the drivers the configuration names: `sandbox.drivers` (default: just
/// `sandbox.driver`), with `sandbox.driver` as the default. The data dir must be absolute.
pub async fn from_config(config: &Config) -> anyhow::Result<Drivers> {
    let mut built: Vec<Arc<dyn Driver>> = Vec::new();
    for name in config.enabled_drivers() {
        let driver: Arc<dyn Driver> = match name.as_str() {
            "local" => Arc::new(local(config)?),
            "daytona" => Arc::new(DaytonaDriver::start(DaytonaConfig::from_config(config)?).await),
            other => anyhow::bail!("sandbox.driver `{other}` is not a driver (local, daytona)"),
        };
        for warning in driver.warnings() {
            tracing::warn!(driver = driver.name(), "{warning}");
        }
        built.push(driver);
    }
    Drivers::new(built, Some(&config.sandbox.driver))
}

fn local(config: &Config) -> anyhow::Result<LocalDriver> {
    Ok(LocalDriver::new(LocalConfig {
        data_dir: config.data_dir.clone(),
        isolation: config.local.isolation,
        bwrap_path: (!config.local.bwrap_path.is_empty())
            .then(|| std::path::PathBuf::from(&config.local.bwrap_path)),
        sandbox_path: config.local.path.clone(),
        limits: Limits {
            max_processes: config.local.max_processes,
            max_file_size_bytes: parse_size("local.max_file_size", &config.local.max_file_size)?,
            max_open_files: config.local.max_open_files,
        },
        cgroups: config.local.cgroups,
        persistent_sandbox: config.local.persistent_sandbox,
        agent_path: (!config.local.agent_path.is_empty())
            .then(|| std::path::PathBuf::from(&config.local.agent_path)),
    })?)
}
