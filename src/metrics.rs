//! Prometheus metrics. Names follow DESIGN.md §8 under the `daytona_mcp_` prefix.
//!
//! Every label comes from a closed set (tools, job states, error reasons, route templates, the
//! standard methods, sandbox statuses) except `sandbox`, whose series are capped
//! (`metrics.max_sandbox_series`). Counter families whose label values are known at start-up
//! are zero-initialised, so that `rate()` and `increase()` see the first event. Gauges that
//! mirror the database (`jobs`, `workspace_count`, the queue's age, `database_up`) and the
//! driver's measurements are refreshed when `/metrics` is scraped, so they are exact on every
//! node without background polling.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::drivers::SandboxUsage;
use crate::queue::Queue;
use crate::store::{ErrorReason, JobState};

const NAMESPACE: &str = "daytona_mcp";

/// Longest a scrape waits for one database query.
const DATABASE_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-sandbox series kept by default (per metric), the largest first.
pub const DEFAULT_MAX_SANDBOX_SERIES: usize = 100;

/// Sandbox statuses the server writes, zero-initialised in `workspace_count` for the driver in
/// use. A status seen later (another driver's) is tracked from then on.
const KNOWN_SANDBOX_STATUSES: [&str; 3] = ["creating", "running", "deleting"];

/// How a job can end, the `outcome` label of `execution_time_seconds`.
const OUTCOMES: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];

/// Every metric the server exports, registered in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub workspace_count: IntGaugeVec,
    pub execution_time_seconds: HistogramVec,
    pub failures_total: IntCounterVec,
    pub jobs: IntGaugeVec,
    pub queue_wait_seconds: HistogramVec,
    pub workspace_creation_failures_total: IntCounter,
    pub actor_restarts_total: IntCounter,
    pub active_actors: IntGauge,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub data_dir_free_bytes: Gauge,
    pub data_dir_size_bytes: Gauge,
    pub job_followers: IntGauge,
    pub driver_available: IntGaugeVec,
    pub driver_unavailable_total: IntCounterVec,
    pub database_up: IntGauge,
    pub oldest_runnable_job_age_seconds: Gauge,
    pub workspace_memory_bytes: IntGaugeVec,
    pub workspace_memory_limit_bytes: IntGaugeVec,
    pub workspace_disk_bytes: IntGaugeVec,
    pub workspace_series_omitted: IntGaugeVec,
    /// Most series per per-sandbox metric.
    max_sandbox_series: usize,
    /// `(driver, status)` pairs of `workspace_count` ever set, so that a pair whose sandboxes
    /// are all gone reads 0 instead of vanishing.
    workspace_labels: Arc<Mutex<BTreeSet<(String, String)>>>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn hopts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets.to_vec())
}

/// Job durations and queue waits: 1 ms to an hour (`queue.max_timeout_s`' default).
pub const JOB_BUCKETS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// HTTP latency: 1 ms to 15 minutes (`server.sync_wait_max_s`' default).
pub const HTTP_BUCKETS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 900.0,
];

impl Metrics {
    /// The metrics with the default cap on per-sandbox series.
    pub fn new() -> Metrics {
        Metrics::with_sandbox_cap(DEFAULT_MAX_SANDBOX_SERIES)
    }

