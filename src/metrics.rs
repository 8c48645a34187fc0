//! Prometheus metrics. Names follow DESIGN.md §8 under the `daytona_mcp_` prefix; gauges that
//! mirror the database (`jobs`, `workspace_count`) are refreshed when `/metrics` is scraped, so
//! they are exact on every node without background polling.

use std::path::Path;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::queue::Queue;
use crate::store::JobState;

const NAMESPACE: &str = "daytona_mcp";

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
    pub job_followers: IntGauge,
    pub driver_available: IntGaugeVec,
    pub driver_unavailable_total: IntCounterVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .buckets(buckets)
}

/// Latency buckets from 1 ms to 10 minutes.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ]
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            workspace_count: IntGaugeVec::new(
                opts(
                    "workspace_count",
                    "Sandboxes known to the server, by driver and status.",
                ),
                &["driver", "status"],
            )
            .expect("valid metric"),
            execution_time_seconds: HistogramVec::new(
                hopts(
                    "execution_time_seconds",
                    "Time a job spent running, by tool and outcome.",
                    latency_buckets(),
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
            jobs: IntGaugeVec::new(opts("jobs", "Jobs in the database, by state."), &["state"])
                .expect("valid metric"),
            queue_wait_seconds: HistogramVec::new(
                hopts(
                    "queue_wait_seconds",
                    "Time from enqueue (or retry time) to start, by tool.",
                    latency_buckets(),
                ),
                &["tool"],
            )
            .expect("valid metric"),
            workspace_creation_failures_total: IntCounter::with_opts(opts(
                "workspace_creation_failures_total",
                "create_sandbox jobs that failed.",
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
                    latency_buckets(),
                ),
                &["route"],
            )
            .expect("valid metric"),
            data_dir_free_bytes: Gauge::with_opts(opts(
                "data_dir_free_bytes",
                "Free bytes on the file system holding the data directory.",
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
        };
        let build_info = IntGaugeVec::new(
            opts("build_info", "Build information; the value is always 1."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
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
            Box::new(m.job_followers.clone()),
            Box::new(m.driver_available.clone()),
            Box::new(m.driver_unavailable_total.clone()),
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

    /// Refreshes the database-backed gauges (and the node's follower count) and renders the
    /// text exposition format.
    pub async fn render(&self, queue: &Queue, data_dir: &Path) -> String {
        let store = queue.store().as_ref();
        self.job_followers
            .set(i64::try_from(queue.followers().count()).unwrap_or(i64::MAX));
        match store.job_counts().await {
            Ok(counts) => {
                for state in JobState::ALL {
                    let n = counts
                        .iter()
                        .find(|c| c.state == state)
                        .map_or(0, |c| c.count);
                    self.jobs.with_label_values(&[state.as_str()]).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count jobs for /metrics"),
        }
        match store.sandbox_counts().await {
            Ok(counts) => {
                self.workspace_count.reset();
                for c in counts {
                    self.workspace_count
                        .with_label_values(&[c.driver.as_str(), c.status.as_str()])
                        .set(c.count);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count sandboxes for /metrics"),
        }
        if let Some(free) = free_bytes(data_dir) {
            self.data_dir_free_bytes.set(free as f64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Free bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