    /// The metrics, keeping at most `max_sandbox_series` series per per-sandbox metric.
    pub fn with_sandbox_cap(max_sandbox_series: usize) -> Metrics {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(opts(name, help), labels).expect("valid metric")
        };
        let m = Metrics {
            registry: Registry::new(),
            workspace_count: gauge_vec(
                "workspace_count",
                "Sandboxes known to the server, by driver and status.",
                &["driver", "status"],
            ),
            execution_time_seconds: HistogramVec::new(
                hopts(
                    "execution_time_seconds",
                    "Time a job spent running, by tool and outcome.",
                    &JOB_BUCKETS,
                ),
                &["tool", "outcome"],
            )
            .expect("valid metric"),
            failures_total: IntCounterVec::new(
                opts(
                    "failures_total",
                    "Jobs that ended failed, by tool and reason.",
                ),
                &["tool", "reason"],
            )
            .expect("valid metric"),
            jobs: gauge_vec("jobs", "Jobs in the database, by state.", &["state"]),
            queue_wait_seconds: HistogramVec::new(
                hopts(
                    "queue_wait_seconds",
                    "Time from enqueue (or retry time) to start, by tool.",
                    &JOB_BUCKETS,
                ),
                &["tool"],
            )
            .expect("valid metric"),
            workspace_creation_failures_total: IntCounter::with_opts(opts(
                "workspace_creation_failures_total",
                "create_sandbox jobs that ended failed.",
            ))
            .expect("valid metric"),
            actor_restarts_total: IntCounter::with_opts(opts(
                "actor_restarts_total",
                "Workspace actors restarted by their supervisor after a panic.",
            ))
            .expect("valid metric"),
            active_actors: IntGauge::with_opts(opts(
                "active_actors",
                "Workspace actors currently alive on this node.",
            ))
            .expect("valid metric"),
            http_requests_total: IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests, by route template, method and status.",
                ),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            http_request_duration_seconds: HistogramVec::new(
                hopts(
                    "http_request_duration_seconds",
                    "HTTP request latency, by route template.",
                    &HTTP_BUCKETS,
                ),
                &["route"],
            )
            .expect("valid metric"),
            data_dir_free_bytes: Gauge::with_opts(opts(
                "data_dir_free_bytes",
                "Free bytes on the file system holding the data directory.",
            ))
            .expect("valid metric"),
            data_dir_size_bytes: Gauge::with_opts(opts(
                "data_dir_size_bytes",
                "Size in bytes of the file system holding the data directory.",
            ))
            .expect("valid metric"),
            job_followers: IntGauge::with_opts(opts(
                "job_followers",
                "Jobs being followed on this node for a client (event streams, MCP progress).",
            ))
            .expect("valid metric"),
            driver_available: IntGaugeVec::new(
                opts(
                    "driver_available",
                    "Whether the driver's backend answered its last call (1), did not (0), by \
                     driver; absent before any call.",
                ),
                &["driver"],
            )
            .expect("valid metric"),
            driver_unavailable_total: IntCounterVec::new(
                opts(
                    "driver_unavailable_total",
                    "Driver calls that found the backend unavailable (CLI missing, not logged \
                     in, server unreachable), by driver.",
                ),
                &["driver"],
            )
            .expect("valid metric"),
            database_up: IntGauge::with_opts(opts(
                "database_up",
                "1 when the database answered at the last scrape, else 0.",
            ))
            .expect("valid metric"),
            oldest_runnable_job_age_seconds: Gauge::with_opts(opts(
                "oldest_runnable_job_age_seconds",
                "How long the longest-waiting runnable job (queued, due, its workspace idle) \
                 has waited; 0 when none waits.",
            ))
            .expect("valid metric"),
            workspace_memory_bytes: gauge_vec(
                "workspace_memory_bytes",
                "Memory charged to a sandbox's running commands (drivers that measure it; the \
                 largest metrics.max_sandbox_series sandboxes).",
                &["sandbox"],
            ),
            workspace_memory_limit_bytes: gauge_vec(
                "workspace_memory_limit_bytes",
                "Memory limit of a sandbox's running commands, for the sandboxes in \
                 workspace_memory_bytes.",
                &["sandbox"],
            ),
            workspace_disk_bytes: gauge_vec(
                "workspace_disk_bytes",
                "Bytes used by a sandbox's files, as last measured (drivers that measure it; \
                 the largest metrics.max_sandbox_series sandboxes).",
                &["sandbox"],
            ),
            workspace_series_omitted: gauge_vec(
                "workspace_series_omitted",
                "Sandboxes left out of a per-sandbox metric by metrics.max_sandbox_series.",
                &["metric"],
            ),
            max_sandbox_series,
            workspace_labels: Arc::default(),
        };
        let build_info = gauge_vec(
            "build_info",
            "Build information; the value is always 1.",
            &["version", "revision"],
        );
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("DAYTONA_MCP_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        for metric in ["workspace_memory_bytes", "workspace_disk_bytes"] {
            m.workspace_series_omitted
                .with_label_values(&[metric])
                .set(0);
        }
        for state in JobState::ALL {
            m.jobs.with_label_values(&[state.as_str()]).set(0);
        }
        m.database_up.set(1);
        for collector in [
            Box::new(m.workspace_count.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.execution_time_seconds.clone()),
            Box::new(m.failures_total.clone()),
            Box::new(m.jobs.clone()),
            Box::new(m.queue_wait_seconds.clone()),
            Box::new(m.workspace_creation_failures_total.clone()),
            Box::new(m.actor_restarts_total.clone()),
            Box::new(m.active_actors.clone()),
            Box::new(m.http_requests_total.clone()),
            Box::new(m.http_request_duration_seconds.clone()),
            Box::new(m.data_dir_free_bytes.clone()),
            Box::new(m.data_dir_size_bytes.clone()),
            Box::new(m.job_followers.clone()),
            Box::new(m.driver_available.clone()),
            Box::new(m.driver_unavailable_total.clone()),
            Box::new(m.database_up.clone()),
            Box::new(m.oldest_runnable_job_age_seconds.clone()),
            Box::new(m.workspace_memory_bytes.clone()),
            Box::new(m.workspace_memory_limit_bytes.clone()),
            Box::new(m.workspace_disk_bytes.clone()),
            Box::new(m.workspace_series_omitted.clone()),
            Box::new(build_info),
        ] {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        m
    }

    /// Copies what each driver last saw of its backend into the driver metrics (drivers keep
    /// their own counts; no call reaches a backend here). Driver names are a closed set.
    pub fn observe_drivers(&self, drivers: &crate::drivers::Drivers) {
        for driver in drivers.iter() {
            let health = driver.health();
            let name = [driver.name()];
            if let Some(available) = health.available {
                self.driver_available
                    .with_label_values(&name)
                    .set(i64::from(available));
            }
            let counter = self.driver_unavailable_total.with_label_values(&name);
            let seen = counter.get();
            if health.unavailable_total > seen {
                counter.inc_by(health.unavailable_total - seen);
            }
        }
    }

    /// Zero-initialises the series whose label values are known once the tools and the driver
    /// are: `failures_total` for every tool and reason, the execution-time and queue-wait
    /// histograms for every tool (and outcome), `workspace_count` for each driver's statuses.
    pub fn init_known_labels(&self, tools: &[&str], drivers: &[&str]) {
        for tool in tools {
            for reason in ErrorReason::ALL {
                self.failures_total
                    .with_label_values(&[tool, reason.as_str()]);
            }
            for outcome in OUTCOMES {
                self.execution_time_seconds
                    .with_label_values(&[tool, outcome.as_str()]);
            }
            self.queue_wait_seconds.with_label_values(&[tool]);
        }
        let mut labels = self.workspace_labels.lock().expect("metrics lock");
        for driver in drivers {
            for status in KNOWN_SANDBOX_STATUSES {
                self.workspace_count
                    .with_label_values(&[driver, status])
                    .set(0);
                labels.insert((driver.to_string(), status.to_string()));
            }
        }
    }

    /// Records a job that reached a terminal state: its duration (when it ran on this node)
    /// and, if it failed, its reason.
    pub fn record_end(
        &self,
        tool: &str,
        state: JobState,
        reason: Option<ErrorReason>,
        ran_for: Option<std::time::Duration>,
    ) {
        if !state.is_terminal() {
            return;
        }
        if let Some(ran_for) = ran_for {
            self.execution_time_seconds
                .with_label_values(&[tool, state.as_str()])
                .observe(ran_for.as_secs_f64());
        }
        if state == JobState::Failed {
            let reason = reason.unwrap_or(ErrorReason::Internal);
            self.failures_total
                .with_label_values(&[tool, reason.as_str()])
                .inc();
            if tool == "create_sandbox" {
                self.workspace_creation_failures_total.inc();
            }
        }
    }

    /// Refreshes the database-backed gauges, the drivers' measurements and the node's follower
    /// count, and renders the text exposition format.
    pub async fn render(
        &self,
        queue: &Queue,
        data_dir: &Path,
        drivers: &crate::drivers::Drivers,
    ) -> String {
        self.job_followers
            .set(i64::try_from(queue.followers().count()).unwrap_or(i64::MAX));
        self.observe_drivers(drivers);
        self.set_sandbox_usage(drivers.iter().flat_map(|d| d.usage()).collect());
        if let Some((free, size)) = file_system_bytes(data_dir) {
            self.data_dir_free_bytes.set(free as f64);
            self.data_dir_size_bytes.set(size as f64);
        }
        // An unreachable database must not make the scrape time out (that would read as the
        // server being down): each query has a bound, and none runs after a failed ping.
        match bounded("the database's answer", queue.store().ping()).await {
            Some(()) => {
                self.database_up.set(1);
                self.refresh_from_database(queue).await;
            }
            None => self.database_up.set(0),
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// The gauges that mirror the database.
    async fn refresh_from_database(&self, queue: &Queue) {
        let store = queue.store().as_ref();
        if let Some(counts) = bounded("job counts", store.job_counts()).await {
            for state in JobState::ALL {
                let n = counts
                    .iter()
                    .find(|c| c.state == state)
                    .map_or(0, |c| c.count);
                self.jobs.with_label_values(&[state.as_str()]).set(n);
            }
        }
        let now = chrono::Utc::now();
        if let Some(oldest) = bounded("the queue's age", store.oldest_runnable(now)).await {
            self.oldest_runnable_job_age_seconds
                .set(oldest.map_or(0.0, |at| {
                    (now - at).num_milliseconds().max(0) as f64 / 1000.0
                }));
        }
        if let Some(counts) = bounded("sandbox counts", store.sandbox_counts()).await {
            let mut labels = self.workspace_labels.lock().expect("metrics lock");
            for (driver, status) in labels.iter() {
                self.workspace_count
                    .with_label_values(&[driver, status])
                    .set(0);
            }
            for c in counts {
                self.workspace_count
                    .with_label_values(&[c.driver.as_str(), c.status.as_str()])
                    .set(c.count);
                labels.insert((c.driver, c.status));
            }
        }
    }

    /// Replaces the per-sandbox series with `usage`, keeping the largest
    /// `max_sandbox_series` sandboxes of each metric and counting the rest.
    fn set_sandbox_usage(&self, usage: Vec<SandboxUsage>) {
        self.workspace_disk_bytes.reset();
        self.workspace_memory_bytes.reset();
        self.workspace_memory_limit_bytes.reset();
        let mut disk: Vec<(&str, u64)> = usage
            .iter()
            .filter_map(|u| u.disk_bytes.map(|b| (u.sandbox.as_str(), b)))
            .collect();
        disk.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let omitted = disk.len().saturating_sub(self.max_sandbox_series);
        for (sandbox, bytes) in disk.into_iter().take(self.max_sandbox_series) {
            self.workspace_disk_bytes
                .with_label_values(&[sandbox])
                .set(clamp(bytes));
        }
        self.workspace_series_omitted
            .with_label_values(&["workspace_disk_bytes"])
            .set(clamp(omitted as u64));

        let mut memory: Vec<&SandboxUsage> =
            usage.iter().filter(|u| u.memory_bytes.is_some()).collect();
        memory.sort_by(|a, b| {
            b.memory_bytes
                .cmp(&a.memory_bytes)
                .then(a.sandbox.cmp(&b.sandbox))
        });
        let omitted = memory.len().saturating_sub(self.max_sandbox_series);
        for u in memory.into_iter().take(self.max_sandbox_series) {
            let labels = [u.sandbox.as_str()];
            self.workspace_memory_bytes
                .with_label_values(&labels)
                .set(clamp(u.memory_bytes.unwrap_or(0)));
            if let Some(limit) = u.memory_limit_bytes {
                self.workspace_memory_limit_bytes
                    .with_label_values(&labels)
                    .set(clamp(limit));
            }
        }
        self.workspace_series_omitted
            .with_label_values(&["workspace_memory_bytes"])
            .set(clamp(omitted as u64));
    }
}

/// A database read for a scrape: its value, or `None` (logged) when it fails or takes longer
/// than [`DATABASE_BOUND`].
async fn bounded<T>(
    what: &str,
    read: impl std::future::Future<Output = crate::store::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(DATABASE_BOUND, read).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read {what} for /metrics");
            None
        }
        Err(_) => {
            tracing::warn!("reading {what} for /metrics took longer than {DATABASE_BOUND:?}");
            None
        }
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Free bytes available to unprivileged users, and the total size, of the file system holding
/// `path`.
pub fn file_system_bytes(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    let block = stat.f_frsize as u64;
    (rc == 0).then(|| (stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

/// Free bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    file_system_bytes(path).map(|(free, _)| free)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(sandbox: &str, disk: u64, memory: Option<u64>) -> SandboxUsage {
        SandboxUsage {
            sandbox: sandbox.into(),
            disk_bytes: Some(disk),
            memory_bytes: memory,
            memory_limit_bytes: memory.map(|_| 1 << 30),
        }
    }

    fn series(m: &Metrics, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn per_sandbox_series_are_capped_to_the_largest() {
        let m = Metrics::with_sandbox_cap(2);
        m.set_sandbox_usage(vec![
            usage("sb-a", 10, Some(5)),
            usage("sb-b", 30, None),
            usage("sb-c", 20, Some(7)),
            usage("sb-d", 5, Some(9)),
        ]);
        let disk = series(&m, "daytona_mcp_workspace_disk_bytes");
        assert_eq!(disk.len(), 2, "{disk:?}");
        assert!(
            disk[0].contains("sb-b") || disk[1].contains("sb-b"),
            "{disk:?}"
        );
        assert!(disk.iter().any(|l| l.contains("sb-c")), "{disk:?}");
        let memory = series(&m, "daytona_mcp_workspace_memory_bytes");
        assert_eq!(memory.len(), 2, "{memory:?}");
        assert!(memory.iter().any(|l| l.contains("sb-d")), "{memory:?}");
        assert!(memory.iter().any(|l| l.contains("sb-c")), "{memory:?}");
        let omitted = series(&m, "daytona_mcp_workspace_series_omitted");
        assert!(
            omitted.contains(
                &"daytona_mcp_workspace_series_omitted{metric=\"workspace_disk_bytes\"} 2"
                    .to_string()
            ),
            "{omitted:?}"
        );
        assert!(
            omitted.contains(
                &"daytona_mcp_workspace_series_omitted{metric=\"workspace_memory_bytes\"} 1"
                    .to_string()
            ),
            "{omitted:?}"
        );
        // A sandbox that is gone loses its series at the next refresh.
        m.set_sandbox_usage(vec![usage("sb-a", 10, None)]);
        assert_eq!(series(&m, "daytona_mcp_workspace_disk_bytes").len(), 1);
        assert!(series(&m, "daytona_mcp_workspace_memory_bytes").is_empty());
    }

    #[test]
    fn known_labels_start_at_zero() {
        let m = Metrics::new();
        m.init_known_labels(&["execute_shell", "create_sandbox"], &["local"]);
        let failures = series(&m, "daytona_mcp_failures_total");
        assert_eq!(failures.len(), 2 * ErrorReason::ALL.len(), "{failures:?}");
        assert!(failures.iter().all(|l| l.ends_with(" 0")), "{failures:?}");
        let count = series(&m, "daytona_mcp_workspace_count");
        assert_eq!(count.len(), KNOWN_SANDBOX_STATUSES.len(), "{count:?}");
        m.record_end(
            "create_sandbox",
            JobState::Failed,
            Some(ErrorReason::Timeout),
            Some(std::time::Duration::from_millis(3)),
        );
        assert_eq!(m.workspace_creation_failures_total.get(), 1);
        assert_eq!(
            m.failures_total
                .with_label_values(&["create_sandbox", "timeout"])
                .get(),
            1
        );
    }
}
